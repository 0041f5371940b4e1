"""tools/distill.py's runs: the student follows the kind of its input.

  distill records (cached top-K / sampled teacher labels)  -> offline pretraining
      distillation of a BertPretrainer student (modeling/training/distillation.py);
  pretraining records + an online teacher (--online_teacher) -> the full-vocab
      baseline, with hidden-state and attention terms available;
  QA distill records (QA records + the teacher's start/end logits) -> a span
      model student (modeling/training/qa_runs.py, via task_runs);
  task distill records (classification records + the teacher's logits) -> task
      distillation of a classifier (modeling/training/classifier_runs.py);
  for both task kinds --distill_phase=backbone is the first phase (hidden
      states and attention to the fine-tuned teacher run online), by default
      the logits loss.

Flags that do not apply to the input's kind are a one-line error.
"""

import dataclasses
import os
from typing import FrozenSet, Optional

import keras
from absl import logging

from modeling.losses import distill_losses
from modeling.models import student as student_lib
from modeling.training import classifier_runs
from modeling.training import distillation
from modeling.training import distillation_setup as setup
from modeling.training import pretraining
from modeling.training import run
from modeling.training import task_runs
from pipeline.core import kinds
from pipeline.core.errors import ConfigError, InputError
from pipeline.inputs import distill_dataset
from pipeline.inputs import pretraining_dataset
from pipeline.records import schema

# Flags of tools/distill.py and the input kinds they apply to.
_PRETRAINING = (kinds.DISTILL_RECORDS, kinds.PRETRAINING_RECORDS)
_TASK = (kinds.TASK_DISTILL_RECORDS, kinds.QA_DISTILL_RECORDS)
# The intermediate-layer terms: pretraining, classifiers and QA span models.
_INTERMEDIATE = _PRETRAINING + _TASK
APPLIES = {
    "online_teacher": _PRETRAINING, "records_dir": _PRETRAINING, "kd_tail": _PRETRAINING,
    "nsp_weight": _PRETRAINING, "nsp_kd_weight": _PRETRAINING,
    "num_train_epochs": _TASK, "warmup_proportion": _TASK, "best_metric": _TASK,
    "eval_split": _TASK, "hidden_mse_weight": _INTERMEDIATE,
    "attention_kl_weight": _INTERMEDIATE, "distill_phase": _INTERMEDIATE,
    "layer_map": _INTERMEDIATE,
}


@dataclasses.dataclass(frozen=True, kw_only=True)
class DistillRunConfig:
  """tools/distill.py's settings (the loop's are a LoopConfig)."""
  student_config: str  # bert_config.json or a bundled name.
  vocab_file: str
  output_dir: str
  teacher_labels_dir: Optional[str] = None  # Offline: a label cache (either kind).
  online_teacher: bool = False
  records_dir: Optional[str] = None  # Online: pretraining records.
  teacher_config: Optional[str] = None  # Online, or init_from=teacher_layers.
  teacher_checkpoint: Optional[str] = None
  alpha: float = 0.5  # Hard-label weight; KD gets 1 - alpha.
  temperature: Optional[float] = None  # None: the labels' T (online / task: 1).
  kd_tail: Optional[str] = None  # None: renormalize (top-k) / the sampled estimator.
  nsp_weight: float = 1.0
  nsp_kd_weight: float = 0.0
  hidden_mse_weight: float = 0.0
  attention_kl_weight: float = 0.0
  distill_phase: str = "final"
  layer_map: str = "uniform"  # distill_losses.layer_map: uniform | last_k | "2,4".
  init_from: str = "random"
  init_checkpoint: Optional[str] = None
  classifier: dict = dataclasses.field(default_factory=dict)  # Task runs: epochs, best_metric...
  given: FrozenSet[str] = frozenset()  # Flags given on the command line.

  def __post_init__(self):
    if self.online_teacher == bool(self.teacher_labels_dir) or (
        self.online_teacher != bool(self.records_dir)):
      raise ConfigError("give --teacher_labels_dir, or --online_teacher and --records_dir")
    if self.kd_tail is not None and self.kd_tail not in distill_losses.KD_TAILS:
      raise ConfigError(f"--kd_tail={self.kd_tail}: one of {distill_losses.KD_TAILS}")
    if self.init_from not in setup.INIT_FROM:
      raise ConfigError(f"--init_from={self.init_from}: one of {setup.INIT_FROM}")


