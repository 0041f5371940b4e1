"""tools/evaluate.py and tools/benchmark.py: what is measured follows the input's kind.

  pretraining records, distill records   -> BertPretrainer checkpoints: MLM / NSP
                                            metrics (+ teacher agreement and KL on
                                            distill records), modeling/evaluation/
                                            evaluation.py
  classification records, task distill   -> classifiers: accuracy, F1, MCC, ...
  records                                   (+ teacher metrics), task_evaluation.py
  QA records, QA distill records          -> span models: the official SQuAD EM / F1
                                            (+ teacher agreement), qa_evaluation.py;
                                            evaluate also writes predictions.json

evaluate writes one JSON; benchmark measures every model's held-out metrics and
speed in one run (repeats interleaved) and writes benchmark.md/.json/.png.
"""

import dataclasses
import os
import platform
import time
from typing import Optional

import tensorflow as tf

from modeling.evaluation import evaluation
from modeling.evaluation import qa_evaluation as qe
from modeling.evaluation import task_evaluation as te
from pipeline.core import kinds
from pipeline.core import stage
from pipeline.core.errors import ConfigError, InputError

_PRETRAINING = (kinds.PRETRAINING_RECORDS, kinds.DISTILL_RECORDS)
_TASK = (kinds.CLASSIFICATION_RECORDS, kinds.TASK_DISTILL_RECORDS)
_QA = (kinds.QA_RECORDS, kinds.QA_DISTILL_RECORDS)
PRETRAINING_SPLITS = ("train", "eval")
TASK_SPLITS = ("train", "dev", "test")
QA_SPLITS = ("dev",)
# Flags of evaluate/benchmark and the input kinds they apply to.
APPLIES = {"num_predictions": _PRETRAINING}


@dataclasses.dataclass(frozen=True, kw_only=True)
class EvaluateConfig:
  """tools/evaluate.py's settings."""
  checkpoint: str
  input_dir: str
  output_json: str
  bert_config_file: Optional[str] = None  # Default: the config beside the checkpoint.
  split: Optional[str] = None  # Default: eval (pretraining) / dev (classifiers).
  vocab_file: Optional[str] = None  # Classifiers: refuse records of another vocab.
  batch_size: int = 32
  max_eval_batches: Optional[int] = None


@dataclasses.dataclass(frozen=True, kw_only=True)
class BenchmarkConfig:
  """tools/benchmark.py's settings; models: [(name, config or None, checkpoint)]."""
  models: tuple
  input_dir: str
  output_dir: str
  split: Optional[str] = None
  vocab_file: Optional[str] = None
  eval_batch_size: int = 32
  max_eval_batches: Optional[int] = None
  seq_length: Optional[int] = None  # Timed inputs (default: 128; the records' for tasks).
  num_predictions: int = 20
  latency_batch: int = 1
  throughput_batch: int = 128
  repeats: int = 10
  warmup: int = 2
  given: frozenset = frozenset()


def parse_models(items):
  """[(name, config or None, checkpoint)] of `name=config:checkpoint` items."""
  specs = []
  for item in items:
    name, sep, rest = item.partition("=")
    config, sep2, checkpoint = rest.partition(":")
    if not (sep and sep2 and name and checkpoint):
      raise ConfigError(f"--models: {item!r} is not name=config:checkpoint")
    if name in [s[0] for s in specs]:
      raise ConfigError(f"--models: model name {name!r} given twice")
    specs.append((name, config or None, checkpoint))
  return tuple(specs)


def _input_kind(input_dir, split):
  """(kind, split) of the records to measure on, with the split checked."""
  kind, _ = kinds.read(input_dir, *_PRETRAINING, *_TASK, *_QA)
  splits = (TASK_SPLITS if kind in _TASK else QA_SPLITS if kind in _QA
            else PRETRAINING_SPLITS)
  if split is not None and split not in splits:
    raise InputError("--split", f"{kind.what} have splits {splits}")
  return kind, split or ("eval" if kind in _PRETRAINING else "dev")


def _shown(metrics):
  return " ".join(f"{k}={'n/a' if v is None else f'{v:.4f}'}" for k, v in metrics.items())


def _write_json(path, result):
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  stage.atomic_write_text(path, stage.json_dumps(result))


