"""Pretrain BERT (masked LM + next sentence) on create_pretraining_data records.

  python tools/pretrain.py --bert_config_file=bert_base --input_dir=out/records \
      --output_dir=out/teacher --train_batch_size=256 --num_train_steps=10000
  launch/mpirun_1node_8gpu.sh --bert_config_file=... (Horovod, one rank per GPU)

Resumes from output_dir's latest checkpoint; a finished run is a no-op. Phase 2
(longer sequences): new records and output dir, --init_checkpoint=<phase 1 dir>.
Training-loop flags (batch, steps, optimizer, precision, ...): _training_flags.py;
the run: modeling/training/pretraining.py.
"""

import sys

import _bootstrap  # noqa: F401  pylint: disable=unused-import
import _training_flags as training
from absl import flags
from absl import logging

from modeling.training import pretraining
from pipeline.core import cli

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


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)  # TF's savers log INFO per save.
  config = pretraining.PretrainConfig(
      bert_config_file=FLAGS.bert_config_file, input_dir=FLAGS.input_dir,
      output_dir=FLAGS.output_dir, init_checkpoint=FLAGS.init_checkpoint,
      max_seq_length=FLAGS.max_seq_length,
      max_predictions_per_seq=FLAGS.max_predictions_per_seq, export_dir=FLAGS.export_dir)
  pretraining.pretrain(config, training.loop_config(), training.flag_values(sys.argv[0]))


if __name__ == "__main__":
  cli.run(main)
