"""Held-out metrics of a BertPretrainer, its speed, and the comparison report.

Shape legend: B=batch, S=sequence length, P=masked positions per sequence,
K=cached teacher ids per position, V=vocab size.

Metrics are exact sums (numerator, denominator) over the split, added up in
float64 on the host, so they do not depend on the batch size. Over the real
(weight 1) masked positions: mlm_accuracy, mlm_top5_accuracy (the label's
logit is beaten by fewer than 5 others; ties count in, as in
tf.math.in_top_k), mlm_loss = sum(w * ce) / sum(w) as in modeling/losses/pretraining_losses.py
and mlm_perplexity = exp(mlm_loss); per example: nsp_accuracy, nsp_loss.
Distill records (the teacher's cached labels) add teacher_agreement (student
argmax == the teacher's cached top-1 id), teacher_kl_topk (KL(teacher ||
student) over each position's cached ids with a nonzero value, both
renormalized to sum 1 over those ids, the student at the cache's
temperature T: distill_losses.renormalized_kl, not the full-vocab KL, the
mass outside the K ids is ignored) and, for top-k labels, teacher_topk_mass
(the mean teacher probability those K ids cover).

Speed: each forward pass is a tf.function with a fixed input signature;
repeats are interleaved across models (the machine is shared and noisy, so
no model gets all the quiet minutes).
"""

import dataclasses
import glob
import math
import os
import time

import numpy as np
import tensorflow as tf

from modeling.networks import bert as bert_lib
from modeling.checkpoints import loading
from modeling.losses import distill_losses
from modeling.models import heads
from modeling.losses import pretraining_losses
from modeling.training import pretraining
from pipeline.core import kinds
from pipeline.core.errors import ConfigError, InputError
from pipeline.inputs import parsing
from pipeline.inputs import pretraining_dataset
from pipeline.inputs.distill_dataset import LabelSpec
from pipeline.records import schema

TOP_K = 5
# What teacher_kl_topk is, written beside it in evaluate's and benchmark's JSON.
KL_NOTE = ("KL(teacher || student) over each position's cached teacher ids "
           "with a nonzero value, both renormalized to sum 1 over those ids; "
           "student at the cache's temperature. Not the full-vocab KL "
           "(teacher_kl_full) nor the trainer's K+1-bucket KL (teacher_kl_bucket).")


# ---------------------------------------------------------------- inputs


@dataclasses.dataclass(frozen=True)
class EvalInput:
  """A records or distill-records directory and the split to read."""
  manifest: dict
  split: str
  labels: object  # LabelSpec of distill records, None for plain records

  @property
  def dir(self):
    return self.manifest["_dir"]

  def shapes(self):
    """(S, P) of the records."""
    config = self.manifest["config"]
    return config["max_seq_length"], config["max_predictions_per_seq"]


def read_eval_input(input_dir, split="eval"):
  """Checks a completed records/distill dir with files in `split`.

  Raises:
    InputError: incomplete or changed input, another stage, empty split.
  """
  kind, manifest = kinds.read(input_dir, kinds.PRETRAINING_RECORDS, kinds.DISTILL_RECORDS)
  schema.record_files(input_dir, (split,))  # raises when the split is empty
  labels = LabelSpec.from_manifest(manifest) if kind == kinds.DISTILL_RECORDS else None
  return EvalInput(manifest, split, labels)


def eval_batches(inp, batch_size, max_batches=None):
  """One pass over the split in file order; the last batch may be smaller."""
  records = tf.data.TFRecordDataset(schema.record_paths(inp.dir, inp.split))
  # Distill records: + the decoded teacher targets [B,P,K].
  parse = (inp.labels.parse_fn() if inp.labels else
           parsing.parse_fn(schema.PRETRAINING_FEATURES, *inp.shapes()))
  batches = records.batch(batch_size).map(parse)
  if max_batches:
    batches = batches.take(max_batches)
  return batches.prefetch(tf.data.AUTOTUNE)


# ---------------------------------------------------------------- models


