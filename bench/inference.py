"""The inference table (issue 13): every model x format x sequence length x batch, and serving.

  .venv/bin/python bench/inference.py --records_dir=/tmp/task_exp/records \
      --vocab_file=/tmp/task_exp/pretrained/minilm_l6/vocab.txt \
      --models=teacher=/tmp/task_exp/teacher/best,student=/tmp/task_exp/l4_distilled/best \
      [--pruned_checkpoint=student=out/pruned/step-3/best] --work_dir=/tmp/inference

--models: name=checkpoint pairs (anything the project reads), the teacher
first (or --teacher=name), then the students. For each it exports (cached in
--work_dir: a rerun reuses exports whose checkpoint, records and vocab did not
change) the raw-text SavedModel, ONNX fp32 + int8 dynamic, and int8 static
calibrated on the records' train split; a --pruned_checkpoint (of one student,
`name=path`, default the first student; a tools/prune.py output directory
means its last step-<k>/best) gets SavedModel and ONNX fp32.

Then, one measurement at a time (the machine has 2 cores):
  1. the task metric of every model x format on --split, from each engine's
     own logits, and its agreement with the TF fp32 predictions;
  2. latency p50/p99 and seq/s at --seq_lengths x --batch_sizes, every cell
     interleaved with the others per round (bench/inference_engines.py);
  3. tools/serve.py on --serve_model's SavedModel (a child process on
     127.0.0.1; loading while the exports run, ready and idle before 1), compared
     with its bare serving_default at batch 1, then --requests requests at
     each --concurrency (bench/inference_serving.py);
  4. the goals, each met / not met from those figures (bench/inference_report.py).
Writes --output_json (bench/results/inference.json), --output_md
(docs/inference.md) and the PNG beside it. --quick: a smoke run (few calls
and requests, short sequences; outputs in --work_dir/quick/ unless given).
"""

import argparse
import json
import os
import platform
import re
import shlex
import sys

BENCH = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH)
sys.path.insert(0, ROOT)
sys.path.insert(0, BENCH)
from pipeline.core import startup  # noqa: E402  pylint: disable=wrong-import-position
startup.quiet_tensorflow()  # no CUDA start-up noise on a CPU-only machine

# pylint: disable=wrong-import-position
import inference_engines as engines  # noqa: E402
import inference_report as report  # noqa: E402
import inference_serving as serving  # noqa: E402
from tooling import PY  # noqa: E402

CONFIG_PREFIX = "config:"
QUICK = {"calls": 5, "warmup": 1, "requests": 32, "seq_lengths": "16,32"}


