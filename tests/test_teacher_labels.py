"""extract_teacher_labels on the fixture records with a tiny random teacher:
exact outputs, labels equal to a direct computation, unbiased sampling, the
stage contract (no-op rerun, config and vocab conflicts, SIGKILL resume,
mpirun), and the readers' decoders."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from pipeline.records import schema
from pipeline.labels import inference
from pipeline.labels import packed_labels
from pipeline.records import tfrecord
from tests.conftest import MPIRUN, ROOT, run_tool, start_tool, tool_env, tree_bytes
from tests.test_stages import _assert_one_line_error, _kill_after_first, _listing

tf = pytest.importorskip("tensorflow")

TOPK = ["--truncation_factor=8", "--temperature=2.0", "--batch_size=32"]
SAMPLED = ["--label_method=sampled", "--truncation_factor=32", "--batch_size=64",
           "--seed=7"]
NAMES = [f"train/part-{i:05d}" for i in range(4)] + ["eval/part-00000"]


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
  """A random BertPretrainer (vocab 400) saved as a Google TF1 checkpoint."""
  import keras  # pylint: disable=import-outside-toplevel
  from modeling.networks import bert  # pylint: disable=import-outside-toplevel
  from modeling.checkpoints import google
  from modeling.models import heads
  d = tmp_path_factory.mktemp("teacher")
  keras.utils.set_random_seed(7)
  # A wide init makes the distribution peaked, so the top-k is not a tie.
  config = bert.BertConfig(vocab_size=400, hidden_size=32, num_hidden_layers=2,
                           num_attention_heads=2, intermediate_size=64,
                           max_position_embeddings=64, hidden_act="gelu_new",
                           initializer_range=0.5)
  model = heads.BertPretrainer(config)
  model.build(None)
  prefix = google.save_tf1_checkpoint(model, str(d / "bert_model.ckpt"))
  return {"ckpt": prefix, "config": str(d / "bert_config.json"), "dir": str(d)}


def _flags(corpus, teacher, out, *extra):
  return [f"--bert_config_file={teacher['config']}", f"--init_checkpoint={teacher['ckpt']}",
          f"--vocab_file={corpus['vocab']}", f"--input_dir={corpus['records']}",
          f"--output_dir={out}", *extra]


@pytest.fixture(scope="module")
def topk_out(corpus, teacher, tmp_path_factory):
  out = str(tmp_path_factory.mktemp("distill") / "topk")
  run_tool("extract_teacher_labels", *_flags(corpus, teacher, out, *TOPK))
  return out


@pytest.fixture(scope="module")
def sampled_out(corpus, teacher, tmp_path_factory):
  out = str(tmp_path_factory.mktemp("distill") / "sampled")
  run_tool("extract_teacher_labels", *_flags(corpus, teacher, out, *SAMPLED))
  return out


def _manifest(d):
  with open(os.path.join(d, "manifest.json")) as f:
    return json.load(f)


def _records(d, name):
  return list(tfrecord.iter_records(os.path.join(d, name + ".tfrecord")))


def _teacher_bytes(example):
  feature = example.features.feature
  return {f.name: feature[f.name].bytes_list.value[0] for f in schema.TEACHER_FEATURES
          if f.dtype == schema.BYTES}


def test_outputs_files_and_counts(corpus, topk_out):
  expected = [n + ext for n in NAMES for ext in (".tfrecord", ".index.npy", ".sources.npy")]
  assert _listing(topk_out) == sorted(expected + ["COMPLETED", "manifest.json", "stats.json"])
  m, records = _manifest(topk_out), _manifest(corpus["records"])
  for n in NAMES:  # indexes are byte copies, records 1:1
    with open(os.path.join(topk_out, n + ".index.npy"), "rb") as f, open(
        os.path.join(corpus["records"], n + ".index.npy"), "rb") as g:
      assert f.read() == g.read()
    assert len(_records(topk_out, n)) == len(_records(corpus["records"], n))
  c = m["counts"]
  assert c["instances"] == sum(records["counts"][f"{s}_instances"] for s in ("train", "eval"))
  assert c["cache_entries"] == 8 * c["masked_positions"]
  sizes = [os.path.getsize(os.path.join(d, n + ".tfrecord"))
           for d in (topk_out, corpus["records"]) for n in NAMES]
  per_entry = (sum(sizes[:5]) - sum(sizes[5:])) / c["cache_entries"]
  assert c["cache_bytes_per_entry"] == round(per_entry, 4)
  assert c["lists_layout_cache_bytes_per_entry"] > c["cache_bytes_per_entry"]
  cfg = m["config"]
  assert (cfg["vocab_size"], cfg["teacher_id_dtype"], cfg["truncation_factor"]) == (
      400, "uint16", 8)
  assert cfg["vocab_sha256"] == records["config"]["vocab_sha256"]
  assert len(cfg["teacher_fingerprint"]) == 64


def _direct(teacher, examples, temperature):
  """The teacher's p_T [N,P,V] and NSP logits [N,2], computed directly."""
  from modeling.networks import bert  # pylint: disable=import-outside-toplevel
  from modeling.checkpoints import loading
  from modeling.models import heads
  config = bert.load_config(teacher["config"], gelu_convention="google")
  model = heads.BertPretrainer(config)
  loading.load_checkpoint(model, teacher["ckpt"])
  spec = schema.tf_feature_spec(schema.PRETRAINING_FEATURES, 64, 10)
  parsed = tf.io.parse_example(examples, spec)
  outputs = model({k: tf.cast(parsed[k], tf.int32) for k in schema.PRETRAINING_MODEL_INPUTS})
  logits = outputs["mlm_logits"].numpy().astype(np.float64) / temperature
  probs = np.exp(logits - logits.max(-1, keepdims=True))
  return probs / probs.sum(-1, keepdims=True), outputs["nsp_logits"].numpy(), parsed


