"""bench/inference.py --quick on tiny generated classifiers and records: every table
cell is in the JSON, and each goal's verdict follows from the measured figures."""

import json
import os
import subprocess
import sys

import pytest

from tests import classification_fixtures as cf
from tests.conftest import ROOT, tool_env

pytest.importorskip("onnxruntime")
pytest.importorskip("tensorflow_text")

FORMATS = ("tf_fp32", "onnx_fp32", "onnx_int8_dynamic", "onnx_int8_static")
SEQS, BATCHES, CONCURRENCY = (16, 32), (1, 8, 32), (1, 8, 32)


def _classifier(directory, hidden, layers, intermediate, seed):
  # pylint: disable=import-outside-toplevel
  import keras
  from modeling.models import classification
  from modeling.networks import bert
  keras.utils.set_random_seed(seed)
  config = bert.BertConfig(vocab_size=cf.VOCAB_SIZE, hidden_size=hidden,
                           num_hidden_layers=layers, num_attention_heads=2,
                           intermediate_size=intermediate, max_position_embeddings=64,
                           initializer_range=0.5)
  model = classification.build_classifier(config, len(cf.LABELS["single"]))
  classification.save_classifier(model, str(directory), labels=list(cf.LABELS["single"]))
  return str(directory)


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
  base = tmp_path_factory.mktemp("inference")
  vocab = cf.write_vocab(str(base / "vocab.txt"))
  splits = {s: cf.make_examples("single", n, 16, seed=k)
            for k, (s, n) in enumerate((("train", 48), ("dev", 40), ("test", 8)))}
  records = cf.write_task(str(base / "records"), vocab, "single", splits)
  teacher = _classifier(base / "teacher", 32, 2, 64, 1)
  student = _classifier(base / "student", 16, 1, 32, 2)
  pruned = _classifier(base / "pruned", 16, 1, 8, 3)
  reference = base / "reference_config.json"  # made into a random-weight classifier
  reference.write_text(json.dumps({
      "hidden_size": 48, "num_hidden_layers": 3, "num_attention_heads": 2,
      "intermediate_size": 96, "max_position_embeddings": 64, "vocab_size": 1,
      "hidden_act": "gelu", "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1,
      "type_vocab_size": 2, "initializer_range": 0.02}))
  out = base / "out"
  cmd = [sys.executable, os.path.join(ROOT, "bench", "inference.py"), "--quick",
         f"--records_dir={records}", f"--vocab_file={vocab}",
         f"--models=teacher={teacher},student={student}",
         f"--pruned_checkpoint=student={pruned}", f"--speed_reference=base=config:{reference}",
         f"--work_dir={base / 'work'}",
         "--calibration_examples=16", "--requests=24", "--serve_flags=--batch_timeout_ms=2",
         f"--output_json={out / 'inference.json'}", f"--output_md={out / 'inference.md'}"]
  proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=tool_env())
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  with open(out / "inference.json", encoding="utf-8") as f:
    return {"results": json.load(f), "out": out, "stdout": proc.stdout}


def test_every_cell_is_measured(quick):
  results = quick["results"]
  expected = {("teacher", f) for f in FORMATS} | {("student", f) for f in FORMATS} | {
      ("student_pruned", "tf_fp32"), ("student_pruned", "onnx_fp32"),
      ("base", "tf_fp32"), ("base", "onnx_fp32")}
  assert {(m, f) for m, e in results["models"].items() for f in e["formats"]} == expected
  cells = {(r["model"], r["format"], r["seq_length"], r["batch"]): r for r in results["latency"]}
  assert set(cells) == {(m, f, s, b) for m, f in expected for s in SEQS for b in BATCHES}
  for key in [k for k in cells if k[0] == "base"]:  # the speed reference: the goal's shape only
    assert ("skipped" in cells[key]) == (key[2:] != (SEQS[0], 1)), cells[key]
    if "skipped" in cells[key]:
      del cells[key]
  for row in cells.values():
    assert row["calls"] == 5 and 0 < row["p50_ms"] <= row["p99_ms"]
    assert row["seq_per_s"] == pytest.approx(row["batch"] * 1e3 / row["mean_ms"])
  for model in results["models"].values():
    assert model["parameters"] > 0
    for entry in model["formats"].values():
      assert entry["size_mb"] > 0 and entry["metrics"]["examples"] == 40
      assert 0 <= entry["metrics"]["accuracy"] <= 1
  fp32 = results["models"]["student"]["formats"]
  assert fp32["onnx_fp32"]["agreement_with_tf_fp32"] == 1.0  # the same float model
  assert fp32["onnx_fp32"]["metrics"]["accuracy"] == fp32["tf_fp32"]["metrics"]["accuracy"]