def _ints(text):
  return [int(x) for x in text.split(",") if x]


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--records_dir", required=True, help="classification records")
  p.add_argument("--vocab_file", required=True)
  p.add_argument("--models", required=True, help="name=checkpoint,... (teacher first)")
  p.add_argument("--teacher", help="which of --models is the teacher (default: the first)")
  p.add_argument("--pruned_checkpoint", help="[student_name=]checkpoint or prune output dir")
  p.add_argument("--speed_reference",
                 help="name=checkpoint, or name=config:CONFIG (a bundled config name or a "
                 "bert_config.json: a seeded random-weight classifier of that shape, made in "
                 "--work_dir), of the model the speed goal names (BERT-base) where no trained "
                 "one can be had: timed at the goal's shape only; its metric is not a result")
  p.add_argument("--work_dir", default="/tmp/inference_bench")
  p.add_argument("--split", default="dev", help="split the task metric is measured on")
  p.add_argument("--metric", default="accuracy", help="the task metric of the goals")
  p.add_argument("--seq_lengths", default="128,384")
  p.add_argument("--batch_sizes", default="1,8,32")
  p.add_argument("--calls", type=int, default=50, help="timed calls per cell")
  p.add_argument("--warmup", type=int, default=3)
  p.add_argument("--max_case_seconds", type=float, default=0.0,
                 help="stop timing a cell (after 10 calls) past this many seconds; 0: never")
  p.add_argument("--calibration_examples", type=int, default=300)
  p.add_argument("--serve_model", help="model served in the load test (default: first student)")
  p.add_argument("--serve_flags", default="", help="extra tools/serve.py flags")
  p.add_argument("--concurrency", default="1,8,32")
  p.add_argument("--requests", type=int, default=400, help="requests per concurrency level")
  p.add_argument("--skip_serving", action="store_true")
  p.add_argument("--quick", action="store_true", help="smoke run (see the module doc)")
  p.add_argument("--output_json")
  p.add_argument("--output_md")
  args = p.parse_args(argv)
  if args.quick:
    for name, value in QUICK.items():
      if getattr(args, name) == p.get_default(name):
        setattr(args, name, value)
  out = os.path.join(args.work_dir, "quick") if args.quick else None
  args.output_json = args.output_json or (os.path.join(out, "inference.json") if out else
                                          os.path.join(BENCH, "results", "inference.json"))
  args.output_md = args.output_md or (os.path.join(out, "inference.md") if out else
                                      os.path.join(ROOT, "docs", "inference.md"))
  for name in ("records_dir", "vocab_file", "work_dir"):
    setattr(args, name, os.path.abspath(getattr(args, name)))
  args.seq_lengths, args.batch_sizes = _ints(args.seq_lengths), _ints(args.batch_sizes)
  args.concurrency = _ints(args.concurrency)
  args.models = {name: os.path.abspath(path) for name, path in (
      pair.split("=", 1) for pair in args.models.split(",") if pair)}
  args.teacher = args.teacher or next(iter(args.models))
  students = [n for n in args.models if n != args.teacher]
  if args.teacher not in args.models or not students:
    p.error("--models needs the teacher and at least one student")
  args.serve_model = args.serve_model or students[0]
  args.pruned = _pruned(p, args.pruned_checkpoint, students)
  args.speed_reference = _named(p, "--speed_reference", args.speed_reference, args.models)
  return args


def _named(parser, flag, value, taken):
  """(name, absolute checkpoint) of a name=checkpoint flag, or None."""
  if not value:
    return None
  if not re.match(r"^[\w.-]+=.", value):
    parser.error(f"{flag}: expected name=checkpoint, got {value!r}")
  name, path = value.split("=", 1)
  if name in taken:
    parser.error(f"{flag}: {name!r} is already one of --models")
  return name, path if path.startswith(CONFIG_PREFIX) else os.path.abspath(path)


def _pruned(parser, value, students):
  """(name, of, checkpoint) of --pruned_checkpoint, or None."""
  if not value:
    return None
  of, path = value.split("=", 1) if re.match(r"^[\w.-]+=", value) else (students[0], value)
  if of not in students:
    parser.error(f"--pruned_checkpoint: {of!r} is not one of the students {students}")
  report = os.path.join(path, "pruning.json")
  if os.path.isfile(report):  # A tools/prune.py output: its last step's best/.
    with open(report, encoding="utf-8") as f:
      steps = json.load(f)["steps"]
    if not steps:
      parser.error(f"--pruned_checkpoint: {report} lists no pruning step")
    path = steps[-1]["checkpoint"]
  return f"{of}_pruned", of, os.path.abspath(path)


def _roles(args):
  """{name: (role, of, checkpoint, formats)} in table order."""
  roles = {n: ("teacher" if n == args.teacher else "student", None, c, engines.FORMATS)
           for n, c in args.models.items()}
  if args.pruned:
    name, of, path = args.pruned
    roles[name] = ("pruned", of, path, engines.PRUNED_FORMATS)
  if args.speed_reference:
    name, path = args.speed_reference
    if path.startswith(CONFIG_PREFIX):
      path = shaped_classifier(args, name, path[len(CONFIG_PREFIX):])
    roles[name] = ("speed_reference", None, path, engines.PRUNED_FORMATS)
  return roles


