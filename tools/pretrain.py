"""Pretrain BERT (masked LM + next sentence) on create_pretraining_data records.

  python tools/pretrain.py --bert_config_file=bert_base --input_dir=out/records \
      --output_dir=out/teacher --train_batch_size=256 --num_train_steps=10000
  launch/mpirun_1node_8gpu.sh --bert_config_file=... (Horovod, one rank per GPU)

Resumes from output_dir's latest checkpoint; a finished run is a no-op. Phase 2
(longer sequences): new records and output dir, --init_checkpoint=<phase 1 dir>.
"""

import sys

import _bootstrap  # noqa: F401  pylint: disable=unused-import
from absl import flags
from absl import logging
import keras
import tensorflow as tf

from modeling import checkpoints, distributed, export, heads, optimization
from modeling import pretraining, trainer
from pipeline import cli, dataset, stage
from pipeline import distributed as launch  # mpirun detection
from pipeline.errors import InputError

FLAGS = flags.FLAGS
flags.DEFINE_string("bert_config_file", None, "bert_config.json, or a bundled config name "
                    "(takes vocab_size from the records).", required=True)
flags.DEFINE_string("input_dir", None, "create_pretraining_data output.", required=True)
flags.DEFINE_string("output_dir", None, "Checkpoints, logs, eval results.", required=True)
flags.DEFINE_string("init_checkpoint", None, "Initial weights: Google TF1, HF safetensors, "
                    "or one of our runs (phase 1's output dir).")
flags.DEFINE_integer("train_batch_size", 32, "Global batch: all ranks, all micro-steps.")
flags.DEFINE_integer("eval_batch_size", 32, "Eval batch per rank.")
flags.DEFINE_float("learning_rate", 5e-5, "Peak learning rate.")
flags.DEFINE_integer("num_train_steps", 100000, "Optimizer steps.")
flags.DEFINE_integer("num_warmup_steps", 10000, "Linear warmup steps.")
flags.DEFINE_enum("optimizer", "lamb", optimization.OPTIMIZERS, "Optimizer.")
flags.DEFINE_float("weight_decay", 0.01, "Decoupled weight decay (not LayerNorm/bias).")
flags.DEFINE_integer("gradient_accumulation_steps", 1, "Micro-steps per step.")
flags.DEFINE_integer("max_seq_length", None, "Must equal the records' (default: theirs).")
flags.DEFINE_integer("max_predictions_per_seq", None, "Must equal the records'.")
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
flags.DEFINE_bool("use_xla_gpu", False, "XLA-compile the steps (GPU only).")
flags.DEFINE_integer("intra_op_threads", 0, "TF threads per rank (0: auto).")
flags.DEFINE_string("export_dir", None, "Also write a SavedModel here at the end.")
flags.DEFINE_bool("overwrite", False, "Replace an output dir made with other settings.")

# Flags that change the trained weights: they identify the run (with the
# model config, the records and the number of ranks).
_RESULT_FLAGS = ("init_checkpoint", "train_batch_size", "learning_rate",
                 "num_train_steps", "num_warmup_steps", "optimizer", "weight_decay",
                 "gradient_accumulation_steps", "mixed_precision",
                 "scale_lr_with_world_size", "seed", "shuffle_buffer_size", "deterministic")


def _build(config, world):
  # Per-rank seeds give each rank its own dropout masks; the initial weights
  # are rank 0's (broadcast by the trainer).
  keras.utils.set_random_seed(FLAGS.seed + world.rank)
  policy = optimization.PRECISION_POLICIES[FLAGS.mixed_precision]
  model = heads.BertPretrainer(config, dtype=policy)
  model.build(None)
  if FLAGS.init_checkpoint:
    try:
      checkpoints.load_checkpoint(model, FLAGS.init_checkpoint)
    except ValueError as e:
      raise InputError(FLAGS.init_checkpoint, str(e)) from None
  lr = optimization.scaled_learning_rate(FLAGS.learning_rate, world.size,
                                         FLAGS.scale_lr_with_world_size)
  schedule = optimization.WarmupPolynomialDecay(lr, FLAGS.num_train_steps,
                                                FLAGS.num_warmup_steps)
  optimizer = optimization.create_optimizer(
      FLAGS.optimizer, schedule, model.trainable_variables, FLAGS.weight_decay,
      mixed_precision=FLAGS.mixed_precision)
  return model, optimizer


