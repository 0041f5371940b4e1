"""Records of one split of a records directory, as tf.data batches for one rank.

Shared by the readers whose records are whole examples (classification, QA):
rank r reads every world_size-th record of the split, so the ranks' shares
are disjoint and together are the split, in record order.
"""

import tensorflow as tf

from pipeline.records import schema


def rank_records(data_dir, split, rank=0, world_size=1):
  """This rank's share of the split's serialized records."""
  if not 0 <= rank < world_size:
    raise ValueError(f"rank {rank} is not in [0, {world_size})")
  records = tf.data.TFRecordDataset(schema.record_paths(data_dir, split))
  return records.shard(world_size, rank) if world_size > 1 else records


def train_batches(records, parse, batch_size, seed, rank=0, shuffle_buffer_size=1000):
  """Endless shuffled batches (drop remainder) of `records`, parsed by `parse`.

  The order depends only on (files, seed, rank); the iterator can be saved
  with tf.train.Checkpoint(iterator=...) to resume at the exact position.
  """
  if shuffle_buffer_size > 1:
    records = records.shuffle(shuffle_buffer_size, seed=seed + rank,
                              reshuffle_each_iteration=True)
  batches = records.repeat().batch(batch_size, drop_remainder=True)
  batches = batches.map(parse, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  return batches.prefetch(tf.data.AUTOTUNE)


def eval_batches(records, parse, batch_size):
  """One pass over `records` in order (the last batch may be short)."""
  return records.batch(batch_size).map(parse).prefetch(tf.data.AUTOTUNE)
