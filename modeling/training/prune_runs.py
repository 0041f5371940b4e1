"""Structured pruning under distillation (tools/prune.py): a classifier student made
smaller in steps, each recovered by task distillation from the cached teacher logits.

  start = the student; for step k = 1.. with ratio r_k (of the start's I removed):
    <out>/step-k/pruned/   the previous step's best/ with the I·(1 - r_k) most
                           important FFN neurons kept in every layer (a classifier
                           directory, written by one atomic rename; its
                           classifier.json says ratio, size, method and source)
    <out>/step-k/recover/  distill_task from step-k/pruned on the label cache for
                           `recovery_epochs` (classifier_runs; keeps best/ by dev)
  then every model (start, step-1/recover/best, ...) on the dev split, timed in
  one process with evaluation.measure_speed (interleaved), ->
    <out>/pruning.json, pruning.md, pruning.png, manifest.json, COMPLETED

<out> follows the stage contract as a whole (stage "prune"): another config is
an error unless --overwrite; a killed run resumes (finished steps are no-ops, a
half-trained recovery resumes from its checkpoints); a complete one is a no-op.
Importance scores: modeling/compression/pruning.py (Taylor by default).
"""

import dataclasses
import json
import os
import platform
from typing import Tuple

import tensorflow as tf

from modeling.compression import pruning
from modeling.evaluation import evaluation
from modeling.evaluation import task_evaluation as te
from modeling.losses import task_losses
from modeling.models import classification
from modeling.training import classification_training
from modeling.training import classifier_runs
from pipeline.core import kinds
from pipeline.core import stage
from pipeline.core.errors import ConfigError, InputError
from pipeline.inputs import classification_dataset

STAGE = "prune"
DEFAULT_RATIOS = (0.25, 0.5, 0.625, 0.75)
REPORT_FILES = ("pruning.json", "pruning.md", "pruning.png")
INDICES_FILE = "pruning_indices.json"
_SCORE_BATCH = 32  # Examples per Taylor-score batch (memory only: the sum is the same).


def parse_ratios(items):
  """('0.25', '0.5') -> (0.25, 0.5); ConfigError for a non-number."""
  try:
    return tuple(float(item) for item in items)
  except ValueError:
    raise ConfigError(f"--ratios={','.join(items)}: a list of numbers") from None


@dataclasses.dataclass(frozen=True, kw_only=True)
class PruneConfig:
  """tools/prune.py's settings (the recovery runs' loop: a LoopConfig)."""
  student_checkpoint: str  # A classifier: a best/ directory or any format it loads from.
  teacher_labels_dir: str  # Task distill records (extract_teacher_labels on classifiers).
  vocab_file: str
  output_dir: str
  ratios: Tuple[float, ...] = DEFAULT_RATIOS  # Of the start's intermediate size, removed.
  recovery_epochs: float = 2.0
  importance: str = pruning.DEFAULT_IMPORTANCE
  importance_examples: int = 512  # First train examples of the label cache (taylor).
  alpha: float = 0.5  # The recovery loss (and the Taylor score's).
  temperature: float = 1.0
  warmup_proportion: float = 0.1
  best_metric: str = "accuracy"
  speed_repeats: int = 20
  throughput_batch: int = 32

  def __post_init__(self):
    ratios = self.ratios
    if not ratios or any(not 0 < r < 1 for r in ratios) or any(
        a >= b for a, b in zip(ratios, ratios[1:])):
      raise ConfigError(f"--ratios={','.join(map(str, ratios))}: must be strictly "
                        "increasing, each in (0, 1)")
    if self.importance not in pruning.IMPORTANCE_METHODS:
      raise ConfigError(f"--importance={self.importance}: one of "
                        f"{pruning.IMPORTANCE_METHODS}")
    if self.importance_examples < 1 or self.recovery_epochs <= 0:
      raise ConfigError("--importance_examples must be >= 1 and --recovery_epochs > 0")
    if self.speed_repeats < 2 or self.throughput_batch < 1:
      raise ConfigError("--speed_repeats must be >= 2 and --throughput_batch >= 1")
    task_losses.TaskDistillConfig(self.alpha, self.temperature)  # Checks them.

  @property
  def distill(self):
    return task_losses.TaskDistillConfig(self.alpha, self.temperature)


