"""What the epoch-based task runs share (classifier_runs.py, qa_runs.py).

Both take the same init and distillation settings, derive their loop from
epochs over the train split (google-research/bert's run_classifier /
run_squad: steps from num_train_epochs, warmup from warmup_proportion, AdamW,
evaluation and checkpoints every epoch), keep `<output_dir>/best/` by a dev
metric, and end with the same one-line result.
"""

import os

from modeling.losses import task_losses
from modeling.training import classification_training
from modeling.training import distillation_setup as setup
from modeling.training import run
from pipeline.core.errors import ConfigError, InputError


def check_settings(config):
  """ConfigError for bad init / epoch / distillation settings of a task run config."""
  if config.init_from not in setup.INIT_FROM:
    raise ConfigError(f"--init_from={config.init_from}: one of {setup.INIT_FROM}")
  if config.init_from == "teacher_layers" and not (config.teacher_config and
                                                  config.teacher_checkpoint):
    raise ConfigError("--init_from=teacher_layers needs --teacher_config and "
                      "--teacher_checkpoint")
  if config.num_train_epochs <= 0 or not 0 <= config.warmup_proportion <= 1:
    raise ConfigError("--num_train_epochs must be > 0 and --warmup_proportion in [0, 1]")
  task_losses.TaskDistillConfig(config.alpha, config.temperature)  # Checks them.


def init_label(config):
  """Where an init error points."""
  if config.init_from == "checkpoint":
    return config.init_checkpoint or ""
  return f"--init_from={config.init_from}"


def epoch_loop(loop, examples, config, data_dir, **defaults):
  """The loop settings of `config.num_train_epochs` over `examples` train rows.

  defaults: more settings the user's flags override (e.g. a learning rate).
  """
  try:
    per_epoch, total = classification_training.epoch_steps(
        examples, loop.train_batch_size, config.num_train_epochs)
  except ValueError as e:
    raise InputError(data_dir, str(e)) from None
  loop = loop.with_defaults(num_train_steps=total, optimizer="adamw",
                            save_checkpoints_steps=per_epoch, eval_every_steps=per_epoch,
                            log_every_steps=min(loop.log_every_steps, per_epoch), **defaults)
  return loop.with_defaults(num_warmup_steps=int(loop.num_train_steps *
                                                 config.warmup_proportion))


def published_files(out, keeper):
  """The run's files and, when an evaluation was kept, those of best/."""
  files = [f for f in run.run_files(out.dir) if os.path.exists(out.path(f))]
  best_step, _ = keeper.best() if keeper else (None, None)
  if best_step is not None:
    files += [os.path.join(classification_training.BEST_DIR, name)
              for name in sorted(os.listdir(keeper.directory))]
  return files


def best_line(stage, summary, keeper, metric, out_dir, spec=".4f", what=""):
  """(summary with the best evaluation, the run's one-line result)."""
  best_step, best_value = keeper.best() if keeper else (None, None)
  summary = dict(summary, best_metric=metric, best_step=best_step, best_value=best_value)
  best = "-" if best_step is None else f"{best_value:{spec}} at step {best_step}"
  return summary, f"{stage}: {summary['step']} steps; best {what}{metric} {best} -> {out_dir}"