def _datasets(shapes, world):
  try:
    micro = pretraining.per_rank_batch_size(
        FLAGS.train_batch_size, world.size, FLAGS.gradient_accumulation_steps)
  except ValueError as e:
    raise InputError("--train_batch_size", str(e)) from None
  train = dataset.train_dataset(FLAGS.input_dir, micro, *shapes, FLAGS.seed,
                                world.rank, world.size, FLAGS.shuffle_buffer_size)
  evals = dataset.eval_dataset(FLAGS.input_dir, FLAGS.eval_batch_size, *shapes,
                               world.rank, world.size)
  return train, evals


def _trainer_config(world):
  jit = FLAGS.use_xla_gpu and bool(distributed.gpus())
  if FLAGS.use_xla_gpu and not jit and world.is_chief:
    print("pretrain: --use_xla_gpu ignored: no GPU visible", file=sys.stderr)
  return trainer.TrainerConfig(
      FLAGS.num_train_steps, FLAGS.train_batch_size, FLAGS.gradient_accumulation_steps,
      FLAGS.save_checkpoints_steps, FLAGS.keep_checkpoint_max,
      FLAGS.eval_every_steps, FLAGS.log_every_steps, jit)


def _write_train_config(out, identity, manifest):
  flag_values = {f.name: f.value for f in FLAGS.get_flags_for_module(sys.argv[0])}
  stage.atomic_write_text(out.path("train_config.json"), stage.json_dumps(dict(
      flags=flag_values, identity=identity, records=manifest["_dir"],
      records_manifest_sha256=manifest["_sha256"], code_version=stage.code_version())))


def _finish(out, summary, model):
  if FLAGS.export_dir:
    export.export_saved_model(model, FLAGS.export_dir)
  out.finalize(pretraining.run_files(out.dir), {"steps": summary["step"]}, summary)
  evals = "  ".join(f"{k} {v:.4f}" for k, v in sorted(summary["eval"].items()))
  print(f"pretrain: {summary['step']} steps; eval: {evals} -> {out.dir}")


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)  # TF's savers log INFO per save.
  world = distributed.initialize(FLAGS.use_horovod or launch.launched_by_mpi(),
                                 FLAGS.intra_op_threads)
  if FLAGS.deterministic:
    tf.config.experimental.enable_op_determinism()
  manifest = stage.read_input(FLAGS.input_dir, "create_pretraining_data")
  shapes = pretraining.records_shapes(manifest, FLAGS.max_seq_length,
                                      FLAGS.max_predictions_per_seq)
  config = pretraining.model_config(FLAGS.bert_config_file, manifest,
                                    pretraining.gelu_convention_for(FLAGS.init_checkpoint))
  identity = dict({name: getattr(FLAGS, name) for name in _RESULT_FLAGS},
                  bert_config=config.to_dict(), max_seq_length=shapes[0],
                  max_predictions_per_seq=shapes[1], world_size=world.size)
  train, evals = _datasets(shapes, world)  # Checks batch split and shards.
  out = stage.StageOutput(FLAGS.output_dir, "pretrain", identity, manifest["_sha256"],
                          FLAGS.overwrite, world.is_chief)
  if pretraining.prepare_output(out, world):
    if world.is_chief:
      print(f"pretrain: {FLAGS.output_dir} is complete (nothing to do)")
    return
  if world.is_chief:
    _write_train_config(out, identity, manifest)
  model, optimizer = _build(config, world)
  loop = trainer.Trainer(model, optimizer, pretraining.PretrainingTask(),
                         _trainer_config(world), FLAGS.output_dir, world)
  summary = loop.train(train, evals)
  if world.is_chief:
    _finish(out, summary, model)


if __name__ == "__main__":
  cli.run(main)
