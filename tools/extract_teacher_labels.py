"""Stage 5: records -> the same records with the teacher's outputs, cached once.

What is cached follows --input_dir's kind:
  pretraining records (create_pretraining_data): the top-K probabilities at
    temperature T ("topk") or K ids sampled from them with unbiased weights
    ("sampled"); one distill-records file per input file:

  python tools/extract_teacher_labels.py --bert_config_file=out/teacher/bert_config.json \
      --init_checkpoint=out/teacher --vocab_file=out/vocab/vocab.txt \
      --input_dir=out/records --output_dir=out/distill
  mpirun -np 4 python tools/extract_teacher_labels.py ...   # same bytes

  classification records (create_classification_data): a fine-tuned classifier's
    full logits per example, for the --splits:

  python tools/extract_teacher_labels.py --init_checkpoint=out/task/teacher/best \
      --vocab_file=out/vocab/vocab.txt --input_dir=out/task/records \
      --output_dir=out/task/labels

With --reuse_dir=<the previous corpus version's labels>, records whose bytes that
cache holds are copied from it (same teacher fingerprint but for the records: see
pipeline/labels/reuse.py), and only the others are computed. The run:
modeling/labeling/teacher_labels.py.
"""

import sys

import _bootstrap  # noqa: F401  pylint: disable=unused-import
from absl import flags

from modeling.labeling import teacher_labels
from pipeline.core import cli

FLAGS = flags.FLAGS
flags.DEFINE_string("bert_config_file", None, "The teacher's bert_config.json (or a "
                    "bundled config name); classifiers: default, the one beside them.")
flags.DEFINE_string("init_checkpoint", None, "Teacher weights: Google TF1, HF "
                    "safetensors or one of our training runs.", required=True)
flags.DEFINE_string("vocab_file", None, "The records' vocab.txt.", required=True)
flags.DEFINE_string("input_dir", None, "create_pretraining_data or "
                    "create_classification_data output.", required=True)
flags.DEFINE_string("output_dir", None, "Where the labelled records go.", required=True)
flags.DEFINE_list("splits", ["train", "dev"], "Classification records: the splits to label.")
flags.DEFINE_integer("truncation_factor", 16, "K: ids kept per masked position "
                     "(16: best accuracy per byte in docs/distillation_results.md).")
flags.DEFINE_float("temperature", 1.0, "T of p_T = softmax(logits / T).")
flags.DEFINE_enum("label_method", "topk", ["topk", "sampled"], "Top-K, or K draws "
                  "from p_T with unbiased weights.")
flags.DEFINE_integer("batch_size", 64, "Records per forward pass (per rank).")
flags.DEFINE_enum("mixed_precision", "none", ["none", "bf16"], "Teacher compute dtype.")
flags.DEFINE_integer("seed", 12345, "Sampling seed (combined with each record's digest).")
flags.DEFINE_integer("log_examples", 1, "Records whose labels are logged as tokens.")
flags.DEFINE_string("reuse_dir", None, "The labels of an earlier corpus version: "
                    "records whose bytes it holds are copied from it when it was made "
                    "with the same teacher fingerprint (all but the records).")
flags.DEFINE_bool("overwrite", False, "Replace an output made with other settings.")
flags.DEFINE_bool("task", False, "No longer needed (the records' kind says it); accepted "
                  "for one release.")

_NAMES = ("init_checkpoint", "vocab_file", "input_dir", "output_dir", "bert_config_file",
          "truncation_factor", "temperature", "label_method", "batch_size",
          "mixed_precision", "seed", "log_examples", "reuse_dir", "overwrite")


def main(argv):
  del argv
  if FLAGS.task:
    print("extract_teacher_labels: --task is no longer needed: the records' manifest "
          "says what they are", file=sys.stderr)
  teacher_labels.extract_labels(teacher_labels.LabelRunConfig(
      **{name: FLAGS[name].value for name in _NAMES}, splits=tuple(FLAGS.splits),
      given=cli.given_flags()))


if __name__ == "__main__":
  cli.run(main)