def _resolve(checkpoint):
  """(format, path) of loading.resolve_checkpoint, as InputError."""
  exists = checkpoint and (os.path.exists(checkpoint) or glob.glob(
      glob.escape(checkpoint) + ".*"))  # a TF prefix is not a file
  if not exists:
    raise InputError(checkpoint or "--checkpoint", "checkpoint does not exist")
  try:
    return loading.resolve_checkpoint(checkpoint)
  except ValueError as e:
    raise InputError(checkpoint, str(e)) from None


def config_path_for(checkpoint, config_file=None):
  """`config_file`, or the config beside the checkpoint (any format)."""
  fmt, path = _resolve(checkpoint)
  if config_file:
    return config_file
  directory = path if os.path.isdir(path) else os.path.dirname(path)
  name = "config.json" if fmt == "hf" else "bert_config.json"
  found = os.path.join(directory, name)
  if not os.path.exists(found):
    raise InputError(checkpoint, f"no {name} beside the checkpoint: pass its "
                     "config file")
  return found


def load_model(checkpoint, inp, config_file=None):
  """A float32 BertPretrainer with the checkpoint's weights, for `inp`.

  Raises:
    InputError: missing checkpoint or config, a vocab_size other than the
      records', or weights that do not fit the config.
  """
  config_path = config_path_for(checkpoint, config_file)
  config = pretraining.model_config(
      config_path, inp.manifest, pretraining.gelu_convention_for(checkpoint))
  model = bert_lib.ensure_built(heads.BertPretrainer(config))
  try:
    loading.load_checkpoint(model, checkpoint)
  except (OSError, ValueError) as e:
    raise InputError(checkpoint, str(e)) from None
  return model


def checkpoint_files(checkpoint):
  """The files that hold a checkpoint (TF prefix: .index + .data-*)."""
  _, path = _resolve(checkpoint)
  if os.path.isdir(path):  # HF directory
    return sorted(glob.glob(os.path.join(path, "model.safetensors*")))
  if path.endswith(".safetensors.index.json"):
    shards = glob.glob(os.path.join(os.path.dirname(path), "*.safetensors"))
    return [path] + sorted(shards)
  if os.path.isfile(path):
    return [path]
  return sorted(glob.glob(glob.escape(path) + ".*"))


def describe(model, checkpoint, config_file=None):
  """Provenance and size: paths, config, parameters, bytes (disk, float32)."""
  params = int(sum(np.prod(v.shape) for v in model.weights))
  files = checkpoint_files(checkpoint)
  return {"checkpoint": os.path.abspath(checkpoint),
          "bert_config_file": config_path_for(checkpoint, config_file),
          "config": model.config.to_dict(), "parameters": params,
          "weights_f32_bytes": 4 * params,
          "disk_bytes": sum(os.path.getsize(f) for f in files),
          "disk_files": [os.path.abspath(f) for f in files]}


# ---------------------------------------------------------------- metrics


def _masked_sum(values, weights):
  return tf.reduce_sum(weights * values), tf.reduce_sum(weights)


def _top_k_sum(logits, labels, weights, k=TOP_K):
  """Labels [B,P] whose logit in [B,P,V] is beaten by fewer than k others."""
  label_logit = tf.gather(logits, labels, batch_dims=2)  # [B,P]
  beaten_by = tf.reduce_sum(
      tf.cast(logits > label_logit[..., tf.newaxis], tf.int32), -1)
  return _masked_sum(tf.cast(beaten_by < k, tf.float32), weights)


def _teacher_sums(logits, batch, labels):
  weights = tf.cast(batch["masked_lm_weights"], tf.float32)
  student_top1 = tf.argmax(logits, -1, output_type=tf.int32)  # [B,P]
  agree = tf.cast(tf.equal(student_top1, distill_losses.cached_top1(batch)),
                  tf.float32)
  log_q = distill_losses.log_probs(logits, labels.temperature)  # [B,P,V]
  kl = distill_losses.renormalized_kl(log_q, batch["teacher_ids"],
                                      batch["teacher_values"])  # [B,P]
  sums = {"teacher_agreement": _masked_sum(agree, weights),
          "teacher_kl_topk": _masked_sum(kl, weights)}
  if labels.label_method == "topk":
    mass = tf.reduce_sum(batch["teacher_values"], -1)  # [B,P]
    sums["teacher_topk_mass"] = _masked_sum(mass, weights)
  return sums


