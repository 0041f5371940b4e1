"""Held-out metrics of classifiers, their speed, and the task comparison report.

Shape legend: B=batch, S=max_seq_length, C=number of labels, N=examples.

The pretraining counterpart is modeling/evaluation/evaluation.py; the size, timing and
table machinery is shared with it. Classification metrics need every
prediction (F1, MCC and ROC-AUC do not add up over batches), so the split's
logits are collected and modeling/evaluation/classification_metrics.py computes
accuracy, precision, recall, F1 (binary: of class 1; else macro), MCC,
ROC-AUC (binary), the mean cross-entropy `loss` and the per-class report.
On task distill records (extract_teacher_labels --task) the cached teacher
logits add teacher_accuracy (the teacher's own), teacher_agreement (same
argmax) and teacher_kl_task = mean KL(softmax(teacher) || softmax(model)) at
T=1 over the C classes (full distributions: logits are not truncated).
"""

import dataclasses
import math

import numpy as np
import tensorflow as tf

from modeling.models import classification
from modeling.evaluation import classification_metrics as cm
from modeling.evaluation import evaluation
from modeling.training import pretraining
from modeling.losses import task_losses
from pipeline.inputs import classification_dataset as cds
from pipeline.core import kinds
from pipeline.labels import task_labels
from pipeline.core.errors import InputError
from pipeline.records import schema

# The summary metrics in the JSON and the table, in this order.
METRICS = ("accuracy", "precision", "recall", "f1", "mcc", "roc_auc", "loss")
TEACHER_METRICS = ("teacher_accuracy", "teacher_agreement", "teacher_kl_task")


@dataclasses.dataclass(frozen=True)
class TaskEvalInput:
  """A classification (or task distill) records directory and a split."""
  manifest: dict
  spec: cds.TaskSpec
  split: str

  @property
  def dir(self):
    return self.manifest["_dir"]

  def describe(self):
    return {"dir": self.dir, "stage": self.manifest["stage"], "split": self.split,
            "manifest_sha256": self.manifest["_sha256"],
            "teacher_logits": self.spec.has_teacher_logits}


def read_task_records(input_dir, vocab_file=None, split=None):
  """A completed classification / task distill dir (any split).

  Raises:
    InputError: incomplete input, pretraining records, or (vocab_file
      given) another vocab.
  """
  _, manifest = kinds.read(input_dir, kinds.CLASSIFICATION_RECORDS, kinds.TASK_DISTILL_RECORDS)
  spec = cds.TaskSpec.from_manifest(manifest)
  if vocab_file:
    kinds.check_vocab(manifest, vocab_file)
  return TaskEvalInput(manifest, spec, split)


def read_task_eval_input(input_dir, split="dev", vocab_file=None):
  """read_task_records, and `split` must have records with labels.

  Raises:
    InputError: as read_task_records, no such split, an unlabeled split.
  """
  inp = read_task_records(input_dir, vocab_file, split)
  cds.check_labeled(inp.manifest, split)
  schema.record_files(input_dir, (split,))  # raises when the split has no records
  return inp


def load_classifier(checkpoint, inp, config_file=None):
  """A float32 classifier from `checkpoint` that fits the records of `inp`.

  config_file: a bert_config.json or bundled name, default the config
  beside the checkpoint (classification.load_classifier).
  Raises:
    InputError: missing checkpoint, a config, vocab, length or number of
      labels other than the records', or weights that do not fit.
  """
  evaluation.checkpoint_files(checkpoint)  # InputError when there is none
  config = None
  if config_file:
    config = pretraining.model_config(config_file, inp.manifest,
                                      pretraining.gelu_convention_for(checkpoint))
  try:
    model = classification.load_classifier(checkpoint, dtype="float32", config=config)
  except (OSError, ValueError) as e:
    raise InputError(checkpoint, str(e)) from None
  task_labels.check_classifier(inp.manifest, model.config, model.num_labels,
                                     checkpoint, task_labels.run_vocab_sha256(checkpoint))
  return model


def predict(model, inp, batch_size, max_batches=None):
  """{logits [N,C], label_ids [N] (, teacher_logits [N,C])} of the split,
  in record order, as float64 / int64 numpy arrays."""
  batches = cds.eval_dataset(inp.dir, inp.spec, batch_size, inp.split)
  if max_batches:
    batches = batches.take(max_batches)

  @tf.function(input_signature=[batches.element_spec])
  def step(batch):
    out = {"logits": classification.logits(model, batch),
           "label_ids": tf.reshape(batch["label_ids"], [-1])}
    if "teacher_logits" in batch:
      out["teacher_logits"] = batch["teacher_logits"]
    return out

  parts = {}
  for batch in batches:
    for name, value in step(batch).items():
      parts.setdefault(name, []).append(value.numpy())
  if not parts:
    raise InputError(inp.dir, f"split {inp.split!r} has no records")
  out = {name: np.concatenate(values) for name, values in parts.items()}
  out["label_ids"] = out["label_ids"].astype(np.int64)
  return out


def _finite(value):
  """NaN (ROC-AUC with one class present) -> None: JSON has no NaN."""
  return None if value is None or math.isnan(value) else float(value)


