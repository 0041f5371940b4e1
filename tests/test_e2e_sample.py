"""The README's quickstart over the real Wikipedia sample in ../shared/data.

The whole chain runs (teacher, labels, student, benchmark, export) with a few
training steps so the suite stays fast; the real-size run is the README's.
"""

import json
import os
import subprocess

import pytest

from pipeline.records import schema
from tests.conftest import ROOT, SAMPLE_DUMP, tool_env

pytestmark = pytest.mark.skipif(
    not os.path.exists(SAMPLE_DUMP),
    reason=f"real sample dump not found at {SAMPLE_DUMP} (see ../shared/data/README.md)")


def _quickstart(out):
  env = dict(tool_env(), NUM_SHARDS="4", VOCAB_SIZE="8192", DUPE_FACTOR="1",
             TEACHER_STEPS="3", STUDENT_STEPS="3", BATCH_SIZE="8")
  return subprocess.run(["bash", os.path.join(ROOT, "launch", "quickstart.sh"), SAMPLE_DUMP,
                         str(out)], capture_output=True, text=True, env=env, timeout=1200)


def _json(path):
  with open(path) as f:
    return json.load(f)


@pytest.fixture(scope="module")
def quickstart(tmp_path_factory):
  out = tmp_path_factory.mktemp("quickstart")
  proc = _quickstart(out)
  assert proc.returncode == 0, proc.stderr[-4000:]
  return out, proc


def test_extraction_counts_on_the_real_sample(quickstart):
  out, _ = quickstart
  stats = _json(out / "extract" / "stats.json")
  assert stats["pages_read"] == 206
  assert stats["documents"] == 97
  assert (stats["dropped_redirect"], stats["dropped_disambiguation"],
          stats["dropped_too_short"]) == (100, 8, 1)
  text = sum(len(json.loads(line)["text"]) for line in open(
      out / "extract" / "docs" / "part-000-00000.jsonl", encoding="utf-8"))
  assert 2_400_000 < text < 2_800_000  # "about 2.6 MB of clean text"


def test_records_from_the_real_sample(quickstart):
  tf = pytest.importorskip("tensorflow")
  out, proc = quickstart
  manifest = _json(out / "records" / "manifest.json")
  assert manifest["counts"]["train_instances"] > 5000
  assert manifest["config"]["vocab_size"] == 8192
  assert "*** Example ***" in proc.stderr and "[MASK]" in proc.stderr
  spec = schema.tf_feature_spec(schema.PRETRAINING_FEATURES, 128, 20)
  files = [str(out / "records" / f["name"]) for f in manifest["files"]
           if f["name"].endswith(".tfrecord")]
  n = 0
  for batch in tf.data.TFRecordDataset(files).batch(1024).map(
      lambda x: tf.io.parse_example(x, spec)):
    n += int(batch["input_ids"].shape[0])
    assert int(tf.reduce_max(batch["input_ids"])) < 8192
  assert n == manifest["counts"]["train_instances"] + manifest["counts"]["eval_instances"]


def test_quickstart_rerun_does_nothing(quickstart):
  out, _ = quickstart
  proc = _quickstart(out)
  assert proc.returncode == 0, proc.stderr[-2000:]
  for tool in ("extract_wiki", "shard_text", "build_vocab", "create_pretraining_data",
               "pretrain", "extract_teacher_labels", "distill", "evaluate", "benchmark",
               "export"):
    line = next(l for l in proc.stdout.splitlines() if l.startswith(tool + ":"))
    assert "up to date" in line or "nothing to do" in line, line


def test_quickstart_trains_labels_distills_and_compares(quickstart):
  out, proc = quickstart
  labels = _json(out / "labels" / "manifest.json")
  assert labels["config"]["truncation_factor"] == 16
  student = _json(out / "student_eval.json")
  metrics = student["metrics"]
  assert 0.0 <= metrics["mlm_accuracy"] <= 1.0 and "teacher_agreement" in metrics
  table = (out / "benchmark" / "benchmark.md").read_text()
  assert "| teacher | 4 x 256 |" in table and "| student | 2 x 128 |" in table
  assert (out / "benchmark" / "benchmark.png").stat().st_size > 0
  assert (out / "student_savedmodel" / "saved_model.pb").exists()
  assert "quickstart: done" in proc.stdout
