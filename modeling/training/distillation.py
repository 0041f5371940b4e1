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
positions) and a KL to the teacher at T named by what it measures:
offline, teacher_kl_bucket (the K+1-bucket KL to the cached top-k, a lower
bound of the full KL; not for sampled labels) with kd_loss (the trained KD
term); online, teacher_kl_full (the exact full-vocab KL(p_T || q_T)).

The student model is modeling/models/student.py's; loading the teacher and
initializing the student are modeling/training/distillation_setup.py's.
"""

import dataclasses

import tensorflow as tf

from modeling.losses import distill_losses as dl
from modeling.losses import pretraining_losses
from pipeline.records import schema
from pipeline.core.errors import ConfigError

DISTILL_PHASES = ("final", "backbone")
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
  layer_map: str = "uniform"  # distill_losses.layer_map: uniform | last_k | "2,4".

  def __post_init__(self):
    problems = dl.weight_problems(self.alpha, self.temperature)
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
    if self.layer_map != "uniform" and not self.uses_backbone:
      problems.append("a layer map needs hidden_weight or attention_weight > 0")
    if problems:
      raise ConfigError("; ".join(problems))
    dl.check_layer_map(self.layer_map)

  @property
  def uses_backbone(self):
    return self.hidden_weight > 0 or self.attention_weight > 0


# --- Tasks -------------------------------------------------------------------


def _inputs(batch):
  return {k: batch[k] for k in schema.PRETRAINING_MODEL_INPUTS}


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
      raise ConfigError("hidden/attention distillation needs the online "
                       "teacher: the label cache holds predictions only")
    self.eval_metrics = _PRETRAINING_METRICS + (
        "teacher_agreement", "kd_loss")
    if config.kd_mode != dl.SAMPLED:
      self.eval_metrics += ("teacher_kl_bucket",)

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
    if "teacher_kl_bucket" in self.eval_metrics:
      log_q = dl.log_probs(outputs["mlm_logits"], self.config.temperature)
      sums["teacher_kl_bucket"] = _masked_sum(dl.bucket_kl(
          log_q, batch["teacher_ids"], batch["teacher_values"],
          batch["teacher_tail_mass"]), weights)
    return sums


class OnlineDistillationTask(_DistillationTask):
  """KD to a frozen teacher run on every batch: full-vocab KL at T, and
  optionally hidden-state MSE and attention KL between mapped layers.

  Layer map (config.layer_map; by default TinyBERT's uniform one): student
  hidden state 0 (embeddings) <- teacher's 0; student layer i (1..L_s) <-
  teacher layer round(i L_t / L_s), for hidden states and attention alike
  (distill_losses.intermediate_losses, shared with task distillation's
  first phase). Hidden states go through the student's projections
  (modeling/models/student.py's DistillationStudent) when H_s != H_t;
  attention KL averages over heads when the head counts differ.
  """

  eval_metrics = _PRETRAINING_METRICS + ("teacher_agreement", "teacher_kl_full")

  def __init__(self, teacher, config, num_student_layers):
    super().__init__(config)
    if config.kd_mode == dl.SAMPLED:
      raise ConfigError("the online teacher gives full distributions: "
                       "kd_mode 'sampled' is for cached labels")
    self.teacher = teacher
    self.layers = dl.layer_map(config.layer_map, teacher.config.num_hidden_layers,
                               num_student_layers)  # Teacher layer per student layer.
    self.hidden_map = (0,) + self.layers  # Indices into hidden_states (L+1).
    self.attention_map = tuple(i - 1 for i in self.layers)  # Into L layers.

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
    project = model.projections if self.config.hidden_weight > 0 else None
    return dl.intermediate_losses(outputs, teacher, batch["input_mask"], self.layers,
                                  project)

  def _eval_teacher_sums(self, outputs, batch, teacher):
    weights = batch["masked_lm_weights"]
    top1 = tf.argmax(teacher["mlm_logits"], -1, output_type=tf.int32)
    return {"teacher_agreement": _masked_sum(
                _agreement(outputs["mlm_logits"], top1), weights),
            "teacher_kl_full": _masked_sum(self._kd(outputs, batch, teacher),
                                           weights)}
