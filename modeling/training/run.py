"""The one run skeleton of every training run: pretraining, distillation, fine-tuning.

A run is a Recipe (what differs: the input it reads, the model, the trainer
task, the datasets, what it publishes) plus a LoopConfig (batch, steps,
optimizer, precision, checkpoints: what every run shares) and an output
directory that follows the stage contract:

  world -> read input -> resolve the loop -> datasets -> model + task -> identity
        -> claim (no-op if complete) -> input contents checked -> train_config.json
        -> optimizer -> Trainer.train (resumes) -> publish (rank 0)

Everything that can be wrong with the settings is checked before the output
directory is claimed (the input's contents right after: a finished run does not
re-read its input), so a bad flag is a one-line error and not a directory
that then needs --overwrite.
"""

import contextlib
import dataclasses
import glob
import os
import re
import sys
from typing import ClassVar, FrozenSet

import tensorflow as tf

from modeling.training import optimization
from modeling.training import trainer as trainer_lib
from pipeline.core import stage
from pipeline.core import world as world_lib
from pipeline.core.errors import ConfigError, InputError, OutputError


@dataclasses.dataclass(frozen=True, kw_only=True)
class LoopConfig:
  """The training-loop settings every run shares (tools/_training_flags.py).

  `explicit` names the settings the user gave; a recipe may replace the others
  with defaults of its own (fine-tuning derives steps from epochs).
  """
  train_batch_size: int = 32  # Global: all ranks, all micro-steps.
  eval_batch_size: int = 32  # Per rank.
  learning_rate: float = 5e-5
  num_train_steps: int = 100000
  num_warmup_steps: int = 10000
  optimizer: str = "lamb"
  weight_decay: float = 0.01
  gradient_accumulation_steps: int = 1
  mixed_precision: str = "none"
  save_checkpoints_steps: int = 1000
  keep_checkpoint_max: int = 5
  eval_every_steps: int = 0  # 0: at the end only.
  log_every_steps: int = 100
  scale_lr_with_world_size: bool = False
  use_horovod: bool = False
  seed: int = 12345
  shuffle_buffer_size: int = 1000
  deterministic: bool = False
  intra_op_threads: int = 0
  use_xla_gpu: bool = False
  overwrite: bool = False
  explicit: FrozenSet[str] = frozenset()

  # The settings that change the trained weights: part of a run's identity.
  RESULT_FIELDS: ClassVar[tuple] = (
      "train_batch_size", "learning_rate", "num_train_steps", "num_warmup_steps",
      "optimizer", "weight_decay", "gradient_accumulation_steps", "mixed_precision",
      "scale_lr_with_world_size", "seed", "shuffle_buffer_size", "deterministic")

  def __post_init__(self):
    if self.optimizer not in optimization.OPTIMIZERS:
      raise ConfigError(f"--optimizer={self.optimizer}: one of {optimization.OPTIMIZERS}")
    if self.mixed_precision not in optimization.PRECISION_POLICIES:
      raise ConfigError(f"--mixed_precision={self.mixed_precision}: one of "
                        f"{sorted(optimization.PRECISION_POLICIES)}")
    for name in ("train_batch_size", "eval_batch_size", "num_train_steps",
                 "gradient_accumulation_steps", "save_checkpoints_steps",
                 "keep_checkpoint_max", "log_every_steps"):
      if getattr(self, name) < 1:
        raise ConfigError(f"--{name} must be >= 1, got {getattr(self, name)}")
    if self.num_warmup_steps < 0 or self.eval_every_steps < 0:
      raise ConfigError("--num_warmup_steps and --eval_every_steps must be >= 0")

  def check(self):
    """The checks across settings, once a recipe has filled in its defaults."""
    if self.num_warmup_steps > self.num_train_steps:
      raise ConfigError(f"--num_warmup_steps={self.num_warmup_steps} must be <= "
                        f"num_train_steps={self.num_train_steps}")
    return self

  @classmethod
  def field_default(cls, name):
    """A field's default: the flag definitions take theirs from here."""
    return {f.name: f.default for f in dataclasses.fields(cls)}[name]

  def with_defaults(self, **defaults):
    """A copy where each setting the user did not give takes `defaults`'."""
    given = {k: v for k, v in defaults.items() if k not in self.explicit}
    return dataclasses.replace(self, **given)

  def identity(self):
    return {name: getattr(self, name) for name in self.RESULT_FIELDS}

  @property
  def precision_policy(self):
    return optimization.PRECISION_POLICIES[self.mixed_precision]

  def micro_batch_size(self, world_size):
    """Examples per rank per micro-step (the global batch must split evenly)."""
    parts = world_size * self.gradient_accumulation_steps
    if self.train_batch_size % parts:
      raise ConfigError(f"--train_batch_size={self.train_batch_size} is not a multiple "
                        f"of world size x gradient_accumulation_steps = {world_size} x "
                        f"{self.gradient_accumulation_steps}")
    return self.train_batch_size // parts