def shaped_classifier(args, name, config_name):
  """A classifier of a config's shape with seeded random weights (for timing only),
  with the records' labels and the vocab's size; made once in --work_dir."""
  # pylint: disable=import-outside-toplevel
  import keras
  from modeling.models import classification
  from modeling.networks import bert
  from pipeline.text import tokenization
  directory = os.path.join(args.work_dir, "speed_reference", name)
  if os.path.isfile(os.path.join(directory, classification.CLASSIFIER_FILE)):
    return directory
  vocab_size = len(tokenization.load_vocab(args.vocab_file))
  labels = engines.record_labels(args.records_dir, args.split)
  keras.utils.set_random_seed(0)
  model = classification.build_classifier(
      bert.load_config(config_name, vocab_size=vocab_size), len(labels))
  classification.save_classifier(model, directory, labels=list(labels),
                                 info={"speed_reference": config_name})
  return directory


def export_everything(args, roles, started):
  """{name: {format: path}}; the served SavedModel first, so that the server (appended
  to `started`, for the caller to stop) loads while the other exports run."""
  order = [args.serve_model] + [n for n in roles if n != args.serve_model]
  paths = {}
  for name in order:
    _, _, checkpoint, formats = roles[name]
    if name == args.serve_model and not args.skip_serving:
      export_dir = engines.export_all(name, checkpoint, args, ("tf_fp32",))["tf_fp32"]
      started.append(serving.Server(PY, export_dir, "bench",
                                    os.path.join(args.work_dir, "logs", "serve.log"),
                                    shlex.split(args.serve_flags)).start())
    paths[name] = engines.export_all(name, checkpoint, args, formats)
  return {n: paths[n] for n in roles}


def measure_models(args, roles, paths, batches, labels):
  """(results["models"], {(name, format): engine}) with size, config and task metric."""
  models, opened = {}, {}
  for name, (role, of, checkpoint, formats) in roles.items():
    config = engines.bert_config(paths[name]["tf_fp32"])
    entry = {"role": role, "of": of, "checkpoint": os.path.abspath(checkpoint),
             "config": config, "formats": {}}
    reference = None
    for fmt in formats:
      engine = opened[name, fmt] = engines.open_engine(fmt, paths[name][fmt])
      metrics, predicted = engines.task_metrics(engine, batches, labels)
      reference = predicted if fmt == "tf_fp32" else reference
      entry["formats"][fmt] = {
          "path": paths[name][fmt], "size_mb": engines.disk_mb(paths[name][fmt]),
          "metrics": metrics,
          "agreement_with_tf_fp32": float((predicted == reference).mean())}
    entry["parameters"] = opened[name, "tf_fp32"].parameters()
    models[name] = entry
    print(f"inference: {name}: " + ", ".join(
        f"{f} {e['metrics'][args.metric]:.4f}" for f, e in entry["formats"].items()))
  return models, opened


def measure_latency(args, models, opened, notes):
  """results["latency"]: one row per model x format x S x B (skipped ones say why)."""
  cases, rows = {}, []
  for name, entry in models.items():
    config = entry["config"]
    for fmt in entry["formats"]:
      for seq in args.seq_lengths:
        for batch in args.batch_sizes:
          row = {"model": name, "format": fmt, "seq_length": seq, "batch": batch}
          rows.append(row)
          if seq > config["max_position_embeddings"]:
            row["skipped"] = f"max_position_embeddings {config['max_position_embeddings']}"
            continue
          if entry["role"] == "speed_reference" and (seq, batch) != (args.seq_lengths[0], 1):
            row["skipped"] = "speed reference: the goal's shape only"
            continue
          feed = engines.timing_feed(batch, seq, config["vocab_size"])
          cases[name, fmt, seq, batch] = (opened[name, fmt], feed, batch)
  timed = engines.time_cases(cases, args.calls, args.warmup, args.max_case_seconds)
  for row in rows:
    row.update(timed.get((row["model"], row["format"], row["seq_length"], row["batch"]), {}))
  for reason in sorted({r["skipped"] for r in rows if "skipped" in r}):
    count = sum(r.get("skipped") == reason for r in rows)
    notes.append(f"{count} cells skipped ({reason})")
  return rows