def test_topk_labels_equal_a_direct_computation(corpus, teacher, topk_out):
  source = _records(corpus["records"], "eval/part-00000") + _records(
      corpus["records"], "train/part-00002")[:20]
  distill = _records(topk_out, "eval/part-00000") + _records(topk_out, "train/part-00002")[:20]
  probs, nsp, parsed = _direct(teacher, source, 2.0)
  weights = parsed["masked_lm_weights"].numpy()
  for i, record in enumerate(distill):
    example = tf.train.Example.FromString(record)
    np.testing.assert_allclose(example.features.feature["teacher_nsp_logits"].float_list.value,
                               nsp[i], atol=1e-5)
    n = int(weights[i].sum())
    ids, values, tail = packed_labels.decode_record_targets(_teacher_bytes(example), 8, "uint16")
    assert ids.shape == values.shape == (n, 8) and tail.shape == (n,)  # padding: nothing
    expected_ids = np.argsort(-probs[i, :n], axis=-1, kind="stable")[:, :8]
    np.testing.assert_array_equal(ids, expected_ids)
    top = np.take_along_axis(probs[i, :n], expected_ids, -1)
    np.testing.assert_allclose(values, top, rtol=1e-3, atol=1e-6)
    np.testing.assert_allclose(tail, 1 - top.sum(-1), rtol=1e-3, atol=1e-4)
    for name in _teacher_bytes(example) | {"teacher_nsp_logits": 0}:
      del example.features.feature[name]
    assert example.SerializeToString(deterministic=True) == source[i]  # originals untouched


def test_tf_decoder_equals_numpy_decoder(topk_out):
  k, id_dtype, p = packed_labels.label_config(_manifest(topk_out))
  spec = schema.tf_feature_spec(schema.DISTILL_FEATURES, 64, p)
  path = os.path.join(topk_out, "train/part-00001.tfrecord")
  batch = next(iter(tf.data.TFRecordDataset(path).batch(16).map(
      lambda x: tf.io.parse_example(x, spec))))
  decoded = packed_labels.decode_teacher_targets(batch, k, id_dtype, p)
  assert decoded["teacher_ids"].shape == (16, p, k) and decoded["teacher_ids"].dtype == tf.int32
  for i in range(16):
    row = {name: batch[name][i].numpy() for name in ("teacher_ids", "teacher_values",
                                                      "teacher_tail_mass")}
    ids, values, tail = packed_labels.decode_record_targets(row, k, id_dtype)
    n = len(tail)
    assert n == int(batch["masked_lm_weights"][i].numpy().sum())
    np.testing.assert_array_equal(decoded["teacher_ids"][i, :n], ids)
    np.testing.assert_array_equal(decoded["teacher_values"][i, :n], values)
    np.testing.assert_array_equal(decoded["teacher_tail_mass"][i, :n], tail)
    assert not decoded["teacher_values"][i, n:].numpy().any()  # zero-padded to P


