"""Extractive-QA runs: fine-tuning a span model, and distilling one from cached logits.

Which one follows from the input's kind: QA records fine-tune (alpha = 1, the
gold start/end positions only); QA distill records (QA records + the
fine-tuned teacher's start/end logits) train alpha * CE + (1 - alpha) * T^2 *
KL on both distributions (modeling/losses/qa_losses.py). Both evaluate the
dev split with the official SQuAD metric every epoch and keep
`<output_dir>/best/` by `best_metric` (default f1), with that evaluation's
predictions.json (and null_odds.json for v2.0) beside the weights.

Distillation has the classifier's two phases (classifier_runs.py): with
distill_phase=backbone the student's embeddings, hidden states and attention
learn the fine-tuned teacher span model's, run online on the records' windows
(classification_training.IntermediateDistillationTask: no span logits, no
labels, no best/; it reports the terms on the dev split); then the final
phase above starts from that run with init_from=checkpoint.

Fine-tuning defaults are run_squad's: AdamW, lr 3e-5 (user's --learning_rate
wins), 2 epochs, 10% warmup, evaluation and checkpoints every epoch.
"""

import dataclasses
import json
import os
from typing import Optional

import keras

from modeling.checkpoints import loading
from modeling.evaluation import squad_predictions
from modeling.losses import task_losses
from modeling.models import span
from modeling.models import student as student_lib
from modeling.models import student_init
from modeling.networks import bert as bert_lib
from modeling.training import classification_training
from modeling.training import distillation_setup as setup
from modeling.training import epoch_runs
from modeling.training import pretraining
from modeling.training import qa_training
from modeling.training import run
from pipeline.core.errors import InputError
from pipeline.inputs import qa_dataset
from pipeline.records import qa_data


@dataclasses.dataclass(frozen=True, kw_only=True)
class QaConfig:
  """A QA run (tools/finetune.py on QA records, tools/distill.py on QA distill records)."""
  model_config: str  # bert_config.json or a bundled config name.
  data_dir: str  # QA records, or QA distill records.
  vocab_file: str
  output_dir: str
  init_from: str = "checkpoint"  # random | checkpoint | teacher_layers.
  init_checkpoint: Optional[str] = None
  teacher_config: Optional[str] = None  # For init_from=teacher_layers.
  teacher_checkpoint: Optional[str] = None
  alpha: float = 1.0  # Hard-label weight; 1 = fine-tuning.
  temperature: float = 1.0
  num_train_epochs: float = 2.0
  warmup_proportion: float = 0.1
  best_metric: str = "f1"
  eval_split: str = "dev"  # '' = no evaluation.
  n_best_size: int = 20
  max_answer_length: int = 30
  null_score_diff_threshold: float = 0.0
  stage: str = "finetune_qa"  # finetune_qa | distill_qa.
  distill_phase: str = "final"  # final: span logits loss; backbone: intermediate layers.
  hidden_mse_weight: float = 0.0  # backbone phase only.
  attention_kl_weight: float = 0.0  # backbone phase only.
  layer_map: str = "uniform"  # backbone phase only (distill_losses.layer_map).

  def __post_init__(self):
    epoch_runs.check_settings(self)
    epoch_runs.check_phase(self)

  @property
  def distill(self):
    return task_losses.TaskDistillConfig(self.alpha, self.temperature)

  @property
  def intermediate(self):
    """The first phase's loss settings, or None in the final phase."""
    return epoch_runs.intermediate(self)

  @property
  def init_label(self):
    return epoch_runs.init_label(self)

  def prediction_config(self, spec, do_lower_case):
    return squad_predictions.PredictionConfig(
        n_best_size=self.n_best_size, max_answer_length=self.max_answer_length,
        do_lower_case=do_lower_case, version_2_with_negative=spec.version == "v2.0",
        null_score_diff_threshold=self.null_score_diff_threshold)


