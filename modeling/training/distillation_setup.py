"""Setting up a distillation run: the teacher, the student's start, options.

What a run module (tools/distill.py) needs before the trainer starts:
load_teacher (frozen), initialize_student (INIT_FROM), label_options (the
(T, kd_mode) a label cache allows), teacher_hidden_size_for (whether the
student needs hidden projections, see modeling/models/student.py) and
teacher_identity (for the run's identity in train_config.json).
"""

from modeling.checkpoints import loading
from modeling.checkpoints import name_map
from modeling.losses import distill_losses as dl
from modeling.models import heads
from modeling.models import student_init
from pipeline.labels import pretraining_labels
from pipeline.core.errors import ConfigError

INIT_FROM = ("random", "teacher_layers", "checkpoint")


def load_teacher(config, checkpoint, dtype=None):
  """The frozen teacher BertPretrainer with its weights (ValueError if the
  checkpoint does not fit the config)."""
  teacher = heads.BertPretrainer(config, dtype=dtype, name="teacher")
  teacher.build(None)
  loading.load_checkpoint(teacher, checkpoint)
  teacher.trainable = False
  return teacher


def initialize_student(student, init_from, teacher=None, checkpoint=None):
  """Random (as built), from the teacher's layers, or from a checkpoint.

  Raises:
    ValueError: unknown init_from, missing teacher/checkpoint, or weights
      that do not fit (teacher_layers needs equal widths).
  """
  if init_from not in INIT_FROM:
    raise ConfigError(f"init_from must be one of {INIT_FROM}")
  if init_from == "teacher_layers":
    if teacher is None:
      raise ConfigError("init_from=teacher_layers needs the teacher")
    student_init.init_student_from_teacher(student, teacher)
  elif init_from == "checkpoint":
    if not checkpoint:
      raise ConfigError("init_from=checkpoint needs a checkpoint path")
    loading.load_checkpoint(student, checkpoint)


def teacher_hidden_size_for(config, teacher_config):
  """What build_student needs for hidden-state distillation, or None."""
  return teacher_config.hidden_size if config.hidden_weight > 0 else None


def label_options(label_method, label_temperature, temperature, kd_tail,
                  kd_tail_given):
  """(T, kd_mode) for cached labels, or for the online teacher (None).

  Args:
    label_method, label_temperature: the cache's ("topk"/"sampled", T), or
      None, None for the online teacher.
    temperature: the T asked for, or None (the cache's; online: 1).
    kd_tail: the top-k tail option; kd_tail_given: whether it was asked for.
  Raises:
    ValueError: a T other than the cache's (its values are p at that T), or
      a tail option for sampled labels or the online teacher (no tail).
  """
  if temperature is None:
    temperature = 1.0 if label_temperature is None else label_temperature
  elif label_temperature is not None and temperature != label_temperature:
    raise ConfigError(f"temperature {temperature} but the teacher labels are "
                     f"at temperature {label_temperature}")
  if label_method is None and kd_tail_given:
    raise ConfigError("kd_tail applies to cached top-k labels; the online "
                     "teacher's KD is over the full vocab")
  if label_method != "sampled":
    return temperature, kd_tail
  if kd_tail_given:
    raise ConfigError("kd_tail applies to top-k labels; these are sampled "
                     "(their unbiased estimator needs no tail option)")
  return temperature, dl.SAMPLED


def teacher_identity(teacher):
  """The teacher's config and weights hash, for a run's identity.

  The hash is the label stage's (pretraining_labels.weights_sha256), so a
  run on cached labels and one with the online teacher name it alike.
  """
  weights = pretraining_labels.weights_sha256(
      (p.tf1_name, p.variable.numpy()) for p in name_map.model_params(teacher))
  return {"bert_config": teacher.config.to_dict(), "weights_sha256": weights}
