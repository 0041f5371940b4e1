"""Classifier runs: fine-tuning on hard labels, and task distillation from cached logits.

Which one follows from the input's kind: classification records fine-tune
(alpha = 1, hard labels only); task distill records (classification records +
the fine-tuned teacher's logits) train alpha * CE + (1 - alpha) * T^2 * KL
(modeling/losses/task_losses.py). Both evaluate the eval split every epoch and
keep `<output_dir>/best/` by `best_metric`.

Fine-tuning defaults (google-research/bert's run_classifier) replace the loop
settings the user did not give: steps from `num_train_epochs`, warmup from
`warmup_proportion`, AdamW, evaluation and checkpoints every epoch.
"""

import dataclasses
import os
from typing import Optional

import keras

from modeling.evaluation import classification_metrics
from modeling.losses import task_losses
from modeling.models import classification
from modeling.models import student_init
from modeling.training import classification_training
from modeling.training import distillation_setup as setup
from modeling.training import pretraining
from modeling.training import run
from pipeline.core import kinds
from pipeline.core.errors import ConfigError, InputError
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

  def __post_init__(self):
    if self.init_from not in setup.INIT_FROM:
      raise ConfigError(f"--init_from={self.init_from}: one of {setup.INIT_FROM}")
    if self.init_from == "teacher_layers" and not (self.teacher_config and
                                                  self.teacher_checkpoint):
      raise ConfigError("--init_from=teacher_layers needs --teacher_config and "
                        "--teacher_checkpoint")
    if self.num_train_epochs <= 0 or not 0 <= self.warmup_proportion <= 1:
      raise ConfigError("--num_train_epochs must be > 0 and --warmup_proportion in [0, 1]")
    task_losses.TaskDistillConfig(self.alpha, self.temperature)  # Checks them.

  @property
  def distill(self):
    return task_losses.TaskDistillConfig(self.alpha, self.temperature)

  @property
  def init_label(self):
    """Where an init error points."""
    if self.init_from == "checkpoint":
      return self.init_checkpoint or ""
    return f"--init_from={self.init_from}"


class ClassifierRecipe(run.Recipe):
  """Fine-tuning (classification records) or task distillation (task distill records)."""

  def __init__(self, config):
    self.config = config
    self.stage = config.stage
    self.kind = self.manifest = self.spec = self.bert_config = None
    self.examples = 0
    self.keeper = None

  def read_input(self):
    c = self.config
    self.kind, self.manifest = kinds.read(c.data_dir, kinds.CLASSIFICATION_RECORDS,
                                          kinds.TASK_DISTILL_RECORDS)
    self.spec = classification_dataset.TaskSpec.from_manifest(self.manifest)
    kinds.check_vocab(self.manifest, c.vocab_file)
    if c.distill.uses_teacher and not self.spec.has_teacher_logits:
      raise InputError(c.data_dir, f"classification records have no teacher logits: "
                       f"--alpha={c.alpha} needs extract_teacher_labels output")
    classification_training.check_metric(c.best_metric, self.spec.num_labels,
                                         c.distill.uses_teacher)
    checkpoint = c.init_checkpoint if c.init_from == "checkpoint" else None
    self.bert_config = pretraining.model_config(
        c.model_config, self.manifest, pretraining.gelu_convention_for(checkpoint))
    self.examples = classification_dataset.split_size(self.manifest,
                                                      classification_dataset.TRAIN)
    return self.manifest

  def resolve_loop(self, loop, manifest):
    try:
      per_epoch, total = classification_training.epoch_steps(
          self.examples, loop.train_batch_size, self.config.num_train_epochs)
    except ValueError as e:
      raise InputError(manifest["_dir"], str(e)) from None
    loop = loop.with_defaults(num_train_steps=total, optimizer="adamw",
                              save_checkpoints_steps=per_epoch, eval_every_steps=per_epoch,
                              log_every_steps=min(loop.log_every_steps, per_epoch))
    return loop.with_defaults(
        num_warmup_steps=int(loop.num_train_steps * self.config.warmup_proportion))

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
    keras.utils.set_random_seed(loop.seed + world.rank)  # Rank 0's init is broadcast.
    model = classification.build_classifier(self.bert_config, self.spec.num_labels,
                                            dtype=loop.precision_policy)
    try:
      self._initialize(model)
    except ValueError as e:
      raise InputError(self.config.init_label, str(e)) from None
    return model, classification_training.ClassificationTask(self.spec.num_labels,
                                                             self.config.distill)

  def _initialize(self, model):
    c = self.config
    if c.init_from == "checkpoint" and c.init_checkpoint:
      classification.load_weights(model, c.init_checkpoint)
    elif c.init_from == "teacher_layers":  # Encoder layers, pooler, the teacher's head.
      teacher = classification.build_classifier(c.teacher_config, model.num_labels,
                                                init_checkpoint=c.teacher_checkpoint)
      student_init.init_student_from_teacher(model, teacher)

  def on_eval(self, model, task, world, output_dir):
    if not world.is_chief or not self.config.eval_split:
      return None
    self.keeper = classification_training.BestCheckpoint(
        output_dir, self.config.best_metric, model, self.spec.labels)

    def on_eval(step, results):
      labels, logits = task.last_eval
      self.keeper.update(step, results, classification_metrics.report(
          labels, logits, self.spec.labels))
    return on_eval

  def finish(self, out, summary, model):
    files = [f for f in run.run_files(out.dir) if os.path.exists(out.path(f))]
    best_step, best_value = self.keeper.best() if self.keeper else (None, None)
    if best_step is not None:
      files += [os.path.join(classification_training.BEST_DIR, name)
                for name in sorted(os.listdir(self.keeper.directory))]
    metric = self.config.best_metric
    summary = dict(summary, best_metric=metric, best_step=best_step, best_value=best_value)
    best = "-" if best_step is None else f"{best_value:.4f} at step {best_step}"
    line = f"{self.stage}: {summary['step']} steps; best {metric} {best} -> {out.dir}"
    return files, summary, line


def train_classifier(config, loop, flag_values=None):
  """Fine-tunes or distills (by the input's kind) the classifier `config` describes."""
  return run.train(ClassifierRecipe(config), loop, config.output_dir, flag_values)
