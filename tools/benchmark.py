"""Teacher and students side by side: size, latency, throughput, held-out metrics.

  python tools/benchmark.py --input_dir=out/distill --output_dir=out/benchmark \
      --models=teacher=out/teacher/bert_config.json:out/teacher,student=:out/student

--models: name=config:checkpoint, comma-separated, the reference (teacher) first;
an empty config means the one beside the checkpoint. All models are measured in
one run with their repeats interleaved (see modeling/evaluation/evaluation.py). Writes
benchmark.md (the table), benchmark.json (every number and sample, the load
average, settings) and benchmark.png (held-out MLM accuracy vs latency).

With --task: classifiers on classification records (teacher, student
fine-tuned without a teacher, distilled student): size, parameters, latency
at batch 1, throughput and the task metrics (tools/_task_eval.py).
"""

import dataclasses
import os
import platform

import _bootstrap  # noqa: F401  pylint: disable=unused-import
import _task_eval
from absl import flags
import tensorflow as tf

from modeling.evaluation import evaluation
from pipeline.core import cli
from pipeline.inputs import pretraining_dataset
from pipeline.core import stage
from pipeline.core.errors import InputError

FLAGS = flags.FLAGS
flags.DEFINE_list("models", None, "name=config:checkpoint,... (first = reference).",
                  required=True)
flags.DEFINE_string("input_dir", None, "create_pretraining_data or "
                    "extract_teacher_labels output (held-out metrics).", required=True)
flags.DEFINE_string("output_dir", None, "Where benchmark.md/.json/.png go.", required=True)
flags.DEFINE_enum("split", None, pretraining_dataset.SPLITS + ("dev", "test"), "Records split "
                  "for the metrics (default: eval; dev with --task).")
flags.DEFINE_bool("task", False, "Classifiers on classification records.")
flags.DEFINE_string("vocab_file", None, "With --task: refuse records made with "
                    "another vocab.")
flags.DEFINE_integer("eval_batch_size", 32, "Batch of the metrics pass.", lower_bound=1)
flags.DEFINE_integer("max_eval_batches", None, "Metrics on this many batches only.",
                     lower_bound=1)
flags.DEFINE_integer("seq_length", None, "Sequence length of the timed inputs "
                     "(default: 128; the records' with --task).")
flags.DEFINE_integer("num_predictions", 20, "Masked positions per timed sequence.")
flags.DEFINE_integer("latency_batch", 1, "Batch of the latency calls.")
flags.DEFINE_integer("throughput_batch", 128, "Batch of the throughput calls.")
flags.DEFINE_integer("repeats", 10, "Timed calls per model and kind.")
flags.DEFINE_integer("warmup", 2, "Untimed calls first (after tracing).")


def _model_specs():
  """[(name, config or None, checkpoint)] of --models."""
  specs = []
  for item in FLAGS.models:
    name, sep, rest = item.partition("=")
    config, sep2, checkpoint = rest.partition(":")
    if not (sep and sep2 and name and checkpoint):
      raise InputError("--models", f"{item!r} is not name=config:checkpoint")
    if name in [s[0] for s in specs]:
      raise InputError("--models", f"model name {name!r} given twice")
    specs.append((name, config or None, checkpoint))
  return specs


def _settings():
  try:
    return evaluation.SpeedSettings(
        FLAGS.seq_length or 128, FLAGS.latency_batch, FLAGS.throughput_batch,
        FLAGS.repeats, FLAGS.warmup, FLAGS.num_predictions)
  except ValueError as e:
    raise InputError("flags", str(e)) from None


def _held_out(specs, inp):
  """{name: model} and the per-model results without speed."""
  models, results = {}, []
  for name, config, checkpoint in specs:
    model = evaluation.load_model(checkpoint, inp, config)
    batches = evaluation.eval_batches(inp, FLAGS.eval_batch_size, FLAGS.max_eval_batches)
    metrics, counts = evaluation.evaluate(model, batches, inp.labels)
    result = {"name": name, "metrics": metrics, "counts": counts}
    result.update(evaluation.describe(model, checkpoint, config))
    models[name] = model
    results.append(result)
    acc = metrics["mlm_accuracy"]
    print(f"benchmark: {name}: mlm_accuracy={acc if acc is None else round(acc, 4)} "
          f"({counts['masked_positions']} masked positions)", flush=True)
  return models, results


def _write(report):
  out = FLAGS.output_dir
  os.makedirs(out, exist_ok=True)
  stage.atomic_write_text(os.path.join(out, "benchmark.json"), stage.json_dumps(report))
  stage.atomic_write_text(os.path.join(out, "benchmark.md"),
                          evaluation.markdown_report(report))
  tmp = os.path.join(out, f".benchmark.png.tmp.{os.getpid()}")
  evaluation.write_plot(report["models"], tmp, FLAGS.latency_batch)
  os.replace(tmp, os.path.join(out, "benchmark.png"))


def _report(inp, results, settings, load_before, load_after):
  report = {
      "models": evaluation.compare(results),
      "settings": dict(dataclasses.asdict(settings), eval_batch_size=FLAGS.eval_batch_size,
                       max_eval_batches=FLAGS.max_eval_batches),
      "input": {"dir": inp.dir, "stage": inp.manifest["stage"], "split": inp.split,
                "manifest_sha256": inp.manifest["_sha256"],
                "examples": results[0]["counts"]["examples"]},
      "environment": {"load_average_before": load_before, "load_average_after": load_after,
                      "cpu_count": os.cpu_count(), "tensorflow": tf.__version__,
                      "machine": platform.machine(), "code_version": stage.code_version()},
  }
  if inp.labels:
    report["input"]["teacher_kl"] = evaluation.KL_NOTE
  return report


def main(argv):
  del argv
  if FLAGS.task:
    return _task_eval.benchmark(_model_specs())
  if FLAGS.split not in (None,) + pretraining_dataset.SPLITS:
    raise InputError("--split", f"pretraining records have splits {pretraining_dataset.SPLITS}")
  specs, settings = _model_specs(), _settings()
  inp = evaluation.read_eval_input(FLAGS.input_dir, FLAGS.split or "eval")
  models, results = _held_out(specs, inp)
  # The load average says how noisy the machine was while timing.
  before = os.getloadavg()
  speed = evaluation.measure_speed(models, settings)
  after = os.getloadavg()
  for result in results:
    result.update(speed[result["name"]])
  report = _report(inp, results, settings, before, after)
  _write(report)
  print(evaluation.markdown_table(report["models"]), end="")
  print(f"benchmark: {len(results)} models -> {FLAGS.output_dir}")


if __name__ == "__main__":
  cli.run(main)
