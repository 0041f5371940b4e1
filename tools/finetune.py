"""Fine-tune BERT (a teacher or a student) on a classification task, hard labels.

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
Loop flags: _training_flags.py; task flags and defaults: _task_training.py.
"""

import _bootstrap  # noqa: F401  pylint: disable=unused-import
import _training_flags  # noqa: F401  pylint: disable=unused-import
import _task_training
from absl import flags
from absl import logging

from modeling.models import classification
from modeling.losses import task_losses
from pipeline.core import cli

FLAGS = flags.FLAGS
flags.DEFINE_string("model_config", None, "bert_config.json, or a bundled config name "
                    "(takes vocab_size from the records).", required=True)
flags.DEFINE_string("init_checkpoint", None, "Initial weights (any supported format).")
flags.DEFINE_string("vocab_file", None, "The records' vocab.", required=True)
flags.DEFINE_string("data_dir", None, "create_classification_data output.", required=True)
flags.DEFINE_string("output_dir", None, "Checkpoints, best/, logs, eval results.",
                    required=True)


def _init(model):
  classification.load_weights(model, FLAGS.init_checkpoint)


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)  # TF's savers log INFO per save.
  _task_training.run_task(_task_training.TaskRun(
      tool="finetune", model_config=FLAGS.model_config, data_dir=FLAGS.data_dir,
      vocab_file=FLAGS.vocab_file, output_dir=FLAGS.output_dir, teacher_logits=False,
      distill=task_losses.TaskDistillConfig(alpha=1.0),
      init=_init if FLAGS.init_checkpoint else None,
      init_checkpoint=FLAGS.init_checkpoint, init_label=FLAGS.init_checkpoint or "",
      identity={"init_checkpoint": FLAGS.init_checkpoint}))


if __name__ == "__main__":
  cli.run(main)
