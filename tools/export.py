"""Export a checkpoint as a SavedModel (float32 serving graph), a Hugging Face
directory (--format=hf) or an ONNX Runtime graph (--format=onnx).

  python tools/export.py --checkpoint=out/teacher --export_dir=out/teacher_savedmodel
  python tools/export.py --checkpoint=out/task/student/best --input_dir=out/task/records \
      --vocab_file=out/vocab/vocab.txt --export_dir=out/task/student_savedmodel
  python tools/export.py --format=hf --checkpoint=out/task/student/best \
      --input_dir=out/task/records --vocab_file=out/vocab/vocab.txt --export_dir=out/task/student_hf

--checkpoint takes anything the project reads: a training run's output dir or
checkpoint prefix, a Google TF1 checkpoint, HF safetensors. A pretraining model
gets serving_default (-> mlm_logits, nsp_logits) and encoder signatures; a
classifier, given its classification records as --input_dir (labels,
max_seq_length, lower-casing, text pairs), a signature that takes raw text; a
span (QA) model, given its QA records, one that takes question + context strings
and returns the answer text, its character span and score.
--format=hf writes config.json, model.safetensors and the tokenizer files that
transformers' BertForMaskedLM / BertForSequenceClassification /
BertForQuestionAnswering and AutoTokenizer load (which, follows the checkpoint's head).
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
flags.DEFINE_string("export_dir", None, "Export directory (replaced).", required=True)
flags.DEFINE_string("format", "saved_model", "saved_model: TF serving graph; hf: Hugging "
                    "Face transformers directory; onnx: ONNX Runtime graph.")
flags.DEFINE_string("input_dir", None, "Classifiers / QA models: their classification "
                    "or QA records (--format=hf: any records, for labels and lower-casing).")
flags.DEFINE_string("vocab_file", None, "Classifiers (--format=hf: every model): the "
                    "records' vocab.txt.")
flags.DEFINE_bool("do_lower_case", None, "--format=hf: the tokenizer's lower-casing "
                  "(default: the --input_dir records', else true).")
flags.DEFINE_string("quantize", "none", "--format=onnx: none, dynamic (int8 weights) or "
                    "static (int8 weights and activations, calibrated).")
flags.DEFINE_string("calibration_dir", None, "--quantize=static: classification or QA "
                    "records (the model's vocab) to calibrate on.")
flags.DEFINE_integer("calibration_examples", 300, "--quantize=static: examples to "
                     "calibrate on.")
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
      vocab_file=FLAGS.vocab_file, version=FLAGS.version, format=FLAGS.format,
      do_lower_case=FLAGS.do_lower_case, quantize=FLAGS.quantize,
      calibration_dir=FLAGS.calibration_dir,
      calibration_examples=FLAGS.calibration_examples))


if __name__ == "__main__":
  cli.run(main)