def keep_sizes(intermediate_size, ratios):
  """I' of each step; ConfigError when two ratios keep the same number."""
  sizes = [pruning.keep_count(intermediate_size, r) for r in ratios]
  for (r0, s0), (r1, s1) in zip(zip(ratios, sizes), zip(ratios[1:], sizes[1:])):
    if s1 >= s0:
      raise ConfigError(f"--ratios: {r0} and {r1} both keep {s1} of the student's "
                        f"{intermediate_size} intermediate neurons")
  return sizes


# ---------------------------------------------------------------- inputs


def read_inputs(config):
  """The dev-split view of the label cache and the float32 student that fits it.

  Raises:
    InputError: not task distill records, another vocab (names the vocab file),
      a student of another vocab / number of labels (names the student).
  """
  kinds.read(config.teacher_labels_dir, kinds.TASK_DISTILL_RECORDS)
  inp = te.read_task_eval_input(config.teacher_labels_dir, classification_dataset.DEV,
                                config.vocab_file)
  try:
    student = te.load_classifier(config.student_checkpoint, inp)
  except InputError as e:
    raise InputError(e.path, f"{e.cause} (label cache {inp.dir})") from None
  return inp, student


def _identity(config, loop, student):
  settings = {k: v for k, v in dataclasses.asdict(config).items() if k != "output_dir"}
  return dict(settings, ratios=list(config.ratios),
              student_config=student.config.to_dict(), num_labels=student.num_labels,
              loop=loop.identity())


# ---------------------------------------------------------------- one step


def _score_batches(config, inp):
  """The first `importance_examples` train examples of the label cache, batched."""
  batches = classification_dataset.eval_dataset(inp.dir, inp.spec, _SCORE_BATCH,
                                                classification_dataset.TRAIN)
  return batches.unbatch().take(config.importance_examples).batch(_SCORE_BATCH)


def importance(config, inp, model):
  """[L] arrays [I]: the configured score of every FFN neuron of `model`."""
  if config.importance == "magnitude":
    return pruning.magnitude_importance(model)
  return pruning.taylor_importance(model, _score_batches(config, inp), config.distill)


def _pruning_card(config, ratio, size, source):
  """What step-k/pruned/ must be made of (its classifier.json info["pruning"])."""
  return {"ratio": ratio, "intermediate_size": size, "importance": config.importance,
          "importance_examples": config.importance_examples, "source": source}


def ensure_pruned(config, inp, source, ratio, size, directory):
  """Writes `directory` (the pruned init of a step) unless a complete one is there."""
  classification.recover_interrupted_save(directory)
  card = _pruning_card(config, ratio, size, source)
  try:
    if classification.read_classifier_info(directory)["info"].get("pruning") == card:
      return
  except ValueError:
    pass  # Not written yet.
  model = classification.load_classifier(source, dtype="float32")
  scores = importance(config, inp, model)
  keep = pruning.select_neurons(scores, size)
  pruned = pruning.prune_classifier(model, keep)
  indices = {"kept": [k.tolist() for k in keep], "scores": [s.tolist() for s in scores]}
  classification.save_classifier(pruned, directory, inp.spec.labels, {"pruning": card},
                                 extra_files={INDICES_FILE: json.dumps(indices) + "\n"})
  print(f"prune: {os.path.basename(os.path.dirname(directory))}: kept {size} of "
        f"{model.config.intermediate_size} neurons per layer ({config.importance}) "
        f"-> {directory}", flush=True)


def _recovery_config(config, pruned_dir, output_dir):
  return classifier_runs.ClassifierConfig(
      model_config=os.path.join(pruned_dir, classification.CONFIG_FILE),
      data_dir=config.teacher_labels_dir, vocab_file=config.vocab_file,
      output_dir=output_dir, init_from="checkpoint", init_checkpoint=pruned_dir,
      alpha=config.alpha, temperature=config.temperature,
      num_train_epochs=config.recovery_epochs, warmup_proportion=config.warmup_proportion,
      best_metric=config.best_metric, eval_split=classification_dataset.DEV,
      stage="distill_task")


