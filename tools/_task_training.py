"""The classifier training run of tools/finetune.py and tools/distill.py --task.

Imported by a tool as `import _task_training` after `_training_flags`;
defining the task flags is a side effect of the import. The loop flags keep
their meaning, with fine-tuning defaults: unless given, --num_train_steps
comes from --num_train_epochs, --num_warmup_steps from --warmup_proportion,
evaluation and checkpoints happen every epoch, and the optimizer is AdamW
(google-research/bert's run_classifier).
"""

import dataclasses
import os
from typing import Callable, Optional

from absl import flags
import keras

import _training_flags as training
from modeling.models import classification
from modeling.evaluation import classification_metrics
from modeling.training import classification_training
from modeling.training import pretraining
from modeling.losses import task_losses
from modeling.training import trainer
from pipeline.inputs import classification_dataset
from pipeline.core import stage
from pipeline.core.errors import InputError

FLAGS = flags.FLAGS
flags.DEFINE_float("num_train_epochs", 3.0, "Passes over the train split "
                   "(sets --num_train_steps unless that is given).")
flags.DEFINE_float("warmup_proportion", 0.1, "Warmup share of the steps "
                   "(unless --num_warmup_steps is given).")
flags.DEFINE_string("best_metric", "accuracy", "Eval metric that selects <output_dir>/best/: "
                    "accuracy, precision, recall, f1, mcc, roc_auc (binary), loss, "
                    "kd_loss / teacher_agreement (distill).")
flags.DEFINE_string("eval_split", "dev", "Split evaluated after every epoch ('': none).")

_RESULT_FLAGS = training.RESULT_FLAGS + ("num_train_epochs", "best_metric", "eval_split")


@dataclasses.dataclass(frozen=True)
class TaskRun:
  """What differs between fine-tuning and task distillation."""
  tool: str  # Name in messages and the output's stage name.
  model_config: str  # bert_config.json or a bundled name.
  data_dir: str
  vocab_file: str
  output_dir: str
  teacher_logits: bool  # data_dir holds task distill records.
  distill: task_losses.TaskDistillConfig
  init: Optional[Callable] = None  # init(model) -> None, may raise ValueError.
  init_checkpoint: Optional[str] = None  # For the config's GELU convention.
  init_label: str = "--init_checkpoint"  # Where init errors point.
  identity: dict = dataclasses.field(default_factory=dict)


def _apply_epoch_defaults(manifest):
  """Derives step counts from epochs for the flags the user did not give."""
  examples = classification_dataset.split_size(manifest, classification_dataset.TRAIN)
  try:
    per_epoch, total = classification_training.epoch_steps(
        examples, FLAGS.train_batch_size, FLAGS.num_train_epochs)
  except ValueError as e:
    raise InputError(manifest["_dir"], str(e)) from None
  defaults = {"num_train_steps": total, "optimizer": "adamw",
              "save_checkpoints_steps": per_epoch, "eval_every_steps": per_epoch,
              "log_every_steps": min(FLAGS.log_every_steps, per_epoch)}
  for name, value in defaults.items():
    if not FLAGS[name].present:
      FLAGS.set_default(name, value)
  if not FLAGS["num_warmup_steps"].present:
    FLAGS.set_default("num_warmup_steps",
                      int(FLAGS.num_train_steps * FLAGS.warmup_proportion))
  return examples


def _check_best_metric(spec, distill):
  try:
    classification_training.check_metric(FLAGS.best_metric, spec.num_labels,
                                         distill.uses_teacher)
  except ValueError as e:
    raise InputError("--best_metric", str(e)) from None


def _datasets(run, manifest, spec, world):
  micro, ranks = training.micro_batch_size(world), (world.rank, world.size)
  for split in (classification_dataset.TRAIN, FLAGS.eval_split):
    if split:
      classification_dataset.check_labeled(manifest, split)
  train = classification_dataset.train_dataset(
      run.data_dir, spec, micro, FLAGS.seed, *ranks, FLAGS.shuffle_buffer_size)
  evals = None
  if FLAGS.eval_split:
    evals = classification_dataset.eval_dataset(run.data_dir, spec, FLAGS.eval_batch_size,
                                                FLAGS.eval_split, *ranks)
  return train, evals


def _model(run, config, spec, world):
  keras.utils.set_random_seed(FLAGS.seed + world.rank)  # Rank 0's init is broadcast.
  model = classification.build_classifier(config, spec.num_labels,
                                          dtype=training.precision_policy())
  try:
    if run.init:
      run.init(model)
  except ValueError as e:
    raise InputError(run.init_label, str(e)) from None
  return model


def _best_keeper(run, model, task, spec, world, evals):
  """(BestCheckpoint, the trainer's on_eval) on rank 0 with evaluation, else Nones."""
  if not world.is_chief or evals is None:
    return None, None
  keeper = classification_training.BestCheckpoint(run.output_dir, FLAGS.best_metric, model,
                                                  spec.labels)

  def on_eval(step, results):
    labels, logits = task.last_eval
    keeper.update(step, results, classification_metrics.report(labels, logits, spec.labels))
  return keeper, on_eval


def _finish(run, out, summary, keeper):
  files = [f for f in pretraining.run_files(out.dir) if os.path.exists(out.path(f))]
  best_step, best_value = keeper.best() if keeper else (None, None)
  if best_step is not None:
    files += [os.path.join(classification_training.BEST_DIR, name)
              for name in sorted(os.listdir(keeper.directory))]
  summary = dict(summary, best_metric=FLAGS.best_metric, best_step=best_step,
                 best_value=best_value)
  out.finalize(files, {"steps": summary["step"]}, summary)
  best = "-" if best_step is None else f"{best_value:.4f} at step {best_step}"
  print(f"{run.tool}: {summary['step']} steps; best {FLAGS.best_metric} {best} -> {out.dir}")


def run_task(run):
  """Trains (or resumes) a classifier per `run` and the flags."""
  world = training.initialize_world()
  manifest, spec = classification_dataset.read_task_input(run.data_dir, run.vocab_file,
                                                          run.teacher_logits)
  config = pretraining.model_config(run.model_config, manifest,
                                    pretraining.gelu_convention_for(run.init_checkpoint))
  examples = _apply_epoch_defaults(manifest)
  _check_best_metric(spec, run.distill)
  identity = dict({name: getattr(FLAGS, name) for name in _RESULT_FLAGS},
                  bert_config=config.to_dict(), world_size=world.size,
                  distill=dataclasses.asdict(run.distill), num_labels=spec.num_labels,
                  labels=list(spec.labels), max_seq_length=spec.max_seq_length,
                  train_examples=examples, **run.identity)
  train, evals = _datasets(run, manifest, spec, world)
  model = _model(run, config, spec, world)
  out = stage.StageOutput(run.output_dir, run.tool, identity, manifest["_sha256"],
                          FLAGS.overwrite, world.is_chief)
  if pretraining.prepare_output(out, world):
    if world.is_chief:
      print(f"{run.tool}: {run.output_dir} is complete (nothing to do)")
    return
  if world.is_chief:
    training.write_train_config(out, identity, manifest)
  task = classification_training.ClassificationTask(spec.num_labels, run.distill)
  keeper, on_eval = _best_keeper(run, model, task, spec, world, evals)
  loop = trainer.Trainer(model, training.create_optimizer(model.trainable_variables, world),
                         task, training.trainer_config(), run.output_dir, world,
                         on_eval=on_eval)
  summary = loop.train(train, evals)
  if world.is_chief:
    _finish(run, out, summary, keeper)
