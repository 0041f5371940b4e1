"""Held-out metrics of a checkpoint, as JSON; the metrics follow --input_dir's kind.

  python tools/evaluate.py --checkpoint=out/student --input_dir=out/distill \
      --output_json=out/student_eval.json
  python tools/evaluate.py --bert_config_file=out/teacher/bert_config.json \
      --checkpoint=out/teacher --input_dir=out/records --split=train --max_eval_batches=50
  python tools/evaluate.py --checkpoint=out/task/student/best --input_dir=out/task/records \
      --vocab_file=out/vocab/vocab.txt --split=test --output_json=eval.json

--checkpoint takes anything the project reads (a training run's output dir or
prefix, Google TF1, HF safetensors); --bert_config_file defaults to the config
beside it. Pretraining or distill records: MLM accuracy, top-5 accuracy, loss and
perplexity, NSP accuracy and loss, and on distill records agreement with the
teacher's cached top-1 and the KL to its cached top-K (teacher_kl_topk).
Classification records: accuracy, precision, recall, F1, MCC, ROC-AUC, loss,
per-class report (+ the teacher's agreement and KL on task distill records).
The run: modeling/evaluation/runs.py.
"""

import sys

import _bootstrap  # noqa: F401  pylint: disable=unused-import
from absl import flags

from modeling.evaluation import runs
from pipeline.core import cli

FLAGS = flags.FLAGS
flags.DEFINE_string("checkpoint", None, "Weights to evaluate.", required=True)
flags.DEFINE_string("bert_config_file", None, "bert_config.json or a bundled config "
                    "name (default: the config beside the checkpoint).")
flags.DEFINE_string("input_dir", None, "Pretraining, distill, classification or task "
                    "distill records.", required=True)
flags.DEFINE_enum("split", None, ("train", "eval", "dev", "test"), "Records split "
                  "(default: eval; dev for classification records).")
flags.DEFINE_string("vocab_file", None, "Classifiers: refuse records made with "
                    "another vocab.")
flags.DEFINE_integer("batch_size", 32, "Examples per batch.", lower_bound=1)
flags.DEFINE_integer("max_eval_batches", None, "Stop after this many batches "
                     "(default: the whole split).", lower_bound=1)
flags.DEFINE_string("output_json", None, "Where the results go.", required=True)
flags.DEFINE_bool("task", False, "No longer needed (--input_dir's kind says it); accepted "
                  "for one release.")


def main(argv):
  del argv
  if FLAGS.task:
    print("evaluate: --task is no longer needed: --input_dir's manifest says what it is",
          file=sys.stderr)
  runs.evaluate(runs.EvaluateConfig(
      checkpoint=FLAGS.checkpoint, input_dir=FLAGS.input_dir, output_json=FLAGS.output_json,
      bert_config_file=FLAGS.bert_config_file, split=FLAGS.split,
      vocab_file=FLAGS.vocab_file, batch_size=FLAGS.batch_size,
      max_eval_batches=FLAGS.max_eval_batches))


if __name__ == "__main__":
  cli.run(main)
