"""Pretrain BERT (masked LM + next sentence) on create_pretraining_data records.

  python tools/pretrain.py --bert_config_file=bert_base --input_dir=out/records \
      --output_dir=out/teacher --train_batch_size=256 --num_train_steps=10000
  launch/mpirun_1node_8gpu.sh --bert_config_file=... (Horovod, one rank per GPU)

Resumes from output_dir's latest checkpoint; a finished run is a no-op. Phase 2
(longer sequences): new records and output dir, --init_checkpoint=<phase 1 dir>.
Training-loop flags (batch, steps, optimizer, precision, ...): _training_flags.py.
"""

import _bootstrap  # noqa: F401  pylint: disable=unused-import
import _training_flags as training
from absl import flags
from absl import logging
import keras

from modeling.checkpoints import checkpoints
from modeling.evaluation import export
from modeling.models import heads
from modeling.training import pretraining
from modeling.training import trainer
from pipeline.core import cli
from pipeline.inputs import pretraining_dataset
from pipeline.core import stage
from pipeline.core.errors import InputError

FLAGS = flags.FLAGS
flags.DEFINE_string("bert_config_file", None, "bert_config.json, or a bundled config name "
                    "(takes vocab_size from the records).", required=True)
flags.DEFINE_string("input_dir", None, "create_pretraining_data output.", required=True)
flags.DEFINE_string("output_dir", None, "Checkpoints, logs, eval results.", required=True)
flags.DEFINE_string("init_checkpoint", None, "Initial weights: Google TF1, HF safetensors, "
                    "or one of our runs (phase 1's output dir).")
flags.DEFINE_integer("max_seq_length", None, "Must equal the records' (default: theirs).")
flags.DEFINE_integer("max_predictions_per_seq", None, "Must equal the records'.")
flags.DEFINE_string("export_dir", None, "Also write a SavedModel here at the end.")

# With the model config, the records and the number of ranks: the run's identity.
_RESULT_FLAGS = training.RESULT_FLAGS + ("init_checkpoint",)


def _build(config, world):
  # Per-rank seeds give each rank its own dropout masks; the initial weights
  # are rank 0's (broadcast by the trainer).
  keras.utils.set_random_seed(FLAGS.seed + world.rank)
  model = heads.BertPretrainer(config, dtype=training.precision_policy())
  model.build(None)
  if FLAGS.init_checkpoint:
    try:
      checkpoints.load_checkpoint(model, FLAGS.init_checkpoint)
    except ValueError as e:
      raise InputError(FLAGS.init_checkpoint, str(e)) from None
  return model, training.create_optimizer(model.trainable_variables, world)


def _datasets(shapes, world):
  micro = training.micro_batch_size(world)
  train = pretraining_dataset.train_dataset(FLAGS.input_dir, micro, *shapes, FLAGS.seed,
                                world.rank, world.size, FLAGS.shuffle_buffer_size)
  evals = pretraining_dataset.eval_dataset(FLAGS.input_dir, FLAGS.eval_batch_size, *shapes,
                               world.rank, world.size)
  return train, evals


def _finish(out, summary, model):
  if FLAGS.export_dir:
    export.export_saved_model(model, FLAGS.export_dir)
  out.finalize(pretraining.run_files(out.dir), {"steps": summary["step"]}, summary)
  evals = "  ".join(f"{k} {v:.4f}" for k, v in sorted(summary["eval"].items()))
  print(f"pretrain: {summary['step']} steps; eval: {evals} -> {out.dir}")


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)  # TF's savers log INFO per save.
  world = training.initialize_world()
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
    training.write_train_config(out, identity, manifest)
  model, optimizer = _build(config, world)
  loop = trainer.Trainer(model, optimizer, pretraining.PretrainingTask(),
                         training.trainer_config(), FLAGS.output_dir, world)
  summary = loop.train(train, evals)
  if world.is_chief:
    _finish(out, summary, model)


if __name__ == "__main__":
  cli.run(main)
