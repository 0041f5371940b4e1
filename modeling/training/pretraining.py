"""Pretraining: the trainer task, the checks that tie a run to its records, the run.

Shape legend: B=batch, S=max_seq_length, P=max_predictions_per_seq.
"""

import dataclasses
from typing import Optional

import keras

from modeling.checkpoints import loading
from modeling.evaluation import export
from modeling.losses import pretraining_losses
from modeling.models import heads
from modeling.networks import bert as bert_lib
from modeling.training import run
from pipeline.core import kinds
from pipeline.core.errors import InputError
from pipeline.inputs import pretraining_dataset
from pipeline.records import schema
from pipeline.records.schema import PRETRAINING_MODEL_INPUTS as MODEL_INPUTS


class PretrainingTask:
  """Masked LM + next sentence prediction on a BertPretrainer.

  A task gives the trainer a training loss with logged metrics, and eval
  sums (numerator, denominator) that it adds up over the eval set and ranks.
  """

  eval_metrics = ("mlm_accuracy", "mlm_loss", "nsp_accuracy", "nsp_loss")

  def compute_loss(self, model, batch, training):
    """batch: the dataset dict of [B,S]/[B,P]/[B,1] -> (loss, metrics)."""
    outputs = model({k: batch[k] for k in MODEL_INPUTS}, training=training)
    mlm_args = (outputs["mlm_logits"], batch["masked_lm_ids"],
                batch["masked_lm_weights"])
    nsp_args = (outputs["nsp_logits"], batch["next_sentence_labels"])
    mlm_loss = pretraining_losses.masked_lm_loss(*mlm_args)
    nsp_loss = pretraining_losses.next_sentence_loss(*nsp_args)
    metrics = {"mlm_loss": mlm_loss, "nsp_loss": nsp_loss,
               "mlm_accuracy": pretraining_losses.masked_lm_accuracy(*mlm_args),
               "nsp_accuracy": pretraining_losses.next_sentence_accuracy(*nsp_args)}
    return mlm_loss + nsp_loss, metrics

  def eval_sums(self, model, batch):
    outputs = model({k: batch[k] for k in MODEL_INPUTS}, training=False)
    return pretraining_losses.pretraining_sums(outputs, batch)


def records_shapes(manifest, max_seq_length=None,
                   max_predictions_per_seq=None):
  """(S, P) of the records; values asked for must equal the records'.

  Args:
    manifest: of pretraining records (kinds.read(dir, kinds.PRETRAINING_RECORDS)).
    max_seq_length, max_predictions_per_seq: requested values, or None to
      take the records'.

  Raises:
    InputError: a requested value differs from what the records hold.
  """
  config = manifest["config"]
  shapes = []
  for key, asked in (("max_seq_length", max_seq_length),
                     ("max_predictions_per_seq", max_predictions_per_seq)):
    if asked is not None and asked != config[key]:
      raise InputError(manifest["_dir"], f"--{key}={asked} but the records "
                       f"were written with {key}={config[key]}")
    shapes.append(config[key])
  return tuple(shapes)


def model_config(name_or_path, manifest, gelu_convention="hf"):
  """The BertConfig for records: vocab_size must be the records' vocab.

  A bundled config name ("tiny_teacher", "bert_base") takes vocab_size from
  the records; a config file must already match.

  Raises:
    InputError: unreadable config, vocab or sequence length mismatch.
  """
  vocab_size = manifest["config"]["vocab_size"]
  try:
    if bert_lib.is_bundled_config(name_or_path):
      config = bert_lib.load_config(name_or_path, vocab_size=vocab_size)
    else:
      config = bert_lib.load_config(name_or_path, gelu_convention)
  except ValueError as e:
    raise InputError(name_or_path, str(e)) from None
  if config.vocab_size != vocab_size:
    raise InputError(name_or_path, f"vocab_size {config.vocab_size} differs "
                     f"from the records' vocab of {vocab_size} ids")
  seq_length = manifest["config"]["max_seq_length"]
  if seq_length > config.max_position_embeddings:
    raise InputError(name_or_path, f"max_position_embeddings "
                     f"{config.max_position_embeddings} < the records' "
                     f"max_seq_length {seq_length}")
  return config