def load_test(args, server, export_dir, texts):
  """results["serving"]: the bare model, then each concurrency level."""
  model = serving.BareModel(export_dir)
  bare = serving.bare_latency(model, texts, args.calls, args.warmup)
  # The ceiling of "thanks to batching": the bare model's own batched throughput.
  bare["batched_seq_per_s"] = {str(b): v for b, v in serving.bare_batched(
      model, texts, (4, 8, 16, 32), seconds=1.0 if args.quick else 4.0).items()}
  levels = []
  for concurrency in args.concurrency:
    levels.append(serving.load_level(server, texts, concurrency, args.requests))
    print(f"inference: serve.py at concurrency {concurrency}: "
          f"{levels[-1]['requests_per_s']:.1f} req/s, p50 {levels[-1]['p50_ms']:.2f} ms, "
          f"{levels[-1]['errors']} errors")
  return {"model": args.serve_model, "export_dir": export_dir, "bare": bare, "levels": levels,
          "server_flags": shlex.split(args.serve_flags), "texts": len(texts)}


def environment(args):
  import onnxruntime  # pylint: disable=import-outside-toplevel
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  return {"command": shlex.join([".venv/bin/python", os.path.relpath(__file__, ROOT)]
                                + sys.argv[1:]),
          "cpu_count": os.cpu_count(), "python": platform.python_version(),
          "tensorflow": tf.__version__, "onnxruntime": onnxruntime.__version__,
          "work_dir": os.path.abspath(args.work_dir)}


def run(args):
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  tf.config.threading.set_intra_op_parallelism_threads(engines.ORT_THREADS)
  tf.config.threading.set_inter_op_parallelism_threads(1)
  env, notes, roles = environment(args), [], _roles(args)
  if not args.pruned:
    notes.append("no --pruned_checkpoint: the pruned rows and their goal are skipped")
  started = []
  try:
    paths = export_everything(args, roles, started)
    server = started[0].wait_ready() if started else None  # idle from here on
    batches, labels = engines.split_batches(args.records_dir, args.split)
    env["load_average_before"] = os.getloadavg()
    models, opened = measure_models(args, roles, paths, batches, labels)
    latency = measure_latency(args, models, opened, notes)
    env["load_average_after_timing"] = os.getloadavg()
    serve = None
    if server:
      texts = serving.texts_from_records(batches, args.vocab_file)
      serve = load_test(args, server, paths[args.serve_model]["tf_fp32"], texts)
  finally:
    for server in started:
      server.stop()
  env["load_average_after"] = os.getloadavg()
  results = {
      "settings": {"quick": args.quick, "metric": args.metric, "teacher": args.teacher,
                   "seq_lengths": args.seq_lengths, "batch_sizes": args.batch_sizes,
                   "calls": args.calls, "warmup": args.warmup, "ort_threads": engines.ORT_THREADS,
                   "ort_spinning": engines.ORT_SPINNING,
                   "max_case_seconds": args.max_case_seconds, "concurrency": args.concurrency,
                   "requests": args.requests,
                   "reference": {"batch": 1, "seq_length": args.seq_lengths[0]},
                   "speed_reference": args.speed_reference and args.speed_reference[0]},
      "metric_input": {"dir": os.path.abspath(args.records_dir), "split": args.split,
                       "examples": sum(len(y) for _, y in batches)},
      "models": models, "latency": latency, "serving": serve, "environment": env,
      "notes": notes}
  results["goals"] = report.goals(results)
  return results


def write_outputs(results, args):
  for path in (args.output_json, args.output_md):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(args.output_json, "w", encoding="utf-8") as f:
    json.dump(results, f, indent=1, sort_keys=True)
  with open(args.output_md, "w", encoding="utf-8") as f:
    f.write(report.markdown(results))
  report.write_plot(results, os.path.splitext(args.output_md)[0] + ".png")
  for goal in results["goals"]:
    print(f"goal: {goal['goal']}: {goal['measured']} -> "
          f"{'met' if goal['met'] else 'n/a' if goal['met'] is None else 'NOT met'}")
  print(f"inference: wrote {args.output_json}, {args.output_md}")


def main(argv=None):
  args = parse_args(argv)
  write_outputs(run(args), args)


if __name__ == "__main__":
  main()
