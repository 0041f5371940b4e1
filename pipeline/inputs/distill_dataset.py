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

import tensorflow as tf

from pipeline.core import kinds
from pipeline.inputs import parsing
from pipeline.inputs import pretraining_dataset
from pipeline.records import schema



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

  def parse_fn(self):
    """serialized distill records [B] -> decoded batch (see the module doc)."""
    return parsing.parse_fn(schema.DISTILL_FEATURES, self.max_seq_length,
                            self.max_predictions_per_seq, labels=self)


def read_labels(labels_dir, vocab_file):
  """The manifest of a completed pretraining label cache made with `vocab_file`.

  Raises:
    InputError: incomplete or changed cache, another kind of data, a missing
      vocab file, or a cache whose vocab_sha256 is not the vocab file's.
  """
  _, manifest = kinds.read(labels_dir, kinds.DISTILL_RECORDS)
  kinds.check_vocab(manifest, vocab_file)
  return manifest


def train_dataset(labels_dir, spec, batch_size, seed, rank=0, world_size=1,
                  shuffle_buffer_size=1000):
  """Endless training batches for one rank (see pretraining_dataset.train_dataset)."""
  files = pretraining_dataset.shard_files(
      schema.record_paths(labels_dir, "train"), rank, world_size)
  # The same record order as pretraining on the same files and seed.
  records = pretraining_dataset.interleaved_records(files, seed + rank)
  if shuffle_buffer_size > 1:
    records = records.shuffle(shuffle_buffer_size, seed=seed + rank)
  batches = records.batch(batch_size, drop_remainder=True)
  batches = batches.map(spec.parse_fn(), num_parallel_calls=tf.data.AUTOTUNE,
                        deterministic=True)
  return batches.prefetch(tf.data.AUTOTUNE)


def eval_dataset(labels_dir, spec, batch_size, rank=0, world_size=1):
  """One pass over this rank's share (every world_size-th record) of eval."""
  records = tf.data.TFRecordDataset(schema.record_paths(labels_dir, "eval"))
  if world_size > 1:
    records = records.shard(world_size, rank)
  return records.batch(batch_size).map(spec.parse_fn()).prefetch(
      tf.data.AUTOTUNE)


def datasets(labels_dir, spec, batch_size, eval_batch_size, seed, rank=0,
             world_size=1, shuffle_buffer_size=1000):
  """(train, eval) of a label cache; eval is None without an eval split."""
  train = train_dataset(labels_dir, spec, batch_size, seed, rank, world_size,
                        shuffle_buffer_size)
  evals = None
  if schema.has_split(labels_dir, "eval"):
    evals = eval_dataset(labels_dir, spec, eval_batch_size, rank, world_size)
  return train, evals