def metric_sums(outputs, batch, labels=None):
  """{metric: (numerator, denominator)} of one batch.

  Args:
    outputs: BertPretrainer outputs (mlm_logits [B,P,V], nsp_logits [B,2]).
    batch: the records' features (+ teacher_ids/values [B,P,K]).
    labels: the LabelSpec of distill records, or None.
  """
  logits = tf.cast(outputs["mlm_logits"], tf.float32)
  weights = tf.cast(batch["masked_lm_weights"], tf.float32)
  # mlm_loss/accuracy and nsp_loss/accuracy: the trainer's own definitions.
  sums = pretraining_losses.pretraining_sums(outputs, batch)
  sums["mlm_top5_accuracy"] = _top_k_sum(logits, batch["masked_lm_ids"],
                                         weights)
  if labels is not None:
    sums.update(_teacher_sums(logits, batch, labels))
  return sums


def finish(totals):
  """{metric: [num, den]} summed over the split -> metrics and counts."""
  # None (JSON null) where undefined: no masked position, or an overflow.
  metrics = {name: num / den if den else None
             for name, (num, den) in sorted(totals.items())}
  loss = metrics["mlm_loss"]
  metrics["mlm_perplexity"] = (math.exp(loss) if loss is not None and loss < 700
                               else None)
  counts = {"masked_positions": int(round(totals["mlm_loss"][1])),
            "examples": int(round(totals["nsp_loss"][1]))}
  return metrics, counts


def evaluate(model, batches, labels=None):
  """(metrics, counts) of `model` over a dataset from eval_batches."""

  @tf.function(input_signature=[batches.element_spec])
  def step(batch):
    inputs = {k: batch[k] for k in schema.PRETRAINING_MODEL_INPUTS}
    return metric_sums(model(inputs, training=False), batch, labels)

  totals = {}
  for batch in batches:
    for name, (num, den) in step(batch).items():
      acc = totals.setdefault(name, [0.0, 0.0])
      acc[0] += float(num)
      acc[1] += float(den)
  if not totals:
    raise ValueError("no batches to evaluate")
  return finish(totals)


# ---------------------------------------------------------------- speed


@dataclasses.dataclass(frozen=True)
class SpeedSettings:
  """What the timed calls look like (see measure_speed)."""
  seq_length: int = 128
  latency_batch: int = 1
  throughput_batch: int = 128
  repeats: int = 10
  warmup: int = 2
  num_predictions: int = 20  # masked positions per sequence (BERT's at 128)

  def __post_init__(self):
    for field in dataclasses.fields(self):
      if getattr(self, field.name) < (0 if field.name == "warmup" else 1):
        raise ConfigError(f"{field.name} must be positive")
    if self.num_predictions > self.seq_length:
      raise ConfigError("num_predictions must be <= seq_length")


def serving_fn(model, batch_size, seq_length, num_predictions):
  """The forward pass compiled for fixed [batch_size, seq_length] inputs."""
  specs = {name: tf.TensorSpec([batch_size, seq_length], tf.int32, name)
           for name in ("input_ids", "input_mask", "segment_ids")}
  specs["masked_lm_positions"] = tf.TensorSpec(
      [batch_size, num_predictions], tf.int32, "masked_lm_positions")

  @tf.function(input_signature=[specs])
  def forward(inputs):
    outputs = model(inputs, training=False)
    return {"mlm_logits": outputs["mlm_logits"],
            "nsp_logits": outputs["nsp_logits"]}

  return forward


def _timed_call(fn, inputs, output):
  """Seconds of one call, waiting for its result (one op: all outputs)."""
  start = time.perf_counter()
  fn(inputs)[output].numpy()
  return time.perf_counter() - start


def pretraining_case(model, batch_size, settings):
  """(compiled forward pass, synthetic inputs, a small output to wait on)."""
  s, p = settings.seq_length, settings.num_predictions
  batch = pretraining_dataset.synthetic_batch(batch_size, s, p, model.config.vocab_size, seed=0)
  inputs = {k: batch[k] for k in schema.PRETRAINING_MODEL_INPUTS}
  return serving_fn(model, batch_size, s, p), inputs, "nsp_logits"


