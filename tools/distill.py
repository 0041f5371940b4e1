"""Distill a BERT student from cached teacher labels (or an online teacher).

  python tools/distill.py --student_config=student_4l_312d --vocab_file=out/vocab/vocab.txt \
      --teacher_labels_dir=out/distill --output_dir=out/student --kd_tail=bucket
  python tools/distill.py ... --online_teacher --teacher_config=out/teacher/bert_config.json \
      --teacher_checkpoint=out/teacher --records_dir=out/records   # full-vocab baseline
  python tools/distill.py --student_config=student_4l_312d --vocab_file=... \
      --teacher_labels_dir=out/task/labels --output_dir=out/task/student --temperature=2 \
      --init_from=checkpoint --init_checkpoint=out/student   # task distill records
  python tools/distill.py ... --teacher_labels_dir=out/task/labels --distill_phase=backbone \
      --teacher_config=T.json --teacher_checkpoint=out/task/teacher/best \
      --hidden_mse_weight=1 --attention_kl_weight=1 --output_dir=out/task/phase1  # then
      the default phase with --init_from=checkpoint --init_checkpoint=out/task/phase1
  mpirun -np 8 python tools/distill.py ... (Horovod, one rank per GPU)

What is trained follows --teacher_labels_dir's kind: pretraining labels train a
BertPretrainer student, task labels (extract_teacher_labels on classification
records) a classifier, evaluated every epoch with <output_dir>/best/ kept by
--best_metric. Runs: modeling/training/distill_runs.py; loop flags:
_training_flags.py. The output dir behaves as tools/pretrain.py's.
"""

import sys

import _bootstrap  # noqa: F401  pylint: disable=unused-import
import _classifier_flags
import _training_flags as training
from absl import flags
from absl import logging

from modeling.losses import distill_losses
from modeling.training import distill_runs
from modeling.training import distillation
from modeling.training import distillation_setup
from pipeline.core import cli

FLAGS = flags.FLAGS
flags.DEFINE_string("student_config", None, "bert_config.json or bundled name.", required=True)
flags.DEFINE_string("vocab_file", None, "The records' (and labels') vocab.", required=True)
flags.DEFINE_string("output_dir", None, "Checkpoints, logs, eval results.", required=True)
flags.DEFINE_string("teacher_labels_dir", None, "extract_teacher_labels output (offline).")
flags.DEFINE_bool("online_teacher", False, "Run the teacher every step (full-vocab KD).")
flags.DEFINE_string("records_dir", None, "create_pretraining_data output (online).")
flags.DEFINE_string("teacher_config", None, "For --online_teacher or teacher_layers.")
flags.DEFINE_string("teacher_checkpoint", None, "Teacher weights (any checkpoint format).")
flags.DEFINE_float("alpha", 0.5, "Hard-label weight; KD gets 1 - alpha.")
flags.DEFINE_float("temperature", None, "T (default: the labels'; online and tasks: 1).")
flags.DEFINE_enum("kd_tail", "renormalize", distill_losses.KD_TAILS, "Top-k tail option.")
flags.DEFINE_float("nsp_weight", 1.0, "Hard-label NSP loss weight.")
flags.DEFINE_float("nsp_kd_weight", 0.0, "NSP KL-to-teacher weight.")
flags.DEFINE_float("hidden_mse_weight", 0.0, "Hidden-state MSE weight (online teacher).")
flags.DEFINE_float("attention_kl_weight", 0.0, "Attention KL weight (online teacher).")
flags.DEFINE_enum("distill_phase", "final", distillation.DISTILL_PHASES,
                  "backbone: hidden/attention losses only (tasks: phase 1, online "
                  "teacher); final: all (tasks: the logits loss).")
flags.DEFINE_string("layer_map", "uniform", "Teacher layer per student layer for the "
                    "hidden/attention terms: uniform, last_k or a list (2,4).")
flags.DEFINE_enum("init_from", "random", distillation_setup.INIT_FROM, "Student init.")
flags.DEFINE_string("init_checkpoint", None, "Weights for --init_from=checkpoint.")
flags.DEFINE_bool("task", False, "No longer needed (the labels' kind says it); accepted "
                  "for one release.")

_NAMES = ("student_config", "vocab_file", "output_dir", "teacher_labels_dir", "online_teacher",
          "records_dir", "teacher_config", "teacher_checkpoint", "alpha", "temperature",
          "nsp_weight", "nsp_kd_weight", "hidden_mse_weight", "attention_kl_weight",
          "distill_phase", "layer_map", "init_from", "init_checkpoint")


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)  # TF's savers log INFO per save.
  if FLAGS.task:
    print("distill: --task is no longer needed: the labels' manifest says what they are",
          file=sys.stderr)
  config = distill_runs.DistillRunConfig(
      **{name: FLAGS[name].value for name in _NAMES},
      kd_tail=FLAGS.kd_tail if FLAGS["kd_tail"].present else None,
      classifier={name: FLAGS[name].value for name in _classifier_flags.NAMES},
      given=cli.given_flags(sys.argv[0], _classifier_flags.__name__))
  distill_runs.distill(config, training.loop_config(), training.flag_values(sys.argv[0]))


if __name__ == "__main__":
  cli.run(main)
