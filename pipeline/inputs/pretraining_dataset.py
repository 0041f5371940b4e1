"""tf.data input for pretraining records (the output of create_pretraining_data).

Shape legend: B=batch (per rank, per micro-step), S=max_seq_length,
P=max_predictions_per_seq.

Training input is sharded by FILE: rank r of N reads files r, r+N, ... of the
sorted file list, so ranks never read the same record and each rank's stream
depends only on (files, seed, rank). Within a rank the file order and a
shuffle buffer are seeded, so two runs with the same seed see the same
batches; the iterator over the returned dataset can be saved with
tf.train.Checkpoint(iterator=...) to resume at the exact input position.

Evaluation input is sharded by RECORD (every rank reads every eval file and
keeps every N-th record), so any number of ranks can split a small eval set
and summed metrics do not depend on the number of ranks.
"""

import os

import tensorflow as tf

from pipeline.core.errors import InputError
from pipeline.inputs import parsing
from pipeline.records import schema

SPLITS = ("train", "eval")
# Files read at once per rank; google-research/bert reads min(4, files).
_CYCLE_LENGTH = 4


def shard_files(files, rank, world_size):
  """This rank's distinct share of `files`: files[rank::world_size].

  Raises:
    InputError: fewer files than ranks (some rank would get no data).
  """
  if not 0 <= rank < world_size:
    raise ValueError(f"rank {rank} is not in [0, {world_size})")
  if len(files) < world_size:
    raise InputError(os.path.dirname(files[0]) if files else "<no files>",
                     f"{len(files)} files cannot be split between "
                     f"{world_size} ranks (each rank reads whole files): "
                     "write the records with more shards")
  return list(files)[rank::world_size]


def interleaved_records(files, seed):
  """Endless stream of records of `files`: seeded file order per epoch.

  Every file-sharded reader (pretraining and distill records) uses it, so
  the same files and seed give the same record order.
  """
  paths = tf.data.Dataset.from_tensor_slices(files)
  paths = paths.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
  paths = paths.repeat()
  return paths.interleave(
      tf.data.TFRecordDataset, cycle_length=min(_CYCLE_LENGTH, len(files)),
      block_length=1, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def train_dataset(records_dir, batch_size, max_seq_length,
                  max_predictions_per_seq, seed, rank=0, world_size=1,
                  shuffle_buffer_size=1000):
  """Endless training batches for one rank.

  Args:
    records_dir: a create_pretraining_data output directory.
    batch_size: examples per batch on this rank (drop_remainder: fixed B).
    max_seq_length, max_predictions_per_seq: the records' S and P.
    seed: base seed; the rank's streams use seed + rank.
    rank, world_size: file-level sharding (see shard_files).
    shuffle_buffer_size: records shuffled across files; <= 1 disables.

  Returns:
    tf.data.Dataset of {feature: [B, length]} (int32; weights float32).
  """
  files = shard_files(schema.record_paths(records_dir, "train"), rank, world_size)
  records = interleaved_records(files, seed + rank)
  if shuffle_buffer_size > 1:
    records = records.shuffle(shuffle_buffer_size, seed=seed + rank)
  batches = records.batch(batch_size, drop_remainder=True)
  parse = parsing.parse_fn(schema.PRETRAINING_FEATURES, max_seq_length,
                           max_predictions_per_seq)
  batches = batches.map(parse, num_parallel_calls=tf.data.AUTOTUNE,
                        deterministic=True)
  return batches.prefetch(tf.data.AUTOTUNE)


def eval_dataset(records_dir, batch_size, max_seq_length,
                 max_predictions_per_seq, rank=0, world_size=1):
  """One pass over this rank's share (every world_size-th record) of eval.

  The last batch may be smaller than batch_size (nothing is dropped).
  """
  records = tf.data.TFRecordDataset(schema.record_paths(records_dir, "eval"))
  if world_size > 1:
    records = records.shard(world_size, rank)
  batches = records.batch(batch_size).map(parsing.parse_fn(
      schema.PRETRAINING_FEATURES, max_seq_length, max_predictions_per_seq))
  return batches.prefetch(tf.data.AUTOTUNE)


def synthetic_batch(batch_size, max_seq_length, max_predictions_per_seq,
                    vocab_size, seed=0):
  """One random batch with the shapes/dtypes of train_dataset's batches."""
  g = tf.random.Generator.from_seed(seed)
  b, s, p = batch_size, max_seq_length, max_predictions_per_seq
  positions = tf.sort(g.uniform([b, p], 1, s, dtype=tf.int32), axis=-1)
  return {
      "input_ids": g.uniform([b, s], 0, vocab_size, dtype=tf.int32),
      "input_mask": tf.ones([b, s], tf.int32),
      "segment_ids": tf.cast(tf.range(s)[tf.newaxis] >= s // 2,
                             tf.int32) * tf.ones([b, 1], tf.int32),
      "masked_lm_positions": positions,
      "masked_lm_ids": g.uniform([b, p], 0, vocab_size, dtype=tf.int32),
      "masked_lm_weights": tf.ones([b, p], tf.float32),
      "next_sentence_labels": g.uniform([b, 1], 0, 2, dtype=tf.int32),
  }


def synthetic_dataset(batch_size, max_seq_length, max_predictions_per_seq,
                      vocab_size, seed=0):
  """The same in-memory batch forever: input cost ~0, for benchmarks."""
  batch = synthetic_batch(batch_size, max_seq_length,
                          max_predictions_per_seq, vocab_size, seed)
  return tf.data.Dataset.from_tensors(batch).repeat()
