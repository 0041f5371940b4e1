"""Distillation as trainer tasks: offline (cached teacher labels) and online.

Shape legend: B=batch, S=sequence length, P=masked positions, K=cached ids
per position, V=vocab size, H_s/H_t=student/teacher hidden size.

Both tasks plug into modeling/training/trainer.py like PretrainingTask and share the
loss (see DistillConfig and modeling/losses/distill_losses.py for the KD terms):

  final phase:    alpha * MLM CE(labels) + (1 - alpha) * T^2 * KD_T
                  + nsp_weight * NSP CE(labels) + nsp_kd_weight * NSP KL
                  + hidden_weight * hidden MSE + attention_weight * attn KL
  backbone phase: hidden_weight * hidden MSE + attention_weight * attn KL

T^2 keeps the KD gradient's scale independent of T (Hinton et al.). The
backbone terms follow TinyBERT / NVIDIA's BERT distillation recipe (general
distillation of the intermediate layers first, then of the predictions) and
need the online teacher: the offline cache holds predictions only.

OfflineDistillationTask reads the teacher's targets from the batch
(pipeline/inputs/distill_dataset.py); OnlineDistillationTask runs a frozen teacher
on the same batch inside the trainer's tf.function, with KD over the full
vocab: the baseline the truncated cache is measured against.

Eval metrics (exact sums over the eval set): PretrainingTask's four, plus
teacher_agreement (student argmax == teacher top-1, over real masked
positions) and teacher_kl: offline, the K+1-bucket KL to the cached top-k
(a lower bound of the full KL; not available for sampled labels), with
kd_loss (the trained KD term); online, the exact KL(p_T || q_T).
"""

import dataclasses

import keras
import tensorflow as tf

from modeling.checkpoints import checkpoints
from modeling.losses import distill_losses as dl
from modeling.models import heads
from modeling.losses import pretraining_losses
from modeling.models import student_init

MODEL_INPUTS = ("input_ids", "input_mask", "segment_ids",
                "masked_lm_positions")
DISTILL_PHASES = ("final", "backbone")
INIT_FROM = ("random", "teacher_layers", "checkpoint")
_PRETRAINING_METRICS = ("mlm_accuracy", "mlm_loss", "nsp_accuracy",
                        "nsp_loss")


@dataclasses.dataclass(frozen=True)
class DistillConfig:
  """Loss settings; hidden/attention weights need the online teacher."""
  alpha: float = 0.5  # Weight of the hard-label MLM loss; 1 - alpha: KD.
  temperature: float = 1.0
  kd_mode: str = "renormalize"  # distill_losses.KD_MODES
  nsp_weight: float = 1.0  # Hard-label NSP cross-entropy.
  nsp_kd_weight: float = 0.0  # KL to the teacher's NSP distribution.
  hidden_weight: float = 0.0  # Hidden-state MSE (mapped layers).
  attention_weight: float = 0.0  # Attention-distribution KL.
  phase: str = "final"

  def __post_init__(self):
    problems = []
    if not 0.0 <= self.alpha <= 1.0:
      problems.append(f"alpha must be in [0, 1], got {self.alpha}")
    if not self.temperature > 0:
      problems.append(f"temperature must be > 0, got {self.temperature}")
    if self.kd_mode not in dl.KD_MODES:
      problems.append(f"kd_mode must be one of {dl.KD_MODES}")
    for name in ("nsp_weight", "nsp_kd_weight", "hidden_weight",
                 "attention_weight"):
      if getattr(self, name) < 0:
        problems.append(f"{name} must be >= 0")
    if self.phase not in DISTILL_PHASES:
      problems.append(f"phase must be one of {DISTILL_PHASES}")
    elif self.phase == "backbone" and not self.uses_backbone:
      problems.append("the backbone phase needs hidden_weight or "
                      "attention_weight > 0")
    if problems:
      raise ValueError("; ".join(problems))

  @property
  def uses_backbone(self):
    return self.hidden_weight > 0 or self.attention_weight > 0


