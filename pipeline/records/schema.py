"""The record schema, defined once: every writer and reader imports it.

Pretraining records carry exactly google-research/bert's features and dtypes, so
they also work with existing BERT tooling. Later stages (teacher labels) extend
this schema here rather than declaring their own. Also here: which features
the models take as inputs, and where a stage's record files are
(record_files); pipeline/inputs/parsing.py reads them all.
"""

import dataclasses
import glob
import os

from pipeline.core.errors import InputError

# Shape kinds: "seq" = [max_seq_length], "pred" = [max_predictions_per_seq],
# "labels" = [num_labels] (classification tasks), or a fixed int length.
INT64, FLOAT, BYTES = "int64", "float", "bytes"
# A float16 vector stored as its raw little-endian bytes in one BytesList value
# (tf.train.Example has no 16-bit floats); readers decode it to float32.
HALF = "half"


@dataclasses.dataclass(frozen=True)
class Feature:
  name: str
  dtype: str  # INT64, FLOAT, BYTES (Int64List/FloatList/BytesList) or HALF (see above)
  shape: object  # "seq", "pred" or an int; BYTES features hold one value (shape 1)

  def length(self, max_seq_length, max_predictions_per_seq, num_labels=None):
    return {"seq": max_seq_length, "pred": max_predictions_per_seq,
            "labels": num_labels}.get(self.shape, self.shape)


PRETRAINING_FEATURES = (
    Feature("input_ids", INT64, "seq"),
    Feature("input_mask", INT64, "seq"),
    Feature("segment_ids", INT64, "seq"),
    Feature("masked_lm_positions", INT64, "pred"),
    Feature("masked_lm_ids", INT64, "pred"),
    Feature("masked_lm_weights", FLOAT, "pred"),
    Feature("next_sentence_labels", INT64, 1),
)


# Distill records = pretraining records + the teacher's cached outputs. The
# original features stay in BERT's format (so distill records still read as
# pretraining records); the teacher's are packed bytes decoded by the reader:
# only the first n = sum(masked_lm_weights) masked positions carry targets (the
# rest are padding), K per position, little-endian:
TEACHER_FEATURES = (
    # [n, K] token ids: uint16 when the vocab has <= 65,536 entries, else int32
    # (the manifest's config says which).
    Feature("teacher_ids", BYTES, 1),
    # [n, K] float16: top-k probabilities at temperature T ("topk"), or the
    # importance weights of the sampled ids ("sampled"; they sum to 1 per row).
    Feature("teacher_values", BYTES, 1),
    # [n] float16: probability mass not covered by the K ids (0 for "sampled").
    Feature("teacher_tail_mass", BYTES, 1),
    # [2] the teacher's next-sentence logits (temperature 1).
    Feature("teacher_nsp_logits", FLOAT, 2),
)
DISTILL_FEATURES = PRETRAINING_FEATURES + TEACHER_FEATURES


# Classification records (task-specific distillation): google-research/bert's
# run_classifier features. The "pred" length is unused by them.
CLASSIFICATION_FEATURES = (
    Feature("input_ids", INT64, "seq"),
    Feature("input_mask", INT64, "seq"),
    Feature("segment_ids", INT64, "seq"),
    Feature("label_ids", INT64, 1),
)
# Task distill records = classification records + the fine-tuned teacher's full
# logits (temperature 1; the student applies T). [num_labels] float32: small
# enough that truncation buys nothing.
TASK_TEACHER_FEATURES = (
    Feature("teacher_logits", FLOAT, "labels"),
)
TASK_DISTILL_FEATURES = CLASSIFICATION_FEATURES + TASK_TEACHER_FEATURES


# What the models read of each record kind (the other features are targets).
PRETRAINING_MODEL_INPUTS = ("input_ids", "input_mask", "segment_ids",
                            "masked_lm_positions")
CLASSIFICATION_MODEL_INPUTS = ("input_ids", "input_mask", "segment_ids")


