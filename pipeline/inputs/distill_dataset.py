"""tf.data input for distill records (the output of extract_teacher_labels).

Shape legend: B=batch (per rank, per micro-step), S=max_seq_length,
P=max_predictions_per_seq, K=truncation factor.

Distill records are pretraining records plus the teacher's packed labels
(schema.TEACHER_FEATURES). Batches are pipeline/inputs/pretraining_dataset.py's (same file
sharding between ranks, seeded order, resumable iterator) with the labels
decoded by pipeline/labels/packed_labels.py:

  teacher_ids int32 [B,P,K], teacher_values float32 [B,P,K],
  teacher_tail_mass float32 [B,P] (rows past a record's real masked
  positions are 0), teacher_nsp_logits float32 [B,2].
"""

import dataclasses
import os

import tensorflow as tf

from pipeline.inputs import pretraining_dataset
from pipeline.records import schema
from pipeline.core import stage
from pipeline.labels import packed_labels
from pipeline.labels import pretraining_labels

LABELS_STAGE = pretraining_labels.STAGE


@dataclasses.dataclass(frozen=True)
class LabelSpec:
  """What a reader needs to know about a label cache (from its manifest)."""
  max_seq_length: int
  max_predictions_per_seq: int
  truncation_factor: int  # K
  id_dtype: str  # "uint16" or "int32"
  label_method: str  # "topk" or "sampled"
  temperature: float  # T of the cached p_T
  vocab_size: int

  @classmethod
  def from_manifest(cls, manifest):
    config = manifest["config"]
    return cls(config["max_seq_length"], config["max_predictions_per_seq"],
               config["truncation_factor"], config["teacher_id_dtype"],
               config["label_method"], float(config["temperature"]),
               config["vocab_size"])


def read_labels(labels_dir, vocab_file):
  """The manifest of a completed label cache made with `vocab_file`.

  Raises:
    InputError: incomplete or changed cache, missing vocab file, or a cache
      whose vocab_sha256 is not the vocab file's.
  """
  manifest = stage.read_input(labels_dir, LABELS_STAGE)
  pretraining_labels.check_vocab(manifest, vocab_file, "teacher labels")
  return manifest


def read_inputs(vocab_file, labels_dir=None, records_dir=None):
  """A distillation run's input, checked against `vocab_file`.

  Returns:
    (manifest, LabelSpec) of a label cache (offline distillation), or
    (manifest, None) of pretraining records (an online teacher).
  """
  if labels_dir:
    manifest = read_labels(labels_dir, vocab_file)
    return manifest, LabelSpec.from_manifest(manifest)
  manifest = stage.read_input(records_dir, pretraining_labels.INPUT_STAGE)
  pretraining_labels.check_vocab(manifest, vocab_file)
  return manifest, None


def _parse_fn(spec):
  """Parses and decodes a batch of serialized distill records."""
  features = schema.tf_feature_spec(schema.DISTILL_FEATURES,
                                    spec.max_seq_length,
                                    spec.max_predictions_per_seq)
  packed = {f.name for f in schema.TEACHER_FEATURES if f.dtype == schema.BYTES}

  def parse(serialized):  # [B] strings -> {name: [B, ...]}
    parsed = tf.io.parse_example(serialized, features)
    batch = {name: tf.cast(value, tf.int32) if value.dtype == tf.int64
             else value for name, value in parsed.items()
             if name not in packed}
    batch.update(packed_labels.decode_teacher_targets(
        parsed, spec.truncation_factor, spec.id_dtype,
        spec.max_predictions_per_seq))
    return batch

  return parse


def train_dataset(labels_dir, spec, batch_size, seed, rank=0, world_size=1,
                  shuffle_buffer_size=1000):
  """Endless training batches for one rank (see pretraining_dataset.train_dataset)."""
  files = pretraining_dataset.shard_files(pretraining_dataset.record_files(labels_dir, "train"), rank,
                              world_size)
  # The same record order as pretraining on the same files and seed.
  records = pretraining_dataset._interleaved_records(  # pylint: disable=protected-access
      files, seed + rank)
  if shuffle_buffer_size > 1:
    records = records.shuffle(shuffle_buffer_size, seed=seed + rank)
  batches = records.batch(batch_size, drop_remainder=True)
  batches = batches.map(_parse_fn(spec), num_parallel_calls=tf.data.AUTOTUNE,
                        deterministic=True)
  return batches.prefetch(tf.data.AUTOTUNE)


def has_split(labels_dir, split):
  return bool(tf.io.gfile.glob(os.path.join(labels_dir, split, "*.tfrecord")))


def eval_dataset(labels_dir, spec, batch_size, rank=0, world_size=1):
  """One pass over this rank's share (every world_size-th record) of eval."""
  records = tf.data.TFRecordDataset(pretraining_dataset.record_files(labels_dir, "eval"))
  if world_size > 1:
    records = records.shard(world_size, rank)
  return records.batch(batch_size).map(_parse_fn(spec)).prefetch(
      tf.data.AUTOTUNE)


def datasets(labels_dir, spec, batch_size, eval_batch_size, seed, rank=0,
             world_size=1, shuffle_buffer_size=1000):
  """(train, eval) of a label cache; eval is None without an eval split."""
  train = train_dataset(labels_dir, spec, batch_size, seed, rank, world_size,
                        shuffle_buffer_size)
  evals = None
  if has_split(labels_dir, "eval"):
    evals = eval_dataset(labels_dir, spec, eval_batch_size, rank, world_size)
  return train, evals