def run_step(config, loop, inp, k, ratio, size, source, flag_values=None):
  """Prunes `source` to `size` neurons, recovers it; returns the step's best/."""
  step_dir = os.path.join(config.output_dir, f"step-{k}")
  pruned_dir, recover_dir = (os.path.join(step_dir, name) for name in ("pruned", "recover"))
  ensure_pruned(config, inp, source, ratio, size, pruned_dir)
  classifier_runs.train_classifier(_recovery_config(config, pruned_dir, recover_dir), loop,
                                   flag_values)
  best = os.path.join(recover_dir, classification_training.BEST_DIR)
  if not os.path.isfile(os.path.join(best, classification.CLASSIFIER_FILE)):
    raise InputError(recover_dir, "the recovery run kept no best/ classifier")
  return best


# ---------------------------------------------------------------- report


def _report_metric(config):
  """The metric the report keeps: best_metric when evaluation reports it."""
  return config.best_metric if config.best_metric in te.METRICS + te.TEACHER_METRICS else (
      "accuracy")


def measure(config, loop, inp, checkpoints, ratios):
  """Each model's dev metrics, size and speed (one process, interleaved repeats)."""
  models, results = {}, []
  for (name, path), ratio in zip(checkpoints.items(), ratios):
    model = te.load_classifier(path, inp)
    metrics, _, counts = te.evaluate(model, inp, loop.eval_batch_size)
    models[name] = model
    results.append(dict(evaluation.describe(model, path), name=name, ratio=ratio,
                        intermediate_size=model.config.intermediate_size,
                        metrics=metrics, examples=counts["examples"]))
  settings = evaluation.SpeedSettings(inp.spec.max_seq_length, 1, config.throughput_batch,
                                      config.speed_repeats, 2, 1)
  before = os.getloadavg()
  speed = evaluation.measure_speed(models, settings, te.classifier_case)
  after = os.getloadavg()
  for result in results:
    result.update(speed[result["name"]])
  metric = _report_metric(config)
  settings = dict(dataclasses.asdict(settings), metric=metric)
  del settings["num_predictions"]
  return {"steps": evaluation.compare(results, metric=metric), "settings": settings,
          "input": inp.describe(),
          "environment": {"load_average_before": before, "load_average_after": after,
                          "cpu_count": os.cpu_count(), "tensorflow": tf.__version__,
                          "machine": platform.machine(), "code_version": stage.code_version()}}


def _columns(metric):
  return (
      ("Model", lambda r: r["name"]),
      ("Removed", lambda r: f"{r['ratio']:.1%}"),
      ("Intermediate", lambda r: str(r["intermediate_size"])),
      ("Params", lambda r: f"{r['parameters']:,}"),
      ("Latency (ms)", lambda r: f"{r['latency_ms']['mean']:.2f} ± "
                                 f"{r['latency_ms']['std']:.2f}"),
      ("Speedup", lambda r: f"{r['speedup']:.2f}x"),
      ("Throughput (seq/s)", lambda r: f"{r['throughput']['mean']:.1f}"),
      (f"Dev {metric}", lambda r: _number(r["metrics"].get(metric))),
      ("Kept", lambda r: "n/a" if r["accuracy_kept"] is None else f"{r['accuracy_kept']:.1%}"),
  )


def _number(value):
  return "n/a" if value is None else f"{value:.4f}"


def markdown_report(report):
  s, steps = report["settings"], report["steps"]
  return "\n".join([
      "# Structured pruning under distillation", "",
      evaluation.markdown_table(steps, _columns(s["metric"])),
      f"Removed: the share of the start's {steps[0]['intermediate_size']} FFN intermediate "
      "neurons removed (the same number in every layer; attention heads kept). Each step "
      "prunes the previous step's best/ and recovers it by task distillation from the "
      "cached teacher logits.",
      f"Metrics on the {report['input']['split']} split of `{report['input']['dir']}` "
      f"({steps[0]['examples']} examples). Kept: {s['metric']} / the start's.",
      f"Latency: batch {s['latency_batch']}, sequence length {s['seq_length']}; mean ± std "
      f"of {s['repeats']} timed calls after {s['warmup']} warm-up call(s), repeats "
      f"interleaved across models in one process. Throughput: batch "
      f"{s['throughput_batch']}. Speedup: the start's latency / this model's.",
      f"Load average before: {_loads(report, 'before')}; after: "
      f"{_loads(report, 'after')}; {report['environment']['cpu_count']} CPUs.", ""])


