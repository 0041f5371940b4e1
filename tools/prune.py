"""Prune a classifier student's FFN neurons in steps, each recovered by task distillation.

  python tools/prune.py --student_checkpoint=out/task/student/best --vocab_file=VOCAB \
      --teacher_labels_dir=out/task/labels --output_dir=out/task/pruned \
      --ratios=0.25,0.5,0.625,0.75 --recovery_epochs=2 --learning_rate=5e-5

Each step keeps the most important (--importance: taylor, the default, or
magnitude) intermediate neurons in every layer of the previous step's best/ —
a standard BERT with a smaller intermediate_size — then distills it from the
cached teacher logits (as tools/distill.py on task labels) and keeps its
best/ by --best_metric on dev. <output_dir>/step-<k>/{pruned,recover}/ hold
the steps; pruning.md / .png / .json the dev metric against size and latency
(batch 1, the records' length) of every step and the start. A rerun resumes;
a complete run is a no-op. Runs: modeling/training/prune_runs.py; loop flags
(of the recovery runs): _training_flags.py. Docs: docs/pruning.md.
"""

import sys

import _bootstrap  # noqa: F401  pylint: disable=unused-import
import _training_flags as training
from absl import flags
from absl import logging

from modeling.compression import pruning
from modeling.training import prune_runs
from pipeline.core import cli

FLAGS = flags.FLAGS
_default = {f: prune_runs.PruneConfig.__dataclass_fields__[f].default for f in (
    "recovery_epochs", "importance_examples", "alpha", "temperature", "warmup_proportion",
    "best_metric", "speed_repeats", "throughput_batch")}

flags.DEFINE_string("student_checkpoint", None, "The classifier to prune (a best/ "
                    "directory or any checkpoint holding a classifier).", required=True)
flags.DEFINE_string("teacher_labels_dir", None, "Task distill records "
                    "(extract_teacher_labels on classification records).", required=True)
flags.DEFINE_string("vocab_file", None, "The records' vocab.", required=True)
flags.DEFINE_string("output_dir", None, "Steps, report, manifest.", required=True)
flags.DEFINE_list("ratios", [str(r) for r in prune_runs.DEFAULT_RATIOS],
                  "Share of the student's intermediate neurons removed after each step: "
                  "strictly increasing, in (0, 1).")
flags.DEFINE_float("recovery_epochs", _default["recovery_epochs"],
                   "Distillation epochs after each pruning step.")
flags.DEFINE_enum("importance", pruning.DEFAULT_IMPORTANCE, pruning.IMPORTANCE_METHODS,
                  "Neuron score: taylor |activation x gradient| of the recovery loss, "
                  "or magnitude |W_in[:,j]|.|W_out[j,:]| (no data).")
flags.DEFINE_integer("importance_examples", _default["importance_examples"],
                     "Train examples the taylor score sums over.")
flags.DEFINE_float("alpha", _default["alpha"], "Hard-label weight of the recovery loss.")
flags.DEFINE_float("temperature", _default["temperature"], "KD temperature.")
flags.DEFINE_float("warmup_proportion", _default["warmup_proportion"],
                   "Warmup share of each recovery's steps.")
flags.DEFINE_string("best_metric", _default["best_metric"],
                    "Dev metric that selects each step's best/ (and the report's).")
flags.DEFINE_integer("speed_repeats", _default["speed_repeats"], "Timed calls per model.")
flags.DEFINE_integer("throughput_batch", _default["throughput_batch"],
                     "Batch of the throughput column.")

_NAMES = ("student_checkpoint", "teacher_labels_dir", "vocab_file", "output_dir",
          *_default, "importance")


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)  # TF's savers log INFO per save.
  config = prune_runs.PruneConfig(**{name: FLAGS[name].value for name in _NAMES},
                                  ratios=prune_runs.parse_ratios(FLAGS.ratios))
  prune_runs.prune(config, training.loop_config(), training.flag_values(sys.argv[0]))


if __name__ == "__main__":
  cli.run(main)
