"""The stage contract on the fixture corpus: exact outputs, no-op reruns, config
conflicts, refusal of incomplete inputs, SIGKILL resume, 1-vs-N workers, mpirun."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from pipeline.records import schema
from pipeline.corpus import sharding
from pipeline.records import tfrecord
from tests.conftest import (MPIRUN, ROOT, records_flags, run_tool, start_tool,
                            tool_env, tree_bytes)


def _listing(root):
  """The output files; hidden bookkeeping (the writer's .lock) is not output."""
  out = []
  for dirpath, dirnames, files in os.walk(root):
    dirnames[:] = [d for d in dirnames if not d.startswith(".")]
    out += [os.path.relpath(os.path.join(dirpath, f), root) for f in files
            if not f.startswith(".")]
  return sorted(out)


def _manifest(d):
  with open(os.path.join(d, "manifest.json")) as f:
    return json.load(f)


def _assert_one_line_error(proc, *fragments):
  assert proc.returncode == 2, proc.stderr
  assert "Traceback" not in proc.stderr, proc.stderr
  last = proc.stderr.strip().splitlines()[-1]
  assert last.startswith("error: "), proc.stderr
  for frag in fragments:
    assert frag in last, last


def test_extract_outputs_and_counts(corpus):
  d = corpus["extract"]
  chunks = [f"docs/part-000-{i:05d}.jsonl" for i in range(4)]  # 130 pages / 40
  assert _listing(d) == sorted(["COMPLETED", "manifest.json", "stats.json"] + chunks)
  stats = json.load(open(os.path.join(d, "stats.json")))
  assert stats["pages_read"] == 130
  assert (stats["dropped_redirect"], stats["dropped_disambiguation"],
          stats["dropped_non_article_namespace"], stats["dropped_too_short"]) == (1, 2, 1, 1)
  assert stats["documents"] == 125 == _manifest(d)["counts"]["documents"]
  docs = [json.loads(line) for c in chunks for line in open(os.path.join(d, c), encoding="utf-8")]
  assert [set(doc) for doc in docs[:1]] == [{"id", "revid", "title", "url", "text"}]
  assert any(doc["title"] == "Москва" for doc in docs)


def test_shard_outputs_partition_documents(corpus):
  d = corpus["shards"]
  names = [f"train/part-{i:05d}" for i in range(4)] + ["eval/part-00000"]
  expected = sorted([n + ".txt" for n in names] + [n + ".docs.tsv" for n in names] +
                    ["COMPLETED", "manifest.json", "stats.json"])
  assert _listing(d) == expected
  seen = []
  for n in names:
    split, index = n.split("/")[0], int(n[-5:])
    docs = list(_read_shard(d, n))
    for page_id, lines in docs:
      assert sharding.placement(page_id, 4, 1, 0.05) == (split, index)
      assert lines and all(line.strip() for line in lines)
    seen += [p for p, _ in docs]
  assert len(seen) == len(set(seen)) == 125


def _read_shard(d, name):
  from pipeline.records.pretraining_data import iter_documents  # pylint: disable=import-outside-toplevel
  for page_id, _, sentences in iter_documents(os.path.join(d, name + ".txt"),
                                             os.path.join(d, name + ".docs.tsv")):
    yield page_id, sentences


def test_vocab_output_files(corpus):
  d = os.path.dirname(corpus["vocab"])
  assert sorted(os.listdir(d)) == ["vocab.txt", "vocab.txt.manifest.json"]
  record = json.load(open(corpus["vocab"] + ".manifest.json"))
  assert record["entries"] == 400 and record["config"]["vocab_size"] == 400
  assert len(open(corpus["vocab"], encoding="utf-8").read().splitlines()) == 400


def test_records_outputs_parse_with_the_schema(corpus):
  tf = pytest.importorskip("tensorflow")
  d = corpus["records"]
  names = [f"train/part-{i:05d}.tfrecord" for i in range(4)] + ["eval/part-00000.tfrecord"]
  indexes = [n.replace(".tfrecord", ".index.npy") for n in names]
  assert _listing(d) == sorted(names + indexes + ["COMPLETED", "manifest.json", "stats.json"])
  spec = schema.tf_feature_spec(schema.PRETRAINING_FEATURES, 64, 10)
  counts = _manifest(d)["counts"]
  cls_id = open(corpus["vocab"], encoding="utf-8").read().splitlines().index("[CLS]")
  n_train = 0
  for name in names[:4]:
    for batch in tf.data.TFRecordDataset(os.path.join(d, name)).batch(512).map(
        lambda x: tf.io.parse_example(x, spec)):
      n_train += int(batch["input_ids"].shape[0])
      ids = batch["input_ids"].numpy()
      assert (ids[:, 0] == cls_id).all()
      w = batch["masked_lm_weights"].numpy()
      assert w.dtype == np.float32 and ((w == 0) | (w == 1)).all()
  assert n_train == counts["train_instances"] > 100
  assert counts["eval_instances"] > 0


def test_record_index_names_each_records_document(corpus):
  """The .index.npy says which page (and revision) every record came from."""
  shards = dict(_read_shard(corpus["shards"], "train/part-00001"))
  path = os.path.join(corpus["records"], "train", "part-00001")
  index = np.load(path + ".index.npy", allow_pickle=False)
  assert index.shape == (sum(1 for _ in tfrecord.iter_records(path + ".tfrecord")), 2)
  assert set(index[:, 0].tolist()) == set(shards)  # every document made records
  revids = {int(l.split("\t")[0]): int(l.split("\t")[1]) for l in
            open(os.path.join(corpus["shards"], "train", "part-00001.docs.tsv"))}
  assert all(revids[p] == r for p, r in index.tolist())


def test_reruns_are_noops(corpus):
  stamps = {p: os.stat(os.path.join(corpus["records"], p)).st_mtime_ns
            for p in _listing(corpus["records"])}
  for tool, args in [
      ("extract_wiki", [f"--input={corpus['dump']}", f"--output_dir={corpus['extract']}",
                        "--min_article_chars=50", "--pages_per_file=40"]),
      ("shard_text", [f"--input_dir={corpus['extract']}", f"--output_dir={corpus['shards']}",
                      "--num_shards=4", "--eval_fraction=0.05"]),
      ("build_vocab", [f"--input_dir={corpus['shards']}", f"--output_file={corpus['vocab']}",
                       "--vocab_size=400"]),
      ("create_pretraining_data", records_flags(corpus, corpus["records"])),
  ]:
    assert "up to date" in run_tool(tool, *args).stdout
  assert stamps == {p: os.stat(os.path.join(corpus["records"], p)).st_mtime_ns
                    for p in _listing(corpus["records"])}


def test_other_config_is_refused_unless_overwrite(corpus, tmp_path):
  out = str(tmp_path / "shards")
  base = [f"--input_dir={corpus['extract']}", f"--output_dir={out}"]
  run_tool("shard_text", *base, "--num_shards=2")
  _assert_one_line_error(run_tool("shard_text", *base, "--num_shards=3", check=False),
                         out, "num_shards", "--overwrite")
  run_tool("shard_text", *base, "--num_shards=3", "--overwrite")
  assert _manifest(out)["config"]["num_shards"] == 3


def test_incomplete_or_modified_input_is_refused(corpus, tmp_path):
  shards = str(tmp_path / "shards")
  shutil.copytree(corpus["shards"], shards)
  os.remove(os.path.join(shards, "COMPLETED"))
  proc = run_tool("create_pretraining_data", *records_flags(dict(corpus, shards=shards),
                                                            str(tmp_path / "r1")), check=False)
  _assert_one_line_error(proc, shards, "COMPLETED")
  open(os.path.join(shards, "COMPLETED"), "w").close()
  with open(os.path.join(shards, "train", "part-00001.txt"), "a") as f:
    f.write("extra line\n")
  proc = run_tool("create_pretraining_data", *records_flags(dict(corpus, shards=shards),
                                                            str(tmp_path / "r2")), check=False)
  _assert_one_line_error(proc, "part-00001.txt", "size differs")


def _kill_after_first(proc, out_dir, pattern):
  """SIGKILLs proc as soon as a published file ending with `pattern` appears."""
  deadline = time.time() + 120
  while time.time() < deadline:
    for dirpath, dirnames, files in os.walk(out_dir):
      dirnames[:] = [x for x in dirnames if not x.startswith(".")]
      if any(f.endswith(pattern) for f in files):
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        return
    assert proc.poll() is None, "the run finished before it could be killed"
    time.sleep(0.005)
  raise AssertionError("no output appeared")


def test_sigkill_mid_extract_resumes_identically(corpus, tmp_path):
  out = str(tmp_path / "extract")
  args = [f"--input={corpus['dump']}", f"--output_dir={out}", "--min_article_chars=50",
          "--pages_per_file=40", "--num_workers=1"]
  _kill_after_first(start_tool("extract_wiki", *args), out, ".jsonl")
  assert not os.path.exists(os.path.join(out, "COMPLETED"))
  run_tool("extract_wiki", *args)
  assert tree_bytes(out) == tree_bytes(corpus["extract"])


def test_sigkill_mid_records_resumes_identically(corpus, tmp_path):
  out = str(tmp_path / "records")
  args = records_flags(corpus, out, "--num_workers=1")
  _kill_after_first(start_tool("create_pretraining_data", *args), out, ".tfrecord")
  assert not os.path.exists(os.path.join(out, "COMPLETED"))
  run_tool("create_pretraining_data", *args)
  assert tree_bytes(out) == tree_bytes(corpus["records"])


@pytest.mark.parametrize("workers", [1, 4])
def test_worker_count_does_not_change_bytes(corpus, tmp_path, workers):
  out = str(tmp_path / "records")
  run_tool("create_pretraining_data", *records_flags(corpus, out, f"--num_workers={workers}"))
  assert tree_bytes(out) == tree_bytes(corpus["records"])


def test_mpirun_two_ranks_give_the_same_bytes(corpus, tmp_path):
  if shutil.which("mpirun") is None:
    pytest.skip("mpirun not installed (launch/setup.sh installs Open MPI)")
  out = str(tmp_path / "records")
  cmd = MPIRUN + ["-np", "2", sys.executable,
                  os.path.join(ROOT, "tools", "create_pretraining_data.py"),
                  *records_flags(corpus, out, "--num_workers=1")]
  proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=tool_env())
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert json.load(open(os.path.join(out, "stats.json")))["ranks"] == 2
  assert tree_bytes(out) == tree_bytes(corpus["records"])


def test_records_read_back_without_tensorflow(corpus):
  path = os.path.join(corpus["records"], "eval", "part-00000.tfrecord")
  assert sum(1 for _ in tfrecord.iter_records(path)) == _manifest(corpus["records"])["counts"]["eval_instances"]