# Extractive QA records (SQuAD): google-research/bert run_squad's features, one
# record per window of a context ([CLS] query [SEP] window [SEP], padded to S).
# start/end_positions index the window's tokens; 0 ([CLS]) when the answer is
# outside the window or the question has none. unique_id matches a window to
# its entry in the dev split's examples.jsonl sidecar (offsets for mapping a
# predicted span back to the context text).
QA_FEATURES = (
    Feature("unique_id", INT64, 1),
    Feature("input_ids", INT64, "seq"),
    Feature("input_mask", INT64, "seq"),
    Feature("segment_ids", INT64, "seq"),
    Feature("start_positions", INT64, 1),
    Feature("end_positions", INT64, 1),
    Feature("is_impossible", INT64, 1),
)
# Evaluation windows also say which question (example_index, its line in the
# sidecar) and which of its windows (doc_span_index) they are.
QA_EVAL_FEATURES = QA_FEATURES + (
    Feature("example_index", INT64, 1),
    Feature("doc_span_index", INT64, 1),
)
QA_MODEL_INPUTS = ("input_ids", "input_mask", "segment_ids")
# QA distill records = QA records + the fine-tuned teacher's start and end
# logits of every window position (temperature 1), float16 [S] each: 4 bytes
# per position against 24 for the record's own three int64 [S] features.
QA_TEACHER_FEATURES = (
    Feature("teacher_start_logits", HALF, "seq"),
    Feature("teacher_end_logits", HALF, "seq"),
)


def feature_lengths(features, max_seq_length, max_predictions_per_seq, num_labels=None):
  return {f.name: f.length(max_seq_length, max_predictions_per_seq, num_labels)
          for f in features}


def tf_feature_spec(features, max_seq_length, max_predictions_per_seq=0, num_labels=None):
  """{name: tf.io.FixedLenFeature} for tf.io.parse_example (imports TF lazily)."""
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  dtypes = {INT64: tf.int64, FLOAT: tf.float32}
  spec = {}
  for f in features:
    if f.dtype in (BYTES, HALF):  # one packed value per record, decoded by the reader
      spec[f.name] = tf.io.FixedLenFeature([], tf.string)
    else:
      spec[f.name] = tf.io.FixedLenFeature(
          [f.length(max_seq_length, max_predictions_per_seq, num_labels)], dtypes[f.dtype])
  return spec


# Files: every record kind lives in `<dir>/<split>/*.tfrecord` (the stage
# output's other files, such as .index.npy sidecars, are not records).


def _names(directory, split="*"):
  """Sorted "<split>/<file>.tfrecord" names (split "*": every split)."""
  pattern = os.path.join(glob.escape(directory), split, "*.tfrecord")
  return sorted(os.path.relpath(p, directory) for p in glob.glob(pattern))


def has_split(directory, split):
  """Whether `<directory>/<split>/` holds any .tfrecord file."""
  return bool(_names(directory, glob.escape(split)))


def record_files(directory, splits=None):
  """Names ("train/part-00000.tfrecord") of a records directory's files.

  The one lister of record files: readers open them, label stages write one
  output file of the same name per input file.

  Args:
    directory: a stage output of records (pretraining, distill,
      classification or task distill records).
    splits: the splits to list, in this order (sorted within each); None:
      every split, all names sorted.
  Raises:
    InputError: a split asked for (or, with None, the directory) has none.
  """
  if splits is None:
    names = _names(directory)
    if not names:
      raise InputError(directory, "no .tfrecord files in any <split>/ directory")
    return names
  names = []
  for split in splits:
    mine = _names(directory, glob.escape(split))
    if not mine:
      found = sorted({n.split(os.sep, 1)[0] for n in _names(directory)})
      raise InputError(os.path.join(directory, split),
                       f"no .tfrecord files: no records of split {split!r} "
                       f"(the records have {found})")
    names += mine
  return names


def record_paths(directory, split):
  """Sorted paths of `<directory>/<split>/*.tfrecord` (InputError if none):
  what a tf.data reader opens."""
  return [os.path.join(directory, name) for name in record_files(directory, (split,))]
