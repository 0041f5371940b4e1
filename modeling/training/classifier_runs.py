"""Classifier runs: fine-tuning on hard labels, and task distillation from cached logits.

Which one follows from the input's kind: classification records fine-tune
(alpha = 1, hard labels only); task distill records (classification records +
the fine-tuned teacher's logits) train alpha * CE + (1 - alpha) * T^2 * KL
(modeling/losses/task_losses.py). Both evaluate the eval split every epoch and
keep `<output_dir>/best/` by `best_metric`.

Task distillation has two phases (`distill_phase`, the names of pretraining
distillation's): "backbone" trains the student's embeddings, hidden states
and attention on the fine-tuned teacher's, run online on the task records
(classification_training.IntermediateDistillationTask; no logits, no labels,
no best/: it reports the terms on the eval split); "final" (the default) is
the logits loss above, started from the first phase's run with
init_from=checkpoint (the encoder, pooler and head load; the projections
stay behind).

Fine-tuning defaults (google-research/bert's run_classifier) replace the loop
settings the user did not give: steps from `num_train_epochs`, warmup from
`warmup_proportion`, AdamW, evaluation and checkpoints every epoch.
"""

import dataclasses
from typing import Optional

import keras

from modeling.evaluation import classification_metrics
from modeling.losses import task_losses
from modeling.models import classification
from modeling.models import student as student_lib
from modeling.models import student_init
from modeling.training import classification_training
from modeling.training import distillation_setup as setup
from modeling.training import epoch_runs
from modeling.training import pretraining
from modeling.training import run
from pipeline.core import kinds
from pipeline.core.errors import InputError
from pipeline.inputs import classification_dataset

@dataclasses.dataclass(frozen=True, kw_only=True)
class ClassifierConfig:
  """A classifier run (tools/finetune.py, or tools/distill.py on task distill records)."""
  model_config: str  # bert_config.json or a bundled config name.
  data_dir: str  # Classification records, or task distill records.
  vocab_file: str
  output_dir: str
  init_from: str = "checkpoint"  # random | checkpoint | teacher_layers.
  init_checkpoint: Optional[str] = None  # Any format the project reads.
  teacher_config: Optional[str] = None  # For init_from=teacher_layers.
  teacher_checkpoint: Optional[str] = None
  alpha: float = 1.0  # Hard-label weight; 1 = fine-tuning.
  temperature: float = 1.0
  num_train_epochs: float = 3.0
  warmup_proportion: float = 0.1
  best_metric: str = "accuracy"
  eval_split: str = "dev"  # '' = no evaluation.
  stage: str = "finetune"  # The output's stage name: finetune | distill_task.
  distill_phase: str = "final"  # final: logits loss; backbone: intermediate layers.
  hidden_mse_weight: float = 0.0  # backbone phase only.
  attention_kl_weight: float = 0.0  # backbone phase only.
  layer_map: str = "uniform"  # backbone phase only (distill_losses.layer_map).

  def __post_init__(self):
    epoch_runs.check_settings(self)
    epoch_runs.check_phase(self)

  @property
  def distill(self):
    return task_losses.TaskDistillConfig(self.alpha, self.temperature)

  @property
  def intermediate(self):
    """The first phase's loss settings, or None in the final phase."""
    return epoch_runs.intermediate(self)

  @property
  def init_label(self):
    return epoch_runs.init_label(self)


