"""tf.data input over the corpus fixture's records (S=64, P=10, 4 train files)."""

import numpy as np
import pytest
import tensorflow as tf

from pipeline.inputs import pretraining_dataset
from pipeline.records import schema
from pipeline.core.errors import InputError

S, P = 64, 10


def _train(records, batch=8, seed=1, rank=0, world=1, shuffle=100):
  return pretraining_dataset.train_dataset(records, batch, S, P, seed, rank, world,
                               shuffle_buffer_size=shuffle)


def _rows(ds, batches):
  """input_ids rows of the first `batches` batches, as tuples."""
  rows = []
  for batch in ds.take(batches):
    rows += [tuple(r) for r in batch["input_ids"].numpy()]
  return rows


def test_file_sharding_is_disjoint_and_complete(corpus):
  files = schema.record_paths(corpus["records"], "train")
  assert len(files) == 4
  shares = [pretraining_dataset.shard_files(files, r, 3) for r in range(3)]
  assert sorted(sum(shares, [])) == files
  assert all(set(a).isdisjoint(b) for i, a in enumerate(shares)
             for b in shares[i + 1:])
  with pytest.raises(InputError, match="4 files cannot be split between 5"):
    pretraining_dataset.shard_files(files, 0, 5)


def test_ranks_read_distinct_records(corpus):
  rank0 = set(_rows(_train(corpus["records"], rank=0, world=2), 6))
  rank1 = set(_rows(_train(corpus["records"], rank=1, world=2), 6))
  assert len(rank0) > 40 and len(rank1) > 40
  assert rank0.isdisjoint(rank1)


def test_order_is_deterministic_per_seed(corpus):
  first = _rows(_train(corpus["records"], seed=7), 4)
  assert _rows(_train(corpus["records"], seed=7), 4) == first
  assert _rows(_train(corpus["records"], seed=8), 4) != first


def test_batches_have_schema_shapes_and_int32(corpus):
  batch = next(iter(_train(corpus["records"], batch=5)))
  assert batch["input_ids"].shape == (5, S)
  assert batch["masked_lm_positions"].shape == (5, P)
  assert batch["next_sentence_labels"].shape == (5, 1)
  assert batch["input_ids"].dtype == tf.int32
  assert batch["masked_lm_weights"].dtype == tf.float32
  synthetic = pretraining_dataset.synthetic_dataset(5, S, P, vocab_size=400)
  assert synthetic.element_spec == _train(corpus["records"],
                                          batch=5).element_spec


def test_iterator_checkpoint_resumes_exact_position(corpus, tmp_path):
  iterator = iter(_train(corpus["records"]))
  for _ in range(3):
    next(iterator)
  prefix = tf.train.Checkpoint(iterator=iterator).write(str(tmp_path / "it"))
  expected = [next(iterator)["input_ids"].numpy() for _ in range(3)]
  fresh = iter(_train(corpus["records"]))
  tf.train.Checkpoint(iterator=fresh).read(prefix).assert_consumed()
  for want in expected:
    np.testing.assert_array_equal(next(fresh)["input_ids"].numpy(), want)


def test_eval_shards_cover_every_record_once(corpus):
  whole = _rows(pretraining_dataset.eval_dataset(corpus["records"], 4, S, P), 100)
  parts = [_rows(pretraining_dataset.eval_dataset(corpus["records"], 4, S, P, r, 2), 100)
           for r in range(2)]
  assert len(whole) == 11  # Every eval record, the last batch partial.
  assert sorted(parts[0] + parts[1]) == sorted(whole)