def gelu_convention_for(init_checkpoint):
  """"google" when initialising from a Google TF1 checkpoint, else "hf".

  The bert_config.json shipped with Google's checkpoints means the tanh
  GELU by "gelu" (see bert_lib.BertConfig.from_dict).
  """
  if not init_checkpoint:
    return "hf"
  try:
    fmt, _ = loading.resolve_checkpoint(init_checkpoint)
  except ValueError as e:
    raise InputError(init_checkpoint, str(e)) from None
  return "google" if fmt == "tf1" else "hf"


@dataclasses.dataclass(frozen=True, kw_only=True)
class PretrainConfig:
  """tools/pretrain.py: masked LM + NSP on create_pretraining_data records."""
  bert_config_file: str  # bert_config.json or a bundled config name.
  input_dir: str  # Pretraining records.
  output_dir: str
  init_checkpoint: Optional[str] = None  # Google TF1, HF safetensors or one of our runs.
  max_seq_length: Optional[int] = None  # Must equal the records' (None: theirs).
  max_predictions_per_seq: Optional[int] = None
  export_dir: Optional[str] = None  # Also a SavedModel at the end.


class PretrainRecipe(run.Recipe):
  """Pretraining (or continued pretraining) of a BertPretrainer."""
  stage = "pretrain"

  def __init__(self, config):
    self.config = config
    self.manifest = self.shapes = self.bert_config = None

  def read_input(self):
    c = self.config
    _, self.manifest = kinds.read(c.input_dir, kinds.PRETRAINING_RECORDS)
    self.shapes = records_shapes(self.manifest, c.max_seq_length, c.max_predictions_per_seq)
    self.bert_config = model_config(c.bert_config_file, self.manifest,
                                    gelu_convention_for(c.init_checkpoint))
    return self.manifest

  def identity(self, loop, world):
    return dict(init_checkpoint=self.config.init_checkpoint,
                bert_config=self.bert_config.to_dict(), max_seq_length=self.shapes[0],
                max_predictions_per_seq=self.shapes[1])

  def datasets(self, loop, world):
    ranks = (world.rank, world.size)
    train = pretraining_dataset.train_dataset(
        self.config.input_dir, loop.micro_batch_size(world.size), *self.shapes, loop.seed,
        *ranks, loop.shuffle_buffer_size)
    evals = pretraining_dataset.eval_dataset(self.config.input_dir, loop.eval_batch_size,
                                             *self.shapes, *ranks)
    return train, evals

  def describe_input(self, world):
    return run.describe_share(
        schema.record_paths(self.config.input_dir, "train"), world)

  def build(self, loop, world):
    # Per-rank seeds give each rank its own dropout masks; the initial weights
    # are rank 0's (broadcast by the trainer).
    keras.utils.set_random_seed(loop.seed + world.rank)
    model = heads.BertPretrainer(self.bert_config, dtype=loop.precision_policy)
    model.build(None)
    if self.config.init_checkpoint:
      try:
        loading.load_checkpoint(model, self.config.init_checkpoint)
      except ValueError as e:
        raise InputError(self.config.init_checkpoint, str(e)) from None
    return model, PretrainingTask()

  def finish(self, out, summary, model):
    if self.config.export_dir:
      export.export_saved_model(model, self.config.export_dir)
    evals = "  ".join(f"{k} {v:.4f}" for k, v in sorted(summary["eval"].items()))
    line = f"pretrain: {summary['step']} steps; eval: {evals} -> {out.dir}"
    return run.run_files(out.dir), summary, line


def pretrain(config, loop, flag_values=None):
  """Runs (or resumes, or finds complete) the pretraining `config` describes."""
  return run.train(PretrainRecipe(config), loop, config.output_dir, flag_values)
