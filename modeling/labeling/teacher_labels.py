"""The teacher run once over records: what it caches follows the records' kind.

  pretraining records     -> distill records: the teacher's top-K probabilities at
                             T (or K unbiased samples), packed (pipeline/labels/
                             pretraining_labels.py); mpirun splits the files.
  classification records  -> task distill records: the fine-tuned teacher's full
                             logits per example (pipeline/labels/task_labels.py);
  QA records              -> QA distill records: the fine-tuned span teacher's start
                             and end logits per window, float16 (pipeline/labels/
                             qa_labels.py).

The teacher is loaded here (modeling); the stage machinery, the packing and the
reuse of an earlier cache are pipeline/labels/'s.
"""

import dataclasses
import os
import time
from typing import Optional

from modeling.checkpoints import loading
from modeling.checkpoints import name_map
from modeling.models import classification
from modeling.models import heads
from modeling.models import span
from modeling.networks import bert
from modeling.training import optimization
from modeling.training import pretraining
from pipeline.core import kinds
from pipeline.core import stage
from pipeline.core import world as world_lib
from pipeline.core.errors import ConfigError, InputError
from pipeline.core.progress import Progress
from pipeline.labels import inference
from pipeline.labels import pretraining_labels
from pipeline.labels import qa_labels
from pipeline.labels import reuse
from pipeline.labels import task_labels
from pipeline.records import schema
from pipeline.text.tokenization import load_vocab

# Flags of tools/extract_teacher_labels.py and the input kinds they apply to.
_PRETRAINING = (kinds.PRETRAINING_RECORDS,)
APPLIES = {"truncation_factor": _PRETRAINING, "temperature": _PRETRAINING,
           "label_method": _PRETRAINING, "seed": _PRETRAINING, "log_examples": _PRETRAINING,
           "reuse_dir": _PRETRAINING,
           "splits": (kinds.CLASSIFICATION_RECORDS, kinds.QA_RECORDS)}


@dataclasses.dataclass(frozen=True, kw_only=True)
class LabelRunConfig:
  """tools/extract_teacher_labels.py's settings."""
  init_checkpoint: str  # The teacher's weights.
  vocab_file: str
  input_dir: str  # Pretraining or classification records.
  output_dir: str
  bert_config_file: Optional[str] = None  # Classifiers: default, the one beside them.
  splits: tuple = ("train", "dev")  # Classification records: the splits to label.
  truncation_factor: int = 16  # K.
  temperature: float = 1.0
  label_method: str = "topk"
  batch_size: int = 64
  mixed_precision: str = "none"
  seed: int = 12345
  log_examples: int = 1
  reuse_dir: Optional[str] = None
  overwrite: bool = False
  given: frozenset = frozenset()  # Flags given on the command line.


def extract_labels(config):
  """Caches the teacher's outputs over `config.input_dir`, by its kind."""
  kind, manifest = kinds.read(config.input_dir, kinds.PRETRAINING_RECORDS,
                              kinds.CLASSIFICATION_RECORDS, kinds.QA_RECORDS)
  kinds.check_flags(kind, config.given, APPLIES)
  if kind == kinds.CLASSIFICATION_RECORDS:
    return _task_labels(config, manifest)
  if kind == kinds.QA_RECORDS:
    return _qa_labels(config, manifest)
  return _pretraining_labels(config, manifest)


def _pretraining_settings(config):
  return pretraining_labels.LabelSettings(
      truncation_factor=config.truncation_factor, temperature=config.temperature,
      label_method=config.label_method, batch_size=config.batch_size,
      mixed_precision=config.mixed_precision, seed=config.seed)


def _pretraining_teacher(config, manifest, settings):
  """The teacher with its weights loaded: (model, config dict, weights sha256)."""
  if not config.bert_config_file:
    raise InputError("--bert_config_file", "required (the teacher's bert_config.json)")
  bert_config = pretraining.model_config(
      config.bert_config_file, manifest, pretraining.gelu_convention_for(config.init_checkpoint))
  if settings.truncation_factor > bert_config.vocab_size:
    raise ConfigError(f"--truncation_factor={settings.truncation_factor} exceeds the "
                      f"vocab size {bert_config.vocab_size}")
  model = heads.BertPretrainer(
      bert_config, dtype=optimization.PRECISION_POLICIES[settings.mixed_precision])
  model.build(None)
  try:
    loading.load_checkpoint(model, config.init_checkpoint)
  except ValueError as e:
    raise InputError(config.init_checkpoint, str(e)) from None
  return model, bert_config.to_dict(), _weights_sha256(model)


def _weights_sha256(model):
  return pretraining_labels.weights_sha256(
      (p.tf1_name, p.variable.numpy()) for p in name_map.model_params(model))


def _pretraining_labels(config, manifest):
  start = time.monotonic()
  world = world_lib.initialize()  # MPI ranks split the files; one GPU / core share each.
  settings = _pretraining_settings(config)
  vocab_sha = kinds.check_vocab(manifest, config.vocab_file)
  model, bert_config, weights = _pretraining_teacher(config, manifest, settings)
  stage_config = pretraining_labels.stage_config(manifest, settings, bert_config, weights,
                                                 vocab_sha)
  stage_config = reuse.reuse_config(stage_config, config.reuse_dir,
                                    kinds.DISTILL_RECORDS.stage)
  out = stage.StageOutput(config.output_dir, kinds.DISTILL_RECORDS.stage, stage_config,
                          manifest["_sha256"], config.overwrite, world.is_chief)
  complete = world_lib.run_collectively(world, out.prepare)
  if world.broadcast_object(complete):
    if world.is_chief:
      print(f"extract_teacher_labels: {config.output_dir} is up to date (nothing to do)")
    return
  setup = time.monotonic() - start
  names = _label_my_files(config, world, out, model, settings, manifest)
  world.barrier()
  if world.is_chief:
    print(pretraining_labels.finalize(out, names, time.monotonic() - start, world.size,
                                      _teacher_info(config), setup))


