"""Distill a BERT student from cached teacher labels (or an online teacher).

  python tools/distill.py --student_config=student_4l_312d --vocab_file=out/vocab/vocab.txt \
      --teacher_labels_dir=out/distill --output_dir=out/student --kd_tail=bucket
  python tools/distill.py ... --online_teacher --teacher_config=out/teacher/bert_config.json \
      --teacher_checkpoint=out/teacher --records_dir=out/records   # full-vocab baseline
  mpirun -np 8 python tools/distill.py ... (Horovod, one rank per GPU)

Losses and options: modeling/training/distillation.py; training flags: _training_flags.py.
--task: task-specific distillation of a classifier (tools/_task_distill.py).
The output dir behaves as tools/pretrain.py's (resume, no-op rerun, --overwrite,
TensorBoard, eval JSON); export it with tools/export.py --checkpoint=<output_dir>.
"""

import dataclasses
import os

import _bootstrap  # noqa: F401  pylint: disable=unused-import
import _training_flags as training
import _task_distill  # --task: task-specific distillation of a classifier.
from absl import flags
from absl import logging
import keras

from modeling.losses import distill_losses
from modeling.training import distillation
from modeling.training import pretraining
from modeling.training import trainer
from pipeline.core import cli
from pipeline.inputs import pretraining_dataset
from pipeline.inputs import distill_dataset
from pipeline.core import stage
from pipeline.core.errors import InputError

FLAGS = flags.FLAGS
flags.DEFINE_string("student_config", None, "bert_config.json or bundled name.", required=True)
flags.DEFINE_string("vocab_file", None, "The records' (and labels') vocab.", required=True)
flags.DEFINE_string("output_dir", None, "Checkpoints, logs, eval results.", required=True)
flags.DEFINE_string("teacher_labels_dir", None, "extract_teacher_labels output (offline).")
flags.DEFINE_bool("online_teacher", False, "Run the teacher every step (full-vocab KD).")
flags.DEFINE_string("records_dir", None, "create_pretraining_data output (online).")
flags.DEFINE_string("teacher_config", None, "For --online_teacher or teacher_layers.")
flags.DEFINE_string("teacher_checkpoint", None, "Teacher weights (any checkpoint format).")
flags.DEFINE_float("alpha", 0.5, "Hard-label MLM weight; KD gets 1 - alpha.")
flags.DEFINE_float("temperature", None, "T (default: the labels'; online: 1).")
flags.DEFINE_enum("kd_tail", "renormalize", distill_losses.KD_TAILS, "Top-k tail option.")
flags.DEFINE_float("nsp_weight", 1.0, "Hard-label NSP loss weight.")
flags.DEFINE_float("nsp_kd_weight", 0.0, "NSP KL-to-teacher weight.")
flags.DEFINE_float("hidden_mse_weight", 0.0, "Hidden-state MSE weight (online).")
flags.DEFINE_float("attention_kl_weight", 0.0, "Attention KL weight (online).")
flags.DEFINE_enum("distill_phase", "final", distillation.DISTILL_PHASES,
                  "backbone: hidden/attention losses only; final: all.")
flags.DEFINE_enum("init_from", "random", distillation.INIT_FROM, "Student init.")
flags.DEFINE_string("init_checkpoint", None, "Weights for --init_from=checkpoint.")

_RESULT_FLAGS = training.RESULT_FLAGS + ("online_teacher", "init_from", "init_checkpoint")


def _inputs():
  """(manifest, LabelSpec) of the label cache, or (records manifest, None)."""
  if FLAGS.online_teacher == bool(FLAGS.teacher_labels_dir) or (
      FLAGS.online_teacher != bool(FLAGS.records_dir)):
    raise InputError("flags", "give --teacher_labels_dir, or --online_teacher and "
                     "--records_dir")
  return distill_dataset.read_inputs(FLAGS.vocab_file, FLAGS.teacher_labels_dir,
                                     FLAGS.records_dir)


def _distill_config(spec):
  label_method, label_temperature = (spec.label_method, spec.temperature) if spec else (
      None, None)
  try:
    temperature, kd_mode = distillation.label_options(
        label_method, label_temperature, FLAGS.temperature, FLAGS.kd_tail,
        FLAGS["kd_tail"].present)
    if FLAGS.alpha == 0 and spec and kd_mode == "renormalize":
      # docs/distillation_results.md: without hard labels a renormalized top-k
      # target under-trains the rest of the vocab (below hard labels alone).
      logging.warning("--alpha=0 with renormalized top-k targets trained worse than "
                      "hard labels alone in docs/distillation_results.md; 0.5 is the default")
    return distillation.DistillConfig(
        FLAGS.alpha, temperature, kd_mode, FLAGS.nsp_weight, FLAGS.nsp_kd_weight,
        FLAGS.hidden_mse_weight, FLAGS.attention_kl_weight, FLAGS.distill_phase)
  except ValueError as e:
    raise InputError("flags", str(e)) from None