def read_eval_set(data_dir, split, prediction_config):
  """qa_training.EvalSet of a split written with its sidecars."""
  examples = qa_data.read_sidecar(os.path.join(data_dir, qa_data.sidecar_name(split)))
  path = os.path.join(data_dir, qa_data.dataset_name(split))
  try:
    with open(path, encoding="utf-8") as f:
      dataset = json.load(f)["data"]
  except (OSError, ValueError, KeyError, TypeError) as e:
    raise InputError(path, f"unreadable dataset sidecar ({e.__class__.__name__})") from None
  return qa_training.EvalSet(examples, dataset, prediction_config)


class QaRecipe(run.Recipe):
  """Fine-tuning (QA records) or distillation (QA distill records) of a span model."""

  def __init__(self, config):
    self.config = config
    self.stage = config.stage
    self.manifest = self.spec = self.bert_config = None
    self.teacher_config = self.teacher = None  # The online teacher (first phase).
    self.examples = 0
    self.keeper = None

  def read_input(self):
    c = self.config
    self.manifest, self.spec = qa_dataset.read_qa_input(c.data_dir, c.vocab_file)
    if c.intermediate:
      self.teacher_config = epoch_runs.teacher_bert_config(c, self.manifest)
    elif c.distill.uses_teacher and qa_dataset.TRAIN not in self.spec.teacher_splits:
      raise InputError(c.data_dir, f"QA records without teacher logits on the train split: "
                       f"--alpha={c.alpha} needs extract_teacher_labels output")
    if c.eval_split and c.eval_split not in self.spec.eval_splits:
      raise InputError(c.data_dir, f"no evaluation split {c.eval_split!r} (has "
                       f"{list(self.spec.eval_splits)})")
    if not c.intermediate:
      qa_training.check_metric(c.best_metric, self.spec.version)
    checkpoint = c.init_checkpoint if c.init_from == "checkpoint" else None
    self.bert_config = pretraining.model_config(
        c.model_config, self.manifest, pretraining.gelu_convention_for(checkpoint))
    counts = self.manifest["counts"]  # QA records count windows; their label cache, examples.
    self.examples = int(counts.get("train_windows", counts.get("train_examples", 0)))
    return self.manifest

  def resolve_loop(self, loop, manifest):
    return epoch_runs.epoch_loop(loop, self.examples, self.config, manifest["_dir"],
                                 learning_rate=3e-5)

  def identity(self, loop, world):
    c = self.config
    identity = dict(num_train_epochs=c.num_train_epochs, best_metric=c.best_metric,
                    eval_split=c.eval_split, bert_config=self.bert_config.to_dict(),
                    distill=dataclasses.asdict(c.distill), version=self.spec.version,
                    max_seq_length=self.spec.max_seq_length, train_windows=self.examples,
                    prediction=dict(n_best_size=c.n_best_size,
                                    max_answer_length=c.max_answer_length,
                                    null_score_diff_threshold=c.null_score_diff_threshold),
                    init_from=c.init_from,
                    init_checkpoint=c.init_checkpoint if c.init_from == "checkpoint" else None,
                    vocab_sha256=self.manifest["config"].get("vocab_sha256"))
    if c.init_from == "teacher_layers":
      identity.update(teacher_checkpoint=c.teacher_checkpoint)
    if c.intermediate:  # The first phase: its loss and its teacher instead.
      identity.update(distill=dict(phase=c.distill_phase, **dataclasses.asdict(c.intermediate)),
                      teacher=setup.teacher_identity(self.teacher))
    return identity

  def datasets(self, loop, world):
    c, ranks = self.config, (world.rank, world.size)
    train = qa_dataset.train_dataset(c.data_dir, self.spec, loop.micro_batch_size(world.size),
                                     loop.seed, *ranks, loop.shuffle_buffer_size)
    evals = None
    if c.eval_split:
      evals = qa_dataset.eval_dataset(c.data_dir, self.spec, loop.eval_batch_size,
                                      c.eval_split, *ranks)
    return train, evals

  def describe_input(self, world):
    return f"{self.examples} train windows, SQuAD {self.spec.version}"

  def build(self, loop, world):
    c = self.config
    if c.intermediate:
      self.teacher = self._load_teacher(loop)
    keras.utils.set_random_seed(loop.seed + world.rank)  # Rank 0's init is broadcast.
    model = self._student(loop)
    try:
      self._initialize(model)
    except ValueError as e:
      raise InputError(c.init_label, str(e)) from None
    if c.intermediate:
      # No span logits in this phase: the head (and the unused pooler) stay as they are.
      model.span_outputs.trainable = False
      model.bert.pooler.trainable = False
      return model, classification_training.IntermediateDistillationTask(
          self.teacher, c.intermediate, self.bert_config.num_hidden_layers)
    eval_set = None
    if c.eval_split:
      lower = self.manifest["config"].get("do_lower_case", True)
      eval_set = read_eval_set(c.data_dir, c.eval_split, c.prediction_config(self.spec, lower))
    return model, qa_training.QaTask(self.spec.version, c.distill, eval_set)

  def _load_teacher(self, loop):
    """The frozen fine-tuned teacher span model of the first phase."""
    c = self.config
    return epoch_runs.frozen_teacher(c.teacher_checkpoint, lambda: span.load_span_model(
        c.teacher_checkpoint, config=self.teacher_config, dtype=loop.precision_policy))

  def _student(self, loop):
    """A span model; in the first phase with hidden MSE across widths, one that
    owns the projections H_s -> H_t."""
    if epoch_runs.needs_projections(self.config, self.teacher_config, self.bert_config):
      model = student_lib.ProjectedSpanLabeler(self.bert_config,
                                               self.teacher_config.hidden_size,
                                               dtype=loop.precision_policy)
      model.build(None)
      return model
    return span.build_span_model(self.bert_config, dtype=loop.precision_policy)

  def _initialize(self, model):
    c = self.config
    if c.init_from == "checkpoint" and c.init_checkpoint:
      loading.load_checkpoint(model, c.init_checkpoint)
    elif c.init_from == "teacher_layers":  # Encoder layers, and a span head if it has one.
      student_init.init_student_from_teacher(
          model, self.teacher or layer_source(c.teacher_config, c.teacher_checkpoint))

  def on_eval(self, model, task, world, output_dir):
    if not world.is_chief or not self.config.eval_split or self.config.intermediate:
      return None
    self.keeper = qa_training.BestSpanCheckpoint(output_dir, self.config.best_metric, model,
                                                 self.spec.version == "v2.0")

    def on_eval(step, results):
      self.keeper.update(step, results, task.last_predictions)
    return on_eval

  def finish(self, out, summary, model):
    files = epoch_runs.published_files(out, self.keeper)
    if self.config.intermediate:  # No span logits trained: no best/, the terms instead.
      return files, summary, epoch_runs.backbone_line(self.stage, summary, out.dir)
    summary, line = epoch_runs.best_line(self.stage, summary, self.keeper,
                                         self.config.best_metric, out.dir, ".2f", "dev ")
    return files, summary, line


def train_qa(config, loop, flag_values=None):
  """Fine-tunes or distills (by the input's kind) the span model `config` describes."""
  return run.train(QaRecipe(config), loop, config.output_dir, flag_values)


def layer_source(config_path, checkpoint):
  """The span model whose layers a teacher_layers student copies: a fine-tuned span
  model (its head too), or a pretrained encoder without one (DistilBERT's init),
  built as a span model whose head is a fresh init drawn under the run's seed."""
  config = bert_lib.load_config(config_path)
  if span.holds_span_head(checkpoint):
    return span.load_span_model(checkpoint, config=config)
  return span.build_span_model(config, init_checkpoint=checkpoint)
