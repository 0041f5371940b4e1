"""Fine-tuning and task distillation of classifiers as trainer tasks.

Shape legend: B=batch, S=sequence length, C=number of labels, N=examples of
the eval split, H_s/H_t=student/teacher hidden size.

ClassificationTask plugs into modeling/training/trainer.py like PretrainingTask. Its
loss is modeling/losses/task_losses.py's (alpha = 1: plain fine-tuning on
hard labels; alpha < 1: KD to the teacher_logits of task-distill records).
Its evaluation needs every prediction, not per-batch sums (F1, MCC and
ROC-AUC do not add up over batches), so it provides `evaluate`: each rank
predicts its share of the split, the shares are summed into one [N, ...]
array in record order on every rank, and classification_metrics computes
the figures.

IntermediateDistillationTask is task distillation's first phase (TinyBERT's
intermediate-layer distillation on the task's inputs): the student's
embeddings, hidden states and attention distributions learn those of the
fine-tuned teacher run online on the same batch; no logits loss, no hard
labels. Its student is a student.ProjectedClassifier when the widths differ, and
freeze_prediction_layers keeps the pooler and classifier head (which that
loss does not reach) out of the optimizer, so weight decay does not shrink
them either. The second phase is ClassificationTask, started from the first
phase's checkpoint.

BestCheckpoint keeps `<output_dir>/best/` (a classification.save_classifier
directory) holding the weights of the evaluation with the best value of a
chosen metric.
"""

import json
import os

import numpy as np
import tensorflow as tf

from modeling.checkpoints import model_dirs
from modeling.models import classification
from modeling.evaluation import classification_metrics as cm
from modeling.losses import distill_losses as dl
from modeling.losses import task_losses as td
from pipeline.core.errors import ConfigError

BEST_DIR = "best"
REPORT_FILE = "eval_report.json"


def metric_names(num_labels, distill):
  """The eval metrics a ClassificationTask reports (--best_metric choices)."""
  names = ["accuracy", "precision", "recall", "f1", "mcc", "loss"]
  if num_labels == 2:
    names.append("roc_auc")
  if distill:
    names += ["kd_loss", "teacher_agreement"]
  return tuple(names)


def check_metric(metric, num_labels, distill):
  """Raises ConfigError unless `metric` is one the task reports."""
  names = metric_names(num_labels, distill)
  if metric not in names:
    raise ConfigError(f"--best_metric={metric}: not one of {list(names)}")


class ClassificationTask:
  """Hard-label CE (fine-tuning) or alpha·CE + (1-alpha)·T²·KL (distill)."""

  def __init__(self, num_labels, config=None):
    self.num_labels = num_labels
    self.config = config or td.TaskDistillConfig()
    self.eval_metrics = metric_names(num_labels, self.config.uses_teacher)
    self.last_eval = None  # (labels [N], logits [N,C]) of the last evaluate.
    self._predict_fn = None

  def compute_loss(self, model, batch, training):
    """batch: inputs [B,S], label_ids [B,1] (+ teacher_logits [B,C])."""
    logits = classification.logits(model, batch, training=training)
    loss, terms = td.task_distillation_loss(
        logits, batch["label_ids"], batch.get("teacher_logits"), self.config)
    terms["accuracy"] = td.accuracy(logits, batch["label_ids"])
    return loss, terms

  def _predict(self, model, batch):
    out = {"logits": classification.logits(model, batch),
           "label_ids": tf.reshape(batch["label_ids"], [-1])}
    if self.config.uses_teacher:
      out["teacher_logits"] = batch["teacher_logits"]
    return out

  def predict(self, model, eval_dataset, world):
    """{logits [N,C], label_ids [N] (, teacher_logits)} of the whole split,
    on every rank, in record order (see pipeline/classification_dataset)."""
    if self._predict_fn is None:
      self._predict_fn = tf.function(
          lambda batch: self._predict(model, batch),
          input_signature=[eval_dataset.element_spec])
    local = {}
    for batch in eval_dataset:
      for name, value in self._predict_fn(batch).items():
        local.setdefault(name, []).append(value.numpy())
    local = {name: np.concatenate(parts) for name, parts in local.items()}
    return gather_rows(local, world)

  def evaluate(self, model, eval_dataset, world):
    """The metrics of module doc over the whole split (all ranks agree)."""
    predicted = self.predict(model, eval_dataset, world)
    labels = predicted["label_ids"].astype(np.int64)
    logits = predicted["logits"]
    self.last_eval = (labels, logits)
    results = cm.classification_metrics(labels, logits, self.num_labels)
    if self.config.uses_teacher:
      results.update(_teacher_metrics(predicted["teacher_logits"], logits,
                                      self.config.temperature))
    return {name: results[name] for name in self.eval_metrics}


def freeze_prediction_layers(model):
  """Pooler and classifier head out of the trainable variables (first phase)."""
  model.bert.pooler.trainable = False
  model.classifier.trainable = False


