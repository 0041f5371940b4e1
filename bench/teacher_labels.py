"""Benchmark of stage 5 (extract_teacher_labels): stage time vs bare forward
passes, and bytes on disk.

  .venv/bin/python bench/teacher_labels.py [--work_dir DIR] [--reps 2] [--bert_base]

Records from the real sample dump (../shared/data) through the pipeline tools:
8 shards, a 30,522-entry vocab from build_vocab, --max_seq_length 128
--max_predictions_per_seq 20 --dupe_factor 1. Teacher: a random 4-layer,
hidden-256 BERT (and with --bert_base a random BERT-base on one of the 8
train files only) saved as a Google TF1 checkpoint.

For each case, in one process: the bare compiled forward pass (mlm + nsp
logits, same static batch, over all records pre-loaded in memory) and the
stage's library path (read, step, pack, write, publish, manifest; same model,
both traced first) alternate --reps times; then the tool runs as a user runs
it (subprocess, fresh output dir). The machine is shared, so both wall and
CPU time (all threads of the process) are reported; CPU time is the steadier
measure of work when other jobs run. Ratios: stage pass / bare pass
(medians), the tool's own `seconds` (model build, checkpoint load, weight
hashing, tracing, all files, manifest) / bare, and the tool process (plus
Python and TensorFlow start-up) / bare.
Writes bench/results/teacher_labels.json.
"""

import argparse
import json
import os
import shutil
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from bench import tooling  # noqa: E402  pylint: disable=wrong-import-position
from pipeline.core import kinds  # noqa: E402  pylint: disable=wrong-import-position
from pipeline.core import stage  # noqa: E402  pylint: disable=wrong-import-position

SAMPLE = os.path.join(ROOT, "..", "shared", "data", "enwiki-sample-pages-articles.xml.bz2")
RECORD_FLAGS = ["--max_seq_length=128", "--max_predictions_per_seq=20", "--dupe_factor=1"]
SMALL = dict(hidden_size=256, num_hidden_layers=4, num_attention_heads=4,
             intermediate_size=1024)
BATCH = 64


def run(tool, *args):
  """Runs a tool; returns its wall seconds."""
  return tooling.run_tool(tool, args)["wall_seconds"]


def prepare(work):
  """Extract, shard, vocab and records of the sample; no-ops when done."""
  d = {k: os.path.join(work, k) for k in ("extract", "shards", "records")}
  d["vocab"] = os.path.join(work, "vocab", "vocab.txt")
  run("extract_wiki", f"--input={SAMPLE}", f"--output_dir={d['extract']}")
  run("shard_text", f"--input_dir={d['extract']}", f"--output_dir={d['shards']}",
      "--num_shards=8")
  run("build_vocab", f"--input_dir={d['shards']}", f"--output_file={d['vocab']}",
      "--vocab_size=30522")
  run("create_pretraining_data", f"--input_dir={d['shards']}", f"--output_dir={d['records']}",
      f"--vocab_file={d['vocab']}", *RECORD_FLAGS)
  return d


def subset_records(records, out, shard):
  """A completed records dir holding one shard of `records` (both files)."""
  _, src = kinds.read(records, kinds.PRETRAINING_RECORDS)
  dst = stage.StageOutput(out, kinds.PRETRAINING_RECORDS.stage, src["config"], src["_sha256"])
  if dst.prepare():
    return out
  names = [shard + ".tfrecord", shard + ".index.npy"]
  for name in names:
    with dst.writing(name) as tmp:
      shutil.copyfile(os.path.join(records, name), tmp)
  split = shard.split("/")[0]
  counts = {"train_instances": 0, "eval_instances": 0,
            f"{split}_instances": len(np.load(os.path.join(records, names[1])))}
  dst.finalize(names, counts, {"note": f"{shard} of {records}"})
  return out