def _label_my_files(config, world, out, model, settings, manifest):
  names = schema.record_files(manifest["_dir"])
  mine = [n for n in world.my_items(names) if not out.done(n)]
  shapes = (settings.batch_size, out.config["max_seq_length"],
            out.config["max_predictions_per_seq"])
  step = lambda: inference.make_step(  # noqa: E731  (built lazily: only if needed)
      model, settings.label_method, settings.truncation_factor, settings.temperature, shapes)
  progress = Progress("extract_teacher_labels", unit="instances", enabled=world.is_chief)
  vocab = load_vocab(config.vocab_file) if world.is_chief else None
  reuse_dir = config.reuse_dir if "reuse_from" in out.config else None
  world_lib.run_collectively(world, lambda: pretraining_labels.label_files(
      out, config.input_dir, mine, step, settings, shapes, progress,
      config.log_examples if world.is_chief else 0, vocab, reuse_dir))
  return names


def _teacher_info(config):
  return {"init_checkpoint": os.path.abspath(config.init_checkpoint),
          "bert_config_file": config.bert_config_file}


def _load_task_teacher(config, settings, load):
  """The fine-tuned teacher `load(path, bert_config or None, dtype)` returns."""
  path = config.init_checkpoint
  try:
    bert_config = None
    if config.bert_config_file:
      bert_config = bert.load_config(config.bert_config_file,
                                     pretraining.gelu_convention_for(path))
    return load(path, bert_config, optimization.PRECISION_POLICIES[settings.mixed_precision])
  except (OSError, ValueError) as e:
    raise InputError(path, str(e)) from None


def _task_settings(config, manifest, what):
  """(settings, record files) of a one-process task label run (task sets are small)."""
  if world_lib.launched_by_mpi():
    raise ConfigError(f"teacher logits of {what} are computed in one process (task data "
                      "sets are small): start it without mpirun")
  settings = task_labels.TaskLabelSettings(tuple(config.splits), config.batch_size,
                                           config.mixed_precision)
  kinds.check_vocab(manifest, config.vocab_file)
  return settings, schema.record_files(manifest["_dir"], settings.splits)


def _claim(config, manifest, kind, stage_config):
  """The StageOutput, or None when it is already complete (said once)."""
  out = stage.StageOutput(config.output_dir, kind.stage, stage_config, manifest["_sha256"],
                          config.overwrite)
  if out.prepare():
    print(f"extract_teacher_labels: {config.output_dir} is up to date (nothing to do)")
    return None
  return out


def _task_labels(config, manifest):
  start = time.monotonic()
  settings, names = _task_settings(config, manifest, "classification records")
  model = _load_task_teacher(config, settings, lambda path, c, dtype: (
      classification.load_classifier(path, dtype=dtype, config=c)))
  path = config.init_checkpoint
  task_labels.check_classifier(manifest, model.config, model.num_labels, path,
                               task_labels.run_vocab_sha256(path))
  stage_config = task_labels.stage_config(manifest, settings, model.config.to_dict(),
                                          model.num_labels, _weights_sha256(model))
  out = _claim(config, manifest, kinds.TASK_DISTILL_RECORDS, stage_config)
  if out is None:
    return
  shapes = (settings.batch_size, stage_config["max_seq_length"], model.num_labels)
  step = task_labels.make_step(model, *shapes[:2])
  progress = Progress("extract_teacher_labels", unit="examples")
  task_labels.label_files(out, config.input_dir, names, step, shapes, progress)
  print(task_labels.finalize(out, names, time.monotonic() - start, _teacher_info(config)))


def _qa_labels(config, manifest):
  start = time.monotonic()
  settings, names = _task_settings(config, manifest, "QA records")
  model = _load_task_teacher(config, settings, lambda path, c, dtype: (
      span.load_span_model(path, config=c, dtype=dtype)))
  path = config.init_checkpoint
  task_labels.check_model_fits(manifest, model.config, path,
                               task_labels.run_vocab_sha256(path), "span model")
  stage_config = qa_labels.stage_config(manifest, settings, model.config.to_dict(),
                                        _weights_sha256(model))
  out = _claim(config, manifest, kinds.QA_DISTILL_RECORDS, stage_config)
  if out is None:
    return
  shapes = (settings.batch_size, stage_config["max_seq_length"])
  step = task_labels.make_step(model, *shapes, qa_labels.OUTPUTS, schema.QA_MODEL_INPUTS)
  sidecars = qa_labels.sidecar_files(config.input_dir, settings.splits)
  qa_labels.copy_sidecars(out, config.input_dir, sidecars)
  qa_labels.label_files(out, config.input_dir, names, step, shapes,
                        Progress("extract_teacher_labels", unit="windows"))
  print(qa_labels.finalize(out, names, sidecars, time.monotonic() - start,
                           _teacher_info(config)))


def refresh_label_stage(args):
  """The teacher-label stage of a corpus refresh (pipeline/corpus/refresh.py's
  LabelStageArgs): the previous version's labels are reused where records match."""
  teacher = args.teacher
  extract_labels(LabelRunConfig(
      init_checkpoint=teacher.checkpoint, bert_config_file=teacher.config,
      vocab_file=args.vocab_file, input_dir=args.records_dir, output_dir=args.output_dir,
      truncation_factor=teacher.truncation_factor, temperature=teacher.temperature,
      label_method=teacher.label_method, batch_size=teacher.batch_size,
      reuse_dir=args.reuse_dir))
