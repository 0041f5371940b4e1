"""The distillation student: a BertPretrainer with learned hidden projections.

Shape legend: B=batch, S=sequence length, H_s/H_t=student/teacher hidden
size.

Hidden-state distillation (modeling/training/distillation.py's online task)
compares the student's hidden states with the teacher's; when the widths
differ, a learned Dense H_s -> H_t per state maps them first (TinyBERT).
The projections live in the student so that they are trained and
checkpointed with it.
"""

import keras

from modeling.models import heads


@keras.saving.register_keras_serializable(package="bert_distill")
class HiddenProjections(keras.layers.Layer):
  """One learned Dense H_s -> H_t per distilled hidden state.

  The Dense layers are attributes (proj_0, proj_1, ...), not a list:
  tf.train.Checkpoint does not track layers held in a Keras-tracked list.
  With equal widths there is nothing to learn and call() is the identity.
  """

  def __init__(self, num_states, student_hidden_size, teacher_hidden_size,
               initializer_range=0.02, **kwargs):
    super().__init__(**kwargs)
    self.num_states = num_states
    self.student_hidden_size = student_hidden_size
    self.teacher_hidden_size = teacher_hidden_size
    self.initializer_range = initializer_range
    self.identity = student_hidden_size == teacher_hidden_size
    for i in range(0 if self.identity else num_states):
      setattr(self, f"proj_{i}", keras.layers.Dense(
          teacher_hidden_size, name=f"proj_{i}", dtype=self.dtype_policy,
          kernel_initializer=keras.initializers.TruncatedNormal(
              stddev=initializer_range)))

  def build(self, input_shape=None):
    for i in range(0 if self.identity else self.num_states):
      getattr(self, f"proj_{i}").build((None, None, self.student_hidden_size))

  def call(self, hidden_states):
    """num_states tensors [B,S,H_s] -> the same number of [B,S,H_t]."""
    if self.identity:
      return list(hidden_states)
    return [getattr(self, f"proj_{i}")(h) for i, h in enumerate(hidden_states)]

  def get_config(self):
    config = super().get_config()
    config.update(num_states=self.num_states,
                  student_hidden_size=self.student_hidden_size,
                  teacher_hidden_size=self.teacher_hidden_size,
                  initializer_range=self.initializer_range)
    return config


class WithProjections:
  """Mixin: a model that also owns the learned hidden projections H_s -> H_t.

  Its checkpoints are the base model's plus a `projections` child, so they load
  into the plain base model (export, fine-tuning, --init_checkpoint), which
  skips the projections. Call init_projections at the end of __init__.
  """

  def init_projections(self, teacher_hidden_size):
    self.teacher_hidden_size = teacher_hidden_size
    c = self.config
    self.projections = HiddenProjections(
        c.num_hidden_layers + 1, c.hidden_size, teacher_hidden_size,
        c.initializer_range, name="projections", dtype=self.dtype_policy)

  def build(self, input_shape=None):
    super().build(input_shape)
    self.projections.build(None)

  def get_config(self):
    config = super().get_config()
    config["teacher_hidden_size"] = self.teacher_hidden_size
    return config


@keras.saving.register_keras_serializable(package="bert_distill")
class DistillationStudent(WithProjections, heads.BertPretrainer):
  """A BertPretrainer with hidden-state projections (pretraining distillation)."""

  def __init__(self, config, teacher_hidden_size, **kwargs):
    super().__init__(config, **kwargs)
    self.init_projections(teacher_hidden_size)


@keras.saving.register_keras_serializable(package="bert_distill")
class ProjectedClassifier(WithProjections, heads.BertClassifier):
  """A BertClassifier with hidden-state projections: the first (intermediate-layer)
  phase's student of task distillation when the widths differ; the second phase
  (--init_from=checkpoint), evaluation and export load it as a plain BertClassifier."""

  def __init__(self, config, num_labels, teacher_hidden_size, **kwargs):
    super().__init__(config, num_labels, **kwargs)
    self.init_projections(teacher_hidden_size)


@keras.saving.register_keras_serializable(package="bert_distill")
class ProjectedSpanLabeler(WithProjections, heads.BertSpanLabeler):
  """A BertSpanLabeler with hidden-state projections: the first phase's QA
  student when the widths differ; later phases load it as a plain span model."""

  def __init__(self, config, teacher_hidden_size, **kwargs):
    super().__init__(config, **kwargs)
    self.init_projections(teacher_hidden_size)


def build_student(config, dtype=None, teacher_hidden_size=None):
  """A built student: DistillationStudent when teacher_hidden_size is given
  (hidden-state distillation), else a BertPretrainer."""
  if teacher_hidden_size is None:
    model = heads.BertPretrainer(config, dtype=dtype)
  else:
    model = DistillationStudent(config, teacher_hidden_size, dtype=dtype)
  model.build(None)
  return model
