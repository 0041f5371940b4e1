"""Classification metrics from NumPy arrays (no TensorFlow, no sklearn).

Shape legend: N=examples, C=number of classes.

Everything is computed from the confusion matrix (accuracy, precision,
recall, F1, Matthews correlation, the per-class report) except ROC-AUC,
which needs the scores. Conventions follow scikit-learn's defaults where the
GLUE tasks use them:

  * binary (C=2): precision / recall / F1 of the positive class 1 (MRPC,
    QQP report that F1), ROC-AUC of the class-1 probability;
  * multi-class: their macro averages (unweighted mean over classes);
  * a ratio whose denominator is 0 is 0 (sklearn's zero_division=0);
  * MCC is the multi-class R_K statistic (Gorodkin 2004), which equals the
    binary phi coefficient for C=2, and is 0 when it is undefined.
"""

import numpy as np

# Metrics where smaller is better (everything else: larger is better).
LOWER_IS_BETTER = frozenset({"loss", "ce_loss", "kd_loss", "teacher_kl_task"})
SUMMARY_METRICS = ("accuracy", "precision", "recall", "f1", "mcc", "roc_auc")


def confusion_matrix(labels, predictions, num_classes):
  """int64 [C,C]: rows = true class, columns = predicted class."""
  labels = np.asarray(labels, np.int64).reshape(-1)
  predictions = np.asarray(predictions, np.int64).reshape(-1)
  if labels.shape != predictions.shape:
    raise ValueError(f"{labels.size} labels but {predictions.size} "
                     "predictions")
  for name, values in (("labels", labels), ("predictions", predictions)):
    if values.size and (values.min() < 0 or values.max() >= num_classes):
      raise ValueError(f"{name} must be in [0, {num_classes})")
  flat = labels * num_classes + predictions
  counts = np.bincount(flat, minlength=num_classes * num_classes)
  return counts.reshape(num_classes, num_classes)


def _ratio(numerator, denominator):
  """Element-wise numerator / denominator, 0 where the denominator is 0."""
  numerator = np.asarray(numerator, np.float64)
  denominator = np.asarray(denominator, np.float64)
  out = np.zeros(np.broadcast(numerator, denominator).shape, np.float64)
  np.divide(numerator, denominator, out=out, where=denominator != 0)
  return out


def per_class(confusion):
  """{precision, recall, f1, support} each float64/int64 [C]."""
  confusion = np.asarray(confusion, np.int64)
  true_positive = np.diag(confusion)
  predicted = confusion.sum(0)  # [C] how often each class was predicted
  support = confusion.sum(1)  # [C] how often each class is the label
  precision = _ratio(true_positive, predicted)
  recall = _ratio(true_positive, support)
  f1 = _ratio(2 * precision * recall, precision + recall)
  return {"precision": precision, "recall": recall, "f1": f1,
          "support": support}


def matthews_corrcoef(confusion):
  """Multi-class MCC (R_K) from a confusion matrix [C,C]; 0 if undefined."""
  c = np.asarray(confusion, np.float64)
  n = c.sum()
  correct = np.trace(c)
  predicted, actual = c.sum(0), c.sum(1)
  numerator = correct * n - np.dot(predicted, actual)
  denominator = np.sqrt(n * n - np.dot(predicted, predicted)) * np.sqrt(
      n * n - np.dot(actual, actual))
  return float(numerator / denominator) if denominator else 0.0


def roc_auc(labels, scores):
  """Area under the ROC curve of binary labels {0,1} and scores [N].

  The Mann-Whitney statistic with average ranks for ties: the probability
  that a random positive scores above a random negative (ties count 1/2).
  NaN when only one class is present (the AUC is undefined).
  """
  labels = np.asarray(labels).reshape(-1)
  scores = np.asarray(scores, np.float64).reshape(-1)
  positives = int((labels == 1).sum())
  negatives = labels.size - positives
  if positives == 0 or negatives == 0:
    return float("nan")
  order = np.argsort(scores, kind="mergesort")
  sorted_scores = scores[order]
  ranks = np.empty(scores.size, np.float64)
  # Average 1-based rank over each run of equal scores.
  starts = np.flatnonzero(np.r_[True, sorted_scores[1:] != sorted_scores[:-1]])
  ends = np.r_[starts[1:], scores.size]
  for start, end in zip(starts, ends):
    ranks[order[start:end]] = (start + end + 1) / 2.0
  rank_sum = ranks[labels == 1].sum()
  return float((rank_sum - positives * (positives + 1) / 2.0) /
               (positives * negatives))


