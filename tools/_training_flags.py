"""The training-loop flags of pretrain, distill and finetune, and the LoopConfig
they make (defaults and meaning: modeling/training/run.py's LoopConfig).

Imported by a tool as `import _training_flags` (tools/ is on sys.path when a
tool runs); defining the flags is a side effect of the import.
"""

import dataclasses

from absl import flags

from modeling.training import optimization
from modeling.training.run import LoopConfig

FLAGS = flags.FLAGS
_default = LoopConfig.field_default

flags.DEFINE_integer("train_batch_size", _default("train_batch_size"),
                     "Global batch: all ranks, all micro-steps.")
flags.DEFINE_integer("eval_batch_size", _default("eval_batch_size"), "Eval batch per rank.")
flags.DEFINE_float("learning_rate", _default("learning_rate"), "Peak learning rate.")
flags.DEFINE_integer("num_train_steps", _default("num_train_steps"), "Optimizer steps "
                     "(classifiers: from --num_train_epochs unless given).")
flags.DEFINE_integer("num_warmup_steps", _default("num_warmup_steps"), "Linear warmup "
                     "steps (classifiers: from --warmup_proportion unless given).")
flags.DEFINE_enum("optimizer", _default("optimizer"), optimization.OPTIMIZERS,
                  "Optimizer (classifiers: adamw unless given).")
flags.DEFINE_float("weight_decay", _default("weight_decay"),
                   "Decoupled weight decay (not LayerNorm/bias).")
flags.DEFINE_integer("gradient_accumulation_steps", _default("gradient_accumulation_steps"),
                     "Micro-steps per step.")
flags.DEFINE_enum("mixed_precision", _default("mixed_precision"),
                  list(optimization.PRECISION_POLICIES),
                  "Compute precision (variables stay float32).")
flags.DEFINE_integer("save_checkpoints_steps", _default("save_checkpoints_steps"),
                     "Checkpoint interval (classifiers: every epoch unless given).")
flags.DEFINE_integer("keep_checkpoint_max", _default("keep_checkpoint_max"),
                     "Checkpoints kept.")
flags.DEFINE_integer("eval_every_steps", _default("eval_every_steps"), "Eval interval "
                     "(0: at the end only; classifiers: every epoch unless given).")
flags.DEFINE_integer("log_every_steps", _default("log_every_steps"),
                     "Progress/TensorBoard interval.")
flags.DEFINE_bool("scale_lr_with_world_size", _default("scale_lr_with_world_size"),
                  "learning_rate x number of ranks.")
flags.DEFINE_bool("use_horovod", _default("use_horovod"),
                  "Horovod even if not started by mpirun.")
flags.DEFINE_integer("seed", _default("seed"), "Seed of init, dropout and input order.")
flags.DEFINE_integer("shuffle_buffer_size", _default("shuffle_buffer_size"),
                     "Records shuffled (<=1: off).")
flags.DEFINE_bool("deterministic", _default("deterministic"),
                  "TF op determinism (bitwise resume).")
flags.DEFINE_integer("intra_op_threads", _default("intra_op_threads"),
                     "TF threads per rank (0: auto).")
flags.DEFINE_bool("use_xla_gpu", _default("use_xla_gpu"), "XLA-compile the steps (GPU only).")
flags.DEFINE_bool("overwrite", _default("overwrite"),
                  "Replace an output dir made with other settings.")

_NAMES = [f.name for f in dataclasses.fields(LoopConfig) if f.name != "explicit"]


def loop_config():
  """LoopConfig from the flags; `explicit` names the ones given on the command line."""
  return LoopConfig(**{name: FLAGS[name].value for name in _NAMES},
                    explicit=frozenset(name for name in _NAMES if FLAGS[name].present))


def flag_values(module_name):
  """{flag: value} of the tool's own flags and the loop's, for train_config.json."""
  return {f.name: f.value for module in (module_name, __name__)
          for f in FLAGS.get_flags_for_module(module)}
