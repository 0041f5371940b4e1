"""What the serving path's options are worth, measured on one raw-text export.

  .venv/bin/python bench/serving_options.py --model_dir=out/task/export \
      --records_dir=out/task/records --vocab_file=out/task/vocab.txt

1. Padding: the export's serving_default (pads a batch to its longest row) against
   the same model fed the records' layout (its `tokenize` signature, padded to
   max_seq_length, then `encoded`), and the server's model call with length
   buckets (modeling/serving/model.py, --bucket_rows rows per call), at batch 1,
   8 and 32 on the split's texts, interleaved round by round; seq/s of each.
2. tools/serve.py variants: uvicorn's HTTP parser and event loop (--http=h11
   --loop=asyncio, pure Python; --http=httptools --loop=uvloop, C, what `auto`
   picks when installed) and --bucket_rows, all on 127.0.0.1, --rounds rounds of
   --requests requests at concurrency 1 and 32 each, one load test at a time
   (bench/inference_serving.py's).
Writes --output_json (bench/results/serving_options.json) and --output_md
(docs/serving_options.md, its tables); --from_json rewrites the page from the JSON.
"""

import argparse
import importlib.util
import json
import os
import sys
import time

import numpy as np

BENCH = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH)
sys.path.insert(0, ROOT)
sys.path.insert(0, BENCH)
from pipeline.core import startup  # noqa: E402  pylint: disable=wrong-import-position
startup.quiet_tensorflow()

# pylint: disable=wrong-import-position
import inference_engines as engines  # noqa: E402
import inference_serving as serving  # noqa: E402
from modeling.serving import model as model_lib  # noqa: E402
from tooling import PY  # noqa: E402

def servers_measured(bucket_rows):
  """(http, loop, bucket_rows) of each server variant."""
  return (("h11", "asyncio", 0), ("httptools", "uvloop", 0), ("h11", "asyncio", bucket_rows))


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--model_dir", help="a raw-text classifier export")
  p.add_argument("--records_dir", help="its classification records")
  p.add_argument("--vocab_file")
  p.add_argument("--split", default="test")
  p.add_argument("--batch_sizes", default="1,8,32")
  p.add_argument("--seconds", type=float, default=3.0, help="per padding cell and round")
  p.add_argument("--rounds", type=int, default=3)
  p.add_argument("--requests", type=int, default=400, help="per concurrency level")
  p.add_argument("--concurrency", default="1,32")
  p.add_argument("--bucket_rows", type=int, default=8, help="the bucketed variants' rows per call")
  p.add_argument("--work_dir", default="/tmp/serving_options", help="server logs")
  p.add_argument("--output_json", default=os.path.join(BENCH, "results",
                                                       "serving_options.json"))
  p.add_argument("--output_md", default=os.path.join(ROOT, "docs", "serving_options.md"))
  p.add_argument("--from_json", action="store_true",
                 help="no measuring: rewrite --output_md from --output_json")
  args = p.parse_args(argv)
  missing = [n for n in ("model_dir", "records_dir", "vocab_file") if not getattr(args, n)]
  if missing and not args.from_json:
    p.error("required: " + ", ".join("--" + n for n in missing))
  args.batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
  args.concurrency = [int(c) for c in args.concurrency.split(",")]
  return args