def _speed_cases(models, settings, make_case):
  """{name: {"latency"|"throughput": make_case's (fn, inputs, output)}}."""
  s = settings.seq_length
  cases = {}
  for name, model in models.items():
    config = bert_lib.backbone(model).config
    if s > config.max_position_embeddings:
      raise InputError(name, f"seq_length {s} exceeds max_position_embeddings "
                       f"{config.max_position_embeddings}")
    cases[name] = {kind: make_case(model, b, settings)
                   for kind, b in (("latency", settings.latency_batch),
                                   ("throughput", settings.throughput_batch))}
  return cases


def _stats(values):
  values = np.asarray(values, np.float64)
  return {"mean": float(values.mean()), "median": float(np.median(values)),
          "std": float(values.std(ddof=1)) if values.size > 1 else 0.0,
          "min": float(values.min()), "samples": values.round(6).tolist()}


def measure_speed(models, settings, make_case=pretraining_case):
  """Latency (ms) and throughput (sequences/s) of {name: model}.

  Every repeat times each model once per kind, in an order rotated by one
  model per repeat, so slow phases of a shared machine hit all models.
  make_case(model, batch size, settings) -> (compiled fn, inputs, output).
  """
  cases = _speed_cases(models, settings, make_case)
  for by_kind in cases.values():
    for fn, inputs, _ in by_kind.values():
      for _ in range(settings.warmup + 1):  # +1: tracing is not warm-up
        fn(inputs)
  names = list(models)
  seconds = {name: {"latency": [], "throughput": []} for name in names}
  for r in range(settings.repeats):
    order = names[r % len(names):] + names[:r % len(names)]
    for kind in ("latency", "throughput"):
      for name in order:
        seconds[name][kind].append(_timed_call(*cases[name][kind]))
  batch = settings.throughput_batch
  return {name: {"latency_ms": _stats(1e3 * np.asarray(t["latency"])),
                 "throughput": _stats(batch / np.asarray(t["throughput"]))}
          for name, t in seconds.items()}


# ---------------------------------------------------------------- report


def _ratio(a, b):
  return a / b if a is not None and b else None


def compare(results, metric="mlm_accuracy"):
  """Adds speedup, throughput ratio and accuracy kept (of `metric`) to each
  result ({"latency_ms", "throughput", "metrics", ...}) vs the first (the
  teacher)."""
  ref = results[0]
  for r in results:
    r["speedup"] = _ratio(ref["latency_ms"]["mean"], r["latency_ms"]["mean"])
    r["throughput_ratio"] = _ratio(r["throughput"]["mean"],
                                   ref["throughput"]["mean"])
    r["accuracy_kept"] = _ratio(r["metrics"][metric], ref["metrics"][metric])
  return results


def _count(n):
  """109482240 -> "109.5M", 1516 -> "1.5k"."""
  for unit, scale in (("M", 1e6), ("k", 1e3)):
    if n >= scale:
      return f"{n / scale:.1f}{unit}"
  return str(n)


def _num(value, spec=".4f", unit=""):  # None: undefined (see finish)
  return "n/a" if value is None else f"{value:{spec}}{unit}"


def _megabytes(n):
  mb = n / 1e6
  return f"{mb:.1f}" if mb >= 10 else f"{mb:.3g}"


_COLUMNS = (
    ("Model", lambda r: r["name"]),
    ("Layers x hidden", lambda r: f"{r['config']['num_hidden_layers']} x "
                                  f"{r['config']['hidden_size']}"),
    ("Params", lambda r: _count(r["parameters"])),
    ("Disk (MB)", lambda r: _megabytes(r["disk_bytes"])),
    ("f32 weights (MB)", lambda r: _megabytes(r["weights_f32_bytes"])),
    ("Latency (ms)", lambda r: f"{r['latency_ms']['mean']:.2f} ± "
                               f"{r['latency_ms']['std']:.2f}"),
    ("Speedup", lambda r: _num(r["speedup"], ".2f", "x")),
    ("Throughput (seq/s)", lambda r: f"{r['throughput']['mean']:.1f}"),
    ("MLM acc", lambda r: _num(r["metrics"]["mlm_accuracy"])),
    ("Acc kept", lambda r: _num(r["accuracy_kept"], ".1%")),
    ("Top-5", lambda r: _num(r["metrics"]["mlm_top5_accuracy"])),
    ("Perplexity", lambda r: _num(r["metrics"]["mlm_perplexity"], ".2f")),
    ("NSP acc", lambda r: _num(r["metrics"]["nsp_accuracy"])),
)
_TEACHER_COLUMNS = (
    ("Teacher agree", lambda r: _num(r["metrics"]["teacher_agreement"])),
    ("KL (top-K)", lambda r: _num(r["metrics"]["teacher_kl_topk"])),
)


