"""Held-out metrics of a checkpoint on pretraining or distill records, as JSON.

  python tools/evaluate.py --checkpoint=out/student --input_dir=out/distill \
      --output_json=out/student_eval.json
  python tools/evaluate.py --bert_config_file=out/teacher/bert_config.json \
      --checkpoint=out/teacher --input_dir=out/records --split=train --max_eval_batches=50

--checkpoint takes anything modeling.checkpoints.load_checkpoint does (a training
run's output dir or prefix, Google TF1, HF safetensors); --bert_config_file
defaults to the config beside it. Metrics: MLM accuracy, top-5 accuracy, loss and
perplexity, NSP accuracy and loss; on distill records (extract_teacher_labels
output) also agreement with the teacher's cached top-1 and the KL to its cached
top-K, renormalized (see modeling/evaluation/evaluation.py).

With --task: a classifier on classification records (accuracy, precision,
recall, F1, MCC, ROC-AUC, loss, per-class report; see tools/_task_eval.py).
"""

import os
import time

import _bootstrap  # noqa: F401  pylint: disable=unused-import
import _task_eval
from absl import flags

from modeling.evaluation import evaluation
from pipeline.core import cli
from pipeline.inputs import pretraining_dataset
from pipeline.core import stage
from pipeline.core.errors import InputError

FLAGS = flags.FLAGS
flags.DEFINE_string("checkpoint", None, "Weights to evaluate.", required=True)
flags.DEFINE_string("bert_config_file", None, "bert_config.json or a bundled config "
                    "name (default: the config beside the checkpoint).")
flags.DEFINE_string("input_dir", None, "create_pretraining_data or "
                    "extract_teacher_labels output (with --task: "
                    "create_classification_data or extract_teacher_labels --task).",
                    required=True)
flags.DEFINE_enum("split", None, pretraining_dataset.SPLITS + ("dev", "test"), "Records split "
                  "to evaluate (default: eval; dev with --task).")
flags.DEFINE_bool("task", False, "Evaluate a classifier on classification records.")
flags.DEFINE_string("vocab_file", None, "With --task: refuse records made with "
                    "another vocab.")
flags.DEFINE_integer("batch_size", 32, "Examples per batch.", lower_bound=1)
flags.DEFINE_integer("max_eval_batches", None, "Stop after this many batches "
                     "(default: the whole split).", lower_bound=1)
flags.DEFINE_string("output_json", None, "Where the results go.", required=True)


def _result(inp, model_info, metrics, counts, seconds):
  result = {
      "metrics": metrics, "counts": counts, "seconds": round(seconds, 2),
      "model": model_info,
      "input": {"dir": inp.dir, "stage": inp.manifest["stage"], "split": inp.split,
                "manifest_sha256": inp.manifest["_sha256"],
                "batch_size": FLAGS.batch_size,
                "max_eval_batches": FLAGS.max_eval_batches},
      "code_version": stage.code_version(),
  }
  if inp.labels:
    result["teacher_labels"] = {"label_method": inp.labels.label_method,
                                "truncation_factor": inp.labels.truncation_factor,
                                "temperature": inp.labels.temperature,
                                "teacher_kl": evaluation.KL_NOTE}
  return result


def main(argv):
  del argv
  if FLAGS.task:
    return _task_eval.evaluate()
  if FLAGS.split not in (None,) + pretraining_dataset.SPLITS:
    raise InputError("--split", f"pretraining records have splits {pretraining_dataset.SPLITS}")
  start = time.monotonic()
  inp = evaluation.read_eval_input(FLAGS.input_dir, FLAGS.split or "eval")
  model = evaluation.load_model(FLAGS.checkpoint, inp, FLAGS.bert_config_file)
  model_info = evaluation.describe(model, FLAGS.checkpoint, FLAGS.bert_config_file)
  batches = evaluation.eval_batches(inp, FLAGS.batch_size, FLAGS.max_eval_batches)
  metrics, counts = evaluation.evaluate(model, batches, inp.labels)
  result = _result(inp, model_info, metrics, counts, time.monotonic() - start)
  os.makedirs(os.path.dirname(os.path.abspath(FLAGS.output_json)), exist_ok=True)
  stage.atomic_write_text(FLAGS.output_json, stage.json_dumps(result))
  shown = " ".join(f"{k}={'n/a' if v is None else f'{v:.4f}'}" for k, v in metrics.items())
  print(f"evaluate: {counts['examples']} examples, {counts['masked_positions']} "
        f"masked positions ({inp.split}): {shown} -> {FLAGS.output_json}")


if __name__ == "__main__":
  cli.run(main)