def test_load_test_has_no_errors(quick):
  serving = quick["results"]["serving"]
  assert [lv["concurrency"] for lv in serving["levels"]] == list(CONCURRENCY)
  for level in serving["levels"]:
    assert level["requests"] == 24 and level["errors"] == 0
    assert level["requests_per_s"] > 0 and 0 < level["p50_ms"] <= level["p99_ms"]
  assert serving["levels"][-1]["max_batch_rows"] > 1  # concurrent requests were batched
  assert serving["bare"]["p50_ms"] > 0 and serving["server_flags"] == ["--batch_timeout_ms=2"]


def _p50(results, model, fmt):
  return next(r["p50_ms"] for r in results["latency"]
              if (r["model"], r["format"], r["seq_length"], r["batch"]) == (model, fmt, 16, 1))


def _accuracy(results, model, fmt):
  return results["models"][model]["formats"][fmt]["metrics"]["accuracy"]


def test_goals_follow_from_the_measurements(quick):
  results = quick["results"]
  assert len(results["goals"]) == 2 + 2 + 1 + 3
  for fmt, label in (("onnx_int8_dynamic", "dynamic"), ("onnx_int8_static", "static")):
    goal = next(g for g in results["goals"] if g["goal"].startswith(f"student ONNX int8 {label}"))
    kept = _accuracy(results, "student", fmt) / _accuracy(results, "student", "tf_fp32")
    speedup = _p50(results, "student", "tf_fp32") / _p50(results, "student", fmt)
    assert [v["value"] for v in goal["values"]] == pytest.approx([kept, speedup])
    assert goal["met"] == (kept >= 0.99 and speedup >= 2.0)
  pruned = next(g for g in results["goals"]
                if g["goal"].startswith("student_pruned vs student, ONNX fp32"))
  speedup = _p50(results, "student", "onnx_fp32") / _p50(results, "student_pruned", "onnx_fp32")
  kept = _accuracy(results, "student_pruned", "onnx_fp32") / _accuracy(results, "student",
                                                                       "onnx_fp32")
  assert [v["value"] for v in pruned["values"]] == pytest.approx([speedup, kept])
  assert pruned["met"] == (speedup >= 1.5 and kept >= 0.98)
  best = [g for g in results["goals"] if "best format" in g["goal"]][0]
  assert best["goal"].startswith("student (1L-16D) vs base (3L-48D)")  # the speed reference
  ratio = (min(_p50(results, "base", f) for f in ("tf_fp32", "onnx_fp32"))
           / min(_p50(results, "student", f) for f in FORMATS))
  assert best["values"][0]["value"] == pytest.approx(ratio) and best["met"] == (ratio >= 8)
  assert "vs the teacher teacher (2L-32D" in best["measured"]
  serving = results["serving"]
  added = next(g for g in results["goals"] if "adds" in g["goal"])
  assert added["values"][0]["value"] == pytest.approx(
      serving["levels"][0]["p50_ms"] - serving["bare"]["p50_ms"])
  errors = next(g for g in results["goals"] if g["goal"] == "no errors in the load test")
  assert errors["met"] is True and errors["values"][0]["value"] == 0