class IntermediateDistillationTask:
  """First phase: hidden_weight * hidden MSE + attention_weight * attention KL
  to a frozen teacher run on every batch (see the module doc). Classifiers and
  QA span models alike: both take the same three inputs and return the
  BertModel dict."""

  def __init__(self, teacher, config, num_student_layers):
    """teacher: a BertClassifier or BertSpanLabeler (frozen); config:
    td.IntermediateConfig."""
    self.teacher, self.config = teacher, config
    # Teacher layer (1-based) per student layer.
    self.layers = dl.layer_map(config.layer_map, teacher.config.num_hidden_layers,
                               num_student_layers)
    self.eval_metrics = ("loss",) + config.terms

  def _outputs(self, model, batch, training):
    """(student, teacher) BertModel dicts with the states the loss needs."""
    c, inputs = self.config, classification.model_inputs(batch)
    wanted = dict(output_hidden_states=c.hidden_weight > 0,
                  output_attentions=c.attention_weight > 0)
    # training=False: the teacher never drops out; stop_gradient: in the
    # trainer's tf.function its backward pass is never built.
    teacher = tf.nest.map_structure(
        tf.stop_gradient, self.teacher(inputs, training=False, **wanted))
    return model(inputs, training=training, **wanted), teacher

  def compute_loss(self, model, batch, training):
    """batch: inputs [B,S] (labels and teacher logits unused) -> (loss, terms)."""
    student, teacher = self._outputs(model, batch, training)
    project = getattr(model, "projections", None) if self.config.hidden_weight else None
    terms = dl.intermediate_losses(student, teacher, batch["input_mask"], self.layers,
                                   project)
    return self.config.total(terms), terms

  def eval_sums(self, model, batch):
    """{name: (term x real tokens, real tokens)}: token-weighted over the split."""
    loss, terms = self.compute_loss(model, batch, training=False)
    tokens = tf.reduce_sum(tf.cast(batch["input_mask"], tf.float32))
    return {name: (value * tokens, tokens) for name, value in dict(terms, loss=loss).items()}


def _teacher_metrics(teacher_logits, logits, temperature):
  kl = td.per_example_kl(teacher_logits, logits, temperature).numpy()
  agree = teacher_logits.argmax(-1) == logits.argmax(-1)
  return {"kd_loss": float(np.mean(kl)) if kl.size else 0.0,
          "teacher_agreement": float(np.mean(agree)) if agree.size else 0.0}


def gather_rows(local, world):
  """Every rank's rows of record-sharded arrays, back in record order.

  Rank r holds the rows r, r+N, r+2N, ... of each [n, ...] array (N ranks,
  n rows in all). One allreduce of a zero-filled array per name, each rank
  writing its own rows, gives all ranks the whole array; ranks with no rows
  pass empty arrays of the right trailing shape.
  """
  names = sorted(local)
  count = int(len(local[names[0]]))
  total = int(world.allreduce_sum([count])[0])
  gathered = {}
  for name in names:
    rows = np.asarray(local[name], np.float64)
    full = np.zeros((total,) + rows.shape[1:], np.float64)
    full[world.rank::world.size][:count] = rows
    flat = world.allreduce_sum(full.reshape(-1))
    gathered[name] = flat.reshape(full.shape)
  return gathered


class BestKeeper:
  """Keeps `<output_dir>/best/` (a model_dirs directory) at the evaluation with
  the best value of a metric; subclasses say how their model is saved.

  The value and step are stored in best/'s card, so a resumed run keeps
  comparing against them. Ties keep the earlier step. Only the chief writes
  (call update on rank 0 only).
  """
  card_name = None  # The saved directory's card (classifier.json, span.json).

  def __init__(self, output_dir, metric):
    self.directory = os.path.join(output_dir, BEST_DIR)
    self.metric = metric
    model_dirs.recover_interrupted(self.directory, self.card_name)

  def best(self):
    """(step, value) of the saved best, or (None, None)."""
    try:
      info = model_dirs.read_card(self.directory, self.card_name, "model")["info"]
    except ValueError:
      return None, None
    if info.get("metric") != self.metric:
      return None, None  # Selected by another metric: start over.
    return info["step"], info["value"]

  def keep(self, step, results, extra_files=None):
    """Saves the model when results[metric] beats the best; returns True."""
    if self.metric not in results:
      raise ValueError(f"best_metric {self.metric!r} is not among the eval "
                       f"metrics {sorted(results)}")
    value = float(results[self.metric])
    best_step, best_value = self.best()
    if best_step == step or not cm.is_better(self.metric, value, best_value):
      return False
    info = {"metric": self.metric, "value": value, "step": step,
            "results": {k: float(v) for k, v in results.items()}}
    self.save(info, step, extra_files)
    return True

  def save(self, info, step, extra_files):
    raise NotImplementedError


class BestCheckpoint(BestKeeper):
  """best/ of a classifier run (classification.save_classifier, + eval_report.json)."""
  card_name = classification.CLASSIFIER_FILE

  def __init__(self, output_dir, metric, model, labels=None):
    self._model, self._labels = model, labels
    super().__init__(output_dir, metric)

  def update(self, step, results, report=None):
    extra = None
    if report is not None:
      extra = {REPORT_FILE: json.dumps(report, indent=1, sort_keys=True) + "\n"}
    return self.keep(step, results, extra)

  def save(self, info, step, extra_files):
    classification.save_classifier(self._model, self.directory, self._labels, info, step,
                                   extra_files)


def epoch_steps(num_examples, global_batch_size, num_epochs):
  """(steps per epoch, total steps): epochs of num_examples / global batch.

  Raises:
    ValueError: a training split smaller than one global batch.
  """
  per_epoch = num_examples // global_batch_size
  if per_epoch < 1:
    raise ValueError(f"{num_examples} training examples make no full batch "
                     f"of {global_batch_size}")
  return per_epoch, max(1, int(round(per_epoch * num_epochs)))
