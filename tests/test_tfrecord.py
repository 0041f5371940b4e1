"""The TF-free Example encoder gives protobuf's canonical bytes, and TF reads it."""

import numpy as np
import pytest

from pipeline.records import schema
from pipeline.records import tfrecord


def _columns(n, seq=16, pred=4, seed=0):
  rng = np.random.default_rng(seed)
  return {
      "input_ids": rng.integers(0, 30522, (n, seq)),
      "input_mask": rng.integers(0, 2, (n, seq)),
      "segment_ids": rng.integers(0, 2, (n, seq)),
      "masked_lm_positions": rng.integers(0, seq, (n, pred)),
      "masked_lm_ids": np.concatenate([rng.integers(0, 3, (n, 1)),
                                       rng.integers(0, 3_000_000, (n, pred - 1))], 1),
      "masked_lm_weights": rng.random((n, pred)).astype(np.float32),
      "next_sentence_labels": rng.integers(0, 2, (n, 1)),
  }


def _dtypes():
  return {f.name: f.dtype for f in schema.PRETRAINING_FEATURES}


def test_bytes_equal_protobuf_deterministic_serialization():
  tf = pytest.importorskip("tensorflow")
  cols = _columns(50)
  flat, lengths = tfrecord.encode_examples(cols, _dtypes())
  offsets = np.concatenate([[0], np.cumsum(lengths)])
  for i in range(50):
    ex = tf.train.Example()
    for f in schema.PRETRAINING_FEATURES:
      values = cols[f.name][i].tolist()
      target = ex.features.feature[f.name]
      (target.float_list if f.dtype == schema.FLOAT else target.int64_list).value.extend(values)
    assert flat[offsets[i]:offsets[i + 1]].tobytes() == ex.SerializeToString(deterministic=True)


def test_tensorflow_reads_written_records_with_the_schema(tmp_path):
  tf = pytest.importorskip("tensorflow")
  cols = _columns(20)
  path = str(tmp_path / "x.tfrecord")
  with tfrecord.TFRecordWriter(path) as w:
    w.write_batch(*tfrecord.encode_examples(cols, _dtypes()))
  spec = schema.tf_feature_spec(schema.PRETRAINING_FEATURES, 16, 4)
  ds = tf.data.TFRecordDataset(path).batch(20).map(lambda x: tf.io.parse_example(x, spec))
  parsed = next(iter(ds))
  for name, values in cols.items():
    np.testing.assert_array_equal(parsed[name].numpy(), values.astype(parsed[name].dtype.as_numpy_dtype))
  assert [len(r) for r in tfrecord.iter_records(path)] == [len(r.numpy()) for r in tf.data.TFRecordDataset(path)]


def test_iter_records_detects_corruption(tmp_path):
  path = tmp_path / "x.tfrecord"
  with tfrecord.TFRecordWriter(str(path)) as w:
    w.write_batch(*tfrecord.encode_examples(_columns(3), _dtypes()))
  data = bytearray(path.read_bytes())
  data[40] ^= 0xFF
  path.write_bytes(bytes(data))
  with pytest.raises(ValueError, match="corrupt"):
    list(tfrecord.iter_records(str(path)))


def test_negative_values_are_rejected():
  with pytest.raises(ValueError):
    tfrecord.encode_examples({"a": np.array([[-1]])}, {"a": schema.INT64})


def test_bytes_features_match_protobuf():
  tf = pytest.importorskip("tensorflow")
  rng = np.random.default_rng(3)
  n = 40
  lengths = rng.integers(0, 300, n)  # 0 (empty value) to beyond one varint byte
  data = rng.integers(0, 256, (n, 300)).astype(np.uint8)
  cols = {"blob": (data, lengths), "input_ids": rng.integers(0, 100, (n, 5))}
  dtypes = {"blob": schema.BYTES, "input_ids": schema.INT64}
  flat, sizes = tfrecord.encode_examples(cols, dtypes)
  offsets = np.concatenate([[0], np.cumsum(sizes)])
  for i in range(n):
    ex = tf.train.Example()
    ex.features.feature["blob"].bytes_list.value.append(data[i, :lengths[i]].tobytes())
    ex.features.feature["input_ids"].int64_list.value.extend(cols["input_ids"][i].tolist())
    assert flat[offsets[i]:offsets[i + 1]].tobytes() == ex.SerializeToString(deterministic=True)