def _teacher(manifest):
  """The frozen teacher when the run needs one, else None."""
  if not (FLAGS.online_teacher or FLAGS.init_from == "teacher_layers"):
    return None
  if not (FLAGS.teacher_config and FLAGS.teacher_checkpoint):
    raise InputError("flags", "the teacher needs --teacher_config and --teacher_checkpoint")
  config = pretraining.model_config(FLAGS.teacher_config, manifest,
                                    pretraining.gelu_convention_for(FLAGS.teacher_checkpoint))
  try:
    return distillation.load_teacher(config, FLAGS.teacher_checkpoint,
                                     training.precision_policy())
  except ValueError as e:
    raise InputError(FLAGS.teacher_checkpoint, str(e)) from None


def _task(dconfig, teacher, num_student_layers):
  try:
    if FLAGS.online_teacher:
      return distillation.OnlineDistillationTask(teacher, dconfig, num_student_layers)
    return distillation.OfflineDistillationTask(dconfig)
  except ValueError as e:
    raise InputError("flags", str(e)) from None


def _student(config, dconfig, teacher, world):
  keras.utils.set_random_seed(FLAGS.seed + world.rank)  # Rank 0's init is broadcast.
  projected = FLAGS.online_teacher and dconfig.hidden_weight > 0
  model = distillation.build_student(config, training.precision_policy(),
                                     teacher.config.hidden_size if projected else None)
  try:
    distillation.initialize_student(model, FLAGS.init_from, teacher, FLAGS.init_checkpoint)
  except ValueError as e:
    raise InputError(f"--init_from={FLAGS.init_from}", str(e)) from None
  return model


def _datasets(manifest, spec, world):
  micro, ranks = training.micro_batch_size(world), (world.rank, world.size)
  if spec:
    return distill_dataset.datasets(FLAGS.teacher_labels_dir, spec, micro, FLAGS.eval_batch_size,
                                    FLAGS.seed, *ranks, FLAGS.shuffle_buffer_size)
  shapes = pretraining.records_shapes(manifest)
  return (pretraining_dataset.train_dataset(FLAGS.records_dir, micro, *shapes, FLAGS.seed, *ranks,
                                FLAGS.shuffle_buffer_size),
          pretraining_dataset.eval_dataset(FLAGS.records_dir, FLAGS.eval_batch_size, *shapes, *ranks))


def _finish(out, summary):
  files = [f for f in pretraining.run_files(out.dir) if os.path.exists(out.path(f))]
  out.finalize(files, {"steps": summary["step"]}, summary)
  evals = "  ".join(f"{k} {v:.4f}" for k, v in sorted((summary["eval"] or {}).items()))
  print(f"distill: {summary['step']} steps; eval: {evals or '-'} -> {out.dir}")


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)  # TF's savers log INFO per save.
  if FLAGS.task:
    return _task_distill.main()
  world = training.initialize_world()
  manifest, spec = _inputs()
  dconfig = _distill_config(spec)
  init = FLAGS.init_checkpoint if FLAGS.init_from == "checkpoint" else None
  config = pretraining.model_config(FLAGS.student_config, manifest,
                                    pretraining.gelu_convention_for(init))
  teacher = _teacher(manifest)
  identity = dict({name: getattr(FLAGS, name) for name in _RESULT_FLAGS}, world_size=world.size,
                  student_config=config.to_dict(), distill=dataclasses.asdict(dconfig),
                  teacher=None if teacher is None else distillation.teacher_identity(teacher))
  train, evals = _datasets(manifest, spec, world)
  # Before the output dir is claimed: bad settings are errors, not a partial run.
  task = _task(dconfig, teacher, config.num_hidden_layers)
  model = _student(config, dconfig, teacher, world)
  out = stage.StageOutput(FLAGS.output_dir, "distill", identity, manifest["_sha256"],
                          FLAGS.overwrite, world.is_chief)
  if pretraining.prepare_output(out, world):
    if world.is_chief:
      print(f"distill: {FLAGS.output_dir} is complete (nothing to do)")
    return
  if world.is_chief:
    training.write_train_config(out, identity, manifest)
  optimizer = training.create_optimizer(model.trainable_variables, world)
  loop = trainer.Trainer(model, optimizer, task, training.trainer_config(), FLAGS.output_dir,
                         world)
  summary = loop.train(train, evals)
  if world.is_chief:
    _finish(out, summary)


if __name__ == "__main__":
  cli.run(main)