def padding(args, texts):
  """{"longest" | "max_seq_length" | "buckets": {batch: seq/s}}, cells interleaved per round."""
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  import tensorflow_text  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import
  sigs = tf.saved_model.load(args.model_dir).signatures
  pair = "text_b" in sigs["serving_default"].structured_input_signature[1]

  def feed(chunk):
    return {"text_a": tf.constant([a for a, _ in chunk])} | (
        {"text_b": tf.constant([b for _, b in chunk])} if pair else {})

  bucketed = model_lib.ServedModel(args.model_dir, bucket_rows=args.bucket_rows)
  calls = {"longest": lambda f: sigs["serving_default"](**f)["logits"].numpy(),
           "max_seq_length": lambda f: sigs["encoded"](**sigs["tokenize"](**f))[
               "logits"].numpy(),
           "buckets": lambda f: bucketed.predict(*f)["logits"]}
  # The server's model call takes lists of str: built before the clock as the others' feeds.
  make = {"longest": feed, "max_seq_length": feed,
          "buckets": lambda chunk: ([a for a, _ in chunk],
                                    [b for _, b in chunk] if pair else None)}
  rows = {(kind, b): [0, 0.0] for kind in calls for b in args.batch_sizes}
  for _ in range(args.rounds):
    for (kind, batch), acc in rows.items():
      chunks = [make[kind]([texts[(k + i) % len(texts)] for i in range(batch)])
                for k in range(0, 32 * batch, batch)]
      calls[kind](chunks[0])  # warm
      start, n = time.perf_counter(), 0
      while time.perf_counter() - start < args.seconds:
        calls[kind](chunks[n % len(chunks)])
        n += 1
      acc[0] += n * batch
      acc[1] += time.perf_counter() - start
  return {kind: {str(b): rows[kind, b][0] / rows[kind, b][1] for b in args.batch_sizes}
          for kind in calls}


def servers(args, texts):
  """[{http, loop, levels: {concurrency: [load_level result per round]}}]: both
  servers started (idle ones cost no CPU), then --rounds rounds of every server x
  concurrency level, one at a time, so that drifts in the machine hit both alike."""
  # httptools and uvloop are not in requirements.txt (nothing measured here needs
  # them); the C pair is measured where they are installed.
  variants = [(h, l, b) for h, l, b in servers_measured(args.bucket_rows)
              if all(importlib.util.find_spec(m) for m in {h, l} - {"h11", "asyncio"})]
  started = [serving.Server(PY, args.model_dir, "bench",
                            os.path.join(args.work_dir, f"serve_{http}_{loop}_b{rows}.log"),
                            [f"--http={http}", f"--loop={loop}", f"--bucket_rows={rows}"]).start()
             for http, loop, rows in variants]
  out = [{"http": h, "loop": l, "bucket_rows": b,
          "levels": {str(c): [] for c in args.concurrency}} for h, l, b in variants]
  try:
    for server in started:
      server.wait_ready()
    for _ in range(args.rounds):
      for server, entry in zip(started, out):
        for c in args.concurrency:
          entry["levels"][str(c)].append(serving.load_level(server, texts, c, args.requests))
  finally:
    for server in started:
      server.stop()
  for entry in out:
    for c, runs in entry["levels"].items():
      rates = np.array([r["requests_per_s"] for r in runs])
      p50 = np.array([r["p50_ms"] for r in runs])
      entry[f"c{c}"] = {"requests_per_s_mean": float(rates.mean()),
                        "requests_per_s_std": float(rates.std(ddof=1)) if len(runs) > 1 else 0.0,
                        "p50_ms_mean": float(p50.mean()),
                        "errors": int(sum(r["errors"] for r in runs))}
      print(f"serving_options: {_variant(entry)} c={c}: "
            f"{rates.mean():.1f} ± {entry[f'c{c}']['requests_per_s_std']:.1f} req/s over "
            f"{len(runs)} rounds, p50 {p50.mean():.2f} ms, {entry[f'c{c}']['errors']} errors",
            flush=True)
  return out


def _variant(entry):
  return (f"--http={entry['http']} --loop={entry['loop']} "
          f"--bucket_rows={entry.get('bucket_rows', 0)}")


