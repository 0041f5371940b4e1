"""The one parser of serialized records, for every reader (training and eval).

Shape legend: B=batch, S=max_seq_length, P=max_predictions_per_seq, C=number
of labels, K=cached teacher ids per position.

The parse spec comes from the record kind's schema feature tuple
(pipeline/records/schema.py), so a reader cannot disagree with the writer.
Batches: int64 features become int32 (what the models take), float features
stay float32, float16 vectors (schema.HALF) become float32, and the packed teacher bytes of distill records are decoded by
pipeline/labels/packed_labels.py into teacher_ids int32 [B,P,K],
teacher_values float32 [B,P,K] and teacher_tail_mass float32 [B,P].
"""

import tensorflow as tf

from pipeline.labels import packed_labels
from pipeline.records import schema


def _packed_names(features):
  """The features stored as packed bytes (decoded, not returned as is)."""
  return {f.name for f in features if f.dtype == schema.BYTES}


def _half_names(features):
  return {f.name: f for f in features if f.dtype == schema.HALF}


def decode_half(raw, length):
  """raw float16 bytes [B] -> float32 [B, length] (via uint16: float16 is not a
  decode_raw type on every TF build)."""
  bits = tf.io.decode_raw(raw, tf.uint16, little_endian=True)  # [B, length]
  bits = tf.ensure_shape(bits, [None, length])
  return tf.cast(tf.bitcast(bits, tf.float16), tf.float32)


def _as_model_dtype(value):
  return tf.cast(value, tf.int32) if value.dtype == tf.int64 else value


def parse_fn(features, max_seq_length, max_predictions_per_seq=0,
             num_labels=None, labels=None):
  """A map function: serialized records [B] -> {name: [B, ...]}.

  Args:
    features: the record kind's schema tuple (e.g. schema.DISTILL_FEATURES).
    max_seq_length, max_predictions_per_seq, num_labels: S, P and C of the
      records (P: pretraining kinds; C: task distill records).
    labels: for features with packed teacher targets, what decodes them:
      anything with truncation_factor (K) and id_dtype, such as
      distill_dataset.LabelSpec.
  Raises:
    ValueError: packed features without `labels`.
  """
  spec = schema.tf_feature_spec(features, max_seq_length,
                                max_predictions_per_seq, num_labels)
  packed = _packed_names(features)
  halves = _half_names(features)
  if packed and labels is None:
    raise ValueError(f"features {sorted(packed)} are packed: pass the labels' "
                     "truncation_factor and id_dtype")

  def parse(serialized):  # [B] strings -> {name: [B, length]}
    parsed = tf.io.parse_example(serialized, spec)
    batch = {name: _as_model_dtype(value) for name, value in parsed.items()
             if name not in packed and name not in halves}
    for name, feature in halves.items():
      batch[name] = decode_half(parsed[name], feature.length(
          max_seq_length, max_predictions_per_seq, num_labels))
    if packed:
      batch.update(packed_labels.decode_teacher_targets(
          parsed, labels.truncation_factor, labels.id_dtype,
          max_predictions_per_seq))
    return batch

  return parse
