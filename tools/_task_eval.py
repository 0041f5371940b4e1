"""tools/evaluate.py --task and tools/benchmark.py --task: classifiers.

  python tools/evaluate.py --task --checkpoint=out/student/best --input_dir=out/task \
      --split=dev --output_json=out/student_dev.json
  python tools/benchmark.py --task --input_dir=out/task_distill --output_dir=out/bench \
      --models=teacher=:out/task_teacher/best,finetuned=:out/ft/best,distilled=:out/kd/best

--input_dir is create_classification_data output, or extract_teacher_labels
--task output (then the teacher's agreement and KL are added); --checkpoint
(and each model's checkpoint) a classifier with its config beside it. See
modeling/evaluation/task_evaluation.py for the metrics.

Imported by the tools; reads their flags.
"""

import dataclasses
import os
import platform
import time

from absl import flags
import tensorflow as tf

from modeling.evaluation import evaluation
from modeling.evaluation import task_evaluation as te
from pipeline.core import stage
from pipeline.core.errors import InputError

FLAGS = flags.FLAGS


def _input():
  return te.read_task_eval_input(FLAGS.input_dir, FLAGS.split or "dev", FLAGS.vocab_file)


def _shown(metrics):
  return " ".join(f"{k}={'n/a' if v is None else f'{v:.4f}'}" for k, v in metrics.items())


def evaluate():
  start = time.monotonic()
  inp = _input()
  model = te.load_classifier(FLAGS.checkpoint, inp, FLAGS.bert_config_file)
  metrics, report, counts = te.evaluate(model, inp, FLAGS.batch_size,
                                        FLAGS.max_eval_batches)
  result = {"metrics": metrics, "report": report, "counts": counts,
            "seconds": round(time.monotonic() - start, 2),
            "model": dict(evaluation.describe(model, FLAGS.checkpoint,
                                              FLAGS.bert_config_file),
                          num_labels=model.num_labels),
            "input": dict(inp.describe(), batch_size=FLAGS.batch_size,
                          max_eval_batches=FLAGS.max_eval_batches),
            "code_version": stage.code_version()}
  os.makedirs(os.path.dirname(os.path.abspath(FLAGS.output_json)), exist_ok=True)
  stage.atomic_write_text(FLAGS.output_json, stage.json_dumps(result))
  print(f"evaluate --task: {counts['examples']} examples ({inp.split}): "
        f"{_shown(metrics)} -> {FLAGS.output_json}")


def _speed_settings(inp):
  seq_length = FLAGS.seq_length or inp.spec.max_seq_length
  try:
    return evaluation.SpeedSettings(seq_length, FLAGS.latency_batch,
                                    FLAGS.throughput_batch, FLAGS.repeats, FLAGS.warmup,
                                    num_predictions=1)
  except ValueError as e:
    raise InputError("flags", str(e)) from None


def _held_out(specs, inp):
  models, results = {}, []
  for name, config, checkpoint in specs:
    model = te.load_classifier(checkpoint, inp, config)
    metrics, report, counts = te.evaluate(model, inp, FLAGS.eval_batch_size,
                                          FLAGS.max_eval_batches)
    result = {"name": name, "metrics": metrics, "report": report, "counts": counts}
    result.update(evaluation.describe(model, checkpoint, config))
    models[name] = model
    results.append(result)
    print(f"benchmark --task: {name}: {_shown(metrics)}", flush=True)
  return models, results


def _write(report):
  out = FLAGS.output_dir
  os.makedirs(out, exist_ok=True)
  stage.atomic_write_text(os.path.join(out, "benchmark.json"), stage.json_dumps(report))
  stage.atomic_write_text(os.path.join(out, "benchmark.md"), te.markdown_report(report))
  tmp = os.path.join(out, f".benchmark.png.tmp.{os.getpid()}")
  te.write_plot(report["models"], tmp, FLAGS.latency_batch)
  os.replace(tmp, os.path.join(out, "benchmark.png"))


def benchmark(specs):
  """The task table of --models (name, config or None, checkpoint)."""
  inp = _input()
  settings = _speed_settings(inp)
  models, results = _held_out(specs, inp)
  before = os.getloadavg()  # how noisy the machine was while timing
  speed = evaluation.measure_speed(models, settings, te.classifier_case)
  after = os.getloadavg()
  for result in results:
    result.update(speed[result["name"]])
  settings = dataclasses.asdict(settings)
  del settings["num_predictions"]  # masked positions: pretraining only
  report = {
      "models": evaluation.compare(results, metric="accuracy"),
      "num_labels": inp.spec.num_labels, "labels": list(inp.spec.labels),
      "settings": dict(settings, eval_batch_size=FLAGS.eval_batch_size,
                       max_eval_batches=FLAGS.max_eval_batches),
      "input": dict(inp.describe(), examples=results[0]["counts"]["examples"],
                    task=inp.manifest["config"].get("task")),
      "environment": {"load_average_before": before, "load_average_after": after,
                      "cpu_count": os.cpu_count(), "tensorflow": tf.__version__,
                      "machine": platform.machine(), "code_version": stage.code_version()},
  }
  _write(report)
  print(evaluation.markdown_table(report["models"], te.columns(report["models"])), end="")
  print(f"benchmark --task: {len(results)} models -> {FLAGS.output_dir}")