class ClassifierRecipe(run.Recipe):
  """Fine-tuning (classification records) or task distillation (task distill records)."""

  def __init__(self, config):
    self.config = config
    self.stage = config.stage
    self.kind = self.manifest = self.spec = self.bert_config = None
    self.teacher_config = self.teacher = None  # The online teacher (first phase).
    self.examples = 0
    self.keeper = None

  def read_input(self):
    c = self.config
    self.kind, self.manifest = kinds.read(c.data_dir, kinds.CLASSIFICATION_RECORDS,
                                          kinds.TASK_DISTILL_RECORDS)
    self.spec = classification_dataset.TaskSpec.from_manifest(self.manifest)
    kinds.check_vocab(self.manifest, c.vocab_file)
    if c.intermediate:
      self.teacher_config = epoch_runs.teacher_bert_config(c, self.manifest)
    elif c.distill.uses_teacher and not self.spec.has_teacher_logits:
      raise InputError(c.data_dir, f"classification records have no teacher logits: "
                       f"--alpha={c.alpha} needs extract_teacher_labels output")
    else:
      classification_training.check_metric(c.best_metric, self.spec.num_labels,
                                           c.distill.uses_teacher)
    checkpoint = c.init_checkpoint if c.init_from == "checkpoint" else None
    self.bert_config = pretraining.model_config(
        c.model_config, self.manifest, pretraining.gelu_convention_for(checkpoint))
    self.examples = classification_dataset.split_size(self.manifest,
                                                      classification_dataset.TRAIN)
    return self.manifest

  def resolve_loop(self, loop, manifest):
    return epoch_runs.epoch_loop(loop, self.examples, self.config, manifest["_dir"])

  def identity(self, loop, world):
    c = self.config
    identity = dict(num_train_epochs=c.num_train_epochs, best_metric=c.best_metric,
                    eval_split=c.eval_split, bert_config=self.bert_config.to_dict(),
                    distill=dataclasses.asdict(c.distill), num_labels=self.spec.num_labels,
                    labels=list(self.spec.labels), max_seq_length=self.spec.max_seq_length,
                    train_examples=self.examples,
                    init_checkpoint=c.init_checkpoint if c.init_from == "checkpoint" else None)
    if self.stage == "distill_task":
      identity.update(init_from=c.init_from, teacher_checkpoint=c.teacher_checkpoint)
    if c.intermediate:  # The first phase: its loss and its teacher instead.
      identity.update(distill=dict(phase=c.distill_phase, **dataclasses.asdict(c.intermediate)),
                      teacher=setup.teacher_identity(self.teacher))
    return identity

  def datasets(self, loop, world):
    c, ranks = self.config, (world.rank, world.size)
    for split in (classification_dataset.TRAIN, c.eval_split):
      if split:
        classification_dataset.check_labeled(self.manifest, split)
    train = classification_dataset.train_dataset(
        c.data_dir, self.spec, loop.micro_batch_size(world.size), loop.seed, *ranks,
        loop.shuffle_buffer_size)
    evals = None
    if c.eval_split:
      evals = classification_dataset.eval_dataset(c.data_dir, self.spec, loop.eval_batch_size,
                                                  c.eval_split, *ranks)
    return train, evals

  def describe_input(self, world):
    return f"{self.examples} train examples, {self.spec.num_labels} labels"

  def build(self, loop, world):
    c = self.config
    if c.intermediate:
      self.teacher = self._load_teacher(loop)
    keras.utils.set_random_seed(loop.seed + world.rank)  # Rank 0's init is broadcast.
    model = self._student(loop)
    try:
      self._initialize(model)
    except ValueError as e:
      raise InputError(c.init_label, str(e)) from None
    if not c.intermediate:
      return model, classification_training.ClassificationTask(self.spec.num_labels,
                                                               c.distill)
    classification_training.freeze_prediction_layers(model)
    return model, classification_training.IntermediateDistillationTask(
        self.teacher, c.intermediate, self.bert_config.num_hidden_layers)

  def _load_teacher(self, loop):
    """The frozen fine-tuned teacher of the first phase."""
    c = self.config

    def build():
      stored = classification.stored_num_labels(c.teacher_checkpoint)
      if stored not in (None, self.spec.num_labels):
        raise InputError(c.teacher_checkpoint, f"a classifier of {stored} labels; the "
                         f"records have {self.spec.num_labels}")
      return classification.build_classifier(
          self.teacher_config, self.spec.num_labels, dtype=loop.precision_policy,
          init_checkpoint=c.teacher_checkpoint)
    return epoch_runs.frozen_teacher(c.teacher_checkpoint, build)

  def _student(self, loop):
    """A BertClassifier; in the first phase with hidden MSE across widths, one
    that owns the projections H_s -> H_t."""
    num_labels = self.spec.num_labels
    if epoch_runs.needs_projections(self.config, self.teacher_config, self.bert_config):
      model = student_lib.ProjectedClassifier(
          self.bert_config, num_labels, self.teacher_config.hidden_size,
          dtype=loop.precision_policy)
      model.build(None)
      return model
    return classification.build_classifier(self.bert_config, num_labels,
                                           dtype=loop.precision_policy)

  def _initialize(self, model):
    c = self.config
    if c.init_from == "checkpoint" and c.init_checkpoint:
      classification.load_weights(model, c.init_checkpoint)
    elif c.init_from == "teacher_layers":  # Encoder layers, pooler, the teacher's head.
      teacher = self.teacher or classification.build_classifier(
          c.teacher_config, model.num_labels, init_checkpoint=c.teacher_checkpoint)
      student_init.init_student_from_teacher(model, teacher)

  def on_eval(self, model, task, world, output_dir):
    if not world.is_chief or not self.config.eval_split or self.config.intermediate:
      return None
    self.keeper = classification_training.BestCheckpoint(
        output_dir, self.config.best_metric, model, self.spec.labels)

    def on_eval(step, results):
      labels, logits = task.last_eval
      self.keeper.update(step, results, classification_metrics.report(
          labels, logits, self.spec.labels))
    return on_eval

  def finish(self, out, summary, model):
    files = epoch_runs.published_files(out, self.keeper)
    if self.config.intermediate:  # No logits trained: no best/, the terms instead.
      return files, summary, epoch_runs.backbone_line(self.stage, summary, out.dir)
    summary, line = epoch_runs.best_line(self.stage, summary, self.keeper,
                                         self.config.best_metric, out.dir)
    return files, summary, line


def train_classifier(config, loop, flag_values=None):
  """Fine-tunes or distills (by the input's kind) the classifier `config` describes."""
  return run.train(ClassifierRecipe(config), loop, config.output_dir, flag_values)