def evaluate(config):
  """Held-out metrics of one checkpoint on `config.input_dir`, as JSON."""
  start = time.monotonic()
  kind, split = _input_kind(config.input_dir, config.split)
  if kind in _TASK:
    result, line = _evaluate_classifier(config, split)
  elif kind in _QA:
    result, line = _evaluate_span_model(config, split)
  else:
    result, line = _evaluate_pretrainer(config, split)
  result.update(seconds=round(time.monotonic() - start, 2), code_version=stage.code_version())
  _write_json(config.output_json, result)
  print(f"{line} -> {config.output_json}")


def _evaluate_pretrainer(config, split):
  inp = evaluation.read_eval_input(config.input_dir, split)
  model = evaluation.load_model(config.checkpoint, inp, config.bert_config_file)
  batches = evaluation.eval_batches(inp, config.batch_size, config.max_eval_batches)
  metrics, counts = evaluation.evaluate(model, batches, inp.labels)
  result = {"metrics": metrics, "counts": counts,
            "model": evaluation.describe(model, config.checkpoint, config.bert_config_file),
            "input": {"dir": inp.dir, "stage": inp.manifest["stage"], "split": inp.split,
                      "manifest_sha256": inp.manifest["_sha256"],
                      "batch_size": config.batch_size,
                      "max_eval_batches": config.max_eval_batches}}
  if inp.labels:
    result["teacher_labels"] = {"label_method": inp.labels.label_method,
                                "truncation_factor": inp.labels.truncation_factor,
                                "temperature": inp.labels.temperature,
                                "teacher_kl_topk": evaluation.KL_NOTE}
  line = (f"evaluate: {counts['examples']} examples, {counts['masked_positions']} "
          f"masked positions ({inp.split}): {_shown(metrics)}")
  return result, line


def _evaluate_classifier(config, split):
  inp = te.read_task_eval_input(config.input_dir, split, config.vocab_file)
  model = te.load_classifier(config.checkpoint, inp, config.bert_config_file)
  metrics, report, counts = te.evaluate(model, inp, config.batch_size,
                                        config.max_eval_batches)
  result = {"metrics": metrics, "report": report, "counts": counts,
            "model": dict(evaluation.describe(model, config.checkpoint,
                                              config.bert_config_file),
                          num_labels=model.num_labels),
            "input": dict(inp.describe(), batch_size=config.batch_size,
                          max_eval_batches=config.max_eval_batches)}
  return result, f"evaluate: {counts['examples']} examples ({inp.split}): {_shown(metrics)}"


def _evaluate_span_model(config, split):
  inp = qe.read_qa_eval_input(config.input_dir, split, config.vocab_file)
  model = qe.load_span_model(config.checkpoint, inp, config.bert_config_file)
  metrics, counts, predictions = qe.evaluate(model, inp, config.batch_size,
                                             config.max_eval_batches)
  files = qe.write_outputs(predictions, config.output_json, inp.spec.version == "v2.0")
  result = {"metrics": metrics, "counts": counts, "predictions": files,
            "model": evaluation.describe(model, config.checkpoint, config.bert_config_file),
            "input": dict(inp.describe(), batch_size=config.batch_size,
                          max_eval_batches=config.max_eval_batches)}
  shown = " ".join(f"{k}={v:.2f}" for k, v in metrics.items() if k in qe.SUMMARY)
  return result, (f"evaluate: {counts['questions']} questions, {counts['windows']} windows "
                  f"({inp.split}): {shown}")


def benchmark(config):
  """Teacher and students side by side (the table, JSON and plot of the module doc)."""
  kind, split = _input_kind(config.input_dir, config.split)
  kinds.check_flags(kind, config.given, APPLIES)
  family = _FAMILIES[_family_name(kind)]
  inp = family.read(config, split)
  settings = _speed_settings(config, inp, family)
  models, results = _held_out(config, inp, family)
  before = os.getloadavg()  # How noisy the machine was while timing.
  speed = evaluation.measure_speed(models, settings, family.case)
  after = os.getloadavg()
  for result in results:
    result.update(speed[result["name"]])
  report = _report(config, inp, family, results, settings, (before, after))
  _write_report(config, report, family)
  cols = family.report.columns(report["models"]) if family.name != "pretraining" else None
  print(evaluation.markdown_table(report["models"], cols), end="")
  print(f"benchmark: {len(results)} models -> {config.output_dir}")


@dataclasses.dataclass(frozen=True)
class _Family:
  """What a benchmark does for one family of record kinds."""
  name: str
  read: object  # (config, split) -> the eval input
  held_out: object  # (config, inp, model config, checkpoint) -> (model, metrics, extra)
  case: object  # evaluation.measure_speed's make_case
  metric: str  # the "kept" column's metric
  report: object  # the module with columns / markdown_report / write_plot


