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
from modeling.training import distillation
from modeling.training import distillation_setup as setup
from modeling.training import pretraining
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


def check_phase(config):
  """ConfigError for distill_phase settings that do not go together.

  final (the default): the logits loss; the intermediate-layer weights and
  layer map must keep their defaults. backbone: those terms to the fine-tuned
  teacher, run online, so it needs the teacher's config and checkpoint.
  """
  if config.distill_phase not in distillation.DISTILL_PHASES:
    raise ConfigError(f"--distill_phase={config.distill_phase}: one of "
                      f"{distillation.DISTILL_PHASES}")
  if config.distill_phase == "final":
    if (config.hidden_mse_weight, config.attention_kl_weight, config.layer_map) != (
        0.0, 0.0, "uniform"):
      raise ConfigError("--hidden_mse_weight, --attention_kl_weight and --layer_map are "
                        "the intermediate-layer phase's: give --distill_phase=backbone")
    return
  if not (config.teacher_config and config.teacher_checkpoint):
    raise ConfigError("--distill_phase=backbone runs the teacher: give --teacher_config "
                      "and --teacher_checkpoint")
  intermediate(config)  # Checks the weights and the layer map.


def intermediate(config):
  """The backbone phase's task_losses.IntermediateConfig, or None in the final phase."""
  if config.distill_phase == "final":
    return None
  return task_losses.IntermediateConfig(config.hidden_mse_weight, config.attention_kl_weight,
                                        config.layer_map)


def teacher_bert_config(config, manifest):
  """The backbone phase's online teacher's BertConfig; it must take the records'
  vocab and max_seq_length (an InputError naming the teacher checkpoint)."""
  try:
    return pretraining.model_config(config.teacher_config, manifest,
                                    pretraining.gelu_convention_for(config.teacher_checkpoint))
  except InputError as e:
    raise InputError(config.teacher_checkpoint,
                     f"teacher (--teacher_config={e.path}): {e.cause}") from None


def frozen_teacher(checkpoint, build):
  """build() -> the backbone phase's teacher, frozen; its ValueError an InputError
  naming the checkpoint."""
  try:
    teacher = build()
  except ValueError as e:
    raise InputError(checkpoint, str(e)) from None
  teacher.trainable = False
  return teacher


def needs_projections(config, teacher_config, bert_config):
  """True in a backbone phase with hidden MSE between different widths: the
  student then owns learned projections H_s -> H_t (modeling/models/student.py)."""
  return bool(config.intermediate and config.intermediate.hidden_weight > 0 and
              teacher_config.hidden_size != bert_config.hidden_size)


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


def backbone_line(stage, summary, out_dir):
  """The one-line result of a backbone-phase run: its terms on the eval split."""
  evals = "  ".join(f"{k} {v:.4f}" for k, v in sorted((summary["eval"] or {}).items()))
  return f"{stage} (backbone phase): {summary['step']} steps; eval: {evals or '-'} -> {out_dir}"


def best_line(stage, summary, keeper, metric, out_dir, spec=".4f", what=""):
  """(summary with the best evaluation, the run's one-line result)."""
  best_step, best_value = keeper.best() if keeper else (None, None)
  summary = dict(summary, best_metric=metric, best_step=best_step, best_value=best_value)
  best = "-" if best_step is None else f"{best_value:{spec}} at step {best_step}"
  return summary, f"{stage}: {summary['step']} steps; best {what}{metric} {best} -> {out_dir}"
