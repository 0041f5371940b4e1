"""Pretraining as a trainer task, and the checks that tie a run to its records.

Shape legend: B=batch, S=max_seq_length, P=max_predictions_per_seq.
"""

import glob
import os
import sys

import tensorflow as tf

from modeling.networks import bert as bert_lib
from modeling.checkpoints import checkpoints
from modeling.losses import pretraining_losses
from pipeline.core.errors import InputError

MODEL_INPUTS = ("input_ids", "input_mask", "segment_ids",
                "masked_lm_positions")


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
    manifest: from pipeline.stage.read_input(dir, "create_pretraining_data").
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


def per_rank_batch_size(global_batch_size, world_size,
                        gradient_accumulation_steps):
  """Examples per rank per micro-step; the global batch must split evenly."""
  parts = world_size * gradient_accumulation_steps
  if global_batch_size <= 0 or global_batch_size % parts:
    raise ValueError(f"train_batch_size {global_batch_size} is not a positive "
                     f"multiple of world size x gradient_accumulation_steps "
                     f"= {world_size} x {gradient_accumulation_steps}")
  return global_batch_size // parts


def gelu_convention_for(init_checkpoint):
  """"google" when initialising from a Google TF1 checkpoint, else "hf".

  The bert_config.json shipped with Google's checkpoints means the tanh
  GELU by "gelu" (see bert_lib.BertConfig.from_dict).
  """
  if not init_checkpoint:
    return "hf"
  try:
    fmt, _ = checkpoints.resolve_checkpoint(init_checkpoint)
  except ValueError as e:
    raise InputError(init_checkpoint, str(e)) from None
  return "google" if fmt == "tf1" else "hf"


def prepare_output(out, world):
  """Rank 0 claims a stage.StageOutput; every rank learns if it is complete.

  A refusal (another config, without --overwrite) is raised as InputError on
  rank 0; the other ranks exit with status 1 rather than wait for it.
  """
  result = (False, None)
  if world.is_chief:
    try:
      result = (out.prepare(), None)
    except InputError as e:
      result = (False, (e.path, e.cause))  # InputError itself won't pickle.
  complete, error = world.broadcast_object(result)
  if error:
    if world.is_chief:
      raise InputError(*error)
    sys.exit(1)
  return complete


def run_files(output_dir):
  """Files a finished run's manifest lists: config, results, final weights."""
  latest = tf.train.latest_checkpoint(os.path.join(output_dir, "checkpoints"))
  names = [os.path.relpath(p, output_dir) for p in glob.glob(latest + ".*")]
  return ["train_config.json", "eval_results.json",
          "checkpoints/bert_config.json"] + sorted(names)