# --- Models ------------------------------------------------------------------


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


@keras.saving.register_keras_serializable(package="bert_distill")
class DistillationStudent(heads.BertPretrainer):
  """A BertPretrainer that also owns the hidden-state projections.

  Its checkpoints are BertPretrainer checkpoints plus a `projections`
  child, so they load into a plain BertPretrainer (export, fine-tuning,
  --init_checkpoint), which skips the projections.
  """

  def __init__(self, config, teacher_hidden_size, **kwargs):
    super().__init__(config, **kwargs)
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


def build_student(config, dtype=None, teacher_hidden_size=None):
  """A built student: DistillationStudent when teacher_hidden_size is given
  (hidden-state distillation), else a BertPretrainer."""
  if teacher_hidden_size is None:
    model = heads.BertPretrainer(config, dtype=dtype)
  else:
    model = DistillationStudent(config, teacher_hidden_size, dtype=dtype)
  model.build(None)
  return model


def load_teacher(config, checkpoint, dtype=None):
  """The frozen teacher BertPretrainer with its weights (ValueError if the
  checkpoint does not fit the config)."""
  teacher = heads.BertPretrainer(config, dtype=dtype, name="teacher")
  teacher.build(None)
  checkpoints.load_checkpoint(teacher, checkpoint)
  teacher.trainable = False
  return teacher


def initialize_student(student, init_from, teacher=None, checkpoint=None):
  """Random (as built), from the teacher's layers, or from a checkpoint.

  Raises:
    ValueError: unknown init_from, missing teacher/checkpoint, or weights
      that do not fit (teacher_layers needs equal widths).
  """
  if init_from not in INIT_FROM:
    raise ValueError(f"init_from must be one of {INIT_FROM}")
  if init_from == "teacher_layers":
    if teacher is None:
      raise ValueError("init_from=teacher_layers needs the teacher")
    student_init.init_student_from_teacher(student, teacher)
  elif init_from == "checkpoint":
    if not checkpoint:
      raise ValueError("init_from=checkpoint needs a checkpoint path")
    checkpoints.load_checkpoint(student, checkpoint)


# --- Tasks -------------------------------------------------------------------


def _inputs(batch):
  return {k: batch[k] for k in MODEL_INPUTS}


def _agreement(student_logits, teacher_top1):
  """1.0 where the student's argmax is the teacher's top-1 id: [B,P]."""
  student_top1 = tf.argmax(student_logits, -1, output_type=tf.int32)
  return tf.cast(tf.equal(student_top1, teacher_top1), tf.float32)


def _masked_sum(values, weights):
  """(sum(w * x), sum(w)): an eval numerator and denominator."""
  weights = tf.cast(weights, tf.float32)
  return tf.reduce_sum(weights * values), tf.reduce_sum(weights)