def _loads(report, when):
  return ", ".join(f"{x:.2f}" for x in report["environment"][f"load_average_{when}"])


def write_plot(report, path):
  """Dev metric vs latency and vs parameters, one labelled point per model (PNG)."""
  # pylint: disable=import-outside-toplevel
  from matplotlib.backends.backend_agg import FigureCanvasAgg
  from matplotlib.figure import Figure
  steps, metric = report["steps"], report["settings"]["metric"]
  fig = Figure(figsize=(10, 4.2), dpi=100)
  FigureCanvasAgg(fig)
  xs = (("latency_ms", "latency at batch 1 (ms)"), ("parameters", "parameters"))
  for i, (key, label) in enumerate(xs):
    ax = fig.add_subplot(1, 2, i + 1)
    points = [(r[key]["mean"] if key == "latency_ms" else r[key], r["metrics"].get(metric),
               r["name"]) for r in steps]
    points = [p for p in points if p[1] is not None]
    ax.plot([p[0] for p in points], [p[1] for p in points], "o-")
    for x, y, name in points:
      ax.annotate(name, (x, y), textcoords="offset points", xytext=(5, 5))
    ax.set_xlabel(label)
    ax.set_ylabel(f"dev {metric}")
    ax.grid(True, alpha=0.3)
  fig.suptitle("Pruning steps: dev metric vs size and latency")
  fig.tight_layout()
  fig.savefig(path, format="png")


def write_report(out, report):
  """pruning.json / .md / .png, each published atomically; returns their names."""
  texts = {"pruning.json": stage.json_dumps(report), "pruning.md": markdown_report(report)}
  for name, text in texts.items():
    with out.writing(name) as tmp:
      with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
  with out.writing("pruning.png") as tmp:
    write_plot(report, tmp)
  return list(REPORT_FILES)


# ---------------------------------------------------------------- the command


def _published_models(out, checkpoints):
  """The steps' best/ files, relative to the output (listed in the manifest)."""
  files = []
  for path in list(checkpoints.values())[1:]:
    rel = os.path.relpath(path, out.dir)
    files += [os.path.join(rel, name) for name in sorted(os.listdir(path))]
  return files


def prune(config, loop, flag_values=None):
  """Runs (or resumes, or finds complete) the pruning schedule `config` describes.

  Returns:
    The report dict, or None when the output was already complete.
  """
  inp, student = read_inputs(config)
  sizes = keep_sizes(student.config.intermediate_size, config.ratios)
  out = stage.StageOutput(config.output_dir, STAGE, _identity(config, loop, student),
                          inp.manifest["_sha256"], loop.overwrite)
  if out.prepare():
    print(f"prune: {config.output_dir} is complete (nothing to do)")
    return None
  checkpoints, source = {"start": config.student_checkpoint}, config.student_checkpoint
  for k, (ratio, size) in enumerate(zip(config.ratios, sizes), 1):
    source = run_step(config, loop, inp, k, ratio, size, source, flag_values)
    checkpoints[f"step-{k}"] = source
  report = measure(config, loop, inp, checkpoints, (0.0,) + tuple(config.ratios))
  files = write_report(out, report) + _published_models(out, checkpoints)
  out.finalize(files, {"steps": len(config.ratios)}, {"steps": [
      {k: r[k] for k in ("name", "ratio", "intermediate_size", "parameters", "speedup",
                         "accuracy_kept")} for r in report["steps"]]})
  last = report["steps"][-1]
  print(f"prune: {len(sizes)} steps; last: {last['intermediate_size']} neurons, "
        f"{last['speedup']:.2f}x, {report['settings']['metric']} kept "
        f"{_number(last['accuracy_kept'])} -> {config.output_dir}")
  return report