def markdown(result):
  """The page: both tables, the command and the load averages, from the JSON."""
  pad = result["padding_seq_per_s"]
  batches = sorted(pad["longest"], key=int)  # JSON keys are strings
  loads = ", ".join(f"{name} {result[key][0]:.2f}" for name, key in (
      ("before", "load_average_before"), ("after the padding cells",
                                         "load_average_after_padding"),
      ("after", "load_average_after")))
  lines = ["# Serving options, measured", "",
           f"Written by `bench/serving_options.py` from `{os.path.basename(BENCH)}/results/"
           "serving_options.json`; command:", "", f"    {result['command']}", "",
           f"Export `{result['model_dir']}`, {result['texts']} texts of the records' split; "
           f"{result['cpu_count']} CPUs, load average (1 min) {loads}.", "",
           "## Padding (the bare model, no server), seq/s", "",
           "| padded to | " + " | ".join(f"batch {b}" for b in batches) + " |",
           "|---|" + "---:|" * len(batches)]
  for kind, label in (("longest", "the batch's longest row (serving_default)"),
                      ("max_seq_length", "max_seq_length (the records' layout)"),
                      ("buckets", f"the server's model call with --bucket_rows="
                                  f"{result.get('bucket_rows')} (a batch of at least twice "
                                  "that: length-sorted calls of that many rows)")):
    if kind not in pad:
      continue
    lines.append(f"| {label} | " + " | ".join(f"{pad[kind][b]:.1f}" for b in batches) + " |")
  levels = sorted(result["servers"][0]["levels"], key=int) if result["servers"] else []
  lines += ["", "## tools/serve.py variants", "",
            "| server | " + " | ".join(f"concurrency {c}: req/s (mean ± std), p50" for c in levels)
            + " | errors |", "|---|" + "---:|" * (len(levels) + 1)]
  for s in result["servers"]:
    cells = [s[f"c{c}"] for c in levels]
    lines.append(f"| `{_variant(s)}` | " + " | ".join(
        f"{c['requests_per_s_mean']:.1f} ± {c['requests_per_s_std']:.1f}, "
        f"{c['p50_ms_mean']:.2f} ms" for c in cells) + f" | {sum(c['errors'] for c in cells)} |")
  rounds = len(result["servers"][0]["levels"][levels[0]]) if levels else 0
  lines += ["", f"Servers: {rounds} interleaved rounds per level, one load test at a time "
            "(bench/inference_serving.py's client: one event loop, a keep-alive connection per "
            "concurrent request).", ""]
  return "\n".join(lines)


def write_page(args, result):
  os.makedirs(os.path.dirname(os.path.abspath(args.output_md)), exist_ok=True)
  with open(args.output_md, "w", encoding="utf-8") as f:
    f.write(markdown(result))
  print(f"serving_options: wrote {args.output_md}")


def main(argv=None):
  args = parse_args(argv)
  if args.from_json:
    with open(args.output_json, encoding="utf-8") as f:
      write_page(args, json.load(f))
    return
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  # As bench/inference.py times TensorFlow (before anything starts its runtime).
  tf.config.threading.set_intra_op_parallelism_threads(engines.ORT_THREADS)
  tf.config.threading.set_inter_op_parallelism_threads(1)
  batches, _ = engines.split_batches(args.records_dir, args.split)
  texts = serving.texts_from_records(batches, args.vocab_file)
  result = {"command": " ".join([".venv/bin/python", "bench/serving_options.py"] +
                                (argv if argv is not None else sys.argv[1:])),
            "model_dir": os.path.abspath(args.model_dir), "texts": len(texts),
            "cpu_count": os.cpu_count(), "bucket_rows": args.bucket_rows,
            "load_average_before": os.getloadavg()}
  result["padding_seq_per_s"] = padding(args, texts)
  for kind, cells in result["padding_seq_per_s"].items():
    print(f"serving_options: padded to {kind}: " +
          ", ".join(f"batch {b} {v:.1f} seq/s" for b, v in cells.items()), flush=True)
  result["load_average_after_padding"] = os.getloadavg()
  result["servers"] = servers(args, texts)
  result["load_average_after"] = os.getloadavg()
  os.makedirs(os.path.dirname(os.path.abspath(args.output_json)), exist_ok=True)
  with open(args.output_json, "w", encoding="utf-8") as f:
    json.dump(result, f, indent=1, sort_keys=True)
  print(f"serving_options: wrote {args.output_json}")
  write_page(args, result)


if __name__ == "__main__":
  main()