def test_sampled_labels_are_weights_over_distinct_ids(sampled_out):
  assert _manifest(sampled_out)["config"]["seed"] == 7
  for record in _records(sampled_out, "train/part-00003")[:50]:
    example = tf.train.Example.FromString(record)
    ids, weights, tail = packed_labels.decode_record_targets(_teacher_bytes(example), 32, "uint16")
    assert len(ids) == sum(example.features.feature["masked_lm_weights"].float_list.value)
    np.testing.assert_array_equal(weights.sum(-1), 1.0)  # multiples of 1/32: exact
    assert not tail.any()
    for row_ids, row_w in zip(ids, weights):
      used = row_ids[row_w > 0]
      assert len(set(used.tolist())) == len(used) and (np.diff(used) > 0).all()
      assert not row_ids[row_w == 0].any()  # padding is (0, 0)
      assert (np.round(row_w * 32) == row_w * 32).all()


def test_sampling_estimator_is_unbiased():
  """Mean over many seeds of sum_k w_k f(id_k) -> E_p[f], either level scheme."""
  rng = np.random.default_rng(0)
  v, k, rows = 61, 8, 4000
  logits = rng.normal(size=v) * 2.0
  probs = np.exp(logits) / np.exp(logits).sum()
  f = rng.normal(size=v)
  records = [i.to_bytes(4, "little") for i in range(rows)]
  uniforms = packed_labels.record_uniforms(3, records, (k,))
  batch = tf.constant(np.tile(probs.astype(np.float32), (rows, 1)))
  one = inference.sample_ids(batch, tf.constant(uniforms), 0).numpy()
  two = inference.sample_ids(batch, tf.constant(uniforms), 4).numpy()
  assert (one == two).mean() > 0.999  # the same inverse CDF, in two steps
  ids, weights = packed_labels.unique_with_weights(two)
  estimates = (weights * f[ids]).sum(-1)  # [rows]
  exact = (probs * f).sum()
  stderr = estimates.std() / np.sqrt(rows)
  assert abs(estimates.mean() - exact) < 4 * stderr
  freq = np.bincount(two.ravel(), minlength=v) / two.size
  assert np.abs(freq - probs).max() < 0.01
  assert np.isin(two, np.flatnonzero(probs > 0)).all()


def test_block_topk_is_exact_with_ties():
  rng = np.random.default_rng(1)
  probs = np.round(rng.random((64, 203)) ** 4, 2).astype(np.float32)  # many ties
  for block in (4, 8):
    values, ids = inference.block_topk(tf.constant(probs), 6, block)
    ref = tf.math.top_k(probs, 6)
    np.testing.assert_array_equal(ids.numpy(), ref.indices.numpy())
    np.testing.assert_array_equal(values.numpy(), ref.values.numpy())
  assert inference.block_size(30522, 32) == 32
  assert inference.block_size(400, 32) == 0


def test_rerun_is_noop_and_other_settings_are_refused(corpus, teacher, topk_out):
  stamps = {p: os.stat(os.path.join(topk_out, p)).st_mtime_ns for p in _listing(topk_out)}
  proc = run_tool("extract_teacher_labels", *_flags(corpus, teacher, topk_out, *TOPK))
  assert "up to date" in proc.stdout
  assert stamps == {p: os.stat(os.path.join(topk_out, p)).st_mtime_ns for p in _listing(topk_out)}
  other = [f for f in TOPK if "temperature" not in f] + ["--temperature=1.0"]
  proc = run_tool("extract_teacher_labels", *_flags(corpus, teacher, topk_out, *other),
                  check=False)
  _assert_one_line_error(proc, topk_out, "temperature", "teacher_fingerprint", "--overwrite")


