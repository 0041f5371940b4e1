"""tools/distill.py --task: task-specific distillation of a classifier student.

  python tools/distill.py --task --student_config=student_4l_312d \
      --vocab_file=out/vocab/vocab.txt --teacher_labels_dir=out/task_labels \
      --output_dir=out/task_student --alpha=0.5 --temperature=2 \
      --init_from=checkpoint --init_checkpoint=out/student   # general-distilled

--teacher_labels_dir is tools/extract_teacher_labels.py --task output: the task's
records plus the fine-tuned teacher's logits. The student (a BertClassifier) trains
on alpha * CE(labels) + (1 - alpha) * T^2 * KL(softmax(t/T) || softmax(s/T))
(modeling/losses/task_losses.py), evaluated every epoch on the dev split with
<output_dir>/best/ kept by --best_metric, as tools/finetune.py does. Imported by
tools/distill.py, which defines the student/teacher/alpha/temperature flags.
"""

from absl import flags

import _task_training
from modeling.models import classification
from modeling.models import student_init
from modeling.losses import task_losses
from pipeline.core.errors import InputError

FLAGS = flags.FLAGS
flags.DEFINE_bool("task", False, "Task-specific distillation of a classifier from "
                  "extract_teacher_labels --task output (see tools/_task_distill.py).")

# distill.py flags that belong to pretraining distillation only.
_PRETRAINING_ONLY = ("online_teacher", "records_dir", "kd_tail", "nsp_weight", "nsp_kd_weight",
                     "hidden_mse_weight", "attention_kl_weight", "distill_phase")


def _check_flags():
  given = [f"--{name}" for name in _PRETRAINING_ONLY if FLAGS[name].present]
  if given:
    raise InputError("flags", f"{', '.join(given)} do not apply to --task")
  if not FLAGS.teacher_labels_dir:
    raise InputError("flags", "--task needs --teacher_labels_dir (extract_teacher_labels "
                     "--task output)")
  try:
    temperature = 1.0 if FLAGS.temperature is None else FLAGS.temperature
    return task_losses.TaskDistillConfig(FLAGS.alpha, temperature)
  except ValueError as e:
    raise InputError("flags", str(e)) from None


def _init_fn():
  """init(student) for --init_from, or None (random)."""
  if FLAGS.init_from == "random":
    return None
  if FLAGS.init_from == "checkpoint":
    if not FLAGS.init_checkpoint:
      raise InputError("flags", "--init_from=checkpoint needs --init_checkpoint")
    return lambda model: classification.load_weights(model, FLAGS.init_checkpoint)
  if not (FLAGS.teacher_config and FLAGS.teacher_checkpoint):
    raise InputError("flags", "--init_from=teacher_layers needs --teacher_config and "
                     "--teacher_checkpoint")

  def from_teacher(model):  # Encoder layers, pooler and the teacher's classifier.
    teacher = classification.build_classifier(
        FLAGS.teacher_config, model.num_labels, init_checkpoint=FLAGS.teacher_checkpoint)
    student_init.init_student_from_teacher(model, teacher)
  return from_teacher


def main():
  """Runs the task distillation the flags describe."""
  config = _check_flags()
  init = _init_fn()
  checkpoint = FLAGS.init_checkpoint if FLAGS.init_from == "checkpoint" else None
  _task_training.run_task(_task_training.TaskRun(
      tool="distill_task", model_config=FLAGS.student_config,
      data_dir=FLAGS.teacher_labels_dir, vocab_file=FLAGS.vocab_file,
      output_dir=FLAGS.output_dir, teacher_logits=True, distill=config, init=init,
      init_checkpoint=checkpoint, init_label=f"--init_from={FLAGS.init_from}",
      identity={"init_from": FLAGS.init_from, "init_checkpoint": checkpoint,
                "teacher_checkpoint": FLAGS.teacher_checkpoint}))

