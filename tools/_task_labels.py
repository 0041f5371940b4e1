"""tools/extract_teacher_labels.py --task: the fine-tuned teacher's logits.

  python tools/extract_teacher_labels.py --task --init_checkpoint=out/task_teacher/best \
      --vocab_file=out/vocab/vocab.txt --input_dir=out/task --output_dir=out/task_distill

--input_dir is create_classification_data output; --init_checkpoint a fine-tuned
classifier (a finetune run or its best/ directory, Google run_classifier or HF
BertForSequenceClassification weights) with its config beside it unless
--bert_config_file is given. Writes each record of --splits with the teacher's
logits added (pipeline/labels/task_labels.py).

Imported by the tool; reads its flags.
"""

import os
import time

from absl import flags

from modeling.networks import bert
from modeling.checkpoints import checkpoints
from modeling.models import classification
from modeling.training import optimization
from modeling.training import pretraining
from pipeline.core import distributed
from pipeline.core import stage
from pipeline.labels import task_labels as task_stage
from pipeline.labels import pretraining_labels as labels_stage
from pipeline.core.errors import InputError
from pipeline.core.progress import Progress

FLAGS = flags.FLAGS


def _settings():
  try:
    return task_stage.TaskLabelSettings(tuple(FLAGS.splits), FLAGS.batch_size,
                                        FLAGS.mixed_precision)
  except ValueError as e:
    raise InputError("flags", str(e)) from None


def _teacher(manifest, settings):
  """(model, config dict, weights sha256) of the fine-tuned teacher."""
  path = FLAGS.init_checkpoint
  policy = optimization.PRECISION_POLICIES[settings.mixed_precision]
  try:
    config = None
    if FLAGS.bert_config_file:
      config = bert.load_config(FLAGS.bert_config_file,
                                pretraining.gelu_convention_for(path))
    model = classification.load_classifier(path, dtype=policy, config=config)
  except (OSError, ValueError) as e:
    raise InputError(path, str(e)) from None
  task_stage.check_classifier(manifest, model.config, model.num_labels, path,
                              task_stage.run_vocab_sha256(path))
  weights = labels_stage.weights_sha256(
      (p.tf1_name, p.variable.numpy()) for p in checkpoints.model_params(model))
  return model, model.config.to_dict(), weights


def main():
  start = time.monotonic()
  if distributed.launched_by_mpi():
    raise InputError("--task", "runs in one process (task data sets are small): "
                     "start it without mpirun")
  settings = _settings()
  manifest = stage.read_input(FLAGS.input_dir, task_stage.INPUT_STAGE)
  labels_stage.check_vocab(manifest, FLAGS.vocab_file)
  names = task_stage.record_files(manifest, settings.splits)
  model, bert_config, weights = _teacher(manifest, settings)
  config = task_stage.stage_config(manifest, settings, bert_config, model.num_labels,
                                   weights)
  out = stage.StageOutput(FLAGS.output_dir, task_stage.STAGE, config,
                          manifest["_sha256"], FLAGS.overwrite)
  if out.prepare():
    print(f"extract_teacher_labels: {FLAGS.output_dir} is up to date (nothing to do)")
    return
  shapes = (settings.batch_size, config["max_seq_length"], model.num_labels)
  step = task_stage.make_step(model, *shapes[:2])
  progress = Progress("extract_teacher_labels", unit="examples")
  task_stage.label_files(out, FLAGS.input_dir, names, step, shapes, progress)
  teacher = {"init_checkpoint": os.path.abspath(FLAGS.init_checkpoint),
             "bert_config_file": FLAGS.bert_config_file}
  print(task_stage.finalize(out, names, time.monotonic() - start, teacher))