def _family_name(kind):
  return "task" if kind in _TASK else "qa" if kind in _QA else "pretraining"


def _pretraining_held_out(config, inp, model_config, checkpoint):
  model = evaluation.load_model(checkpoint, inp, model_config)
  batches = evaluation.eval_batches(inp, config.eval_batch_size, config.max_eval_batches)
  metrics, counts = evaluation.evaluate(model, batches, inp.labels)
  return model, metrics, {"counts": counts}


def _task_held_out(config, inp, model_config, checkpoint):
  model = te.load_classifier(checkpoint, inp, model_config)
  metrics, report, counts = te.evaluate(model, inp, config.eval_batch_size,
                                        config.max_eval_batches)
  return model, metrics, {"report": report, "counts": counts}


def _qa_held_out(config, inp, model_config, checkpoint):
  model = qe.load_span_model(checkpoint, inp, model_config)
  metrics, counts, _ = qe.evaluate(model, inp, config.eval_batch_size,
                                   config.max_eval_batches)
  return model, metrics, {"counts": dict(counts, examples=counts["questions"])}


_FAMILIES = {f.name: f for f in (
    _Family("pretraining", lambda c, split: evaluation.read_eval_input(c.input_dir, split),
            _pretraining_held_out, evaluation.pretraining_case, "mlm_accuracy", evaluation),
    _Family("task", lambda c, split: te.read_task_eval_input(c.input_dir, split,
                                                             c.vocab_file),
            _task_held_out, te.classifier_case, "accuracy", te),
    _Family("qa", lambda c, split: qe.read_qa_eval_input(c.input_dir, split, c.vocab_file),
            _qa_held_out, qe.qa_case, "f1", qe))}


def _speed_settings(config, inp, family):
  pretraining = family.name == "pretraining"
  seq_length = config.seq_length or (128 if pretraining else inp.spec.max_seq_length)
  return evaluation.SpeedSettings(seq_length, config.latency_batch, config.throughput_batch,
                                  config.repeats, config.warmup,
                                  config.num_predictions if pretraining else 1)


def _held_out(config, inp, family):
  """{name: model} and the per-model results without speed."""
  models, results = {}, []
  for name, model_config, checkpoint in config.models:
    model, metrics, extra = family.held_out(config, inp, model_config, checkpoint)
    result = dict({"name": name, "metrics": metrics}, **extra)
    result.update(evaluation.describe(model, checkpoint, model_config))
    models[name] = model
    results.append(result)
    print(f"benchmark: {name}: {_shown(metrics)}", flush=True)
  return models, results


def _report(config, inp, family, results, settings, loads):
  settings = dataclasses.asdict(settings)
  if family.name != "pretraining":
    del settings["num_predictions"]  # Masked positions: pretraining only.
  report = {
      "models": evaluation.compare(results, metric=family.metric),
      "settings": dict(settings, eval_batch_size=config.eval_batch_size,
                       max_eval_batches=config.max_eval_batches),
      "environment": {"load_average_before": loads[0], "load_average_after": loads[1],
                      "cpu_count": os.cpu_count(), "tensorflow": tf.__version__,
                      "machine": platform.machine(), "code_version": stage.code_version()},
  }
  examples = results[0]["counts"]["examples"]
  if family.name == "task":
    report.update(num_labels=inp.spec.num_labels, labels=list(inp.spec.labels),
                  input=dict(inp.describe(), examples=examples,
                             task=inp.manifest["config"].get("task")))
  elif family.name == "qa":
    report["input"] = dict(inp.describe(), questions=examples)
  else:
    report["input"] = {"dir": inp.dir, "stage": inp.manifest["stage"], "split": inp.split,
                       "manifest_sha256": inp.manifest["_sha256"], "examples": examples}
    if inp.labels:
      report["input"]["teacher_kl_topk"] = evaluation.KL_NOTE
  return report


def _write_report(config, report, family):
  out = config.output_dir
  os.makedirs(out, exist_ok=True)
  stage.atomic_write_text(os.path.join(out, "benchmark.json"), stage.json_dumps(report))
  module = family.report
  stage.atomic_write_text(os.path.join(out, "benchmark.md"), module.markdown_report(report))
  tmp = os.path.join(out, f".benchmark.png.tmp.{os.getpid()}")
  module.write_plot(report["models"], tmp, config.latency_batch)
  os.replace(tmp, os.path.join(out, "benchmark.png"))
