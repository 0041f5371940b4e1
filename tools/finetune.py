"""Fine-tune BERT (a teacher or a student) on a task, hard labels: classification or QA.

  python tools/finetune.py --model_config=bert_base --init_checkpoint=out/teacher \
      --vocab_file=out/vocab/vocab.txt --data_dir=out/task --output_dir=out/task_teacher \
      --num_train_epochs=3 --best_metric=f1
  mpirun -np 8 python tools/finetune.py ... (Horovod, one rank per GPU)

--data_dir is tools/create_classification_data.py's output (train/ and dev/ records).
--init_checkpoint is any checkpoint the project reads: a pretraining or distillation
run (encoder only, the classifier starts fresh), Google TF1, HF safetensors, or a
fine-tuned classifier. After every epoch the dev split is evaluated (accuracy,
precision, recall, F1, MCC, loss, ROC-AUC for two labels) and <output_dir>/best/
keeps the weights with the best --best_metric. The output dir behaves as
tools/pretrain.py's (resume, no-op rerun, --overwrite, TensorBoard, eval JSON).
Loop flags: _training_flags.py; the run: modeling/training/classifier_runs.py.

On QA records (tools/create_qa_data.py) a span model is fine-tuned instead
(run_squad's defaults: 2 epochs, lr 3e-5, best/ by the official dev f1, with
predictions.json): modeling/training/qa_runs.py.
"""

import sys

import _bootstrap  # noqa: F401  pylint: disable=unused-import
import _classifier_flags
import _training_flags as training
from absl import flags
from absl import logging

from modeling.training import classifier_runs
from modeling.training import task_runs
from pipeline.core import cli

FLAGS = flags.FLAGS
flags.DEFINE_string("model_config", None, "bert_config.json, or a bundled config name "
                    "(takes vocab_size from the records).", required=True)
flags.DEFINE_string("init_checkpoint", None, "Initial weights (any supported format).")
flags.DEFINE_string("vocab_file", None, "The records' vocab.", required=True)
flags.DEFINE_string("data_dir", None, "create_classification_data output.", required=True)
flags.DEFINE_string("output_dir", None, "Checkpoints, best/, logs, eval results.",
                    required=True)
flags.DEFINE_integer("n_best_size", 20, "QA: best start/end positions per window.")
flags.DEFINE_integer("max_answer_length", 30, "QA: longest answer, in word pieces.")
flags.DEFINE_float("null_score_diff_threshold", 0.0, "QA (SQuAD 2.0): answer '' when the "
                   "null score beats the best span by more than this.")


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)  # TF's savers log INFO per save.
  config = classifier_runs.ClassifierConfig(
      model_config=FLAGS.model_config, data_dir=FLAGS.data_dir, vocab_file=FLAGS.vocab_file,
      output_dir=FLAGS.output_dir, init_checkpoint=FLAGS.init_checkpoint,
      **{name: FLAGS[name].value for name in _classifier_flags.NAMES})
  task_runs.train_task(
      config, training.loop_config(), training.flag_values(sys.argv[0]),
      qa_settings={name: FLAGS[name].value for name in task_runs.QA_SETTINGS},
      given=cli.given_flags(sys.argv[0], _classifier_flags.__name__))


if __name__ == "__main__":
  cli.run(main)
