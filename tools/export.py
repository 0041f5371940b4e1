"""Export a BERT pretrainer checkpoint as a SavedModel (float32 serving graph).

  python tools/export.py --checkpoint=out/teacher --bert_config_file=bert_config.json \
      --export_dir=out/teacher_savedmodel

--checkpoint takes anything modeling.checkpoints.load_checkpoint does: a training
run's output dir or checkpoint prefix, a Google TF1 checkpoint, HF safetensors.
Signatures: serving_default (-> mlm_logits, nsp_logits) and encoder (-> sequence
and pooled outputs); see modeling/evaluation/export.py.

With --task, a classifier that takes raw text (modeling/evaluation/task_export.py):

  python tools/export.py --task --checkpoint=out/student/best --input_dir=out/task \
      --vocab_file=out/vocab/vocab.txt --export_dir=out/student_savedmodel

--input_dir (the classification records the classifier was trained on) gives the
labels, max_seq_length, lower-casing and whether the task has text pairs.
"""

import os

import _bootstrap  # noqa: F401  pylint: disable=unused-import
from absl import flags

from modeling.networks import bert
from modeling.checkpoints import checkpoints
from modeling.evaluation import export
from modeling.models import heads
from modeling.training import pretraining
from modeling.evaluation import task_evaluation
from modeling.evaluation import task_export
from pipeline.core import cli
from pipeline.core.errors import InputError

FLAGS = flags.FLAGS
flags.DEFINE_string("checkpoint", None, "Weights to export.", required=True)
flags.DEFINE_string("bert_config_file", None, "bert_config.json of the model "
                    "(default: the checkpoints/bert_config.json of a training run).")
flags.DEFINE_string("export_dir", None, "SavedModel directory (replaced).", required=True)
flags.DEFINE_bool("task", False, "Export a classifier with a raw-text signature.")
flags.DEFINE_string("input_dir", None, "With --task: its classification records.")
flags.DEFINE_string("vocab_file", None, "With --task: the records' vocab.txt.")


def _config_path():
  if FLAGS.bert_config_file:
    return FLAGS.bert_config_file
  try:
    fmt, path = checkpoints.resolve_checkpoint(FLAGS.checkpoint)
  except ValueError as e:
    raise InputError(FLAGS.checkpoint, str(e)) from None
  if fmt != "own":
    raise InputError(FLAGS.checkpoint, "not a training run of this project: "
                     "pass --bert_config_file")
  return os.path.join(os.path.dirname(path), "bert_config.json")


def _export_task():
  if not (FLAGS.input_dir and FLAGS.vocab_file):
    raise InputError("--task", "needs --input_dir and --vocab_file")
  inp = task_evaluation.read_task_records(FLAGS.input_dir, FLAGS.vocab_file)
  model = task_evaluation.load_classifier(FLAGS.checkpoint, inp, FLAGS.bert_config_file)
  config = inp.manifest["config"]
  pair = bool((config.get("columns") or {}).get("text_b"))
  info = {"checkpoint": os.path.abspath(FLAGS.checkpoint), "records": inp.dir,
          "records_manifest_sha256": inp.manifest["_sha256"],
          "vocab_sha256": config.get("vocab_sha256")}
  task_export.export_text_classifier(
      model, FLAGS.export_dir, FLAGS.vocab_file, config.get("do_lower_case", True),
      inp.spec.max_seq_length, inp.spec.labels, pair, info)
  print(f"export --task: {FLAGS.checkpoint} -> {FLAGS.export_dir} "
        f"({'pair' if pair else 'single'} text, {len(inp.spec.labels)} labels)")


def main(argv):
  del argv
  if FLAGS.task:
    return _export_task()
  path = _config_path()
  try:
    config = bert.BertConfig.from_json_file(
        path, pretraining.gelu_convention_for(FLAGS.checkpoint))
    model = bert.ensure_built(heads.BertPretrainer(config))
    checkpoints.load_checkpoint(model, FLAGS.checkpoint)
  except (OSError, ValueError) as e:
    raise InputError(FLAGS.checkpoint, str(e)) from None
  export.export_saved_model(model, FLAGS.export_dir)
  print(f"export: {FLAGS.checkpoint} -> {FLAGS.export_dir}")


if __name__ == "__main__":
  cli.run(main)