class _DistillationTask:
  """The loss shared by both tasks; subclasses supply the teacher's side."""

  def __init__(self, config):
    self.config = config

  def _kd(self, outputs, batch, teacher):
    """Per-position KD term [B,P] at T."""
    raise NotImplementedError

  def _teacher(self, batch, with_backbone):
    """What the teacher says about `batch` (the cache, or a forward pass);
    with_backbone: also its hidden states / attention the loss needs."""
    raise NotImplementedError

  def _backbone_losses(self, model, outputs, teacher, batch):
    del model, outputs, teacher, batch
    return {}

  def _prediction_losses(self, outputs, batch, teacher):
    mlm_args = (outputs["mlm_logits"], batch["masked_lm_ids"],
                batch["masked_lm_weights"])
    nsp_args = (outputs["nsp_logits"], batch["next_sentence_labels"])
    return {
        "mlm_loss": pretraining_losses.masked_lm_loss(*mlm_args),
        "kd_loss": dl.weighted_mean(self._kd(outputs, batch, teacher),
                                    batch["masked_lm_weights"]),
        "nsp_loss": pretraining_losses.next_sentence_loss(*nsp_args),
        "nsp_kd_loss": dl.next_sentence_kl(teacher["nsp_logits"],
                                           outputs["nsp_logits"]),
        "mlm_accuracy": pretraining_losses.masked_lm_accuracy(*mlm_args),
    }

  def total_loss(self, terms):
    """The weighted sum of the terms (see the module doc)."""
    c = self.config
    total = (c.hidden_weight * terms.get("hidden_mse", 0.0) +
             c.attention_weight * terms.get("attention_kl", 0.0))
    if c.phase == "final":
      total += (c.alpha * terms["mlm_loss"] +
                (1.0 - c.alpha) * c.temperature ** 2 * terms["kd_loss"] +
                c.nsp_weight * terms["nsp_loss"] +
                c.nsp_kd_weight * terms["nsp_kd_loss"])
    return total

  def compute_loss(self, model, batch, training):
    """batch: [B,S]/[B,P]/[B,1] inputs (+ cached targets) -> (loss, terms)."""
    c = self.config
    teacher = self._teacher(batch, with_backbone=True)
    outputs = model(_inputs(batch), training=training,
                    output_hidden_states=c.hidden_weight > 0,
                    output_attentions=c.attention_weight > 0)
    terms = self._prediction_losses(outputs, batch, teacher)
    terms.update(self._backbone_losses(model, outputs, teacher, batch))
    return self.total_loss(terms), terms

  def _eval_teacher_sums(self, outputs, batch, teacher):
    raise NotImplementedError

  def eval_sums(self, model, batch):
    outputs = model(_inputs(batch), training=False)
    sums = pretraining_losses.pretraining_sums(outputs, batch)
    sums.update(self._eval_teacher_sums(
        outputs, batch, self._teacher(batch, with_backbone=False)))
    return sums


class OfflineDistillationTask(_DistillationTask):
  """KD to cached targets: batch has teacher_ids/values [B,P,K],
  teacher_tail_mass [B,P] and teacher_nsp_logits [B,2]."""

  def __init__(self, config):
    super().__init__(config)
    if config.uses_backbone:
      raise ValueError("hidden/attention distillation needs the online "
                       "teacher: the label cache holds predictions only")
    self.eval_metrics = _PRETRAINING_METRICS + (
        "teacher_agreement", "kd_loss")
    if config.kd_mode != dl.SAMPLED:
      self.eval_metrics += ("teacher_kl",)

  def _teacher(self, batch, with_backbone):
    del with_backbone
    return {"nsp_logits": batch["teacher_nsp_logits"]}

  def _kd(self, outputs, batch, teacher):
    del teacher
    log_q = dl.log_probs(outputs["mlm_logits"], self.config.temperature)
    return dl.cached_kd(log_q, batch, self.config.kd_mode)

  def _eval_teacher_sums(self, outputs, batch, teacher):
    """Agreement with the cached top-1, the KD term and (top-k) the bucket
    KL: a lower bound of KL(p_T || q_T) that any tail option can report."""
    weights = batch["masked_lm_weights"]
    sums = {"teacher_agreement": _masked_sum(
                _agreement(outputs["mlm_logits"], dl.cached_top1(batch)),
                weights),
            "kd_loss": _masked_sum(self._kd(outputs, batch, teacher),
                                   weights)}
    if "teacher_kl" in self.eval_metrics:
      log_q = dl.log_probs(outputs["mlm_logits"], self.config.temperature)
      sums["teacher_kl"] = _masked_sum(dl.bucket_kl(
          log_q, batch["teacher_ids"], batch["teacher_values"],
          batch["teacher_tail_mass"]), weights)
    return sums


