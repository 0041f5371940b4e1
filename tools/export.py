"""Export a BERT pretrainer checkpoint as a SavedModel (float32 serving graph).

  python tools/export.py --checkpoint=out/teacher --bert_config_file=bert_config.json \
      --export_dir=out/teacher_savedmodel

--checkpoint takes anything modeling.checkpoints.load_checkpoint does: a training
run's output dir or checkpoint prefix, a Google TF1 checkpoint, HF safetensors.
Signatures: serving_default (-> mlm_logits, nsp_logits) and encoder (-> sequence
and pooled outputs); see modeling/export.py.
"""

import os

import _bootstrap  # noqa: F401  pylint: disable=unused-import
from absl import flags

from modeling import bert, checkpoints, export, heads, pretraining
from pipeline import cli
from pipeline.errors import InputError

FLAGS = flags.FLAGS
flags.DEFINE_string("checkpoint", None, "Weights to export.", required=True)
flags.DEFINE_string("bert_config_file", None, "bert_config.json of the model "
                    "(default: the checkpoints/bert_config.json of a training run).")
flags.DEFINE_string("export_dir", None, "SavedModel directory (replaced).", required=True)


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


def main(argv):
  del argv
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
