"""The issue's tiny end-to-end: on a task where the teacher knows what the gold
labels do not say, the student with both new parts (intermediate layers +
teacher-labelled augmentation) beats the final-layer-only student.

The task (bench/task_recipe_quick.py): the label is the majority of one or three
sentiment words among filler words. The teacher (tiny_teacher, 4L H64) is
fine-tuned on 2,400 clean rows; the students (tiny_student, 2L H32) see 160
other rows whose gold labels are 35% flipped. Final-layer-only: alpha * CE +
(1 - alpha) T^2 KD on those 160 rows. Both parts: augment_task_data (8 variants
per row, a random tiny masked LM), the teacher labels every row, phase 1
(hidden MSE through a projection + attention KL, online teacher) then phase 2
(the same logits loss) on originals + variants. The trainings run as the
project's tools; the data stages and the test-split scoring are the same
library calls in-process (one TensorFlow start instead of six). Fixed seeds.
"""

import os
import sys

from modeling.augmentation import augment_run
from modeling.evaluation import task_evaluation
from modeling.labeling import teacher_labels
from pipeline.corpus import augmented_data
from pipeline.records import classification_stage
from tests.conftest import ROOT, run_tool

sys.path.insert(0, os.path.join(ROOT, "bench"))
import task_recipe_quick as quick  # noqa: E402  pylint: disable=wrong-import-position

TRAIN = ("--train_batch_size=32", "--learning_rate=2e-3", "--seed=7", "--log_every_steps=50")
KD = ("--alpha=0.5", "--temperature=2")


def _records(src, out, vocab):
  classification_stage.run(classification_stage.ClassificationRecordsConfig(
      input_dir=src, output_dir=out, vocab_file=vocab, text_a_column="sentence",
      label_column="label", labels=("0", "1"), max_seq_length=quick.MAX_SEQ_LENGTH,
      log_examples=0))
  return out


def _labels(teacher, records, out, vocab):
  teacher_labels.extract_labels(teacher_labels.LabelRunConfig(
      init_checkpoint=teacher, vocab_file=vocab, input_dir=records, output_dir=out))
  return out


def _test_accuracy(checkpoint, records, vocab):
  inp = task_evaluation.read_task_eval_input(records, "test", vocab)
  model = task_evaluation.load_classifier(checkpoint, inp)
  return task_evaluation.evaluate(model, inp, 64)[0]["accuracy"]


def test_both_new_parts_beat_final_layer_only(tmp_path):
  task = quick.write_task(str(tmp_path / "task"), seed=0)
  vocab = task["vocab"]
  teacher_records = _records(task["teacher"], str(tmp_path / "teacher_records"), vocab)
  records = _records(task["student"], str(tmp_path / "records"), vocab)
  teacher = str(tmp_path / "teacher")
  run_tool("finetune", "--model_config=tiny_teacher", f"--vocab_file={vocab}",
           f"--data_dir={teacher_records}", f"--output_dir={teacher}",
           "--num_train_epochs=6", *TRAIN)
  teacher_best = os.path.join(teacher, "best")
  augmented = str(tmp_path / "augmented")
  augment_run.augment(augment_run.AugmentConfig(
      input_dir=task["student"], output_dir=augmented, vocab_file=vocab,
      mlm_checkpoint=quick.write_mlm(str(tmp_path / "mlm"), vocab),
      settings=augmented_data.AugmentSettings(text_a_column="sentence", label_column="label",
                                              num_variants=8, seed=0)))
  labels = _labels(teacher_best, records, str(tmp_path / "labels"), vocab)
  aug_labels = _labels(teacher_best, _records(augmented, str(tmp_path / "aug_records"), vocab),
                       str(tmp_path / "aug_labels"), vocab)
  student = ("--student_config=tiny_student", f"--vocab_file={vocab}")
  final_only = str(tmp_path / "final_only")
  run_tool("distill", *student, f"--teacher_labels_dir={labels}", f"--output_dir={final_only}",
           "--num_train_epochs=12", *KD, *TRAIN)
  phase1, both = str(tmp_path / "phase1"), str(tmp_path / "both")
  run_tool("distill", *student, f"--teacher_labels_dir={aug_labels}", f"--output_dir={phase1}",
           "--distill_phase=backbone", "--teacher_config=tiny_teacher",
           f"--teacher_checkpoint={teacher_best}", "--hidden_mse_weight=1",
           "--attention_kl_weight=1", "--num_train_epochs=2", *TRAIN)
  run_tool("distill", *student, f"--teacher_labels_dir={aug_labels}", f"--output_dir={both}",
           "--init_from=checkpoint", f"--init_checkpoint={phase1}", "--num_train_epochs=4",
           *KD, *TRAIN)
  acc = {name: _test_accuracy(os.path.join(tmp_path, name, "best"), records, vocab)
         for name in ("teacher", "final_only", "both")}
  print("test accuracy:", acc)
  assert acc["teacher"] > 0.9  # It knows the rule the flipped labels blur.
  assert acc["both"] >= acc["final_only"] + 0.05, acc
