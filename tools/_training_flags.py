"""The training-loop flags of tools/distill.py (tools/pretrain.py's set), and
what the tool builds from them: the world, the optimizer, the TrainerConfig.

Imported by a tool as `import _training_flags` (tools/ is on sys.path when a
tool runs); defining the flags is a side effect of the import.
"""

import sys

from absl import flags
import tensorflow as tf

from modeling.training import distributed
from modeling.training import optimization
from modeling.training import pretraining
from modeling.training import trainer
from pipeline.core import distributed as launch  # mpirun detection
from pipeline.core import stage
from pipeline.core.errors import InputError

FLAGS = flags.FLAGS
flags.DEFINE_integer("train_batch_size", 32, "Global batch: all ranks, all micro-steps.")
flags.DEFINE_integer("eval_batch_size", 32, "Eval batch per rank.")
flags.DEFINE_float("learning_rate", 5e-5, "Peak learning rate.")
flags.DEFINE_integer("num_train_steps", 100000, "Optimizer steps.")
flags.DEFINE_integer("num_warmup_steps", 10000, "Linear warmup steps.")
flags.DEFINE_enum("optimizer", "lamb", optimization.OPTIMIZERS, "Optimizer.")
flags.DEFINE_float("weight_decay", 0.01, "Decoupled weight decay (not LayerNorm/bias).")
flags.DEFINE_integer("gradient_accumulation_steps", 1, "Micro-steps per step.")
flags.DEFINE_enum("mixed_precision", "none", list(optimization.PRECISION_POLICIES),
                  "Compute precision (variables stay float32).")
flags.DEFINE_integer("save_checkpoints_steps", 1000, "Checkpoint interval.")
flags.DEFINE_integer("keep_checkpoint_max", 5, "Checkpoints kept.")
flags.DEFINE_integer("eval_every_steps", 0, "Eval interval (0: at the end only).")
flags.DEFINE_integer("log_every_steps", 100, "Progress/TensorBoard interval.")
flags.DEFINE_bool("scale_lr_with_world_size", False, "learning_rate x number of ranks.")
flags.DEFINE_bool("use_horovod", False, "Horovod even if not started by mpirun.")
flags.DEFINE_integer("seed", 12345, "Seed of init, dropout and input order.")
flags.DEFINE_integer("shuffle_buffer_size", 1000, "Records shuffled (<=1: off).")
flags.DEFINE_bool("deterministic", False, "TF op determinism (bitwise resume).")
flags.DEFINE_integer("intra_op_threads", 0, "TF threads per rank (0: auto).")
flags.DEFINE_bool("use_xla_gpu", False, "XLA-compile the steps (GPU only).")
flags.DEFINE_bool("overwrite", False, "Replace an output dir made with other settings.")

# The flags above that change the trained weights: part of a run's identity.
RESULT_FLAGS = ("train_batch_size", "learning_rate", "num_train_steps", "num_warmup_steps",
                "optimizer", "weight_decay", "gradient_accumulation_steps", "mixed_precision",
                "scale_lr_with_world_size", "seed", "shuffle_buffer_size", "deterministic")


def initialize_world():
  """Horovod under mpirun (or --use_horovod), threads and determinism."""
  world = distributed.initialize(FLAGS.use_horovod or launch.launched_by_mpi(),
                                 FLAGS.intra_op_threads)
  if FLAGS.deterministic:
    tf.config.experimental.enable_op_determinism()
  return world


def precision_policy():
  return optimization.PRECISION_POLICIES[FLAGS.mixed_precision]


def micro_batch_size(world):
  """Examples per rank per micro-step (the global batch must split evenly)."""
  try:
    return pretraining.per_rank_batch_size(
        FLAGS.train_batch_size, world.size, FLAGS.gradient_accumulation_steps)
  except ValueError as e:
    raise InputError("--train_batch_size", str(e)) from None


def create_optimizer(variables, world):
  """LAMB/AdamW with BERT's warmup + linear decay, for `variables`."""
  lr = optimization.scaled_learning_rate(FLAGS.learning_rate, world.size,
                                         FLAGS.scale_lr_with_world_size)
  try:
    schedule = optimization.WarmupPolynomialDecay(lr, FLAGS.num_train_steps,
                                                  FLAGS.num_warmup_steps)
  except ValueError as e:  # e.g. more warmup than training steps: a usage error.
    raise InputError("--num_warmup_steps", str(e)) from None
  return optimization.create_optimizer(
      FLAGS.optimizer, schedule, variables, FLAGS.weight_decay,
      mixed_precision=FLAGS.mixed_precision)


def trainer_config():
  jit = FLAGS.use_xla_gpu and bool(distributed.gpus())
  if FLAGS.use_xla_gpu and not jit:
    print("--use_xla_gpu ignored: no GPU visible", file=sys.stderr)
  return trainer.TrainerConfig(
      FLAGS.num_train_steps, FLAGS.train_batch_size, FLAGS.gradient_accumulation_steps,
      FLAGS.save_checkpoints_steps, FLAGS.keep_checkpoint_max, FLAGS.eval_every_steps,
      FLAGS.log_every_steps, jit)


def write_train_config(out, identity, manifest):
  """train_config.json: every flag of the tool, the identity, the input."""
  flag_values = {f.name: f.value
                 for module in (sys.argv[0], __name__)
                 for f in FLAGS.get_flags_for_module(module)}
  stage.atomic_write_text(out.path("train_config.json"), stage.json_dumps(dict(
      flags=flag_values, identity=identity, input=manifest["_dir"],
      input_manifest_sha256=manifest["_sha256"], code_version=stage.code_version())))