def softmax(logits):
  """Row-wise softmax in float64 of logits [N,C]."""
  logits = np.asarray(logits, np.float64)
  shifted = logits - logits.max(-1, keepdims=True)
  exp = np.exp(shifted)
  return exp / exp.sum(-1, keepdims=True)


def cross_entropy(labels, logits):
  """Mean -log softmax(logits)[label] over N examples (float64)."""
  logits = np.asarray(logits, np.float64)
  shifted = logits - logits.max(-1, keepdims=True)
  log_z = np.log(np.exp(shifted).sum(-1))
  picked = shifted[np.arange(len(logits)), np.asarray(labels, np.int64)]
  return float(np.mean(log_z - picked)) if len(logits) else 0.0


def classification_metrics(labels, logits, num_classes=None):
  """Summary metrics of logits (or probabilities) [N,C] against labels [N].

  Returns:
    {accuracy, precision, recall, f1, mcc, loss} (+ roc_auc when C=2) as
    floats; loss is the mean cross-entropy of the logits.
  """
  logits = np.asarray(logits, np.float64)
  num_classes = num_classes or logits.shape[-1]
  labels = np.asarray(labels, np.int64).reshape(-1)
  confusion = confusion_matrix(labels, logits.argmax(-1), num_classes)
  metrics = summarize(confusion)
  metrics["loss"] = cross_entropy(labels, logits)
  if num_classes == 2:
    metrics["roc_auc"] = roc_auc(labels, softmax(logits)[:, 1])
  return metrics


def summarize(confusion):
  """{accuracy, precision, recall, f1, mcc} of a confusion matrix [C,C]."""
  confusion = np.asarray(confusion, np.int64)
  total = confusion.sum()
  classes = per_class(confusion)
  if confusion.shape[0] == 2:  # The positive class's figures.
    picked = {k: float(classes[k][1]) for k in ("precision", "recall", "f1")}
  else:
    picked = {k: float(np.mean(classes[k]))
              for k in ("precision", "recall", "f1")}
  return dict(picked, accuracy=float(_ratio(np.trace(confusion), total)),
              mcc=matthews_corrcoef(confusion))


def report(labels, logits, label_names=None):
  """A JSON-able per-class report: the summary, per class, the confusion.

  Args:
    labels: int [N]. logits: [N,C] (argmax = the prediction).
    label_names: optional names of the C classes.
  """
  logits = np.asarray(logits, np.float64)
  num_classes = logits.shape[-1]
  names = list(label_names) if label_names is not None else [
      str(i) for i in range(num_classes)]
  if len(names) != num_classes:
    raise ValueError(f"{len(names)} label names for {num_classes} classes")
  confusion = confusion_matrix(labels, logits.argmax(-1), num_classes)
  classes = per_class(confusion)
  return {
      "summary": classification_metrics(labels, logits, num_classes),
      "per_class": {name: {"precision": float(classes["precision"][i]),
                           "recall": float(classes["recall"][i]),
                           "f1": float(classes["f1"][i]),
                           "support": int(classes["support"][i])}
                    for i, name in enumerate(names)},
      "confusion_matrix": confusion.tolist(),
      "labels": names,
  }


def is_better(metric, value, best):
  """Whether `value` of `metric` beats `best` (None: anything beats it)."""
  if value is None or np.isnan(value):
    return False
  if best is None or np.isnan(best):
    return True
  return value < best if metric in LOWER_IS_BETTER else value > best
