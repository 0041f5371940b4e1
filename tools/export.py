"""Export a checkpoint as a SavedModel (float32 serving graph).

  python tools/export.py --checkpoint=out/teacher --export_dir=out/teacher_savedmodel
  python tools/export.py --checkpoint=out/task/student/best --input_dir=out/task/records \
      --vocab_file=out/vocab/vocab.txt --export_dir=out/task/student_savedmodel

--checkpoint takes anything the project reads: a training run's output dir or
checkpoint prefix, a Google TF1 checkpoint, HF safetensors. A pretraining model
gets serving_default (-> mlm_logits, nsp_logits) and encoder signatures; a
classifier, given its classification records as --input_dir (labels,
max_seq_length, lower-casing, text pairs), a signature that takes raw text.
The run: modeling/evaluation/export_run.py.
"""

import sys

import _bootstrap  # noqa: F401  pylint: disable=unused-import
from absl import flags

from modeling.evaluation import export_run
from pipeline.core import cli

FLAGS = flags.FLAGS
flags.DEFINE_string("checkpoint", None, "Weights to export.", required=True)
flags.DEFINE_string("bert_config_file", None, "bert_config.json of the model "
                    "(default: the checkpoints/bert_config.json of a training run).")
flags.DEFINE_string("export_dir", None, "SavedModel directory (replaced).", required=True)
flags.DEFINE_string("input_dir", None, "Classifiers: their classification records.")
flags.DEFINE_string("vocab_file", None, "Classifiers: the records' vocab.txt.")
flags.DEFINE_integer("version", None, "TensorFlow Serving's layout: write the SavedModel "
                     "to <export_dir>/<version>/ (TF Serving, Triton and tools/serve.py "
                     "serve the highest version).")
flags.DEFINE_bool("task", False, "No longer needed (--input_dir's kind says it); accepted "
                  "for one release.")


def main(argv):
  del argv
  if FLAGS.task:
    print("export: --task is no longer needed: --input_dir's manifest says what it is",
          file=sys.stderr)
  export_run.export_model(export_run.ExportConfig(
      checkpoint=FLAGS.checkpoint, export_dir=FLAGS.export_dir,
      bert_config_file=FLAGS.bert_config_file, input_dir=FLAGS.input_dir,
      vocab_file=FLAGS.vocab_file, version=FLAGS.version))


if __name__ == "__main__":
  cli.run(main)