class OnlineDistillationTask(_DistillationTask):
  """KD to a frozen teacher run on every batch: full-vocab KL at T, and
  optionally hidden-state MSE and attention KL between mapped layers.

  Layer map (TinyBERT's uniform one): student hidden state 0 (embeddings)
  <- teacher's 0; student layer i (1..L_s) <- teacher layer
  round(i L_t / L_s), for hidden states and attention alike. Hidden states
  go through the student's projections (DistillationStudent) when H_s !=
  H_t; attention KL averages over heads when the head counts differ.
  """

  eval_metrics = _PRETRAINING_METRICS + ("teacher_agreement", "teacher_kl")

  def __init__(self, teacher, config, num_student_layers):
    super().__init__(config)
    if config.kd_mode == dl.SAMPLED:
      raise ValueError("the online teacher gives full distributions: "
                       "kd_mode 'sampled' is for cached labels")
    self.teacher = teacher
    layers = dl.uniform_layer_map(teacher.config.num_hidden_layers,
                                  num_student_layers)
    self.hidden_map = (0,) + layers  # Indices into hidden_states (L+1).
    self.attention_map = tuple(i - 1 for i in layers)  # Into L layers.

  def _teacher(self, batch, with_backbone):
    c = self.config
    # training=False: the teacher never drops out.
    outputs = self.teacher(
        _inputs(batch), training=False,
        output_hidden_states=with_backbone and c.hidden_weight > 0,
        output_attentions=with_backbone and c.attention_weight > 0)
    # No gradient reaches the teacher; in the trainer's tf.function its
    # backward pass is never built.
    return tf.nest.map_structure(tf.stop_gradient, outputs)

  def _kd(self, outputs, batch, teacher):
    del batch
    return dl.full_kl(teacher["mlm_logits"], outputs["mlm_logits"],
                      self.config.temperature)

  def _backbone_losses(self, model, outputs, teacher, batch):
    terms = {}
    mask = batch["input_mask"]
    if self.config.hidden_weight > 0:
      projected = model.projections(outputs["hidden_states"])
      terms["hidden_mse"] = tf.add_n([
          dl.hidden_mse(s, teacher["hidden_states"][t], mask)
          for s, t in zip(projected, self.hidden_map)]) / len(self.hidden_map)
    if self.config.attention_weight > 0:
      terms["attention_kl"] = tf.add_n([
          dl.attention_kl(s, teacher["attention_probs"][t], mask)
          for s, t in zip(outputs["attention_probs"], self.attention_map)
      ]) / len(self.attention_map)
    return terms

  def _eval_teacher_sums(self, outputs, batch, teacher):
    weights = batch["masked_lm_weights"]
    top1 = tf.argmax(teacher["mlm_logits"], -1, output_type=tf.int32)
    return {"teacher_agreement": _masked_sum(
                _agreement(outputs["mlm_logits"], top1), weights),
            "teacher_kl": _masked_sum(self._kd(outputs, batch, teacher),
                                      weights)}


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
    raise ValueError(f"temperature {temperature} but the teacher labels are "
                     f"at temperature {label_temperature}")
  if label_method is None and kd_tail_given:
    raise ValueError("kd_tail applies to cached top-k labels; the online "
                     "teacher's KD is over the full vocab")
  if label_method != "sampled":
    return temperature, kd_tail
  if kd_tail_given:
    raise ValueError("kd_tail applies to top-k labels; these are sampled "
                     "(their unbiased estimator needs no tail option)")
  return temperature, dl.SAMPLED


def teacher_identity(teacher):
  """The teacher's config and weights hash, for a run's identity."""
  # Imported here: the hash is the label stage's, so the two runs agree.
  from pipeline.labels import pretraining_labels  # pylint: disable=import-outside-toplevel
  weights = pretraining_labels.weights_sha256(
      (p.tf1_name, p.variable.numpy()) for p in checkpoints.model_params(teacher))
  return {"bert_config": teacher.config.to_dict(), "weights_sha256": weights}