def test_report_and_plot_are_written(quick):
  text = (quick["out"] / "inference.md").read_text()
  assert "QUICK smoke run" in text and "## Goals" in text and "## Serving load test" in text
  assert text.count("| teacher | ONNX int8 static |") == len(SEQS) * len(BATCHES)
  assert text.count("| base (speed only) | ONNX fp32 |") == len(SEQS) * len(BATCHES)
  assert "cells skipped (speed reference: the goal's shape only)" in text
  assert "Load average" in text and "bench/inference.py --quick" in text
  assert (quick["out"] / "inference.png").read_bytes()[:4] == b"\x89PNG"


def test_a_prune_output_directory_means_its_last_step(tmp_path):
  """--pruned_checkpoint=<tools/prune.py output>: the checkpoint its pruning.json
  gives for the last step (step-k/recover/best), not the directory itself."""
  from bench import inference  # pylint: disable=import-outside-toplevel
  last = str(tmp_path / "pruned" / "step-2" / "recover" / "best")
  (tmp_path / "pruned").mkdir()
  (tmp_path / "pruned" / "pruning.json").write_text(json.dumps(
      {"steps": [{"checkpoint": last.replace("step-2", "step-1")}, {"checkpoint": last}]}))
  args = inference.parse_args([
      f"--records_dir={tmp_path}", f"--vocab_file={tmp_path / 'vocab.txt'}",
      "--models=teacher=/t,student=/s", f"--pruned_checkpoint={tmp_path / 'pruned'}"])
  assert args.pruned == ("student_pruned", "student", last)


def test_serving_options_page_is_written_from_its_json(tmp_path):
  """bench/serving_options.py --from_json: the page's tables hold the JSON's figures,
  batches and concurrency levels in numeric order (JSON keys are strings)."""
  level = {"requests_per_s": 0.0}
  result = {"command": "cmd", "model_dir": "/m", "texts": 7, "cpu_count": 2,
            "load_average_before": [0.5, 0, 0], "load_average_after_padding": [1.0, 0, 0],
            "load_average_after": [1.5, 0, 0],
            "bucket_rows": 8,
            "padding_seq_per_s": {"longest": {"1": 10.0, "32": 40.0, "8": 30.0},
                                  "max_seq_length": {"1": 5.0, "32": 20.0, "8": 15.0},
                                  "buckets": {"1": 10.0, "32": 50.0, "8": 30.0}},
            "servers": [{"http": "h11", "loop": "asyncio", "bucket_rows": 8,
                         "levels": {"32": [level, level], "1": [level, level]},
                         "c1": {"requests_per_s_mean": 11.0, "requests_per_s_std": 1.0,
                                "p50_ms_mean": 9.0, "errors": 0},
                         "c32": {"requests_per_s_mean": 22.0, "requests_per_s_std": 2.0,
                                 "p50_ms_mean": 99.0, "errors": 1}}]}
  path = tmp_path / "serving_options.json"
  path.write_text(json.dumps(result))
  md = tmp_path / "page.md"
  subprocess.run([sys.executable, os.path.join(ROOT, "bench", "serving_options.py"),
                  "--from_json", f"--output_json={path}", f"--output_md={md}"],
                 check=True, env=tool_env(), timeout=300)
  page = md.read_text()
  assert "| padded to | batch 1 | batch 8 | batch 32 |" in page
  assert "| 10.0 | 30.0 | 40.0 |" in page and "| 5.0 | 15.0 | 20.0 |" in page
  assert "calls of that many rows) | 10.0 | 30.0 | 50.0 |" in page
  assert ("| `--http=h11 --loop=asyncio --bucket_rows=8` | 11.0 ± 1.0, 9.00 ms | "
          "22.0 ± 2.0, 99.00 ms | 1 |" in page)
  assert "2 interleaved rounds" in page and "before 0.50" in page