class Recipe:
  """What one kind of run does; the skeleton (`train`) calls these in order.

  Subclasses set `stage` (the output's stage name) and implement the methods;
  each may raise InputError / ConfigError (one-line errors).
  """
  stage = None

  def read_input(self):
    """The input's manifest (stage.read_input / kinds.read)."""
    raise NotImplementedError

  def resolve_loop(self, loop, manifest):  # pylint: disable=unused-argument
    """The loop settings for this input (defaults the user did not override)."""
    return loop

  def identity(self, loop, world):
    """The recipe's part of the run identity (a JSON-able dict)."""
    raise NotImplementedError

  def datasets(self, loop, world):
    """(train dataset, eval dataset or None) of this rank."""
    raise NotImplementedError

  def describe_input(self, world):
    """A few words on what this rank reads, for the run's first line."""
    del world
    return ""

  def build(self, loop, world):
    """(model, trainer task); seeds and initial weights are the recipe's."""
    raise NotImplementedError

  def on_eval(self, model, task, world, output_dir):  # pylint: disable=unused-argument
    """The trainer's on_eval(step, results) callback, or None."""
    return None

  def finish(self, out, summary, model):
    """(files to publish, summary, the one-line result) on rank 0."""
    raise NotImplementedError


def initialize_world(loop):
  """Horovod under mpirun (or use_horovod), threads, devices and determinism."""
  world = world_lib.initialize(loop.use_horovod or world_lib.launched_by_mpi(),
                               loop.intra_op_threads)
  if loop.deterministic:
    tf.config.experimental.enable_op_determinism()
  return world


def create_optimizer(variables, loop, world):
  """LAMB/AdamW with BERT's warmup + linear decay, for `variables`."""
  lr = optimization.scaled_learning_rate(loop.learning_rate, world.size,
                                         loop.scale_lr_with_world_size)
  schedule = optimization.WarmupPolynomialDecay(lr, loop.num_train_steps,
                                                loop.num_warmup_steps)
  return optimization.create_optimizer(loop.optimizer, schedule, variables,
                                       loop.weight_decay, mixed_precision=loop.mixed_precision)


def trainer_config(loop):
  jit = loop.use_xla_gpu and bool(tf.config.list_physical_devices("GPU"))
  if loop.use_xla_gpu and not jit:
    print("--use_xla_gpu ignored: no GPU visible", file=sys.stderr)
  return trainer_lib.TrainerConfig(
      loop.num_train_steps, loop.train_batch_size, loop.gradient_accumulation_steps,
      loop.save_checkpoints_steps, loop.keep_checkpoint_max, loop.eval_every_steps,
      loop.log_every_steps, jit)


def train(recipe, loop, output_dir, flag_values=None):
  """Trains (or resumes, or finds complete) the run `recipe` describes.

  Args:
    recipe: a Recipe.
    loop: LoopConfig.
    output_dir: the run's directory (stage contract).
    flag_values: {flag: value} of the tool, recorded in train_config.json.
  Returns:
    The trainer's summary on rank 0 (None for a complete run or other ranks).
  """
  world = initialize_world(loop)
  manifest = recipe.read_input()
  loop = recipe.resolve_loop(loop, manifest).check()
  micro = loop.micro_batch_size(world.size)
  train_data, eval_data = recipe.datasets(loop, world)
  model, task = recipe.build(loop, world)
  identity = dict(loop.identity(), world_size=world.size, **recipe.identity(loop, world))
  out = stage.StageOutput(output_dir, recipe.stage, identity, manifest["_sha256"],
                          loop.overwrite, world.is_chief)
  if prepare_output(out, world):
    if world.is_chief:
      print(f"{recipe.stage}: {output_dir} is complete (nothing to do)")
    return None
  # After the no-op check (a finished run does not re-read its input), before
  # the first step: a changed or corrupt file is one line, not a DataLossError.
  _verify_input(manifest, world)
  if world.is_chief:
    _write_train_config(out, identity, manifest, loop, flag_values)
    print(_first_line(recipe, loop, world, micro, output_dir), file=sys.stderr, flush=True)
  optimizer = create_optimizer(model.trainable_variables, loop, world)
  loop_runner = trainer_lib.Trainer(model, optimizer, task, trainer_config(loop), output_dir,
                                    world, on_eval=recipe.on_eval(model, task, world,
                                                                  output_dir))
  with _disk_full_as_output_error(output_dir):
    summary = loop_runner.train(train_data, eval_data)
  if not world.is_chief:
    return None
  files, summary, line = recipe.finish(out, summary, model)
  out.finalize(files, {"steps": summary["step"]}, summary)
  print(line)
  return summary


