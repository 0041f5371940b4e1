"""Benchmark of stage 4 (create_pretraining_data): throughput, memory, scaling.

  .venv/bin/python bench/create_pretraining_data.py [--work_dir /tmp/bench_cpd]

On the real sample dump (../shared/data) at 1x and at 10x its size (ten copies of
every document under distinct page ids, pushed through the real extract -> shard
stages, so shards are 10x larger), with --max_seq_length 128
--max_predictions_per_seq 20 --dupe_factor 5:
- instances/s and MB of text/s per core (one worker, tokenizer threads off, CPU
  time of the process from wait4),
- peak RSS of the process (ru_maxrss); memory is set by the shard size, so 10x is
  run both with the same 8 shards (10x larger shards) and with 80 shards (shards
  the size of 1x's),
- wall time with 1 and 2 worker processes on the 10x corpus (speedup).
Writes bench/results/create_pretraining_data.json; nothing here is typed by hand
except the reference figures quoted from the issue, labelled as such.
"""

import argparse
import json
import os
import shutil
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench import tooling  # noqa: E402  pylint: disable=wrong-import-position
from pipeline.core import kinds  # noqa: E402  pylint: disable=wrong-import-position
from pipeline.core import stage  # noqa: E402  pylint: disable=wrong-import-position

SAMPLE = os.path.join(ROOT, "..", "shared", "data", "enwiki-sample-pages-articles.xml.bz2")
RECORD_FLAGS = ["--max_seq_length=128", "--max_predictions_per_seq=20", "--dupe_factor=5"]
# Quoted from the issue (google-research/bert's script on this machine), not measured here.
REFERENCE = {"instances_per_second_per_core": 2700, "peak_rss_mb_1x": 545,
             "note": "google-research/bert create_pretraining_data.py, figures from the issue"}


def run(tool, *args, env=None):
  """Runs a tool; returns (wall s, cpu s, peak RSS MB) of that process alone."""
  result = tooling.run_tool(tool, args, env=env)
  return result["wall_seconds"], result["cpu_seconds"], result["max_rss_mb"]


def multiply_corpus(src_extract, dst_extract, copies):
  """A completed extract_wiki output with `copies` copies of every document."""
  _, src = kinds.read(src_extract, kinds.DOCUMENTS)
  out = stage.StageOutput(dst_extract, kinds.DOCUMENTS.stage, {"copies_of": src["_sha256"],
                                                       "copies": copies}, src["_sha256"])
  if out.prepare():
    return
  names = []
  for entry in src["files"]:
    with open(os.path.join(src_extract, entry["name"]), encoding="utf-8") as f:
      docs = [json.loads(line) for line in f]
    with out.writing(entry["name"]) as tmp, open(tmp, "w", encoding="utf-8") as f:
      for c in range(copies):
        for doc in docs:
          f.write(json.dumps(dict(doc, id=str(int(doc["id"]) + c * 10**8)), ensure_ascii=False) + "\n")
    names.append(entry["name"])
  n = src["counts"]["documents"] * copies
  out.finalize(names, {"documents": n, "pages_read": n}, {"documents": n})


def prepare(work):
  """Extract + shard the sample at 1x and 10x, and learn a 30,522-entry vocab."""
  d = {k: os.path.join(work, k) for k in ("extract", "extract10", "shards1", "shards10",
                                          "shards10x80")}
  d["vocab"] = os.path.join(work, "vocab", "vocab.txt")
  run("extract_wiki", f"--input={SAMPLE}", f"--output_dir={d['extract']}")
  multiply_corpus(d["extract"], d["extract10"], 10)
  for src, dst, n in (("extract", "shards1", 8), ("extract10", "shards10", 8),
                      ("extract10", "shards10x80", 80)):
    run("shard_text", f"--input_dir={d[src]}", f"--output_dir={d[dst]}", f"--num_shards={n}",
        "--eval_fraction=0")
  run("build_vocab", f"--input_dir={d['shards1']}", f"--output_file={d['vocab']}",
      "--vocab_size=30522")
  return d


