"""Task-specific distillation losses for classifiers: pure float32 functions.

Shape legend: B=batch, C=number of labels.

With hard labels y, student logits s and the fine-tuned teacher's logits t
(cached at temperature 1 in the task distill records), the loss is

  alpha * CE(y, softmax(s)) + (1 - alpha) * T^2 * KL(softmax(t/T) || softmax(s/T))

averaged over the batch. CE is at temperature 1 (the prediction the student
will make); T^2 keeps the KD gradient's scale independent of T (Hinton et
al. 2015). alpha = 1 is plain fine-tuning and needs no teacher.

Unlabeled rows (label id C, the records' UNLABELED, see
pipeline/records/classification_data.py; e.g. teacher-labelled augmented
variants) have no hard label: CE and accuracy average over the labelled rows
only (0 for a batch without any), while KD averages over every row.
"""

import dataclasses

import tensorflow as tf

from modeling.losses import distill_losses
from pipeline.core.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class TaskDistillConfig:
  """alpha: weight of the hard-label CE (1 - alpha: KD); T: KD temperature."""
  alpha: float = 1.0
  temperature: float = 1.0

  def __post_init__(self):
    # The bounds of pretraining distillation's alpha and T.
    problems = distill_losses.weight_problems(self.alpha, self.temperature)
    if problems:
      raise ConfigError("; ".join(problems))

  @property
  def uses_teacher(self):
    return self.alpha < 1.0


@dataclasses.dataclass(frozen=True)
class IntermediateConfig:
  """Task distillation's first phase (intermediate layers, no logits):

    hidden_weight * hidden MSE + attention_weight * attention KL

  between the student's layers and the fine-tuned teacher's mapped ones
  (distill_losses.intermediate_losses; layer_map: distill_losses.layer_map).
  """
  hidden_weight: float = 0.0
  attention_weight: float = 0.0
  layer_map: str = "uniform"

  def __post_init__(self):
    if self.hidden_weight < 0 or self.attention_weight < 0:
      raise ConfigError("hidden_mse_weight and attention_kl_weight must be >= 0")
    if not self.terms:
      raise ConfigError("the intermediate-layer phase needs hidden_mse_weight or "
                        "attention_kl_weight > 0")
    distill_losses.check_layer_map(self.layer_map)

  @property
  def terms(self):
    """The names of the terms with a weight, as intermediate_losses returns them."""
    return tuple(name for name, weight in (("hidden_mse", self.hidden_weight),
                                           ("attention_kl", self.attention_weight))
                 if weight > 0)

  def total(self, terms):
    """The weighted sum of intermediate_losses' terms: []."""
    weights = {"hidden_mse": self.hidden_weight, "attention_kl": self.attention_weight}
    return tf.add_n([weights[name] * terms[name] for name in self.terms])


def _labels(label_ids):
  """label_ids [B,1] or [B] -> int32 [B]."""
  return tf.reshape(tf.cast(label_ids, tf.int32), [-1])


def labeled(logits, label_ids):
  """1.0 where the row has a class in [0, C), 0.0 for unlabeled ones: [B]."""
  labels, num_classes = _labels(label_ids), tf.shape(logits)[-1]
  return tf.cast((labels >= 0) & (labels < num_classes), tf.float32)


def _labeled_mean(values, mask):
  """Mean of values [B] over the rows where mask [B] is 1; 0 with none."""
  return tf.math.divide_no_nan(tf.reduce_sum(values * mask), tf.reduce_sum(mask))


def per_example_cross_entropy(logits, label_ids):
  """-log softmax(logits)[label] per example, 0 for unlabeled rows: float32 [B]."""
  mask = labeled(logits, label_ids)
  # An out-of-range label is an error on CPU and NaN on GPU: give unlabeled
  # rows class 0, then zero their term.
  labels = tf.where(mask > 0, _labels(label_ids), 0)
  per_example = tf.nn.sparse_softmax_cross_entropy_with_logits(
      labels=labels, logits=tf.cast(logits, tf.float32))
  return per_example * mask


def cross_entropy(logits, label_ids):
  """Mean hard-label cross-entropy over the labelled rows: logits [B,C],
  labels [B,1]/[B] -> [] (0 when no row is labelled)."""
  return _labeled_mean(per_example_cross_entropy(logits, label_ids),
                       labeled(logits, label_ids))


def per_example_kl(teacher_logits, student_logits, temperature):
  """KL(softmax(t/T) || softmax(s/T)) per example: float32 [B]."""
  return distill_losses.full_kl(tf.cast(teacher_logits, tf.float32),
                                tf.cast(student_logits, tf.float32),
                                temperature)


def kd_loss(teacher_logits, student_logits, temperature):
  """Mean KL(p_T || q_T) over the batch (without the T^2 factor): []."""
  return tf.reduce_mean(per_example_kl(teacher_logits, student_logits,
                                       temperature))


def accuracy(logits, label_ids):
  """Fraction of the labelled examples whose argmax is the label: []."""
  predicted = tf.argmax(logits, -1, output_type=tf.int32)
  right = tf.cast(tf.equal(predicted, _labels(label_ids)), tf.float32)
  return _labeled_mean(right, labeled(logits, label_ids))


def task_distillation_loss(student_logits, label_ids, teacher_logits, config):
  """The module doc's loss and its terms.

  Args:
    student_logits: [B,C]. label_ids: [B,1] or [B].
    teacher_logits: [B,C] at temperature 1, or None when alpha = 1.
    config: TaskDistillConfig.
  Returns:
    (scalar loss, {"ce_loss": [], "kd_loss": [] (with a teacher)}).
  """
  terms = {"ce_loss": cross_entropy(student_logits, label_ids)}
  if not config.uses_teacher:
    return terms["ce_loss"], terms
  if teacher_logits is None:
    raise ValueError(f"alpha {config.alpha} < 1 needs the teacher's logits")
  terms["kd_loss"] = kd_loss(teacher_logits, student_logits,
                             config.temperature)
  total = (config.alpha * terms["ce_loss"] + (1.0 - config.alpha) *
           config.temperature ** 2 * terms["kd_loss"])
  return total, terms