class PretrainingDistillRecipe(run.Recipe):
  """A BertPretrainer student from cached labels, or from an online teacher."""
  stage = "distill"

  def __init__(self, config, kind, manifest):
    self.config, self.kind, self.manifest = config, kind, manifest
    self.spec = (distill_dataset.LabelSpec.from_manifest(manifest)
                 if kind == kinds.DISTILL_RECORDS else None)
    self.dconfig = self._distill_config()
    init = config.init_checkpoint if config.init_from == "checkpoint" else None
    self.student_config = pretraining.model_config(
        config.student_config, manifest, pretraining.gelu_convention_for(init))
    self.teacher = None

  def _distill_config(self):
    c, spec = self.config, self.spec
    method, label_t = (spec.label_method, spec.temperature) if spec else (None, None)
    temperature, kd_mode = setup.label_options(
        method, label_t, c.temperature, c.kd_tail or "renormalize", c.kd_tail is not None)
    if c.alpha == 0 and spec and kd_mode == "renormalize":
      # docs/distillation_results.md: without hard labels a renormalized top-k
      # target under-trains the rest of the vocab (below hard labels alone).
      logging.warning("--alpha=0 with renormalized top-k targets trained worse than "
                      "hard labels alone in docs/distillation_results.md; 0.5 is the default")
    return distillation.DistillConfig(
        c.alpha, temperature, kd_mode, c.nsp_weight, c.nsp_kd_weight,
        c.hidden_mse_weight, c.attention_kl_weight, c.distill_phase, c.layer_map)

  def read_input(self):
    return self.manifest

  def identity(self, loop, world):
    c = self.config
    distill = dataclasses.asdict(self.dconfig)
    if distill["layer_map"] == "uniform":  # The only map before --layer_map: same identity.
      del distill["layer_map"]
    return dict(online_teacher=c.online_teacher, init_from=c.init_from,
                init_checkpoint=c.init_checkpoint, student_config=self.student_config.to_dict(),
                distill=distill,
                teacher=None if self.teacher is None else setup.teacher_identity(self.teacher))

  def datasets(self, loop, world):
    micro, ranks = loop.micro_batch_size(world.size), (world.rank, world.size)
    if self.spec:
      return distill_dataset.datasets(self.config.teacher_labels_dir, self.spec, micro,
                                      loop.eval_batch_size, loop.seed, *ranks,
                                      loop.shuffle_buffer_size)
    shapes = pretraining.records_shapes(self.manifest)
    records = self.config.records_dir
    return (pretraining_dataset.train_dataset(records, micro, *shapes, loop.seed, *ranks,
                                              loop.shuffle_buffer_size),
            pretraining_dataset.eval_dataset(records, loop.eval_batch_size, *shapes, *ranks))

  def describe_input(self, world):
    directory = self.config.teacher_labels_dir or self.config.records_dir
    teacher = "cached teacher labels" if self.spec else "online teacher"
    return (f"{teacher}, " +
            run.describe_share(schema.record_paths(directory, "train"), world))

  def build(self, loop, world):
    self.teacher = self._load_teacher(loop)
    if self.config.online_teacher:
      task = distillation.OnlineDistillationTask(self.teacher, self.dconfig,
                                                 self.student_config.num_hidden_layers)
    else:
      task = distillation.OfflineDistillationTask(self.dconfig)
    return self._student(loop, world), task

  def _load_teacher(self, loop):
    """The frozen teacher when the run needs one, else None."""
    c = self.config
    if not (c.online_teacher or c.init_from == "teacher_layers"):
      return None
    if not (c.teacher_config and c.teacher_checkpoint):
      raise ConfigError("the teacher needs --teacher_config and --teacher_checkpoint")
    config = pretraining.model_config(c.teacher_config, self.manifest,
                                      pretraining.gelu_convention_for(c.teacher_checkpoint))
    try:
      return setup.load_teacher(config, c.teacher_checkpoint, loop.precision_policy)
    except ValueError as e:
      raise InputError(c.teacher_checkpoint, str(e)) from None

  def _student(self, loop, world):
    c = self.config
    keras.utils.set_random_seed(loop.seed + world.rank)  # Rank 0's init is broadcast.
    projected = c.online_teacher and self.dconfig.hidden_weight > 0
    model = student_lib.build_student(self.student_config, loop.precision_policy,
                                      self.teacher.config.hidden_size if projected else None)
    try:
      setup.initialize_student(model, c.init_from, self.teacher, c.init_checkpoint)
    except ValueError as e:
      raise InputError(f"--init_from={c.init_from}", str(e)) from None
    return model

  def finish(self, out, summary, model):
    files = [f for f in run.run_files(out.dir) if os.path.exists(out.path(f))]
    evals = "  ".join(f"{k} {v:.4f}" for k, v in sorted((summary["eval"] or {}).items()))
    return files, summary, f"distill: {summary['step']} steps; eval: {evals or '-'} -> {out.dir}"


def _task_config(config):
  """The classifier run of a student distilled from task distill records."""
  c = config
  return classifier_runs.ClassifierConfig(
      model_config=c.student_config, data_dir=c.teacher_labels_dir, vocab_file=c.vocab_file,
      output_dir=c.output_dir, init_from=c.init_from, init_checkpoint=c.init_checkpoint,
      teacher_config=c.teacher_config, teacher_checkpoint=c.teacher_checkpoint,
      alpha=c.alpha, temperature=1.0 if c.temperature is None else c.temperature,
      stage="distill_task", distill_phase=c.distill_phase,
      hidden_mse_weight=c.hidden_mse_weight, attention_kl_weight=c.attention_kl_weight,
      layer_map=c.layer_map, **c.classifier)


# Settings of the logits loss: not the intermediate-layer phase's.
_FINAL_ONLY = ("alpha", "temperature", "best_metric")


def _check_task_phase(config):
  """One-line error for logits-loss flags given to the backbone phase."""
  wrong = [f"--{name}" for name in _FINAL_ONLY if name in config.given]
  if config.distill_phase == "backbone" and wrong:
    raise ConfigError(f"{', '.join(wrong)}: not used by --distill_phase=backbone "
                      "(hidden states and attention only; no logits, no best/)")


def distill(config, loop, flag_values=None):
  """Distills the student `config` describes, the way its input's kind says."""
  directory = config.teacher_labels_dir or config.records_dir
  accepted = (kinds.PRETRAINING_RECORDS,) if config.online_teacher else (
      kinds.DISTILL_RECORDS, *_TASK)
  kind, manifest = kinds.read(directory, *accepted)
  kinds.check_flags(kind, config.given, APPLIES)
  kinds.check_vocab(manifest, config.vocab_file)
  if kind in _TASK:
    if config.init_from == "checkpoint" and not config.init_checkpoint:
      raise ConfigError("--init_from=checkpoint needs --init_checkpoint")
    _check_task_phase(config)
    return task_runs.train_task(_task_config(config), loop, flag_values, given=config.given)
  recipe = PretrainingDistillRecipe(config, kind, manifest)
  return run.train(recipe, loop, config.output_dir, flag_values)