def save_teacher(directory, vocab_file, **overrides):
  """A random BertPretrainer for the vocab, saved as a TF1 checkpoint."""
  import keras  # pylint: disable=import-outside-toplevel
  from modeling.networks import bert  # pylint: disable=import-outside-toplevel
  from modeling.checkpoints import google
  from modeling.models import heads
  prefix = os.path.join(directory, "bert_model.ckpt")
  if not os.path.exists(prefix + ".index"):
    keras.utils.set_random_seed(0)
    with open(vocab_file, encoding="utf-8") as f:
      vocab_size = sum(1 for _ in f)
    config = bert.load_config("bert_base", gelu_convention="google",
                              vocab_size=vocab_size, **overrides)
    model = heads.BertPretrainer(config)
    model.build(None)
    google.save_tf1_checkpoint(model, prefix)
  return prefix


def in_memory_batches(records, shapes):
  """All records' model inputs as padded [B,...] batches."""
  # pylint: disable=import-outside-toplevel
  from pipeline.labels import inference
  from pipeline.records import schema
  _, manifest = kinds.read(records, kinds.PRETRAINING_RECORDS)
  paths = [os.path.join(records, n) for n in schema.record_files(manifest["_dir"])]
  return [b["features"] for b in inference.records_batches(paths, shapes)]


def load_teacher(prefix, precision):
  # pylint: disable=import-outside-toplevel
  from modeling.networks import bert
  from modeling.checkpoints import loading
  from modeling.models import heads
  from modeling.training import optimization
  config = bert.load_config(os.path.join(os.path.dirname(prefix), "bert_config.json"),
                            gelu_convention="google")
  model = heads.BertPretrainer(config, dtype=optimization.PRECISION_POLICIES[precision])
  loading.load_checkpoint(model, prefix)
  return model


def timed(fn):
  """(wall s, CPU s of this process, all threads) of fn()."""
  wall, cpu = time.monotonic(), time.process_time()
  fn()
  return time.monotonic() - wall, time.process_time() - cpu


def bare_pass(forward, batches):
  for batch in batches:
    logits, nsp = forward(batch)
    del logits, nsp


def stage_pass(records, out, model, step, settings, vocab_file):
  """The stage's library path (as the tool runs it, minus model setup)."""
  # pylint: disable=import-outside-toplevel
  from pipeline.labels import pretraining_labels as ls
  from pipeline.core.progress import Progress
  from pipeline.records import schema
  shutil.rmtree(out, ignore_errors=True)
  _, manifest = kinds.read(records, kinds.PRETRAINING_RECORDS)
  config = ls.stage_config(manifest, settings, model.config.to_dict(), "not hashed",
                           kinds.check_vocab(manifest, vocab_file))
  output = stage.StageOutput(out, kinds.DISTILL_RECORDS.stage, config, manifest["_sha256"])
  output.prepare()
  names = schema.record_files(manifest["_dir"])
  start = time.monotonic()
  ls.label_files(output, records, names, step, settings, (BATCH, 128, 20),
                 Progress("bench", enabled=False))
  ls.finalize(output, names, time.monotonic() - start, 1)


def tool_run(d, records, prefix, out, precision, method):
  """The tool as a user runs it: (wall s, CPU s from rusage, its stats)."""
  shutil.rmtree(out, ignore_errors=True)
  result = tooling.run_tool("extract_teacher_labels", [
      f"--bert_config_file={os.path.join(os.path.dirname(prefix), 'bert_config.json')}",
      f"--init_checkpoint={prefix}", f"--vocab_file={d['vocab']}",
      f"--input_dir={records}", f"--output_dir={out}", f"--batch_size={BATCH}",
      f"--mixed_precision={precision}", f"--label_method={method}"])
  with open(os.path.join(out, "stats.json")) as f:
    stats = json.load(f)
  stats.pop("files")
  stats.pop("notes")
  return result["wall_seconds"], result["cpu_seconds"], stats


def _median(values):
  return float(np.median(values))


