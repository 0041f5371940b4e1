"""Fine-tuning and distillation of span (extractive QA) models as a trainer task.

Shape legend: B=batch, S=max_seq_length, N=windows of the eval split.

QaTask plugs into modeling/training/trainer.py like ClassificationTask: its
loss is modeling/losses/qa_losses.py's, and `evaluate` predicts every window
of the eval split (each rank its share, gathered back in record order), turns
the logits into answers as run_squad does (modeling/evaluation/
squad_predictions.py) and scores them with the official SQuAD metric
(modeling/evaluation/squad_metrics.py): exact, f1 (v2.0: HasAns / NoAns
splits and the best null threshold too).

BestSpanCheckpoint keeps `<output_dir>/best/` (a span.save_span_model
directory, with predictions.json / null_odds.json of that evaluation) at the
evaluation with the best value of a metric (default f1).
"""

import numpy as np
import tensorflow as tf

from modeling.evaluation import squad_metrics
from modeling.evaluation import squad_predictions
from modeling.losses import qa_losses
from modeling.losses import task_losses
from modeling.models import span
from modeling.training import classification_training
from pipeline.core.errors import ConfigError

BEST_DIR = classification_training.BEST_DIR
LOWER_IS_BETTER = ("loss",)


def metric_names(version):
  names = ["exact", "f1"]
  if version == "v2.0":
    names += ["HasAns_exact", "HasAns_f1", "NoAns_exact", "NoAns_f1", "best_exact",
              "best_exact_thresh", "best_f1", "best_f1_thresh"]
  return tuple(names)


def check_metric(metric, version):
  names = [n for n in metric_names(version) if not n.endswith("_thresh")]
  if metric not in names:
    raise ConfigError(f"--best_metric={metric}: not one of {names} (QA records, SQuAD "
                      f"{version})")


class EvalSet:
  """What scoring a split needs: its questions (sidecar) and the official dataset."""

  def __init__(self, examples, dataset, prediction_config):
    self.examples = examples
    self.dataset = dataset
    self.prediction_config = prediction_config

  def score(self, unique_ids, start_logits, end_logits):
    """(metrics dict, {question id: Prediction})."""
    predictions = squad_predictions.predict(self.examples, unique_ids, start_logits,
                                            end_logits, self.prediction_config)
    texts = {q: p.text for q, p in predictions.items()}
    odds = None
    if self.prediction_config.version_2_with_negative:
      odds = {q: p.null_odds for q, p in predictions.items()}
    return squad_metrics.evaluate(self.dataset, texts, odds), predictions


class QaTask:
  """Span CE (fine-tuning) or alpha·CE + (1-alpha)·T²·KL on start/end (distill)."""

  def __init__(self, version, config=None, eval_set=None):
    self.config = config or task_losses.TaskDistillConfig()
    self.eval_metrics = metric_names(version)
    self.eval_set = eval_set
    self.last_predictions = None  # {question id: Prediction} of the last evaluate.
    self._predict_fn = None

  def compute_loss(self, model, batch, training):
    """batch: inputs [B,S], start/end_positions [B,1] (+ teacher_*_logits [B,S])."""
    start, end = span.masked_span_logits(model, batch, training=training)
    teacher = None
    if self.config.uses_teacher:
      teacher = (span.mask_padding(batch["teacher_start_logits"], batch["input_mask"]),
                 span.mask_padding(batch["teacher_end_logits"], batch["input_mask"]))
    loss, terms = qa_losses.span_loss(start, end, batch, self.config, teacher)
    terms["position_accuracy"] = qa_losses.position_accuracy(start, end, batch)
    return loss, terms

  def _predict(self, model, batch):
    start, end = span.masked_span_logits(model, batch)
    return {"start_logits": start, "end_logits": end,
            "unique_id": tf.reshape(batch["unique_id"], [-1])}

  def predict(self, model, eval_dataset, world):
    """{start_logits, end_logits [N,S], unique_id [N]} of the split on every rank."""
    if self._predict_fn is None:
      self._predict_fn = tf.function(lambda batch: self._predict(model, batch),
                                     input_signature=[eval_dataset.element_spec])
    local = {}
    for batch in eval_dataset:
      for name, value in self._predict_fn(batch).items():
        local.setdefault(name, []).append(value.numpy())
    local = {name: np.concatenate(parts) for name, parts in local.items()}
    return classification_training.gather_rows(local, world)

  def evaluate(self, model, eval_dataset, world):
    """The official SQuAD metrics of the eval split (all ranks agree)."""
    predicted = self.predict(model, eval_dataset, world)
    unique_ids = predicted["unique_id"].astype(np.int64)
    results, self.last_predictions = self.eval_set.score(
        unique_ids, predicted["start_logits"], predicted["end_logits"])
    return {name: float(results[name]) for name in self.eval_metrics if name in results}


class BestSpanCheckpoint(classification_training.BestKeeper):
  """best/ of a QA run: span.save_span_model + that evaluation's predictions.json
  (and null_odds.json for SQuAD 2.0), the official script's input."""
  card_name = span.SPAN_FILE

  def __init__(self, output_dir, metric, model, version_2):
    self._model, self._version_2 = model, version_2
    super().__init__(output_dir, metric)

  def update(self, step, results, predictions):
    return self.keep(step, results,
                     squad_predictions.prediction_files(predictions, self._version_2))

  def save(self, info, step, extra_files):
    span.save_span_model(self._model, self.directory, info, step, extra_files)