def columns(results):
  """The table's (header, formatter) pairs; teacher ones for distill input."""
  has_teacher = all("teacher_kl_topk" in r["metrics"] for r in results)
  return _COLUMNS + (_TEACHER_COLUMNS if has_teacher else ())


def _row(cells):
  return "| " + " | ".join(cells) + " |"


def markdown_table(results, cols=None):
  """One row per model; numbers right-aligned. cols: (header, formatter)
  pairs, default columns(results)."""
  cols = cols or columns(results)
  lines = [_row(h for h, _ in cols), "|---" + "|---:" * (len(cols) - 1) + "|"]
  lines += [_row(f(r) for _, f in cols) for r in results]
  return "\n".join(lines) + "\n"


def _loads(values):
  return ", ".join(f"{x:.2f}" for x in values)


def _method_note(s):
  return (
      f"Latency: batch {s['latency_batch']}, sequence length "
      f"{s['seq_length']}, {s['num_predictions']} masked positions; mean ± "
      f"std of {s['repeats']} timed calls after tracing and {s['warmup']} "
      "warm-up call(s) (compiled tf.function, fixed input signature). "
      f"Throughput: batch {s['throughput_batch']}. Repeats interleaved across "
      "models. Speedup: the first model's latency / this model's. Acc kept: "
      "MLM accuracy / the first model's.")


def markdown_report(report):
  """benchmark.md: the table, then how it was measured."""
  env, inp = report["environment"], report["input"]
  return "\n".join([
      "# Teacher vs students", "", markdown_table(report["models"]),
      _method_note(report["settings"]),
      f"Held-out metrics on `{inp['dir']}` (split {inp['split']}, "
      f"{inp['examples']} examples).",
      f"Load average (1, 5, 15 min) before: "
      f"{_loads(env['load_average_before'])}; after: "
      f"{_loads(env['load_average_after'])}; {env['cpu_count']} CPUs.",
      "Disk: the checkpoint's files (a training checkpoint also holds "
      "optimizer state); f32 weights: 4 bytes per parameter. MB = 10^6 bytes.",
      ""])


def write_plot(results, path, latency_batch=1, metric="mlm_accuracy",
               label="held-out MLM accuracy"):
  """Held-out `metric` vs latency, one labelled point per model (PNG)."""
  # Imported here: only the report needs matplotlib. The Agg canvas itself,
  # not pyplot: no global state, no display.
  # pylint: disable=import-outside-toplevel
  from matplotlib.backends.backend_agg import FigureCanvasAgg
  from matplotlib.figure import Figure
  fig = Figure(figsize=(6, 4.5), dpi=100)
  FigureCanvasAgg(fig)
  ax = fig.add_subplot()
  for r in results:
    x, xerr = r["latency_ms"]["mean"], r["latency_ms"]["std"]
    y = r["metrics"][metric]
    if y is None:  # no masked positions: nothing to place (the table says n/a)
      continue
    ax.errorbar([x], [y], xerr=[xerr], fmt="o", capsize=3)
    ax.annotate(r["name"], (x, y), textcoords="offset points", xytext=(6, 6))
  ax.set_xlabel(f"latency at batch {latency_batch} (ms, mean ± std)")
  ax.set_ylabel(label)
  ax.set_title("Accuracy vs latency")
  ax.grid(True, alpha=0.3)
  fig.tight_layout()
  fig.savefig(path, format="png")