def teacher_metrics(teacher_logits, logits, label_ids):
  """The cached teacher's own accuracy, agreement with it and KL to it."""
  kl = task_losses.per_example_kl(teacher_logits, logits, 1.0).numpy()
  teacher_top1 = teacher_logits.argmax(-1)
  return {"teacher_accuracy": float(np.mean(teacher_top1 == label_ids)),
          "teacher_agreement": float(np.mean(teacher_top1 == logits.argmax(-1))),
          "teacher_kl_task": float(np.mean(kl))}


def task_metrics(predicted, labels):
  """(metrics, report, counts) of predict's arrays; labels: class names."""
  logits, label_ids = predicted["logits"], predicted["label_ids"]
  report = cm.report(label_ids, logits, labels)
  summary = report.pop("summary")
  metrics = {name: _finite(summary.get(name)) for name in METRICS}
  if "teacher_logits" in predicted:
    metrics.update(teacher_metrics(predicted["teacher_logits"], logits, label_ids))
  counts = {"examples": int(len(label_ids))}
  return metrics, report, counts


def evaluate(model, inp, batch_size, max_batches=None):
  """(metrics, report, counts) of `model` on the split of `inp`."""
  return task_metrics(predict(model, inp, batch_size, max_batches), inp.spec.labels)


# ---------------------------------------------------------------- speed


def serving_fn(model, batch_size, seq_length):
  """The classifier compiled for fixed [batch_size, seq_length] inputs."""
  specs = {name: tf.TensorSpec([batch_size, seq_length], tf.int32, name)
           for name in schema.CLASSIFICATION_MODEL_INPUTS}

  @tf.function(input_signature=[specs])
  def forward(inputs):
    return {"logits": model(inputs, training=False)["logits"]}

  return forward


def classifier_case(model, batch_size, settings):
  """evaluation.measure_speed's make_case for classifiers: random ids with
  a random length per row (the padding is part of the cost, as served)."""
  s = settings.seq_length
  rng = np.random.default_rng(0)
  lengths = rng.integers(2, s + 1, batch_size)
  mask = (np.arange(s)[None] < lengths[:, None]).astype(np.int32)
  inputs = {"input_ids": rng.integers(1, model.config.vocab_size, (batch_size, s),
                                      dtype=np.int32) * mask,
            "input_mask": mask, "segment_ids": np.zeros_like(mask)}
  inputs = {k: tf.constant(v) for k, v in inputs.items()}
  return serving_fn(model, batch_size, s), inputs, "logits"


# ---------------------------------------------------------------- report


def _num(value, spec=".4f", unit=""):
  return "n/a" if value is None else f"{value:{spec}}{unit}"


def _metric(name, header, spec=".4f"):
  return header, lambda r: _num(r["metrics"].get(name), spec)


def columns(results):
  """The table's (header, formatter) pairs: the pretraining table's size and
  speed columns, then the task metrics (and teacher ones on distill records)."""
  shared = dict(evaluation.columns(results))
  cols = [(h, shared[h]) for h in ("Model", "Layers x hidden", "Params", "Disk (MB)",
                                   "Latency (ms)", "Speedup", "Throughput (seq/s)")]
  cols += [_metric("accuracy", "Accuracy"), ("Acc kept", shared["Acc kept"]),
           _metric("f1", "F1"), _metric("precision", "Precision"),
           _metric("recall", "Recall"), _metric("mcc", "MCC")]
  if any(r["metrics"].get("roc_auc") is not None for r in results):
    cols.append(_metric("roc_auc", "ROC-AUC"))
  if all("teacher_agreement" in r["metrics"] for r in results):
    cols.append(_metric("teacher_agreement", "Teacher agree"))
  return tuple(cols)


def markdown_report(report):
  """benchmark.md of tools/benchmark.py --task."""
  env, inp, s = report["environment"], report["input"], report["settings"]
  loads = ", ".join(f"{x:.2f}" for x in env["load_average_before"])
  loads_after = ", ".join(f"{x:.2f}" for x in env["load_average_after"])
  binary = "F1, precision, recall: of class 1" if report["num_labels"] == 2 else (
      "F1, precision, recall: macro averages over the classes")
  return "\n".join([
      f"# Teacher vs students on {inp['task'] or 'the task'}", "",
      evaluation.markdown_table(report["models"], columns(report["models"])),
      f"Latency: batch {s['latency_batch']}, sequence length {s['seq_length']} "
      f"(the records' max_seq_length); mean ± std of {s['repeats']} timed calls "
      f"after tracing and {s['warmup']} warm-up call(s) (compiled tf.function, "
      f"fixed input signature). Throughput: batch {s['throughput_batch']}. Repeats "
      "interleaved across models. Speedup: the first model's latency / this "
      "model's. Acc kept: accuracy / the first model's.",
      f"Metrics on `{inp['dir']}` (split {inp['split']}, {inp['examples']} "
      f"examples); {binary}; MCC: Matthews correlation.",
      f"Load average (1, 5, 15 min) before: {loads}; after: {loads_after}; "
      f"{env['cpu_count']} CPUs.",
      "Disk: the checkpoint's files (a training run's checkpoint also holds "
      "optimizer state; a best/ directory holds the weights only); MB = 10^6 "
      "bytes.", ""])


def write_plot(results, path, latency_batch=1):
  evaluation.write_plot(results, path, latency_batch, metric="accuracy",
                        label="held-out accuracy")
