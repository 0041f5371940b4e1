"""The record schema, defined once: every writer and reader imports it.

Pretraining records carry exactly google-research/bert's features and dtypes, so
they also work with existing BERT tooling. Later stages (teacher labels) extend
this schema here rather than declaring their own.
"""

import dataclasses

# Shape kinds: "seq" = [max_seq_length], "pred" = [max_predictions_per_seq], or a
# fixed int length.
INT64, FLOAT, BYTES = "int64", "float", "bytes"


@dataclasses.dataclass(frozen=True)
class Feature:
  name: str
  dtype: str  # INT64, FLOAT or BYTES (tf.train.Example's Int64List/FloatList/BytesList)
  shape: object  # "seq", "pred" or an int; BYTES features hold one value (shape 1)

  def length(self, max_seq_length, max_predictions_per_seq):
    return {"seq": max_seq_length, "pred": max_predictions_per_seq}.get(
        self.shape, self.shape)


PRETRAINING_FEATURES = (
    Feature("input_ids", INT64, "seq"),
    Feature("input_mask", INT64, "seq"),
    Feature("segment_ids", INT64, "seq"),
    Feature("masked_lm_positions", INT64, "pred"),
    Feature("masked_lm_ids", INT64, "pred"),
    Feature("masked_lm_weights", FLOAT, "pred"),
    Feature("next_sentence_labels", INT64, 1),
)


def feature_lengths(features, max_seq_length, max_predictions_per_seq):
  return {f.name: f.length(max_seq_length, max_predictions_per_seq) for f in features}


def tf_feature_spec(features, max_seq_length, max_predictions_per_seq):
  """{name: tf.io.FixedLenFeature} for tf.io.parse_example (imports TF lazily)."""
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  dtypes = {INT64: tf.int64, FLOAT: tf.float32}
  spec = {}
  for f in features:
    if f.dtype == BYTES:  # one packed value per record, decoded by the reader
      spec[f.name] = tf.io.FixedLenFeature([], tf.string)
    else:
      spec[f.name] = tf.io.FixedLenFeature(
          [f.length(max_seq_length, max_predictions_per_seq)], dtypes[f.dtype])
  return spec
