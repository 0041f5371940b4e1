"""Task-specific distillation losses for classifiers: pure float32 functions.

Shape legend: B=batch, C=number of labels.

With hard labels y, student logits s and the fine-tuned teacher's logits t
(cached at temperature 1 in the task distill records), the loss is

  alpha * CE(y, softmax(s)) + (1 - alpha) * T^2 * KL(softmax(t/T) || softmax(s/T))

averaged over the batch. CE is at temperature 1 (the prediction the student
will make); T^2 keeps the KD gradient's scale independent of T (Hinton et
al. 2015). alpha = 1 is plain fine-tuning and needs no teacher.
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


def _labels(label_ids):
  """label_ids [B,1] or [B] -> int32 [B]."""
  return tf.reshape(tf.cast(label_ids, tf.int32), [-1])


def per_example_cross_entropy(logits, label_ids):
  """-log softmax(logits)[label] per example: float32 [B]."""
  return tf.nn.sparse_softmax_cross_entropy_with_logits(
      labels=_labels(label_ids), logits=tf.cast(logits, tf.float32))


def cross_entropy(logits, label_ids):
  """Mean hard-label cross-entropy: logits [B,C], labels [B,1]/[B] -> []."""
  return tf.reduce_mean(per_example_cross_entropy(logits, label_ids))


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
  """Fraction of examples whose argmax is the label: []."""
  predicted = tf.argmax(logits, -1, output_type=tf.int32)
  return tf.reduce_mean(tf.cast(tf.equal(predicted, _labels(label_ids)),
                                tf.float32))


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