def test_vocab_and_teacher_mismatches_are_one_line_errors(corpus, teacher, tmp_path):
  vocab = str(tmp_path / "vocab.txt")
  lines = open(corpus["vocab"], encoding="utf-8").read().splitlines()
  with open(vocab, "w", encoding="utf-8") as f:
    f.write("\n".join(lines[:-1] + ["zzzz"]) + "\n")
  flags = _flags(corpus, teacher, str(tmp_path / "out"), *TOPK)
  proc = run_tool("extract_teacher_labels", *flags, f"--vocab_file={vocab}", check=False)
  _assert_one_line_error(proc, vocab, "records were made with another vocab")
  config = json.load(open(teacher["config"]))
  wide = str(tmp_path / "bert_config.json")
  json.dump(dict(config, vocab_size=500), open(wide, "w"))
  proc = run_tool("extract_teacher_labels", *flags, f"--bert_config_file={wide}", check=False)
  _assert_one_line_error(proc, wide, "vocab_size 500")
  assert not os.path.exists(str(tmp_path / "out"))


def test_sigkill_resumes_to_identical_bytes(corpus, teacher, topk_out, tmp_path):
  out = str(tmp_path / "distill")
  args = _flags(corpus, teacher, out, *TOPK)
  _kill_after_first(start_tool("extract_teacher_labels", *args), out, ".tfrecord")
  assert not os.path.exists(os.path.join(out, "COMPLETED"))
  run_tool("extract_teacher_labels", *args)
  assert tree_bytes(out) == tree_bytes(topk_out)


def test_mpirun_two_ranks_give_the_same_bytes(corpus, teacher, sampled_out, tmp_path):
  """Files split between ranks; sampling seeded per record: same bytes."""
  if shutil.which("mpirun") is None:
    pytest.skip("mpirun not installed (launch/setup.sh installs Open MPI)")
  out = str(tmp_path / "distill")
  cmd = MPIRUN + ["-np", "2", sys.executable,
                  os.path.join(ROOT, "tools", "extract_teacher_labels.py"),
                  *_flags(corpus, teacher, out, *SAMPLED)]
  proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=tool_env())
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert json.load(open(os.path.join(out, "stats.json")))["ranks"] == 2
  assert tree_bytes(out) == tree_bytes(sampled_out)


def test_files_without_records_still_get_an_output():
  """Batches name their file; files they skip are begun and ended (empty)."""
  from pipeline.labels import pretraining_labels  # pylint: disable=import-outside-toplevel
  sent = []

  class Writer:
    send = staticmethod(sent.append)

  files = pretraining_labels._Files(Writer(), ["a", "b", "c"])  # pylint: disable=protected-access
  files.advance_to(0)
  files.advance_to(0)
  files.advance_to(2)  # "b" had no records
  files.advance_to(3)
  assert [m[1] if m[0] == "begin" else m[0] for m in sent] == [
      "a", "end", "b", "end", "c", "end"]


def test_size_of_the_list_layout_is_exact(corpus):
  """The stats' comparison layout: computed sizes equal real merged records."""
  records = _records(corpus["records"], "train/part-00000")[:20]
  rng = np.random.default_rng(0)
  m, p, k = len(records), 10, 32
  ids, values = rng.integers(0, 30000, (m, p, k)), rng.random((m, p, k))
  tail, nsp, n = rng.random((m, p)), rng.random((m, 2)), rng.integers(1, p + 1, m)
  real = np.arange(p)[None] < n[:, None]
  columns = {"teacher_ids": np.where(real[..., None], ids, 0).reshape(m, -1),
             "teacher_values": np.where(real[..., None], values, 0).reshape(m, -1),
             "teacher_tail_mass": np.where(real, tail, 0), "teacher_nsp_logits": nsp}
  dtypes = {**dict.fromkeys(columns, schema.FLOAT), "teacher_ids": schema.INT64}
  _, lengths = packed_labels.append_features(records, *tfrecord.encode_examples(columns, dtypes))
  computed = packed_labels.merged_record_bytes(
      [len(r) for r in records], packed_labels.list_layout_lengths(ids, values, tail, nsp, n))
  np.testing.assert_array_equal(computed, lengths + 16)  # + TFRecord framing