def measure(d, shards, out, workers):
  shutil.rmtree(out, ignore_errors=True)
  wall, cpu, rss = run("create_pretraining_data", f"--input_dir={d[shards]}",
                       f"--output_dir={out}", f"--vocab_file={d['vocab']}",
                       f"--num_workers={workers}", *RECORD_FLAGS,
                       env={"TOKENIZERS_PARALLELISM": "false"})
  with open(os.path.join(out, "stats.json")) as f:
    stats = json.load(f)
  return {"workers": workers, "wall_seconds": round(wall, 3), "cpu_seconds": round(cpu, 3),
          "peak_rss_mb": round(rss, 1), "instances": stats["instances"],
          "text_mb": round(stats["text_bytes"] / 1e6, 3), "shards": len(stats["shards"]),
          "stage_seconds": stats["seconds"],
          "tokenize_fraction_of_work": round(stats["worker_tokenize_seconds"]
                                             / stats["worker_seconds"], 3)}


def verification_cost(d, shards, measured):
  """The cost of checking inputs by content: the records stage hashes every text
  shard and .docs.tsv while reading it (sha256 vs the shard manifest). Timed here
  alone, in this process, over the same files; as a share of the stage's CPU."""
  _, manifest = kinds.read(d[shards], kinds.TEXT_SHARDS)
  paths = [os.path.join(d[shards], f["name"]) for f in manifest["files"]]
  start = time.process_time()
  for path in paths:
    stage.file_sha256(path)
  seconds = time.process_time() - start
  return {"files": len(paths), "mb": round(sum(map(os.path.getsize, paths)) / 1e6, 3),
          "sha256_cpu_seconds": round(seconds, 4),
          "fraction_of_stage_cpu": round(seconds / measured["cpu_seconds"], 4)}


def per_core(m):
  return {"instances_per_second_per_core": round(m["instances"] / m["cpu_seconds"], 1),
          "text_mb_per_second_per_core": round(m["text_mb"] / m["cpu_seconds"], 3)}


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--work_dir", default="/tmp/bench_create_pretraining_data")
  parser.add_argument("--output", default=os.path.join(ROOT, "bench", "results",
                                                       "create_pretraining_data.json"))
  args = parser.parse_args()
  if not os.path.exists(SAMPLE):
    sys.exit(f"error: {SAMPLE}: sample dump not found (see ../shared/data/README.md)")
  d = prepare(args.work_dir)
  one = measure(d, "shards1", os.path.join(args.work_dir, "r1"), 1)
  ten = measure(d, "shards10", os.path.join(args.work_dir, "r10"), 1)
  ten2 = measure(d, "shards10", os.path.join(args.work_dir, "r10w2"), 2)
  ten80 = measure(d, "shards10x80", os.path.join(args.work_dir, "r10x80"), 1)
  result = {
      "flags": RECORD_FLAGS, "cpu_count": os.cpu_count(),
      "x1": dict(one, **per_core(one)), "x10": dict(ten, **per_core(ten)),
      "x10_two_workers": ten2,
      "x10_same_shard_size": dict(ten80, **per_core(ten80)),
      "speedup_two_workers": round(ten["wall_seconds"] / ten2["wall_seconds"], 2),
      "rss_ratio_10x_over_1x": round(ten["peak_rss_mb"] / one["peak_rss_mb"], 2),
      "rss_ratio_10x_same_shard_size_over_1x": round(ten80["peak_rss_mb"] / one["peak_rss_mb"], 2),
      "throughput_vs_reference": round(per_core(one)["instances_per_second_per_core"]
                                       / REFERENCE["instances_per_second_per_core"], 1),
      "reference": REFERENCE,
      "input_sha256_check_x10": verification_cost(d, "shards10", ten),
      "load_average_after": os.getloadavg(),
  }
  os.makedirs(os.path.dirname(args.output), exist_ok=True)
  stage.atomic_write_text(args.output, json.dumps(result, indent=1) + "\n")
  print(json.dumps(result, indent=1))


if __name__ == "__main__":
  main()