def measure(d, records, prefix, precision, method, out, reps):
  """Alternates bare and stage passes `reps` times, then runs the tool."""
  # pylint: disable=import-outside-toplevel
  from pipeline.labels import inference
  from pipeline.labels import pretraining_labels as ls
  shapes = (BATCH, 128, 20)
  batches = in_memory_batches(records, shapes)
  model = load_teacher(prefix, precision)
  settings = ls.LabelSettings(batch_size=BATCH, mixed_precision=precision,
                              label_method=method)
  forward = inference.make_forward(model, shapes)
  step = inference.make_step(model, method, 32, 1.0, shapes)
  forward(batches[0])  # both traced before timing
  step(batches[0], tf_uniforms()) if method == "sampled" else step(batches[0])
  bare, staged = [], []
  for _ in range(reps):
    bare.append(timed(lambda: bare_pass(forward, batches)))
    staged.append(timed(lambda: stage_pass(records, out, model, step, settings, d["vocab"])))
  wall, cpu, stats = tool_run(d, records, prefix, out, precision, method)
  bare_wall, bare_cpu = _median([b[0] for b in bare]), _median([b[1] for b in bare])
  return {
      "precision": precision, "method": method, "instances": stats["instances"],
      "bare_forward": {"wall_seconds": [round(b[0], 2) for b in bare],
                       "cpu_seconds": [round(b[1], 2) for b in bare]},
      "stage_in_process": {"wall_seconds": [round(t[0], 2) for t in staged],
                           "cpu_seconds": [round(t[1], 2) for t in staged]},
      "ratio_stage_over_bare_wall": round(_median([t[0] for t in staged]) / bare_wall, 3),
      "ratio_stage_over_bare_cpu": round(_median([t[1] for t in staged]) / bare_cpu, 3),
      "tool": {"wall_seconds": round(wall, 2), "cpu_seconds": round(cpu, 2),
               "stage_seconds": stats["seconds"], "setup_seconds": stats["setup_seconds"]},
      "ratio_tool_over_bare_wall": round(stats["seconds"] / bare_wall, 3),
      "ratio_tool_process_over_bare_wall": round(wall / bare_wall, 3),
      "ratio_tool_process_over_bare_cpu": round(cpu / bare_cpu, 3),
      "cache_bytes_per_entry": stats["cache_bytes_per_entry"],
      "distill_bytes_per_instance": stats["distill_bytes_per_instance"],
      "stats": stats}


def tf_uniforms():
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  return tf.zeros([BATCH, 20, 32])


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--work_dir", default="/tmp/bench_teacher_labels")
  parser.add_argument("--bert_base", action="store_true")
  parser.add_argument("--reps", type=int, default=2, help="bare/stage pass pairs per case")
  parser.add_argument("--output", default=os.path.join(ROOT, "bench", "results",
                                                       "teacher_labels.json"))
  args = parser.parse_args()
  if not os.path.exists(SAMPLE):
    sys.exit(f"error: {SAMPLE}: sample dump not found (see ../shared/data/README.md)")
  load = os.getloadavg()
  d = prepare(args.work_dir)
  small = save_teacher(os.path.join(args.work_dir, "teacher_4l_256h"), d["vocab"], **SMALL)
  cases = [("4l_256h", d["records"], small, p, m)
           for p, m in (("none", "topk"), ("bf16", "topk"), ("none", "sampled"))]
  if args.bert_base:
    base = save_teacher(os.path.join(args.work_dir, "teacher_bert_base"), d["vocab"])
    records = subset_records(d["records"], os.path.join(args.work_dir, "records_part0"),
                             "train/part-00000")
    cases.append(("bert_base_train_part0", records, base, "none", "topk"))
  results = []
  for name, records, prefix, precision, method in cases:
    out = os.path.join(args.work_dir, f"distill_{name}_{precision}_{method}")
    reps = 1 if name.startswith("bert_base") else args.reps
    results.append(dict(teacher=name, **measure(d, records, prefix, precision, method, out,
                                                reps)))
    print(json.dumps({k: v for k, v in results[-1].items() if k != "stats"}), flush=True)
  result = {"records_flags": RECORD_FLAGS, "batch_size": BATCH, "cpu_count": os.cpu_count(),
            "load_average_at_start": load, "load_average_at_end": os.getloadavg(),
            "cases": results}
  os.makedirs(os.path.dirname(args.output), exist_ok=True)
  stage.atomic_write_text(args.output, json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
  main()