@contextlib.contextmanager
def _disk_full_as_output_error(output_dir):
  """A full disk while saving (TensorFlow raises ResourceExhaustedError or another
  OpError; Python OSError) is the one-line `cannot write` error with its exit
  status; the checkpoints already written stay, so a rerun resumes."""
  try:
    yield
  except (tf.errors.OpError, OSError) as e:
    if not any(s in str(e) for s in ("No space left on device", "Disk quota exceeded")):
      raise
    raise OutputError(output_dir, "cannot write: No space left on device",
                      no_space=True) from None


def _verify_input(manifest, world):
  """Every input file's content against its manifest before the first step (tf.data
  cannot hash as it reads): each rank checks its round-robin share, and all ranks
  fail together if one file differs."""
  names = [f["name"] for f in manifest.get("files", [])]
  world_lib.run_collectively(
      world, lambda: stage.verify_input_files(manifest, world.my_items(names)))


def _write_train_config(out, identity, manifest, loop, flag_values):
  """train_config.json: the tool's flags (the loop as resolved), the identity, the input."""
  loop_values = {f.name: getattr(loop, f.name) for f in dataclasses.fields(loop)
                 if f.name != "explicit"}
  stage.atomic_write_text(out.path("train_config.json"), stage.json_dumps(dict(
      flags=dict(flag_values or {}, **loop_values), identity=identity,
      input=manifest["_dir"], input_manifest_sha256=manifest["_sha256"],
      code_version=stage.code_version())))


def _first_line(recipe, loop, world, micro, output_dir):
  """What the run runs on, said once before the first step."""
  steps = _latest_step(output_dir)
  device = "GPU" if tf.config.list_physical_devices("GPU") else "CPU"
  accumulation = loop.gradient_accumulation_steps
  read = recipe.describe_input(world)
  return (f"{recipe.stage}: {world.describe()} on {device}; batch {loop.train_batch_size} "
          f"= {micro} per rank x {world.size} rank(s) x {accumulation} micro-step(s)"
          f"{'; ' + read if read else ''}; precision {loop.mixed_precision}; "
          f"{f'resuming from step {steps}' if steps else 'fresh start'} "
          f"-> {loop.num_train_steps} steps")


def _latest_step(output_dir):
  latest = tf.train.latest_checkpoint(f"{output_dir}/checkpoints")
  match = re.search(r"ckpt-(\d+)$", latest or "")
  return int(match.group(1)) if match else 0


def prepare_output(out, world):
  """Rank 0 claims a stage.StageOutput; every rank learns if it is complete.

  A refusal (another config, without --overwrite) is raised as InputError on
  rank 0; the other ranks exit with status 1 rather than wait for it.
  """
  result = (False, None)
  if world.is_chief:
    try:
      result = (out.prepare(), None)
    except InputError as e:  # Another config, a busy or unwritable directory.
      result = (False, e)
  complete, error = world.broadcast_object(result)
  if error:
    if world.is_chief:
      raise error  # The same error class: the CLI's exit status depends on it.
    sys.exit(1)
  return complete


def run_files(output_dir):
  """Files a finished run's manifest lists: config, results, final weights."""
  latest = tf.train.latest_checkpoint(os.path.join(output_dir, "checkpoints"))
  names = [os.path.relpath(p, output_dir) for p in glob.glob(latest + ".*")]
  return ["train_config.json", "eval_results.json",
          "checkpoints/bert_config.json"] + sorted(names)


def describe_share(files, world):
  """'4 train files (2 on this rank)' for a run's first line."""
  if world.size == 1:
    return f"{len(files)} train files"
  return f"{len(files)} train files ({len(world.my_items(files))} on this rank)"
