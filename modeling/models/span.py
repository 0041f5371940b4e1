"""Extractive QA with BERT: building, loading and saving span models.

Shape legend: B=batch, S=sequence length.

The model is heads.BertSpanLabeler (encoder + dense H->2 on every token):
called with {input_ids, input_mask, segment_ids} int [B,S] it returns the
BertModel dict plus start_logits and end_logits float32 [B,S]. Its head
carries run_squad.py's names (cls/squad/output_weights [2,H]) in Google's
layout and BertForQuestionAnswering's (qa_outputs.*) in Hugging Face's, so
loading.load_checkpoint fills it from a pre-trained encoder (the head keeps
its init) or from a fine-tuned span model (everything).

A saved span model directory (save_span_model, model_dirs) holds
bert_config.json, span.json (step, free-form info such as the dev F1 that
selected it) and the weights; load_span_model rebuilds it from those alone,
or from a training run's directory / any checkpoint holding a span head.
"""

import os

import tensorflow as tf

from modeling.checkpoints import hf
from modeling.checkpoints import loading
from modeling.checkpoints import model_dirs
from modeling.checkpoints import training as training_checkpoints
from modeling.models import heads
from modeling.networks import bert as bert_lib
from pipeline.records.schema import QA_MODEL_INPUTS as MODEL_INPUTS

SPAN_FILE = "span.json"
NEG_INF = -10000.0  # Added to padding positions' logits (float32-safe, as BERT's mask).


def build_span_model(bert_config, dtype=None, init_checkpoint=None):
  """A built BertSpanLabeler, optionally initialised from any checkpoint the project reads.

  Raises:
    ValueError: bad config, or a checkpoint that does not fit the model.
  """
  if isinstance(bert_config, str):
    bert_config = bert_lib.load_config(bert_config)
  model = heads.BertSpanLabeler(bert_config, dtype=dtype)
  model.build(None)
  if init_checkpoint:
    loading.load_checkpoint(model, init_checkpoint)
  return model


def model_inputs(batch):
  """The encoder inputs of a batch dict (positions, teacher logits dropped)."""
  return {k: batch[k] for k in MODEL_INPUTS}


def masked_span_logits(model, batch, training=False):
  """(start, end) float32 [B,S] logits with the padding positions at NEG_INF."""
  outputs = model(model_inputs(batch), training=training)
  return (mask_padding(outputs["start_logits"], batch["input_mask"]),
          mask_padding(outputs["end_logits"], batch["input_mask"]))


def mask_padding(logits, input_mask):
  """logits float32 [B,S]; input_mask int [B,S] (1 = real token)."""
  return logits + (1.0 - tf.cast(input_mask, logits.dtype)) * NEG_INF


def save_span_model(model, directory, info=None, step=0, extra_files=None):
  """Writes `model` as a self-describing span model directory; returns its prefix."""
  if not isinstance(model, heads.BertSpanLabeler):
    raise TypeError(f"expected a BertSpanLabeler, got {type(model).__name__}")
  card = {"head": "span", "step": step, "info": info or {}}
  return model_dirs.write_model_dir(model, directory, SPAN_FILE, card, step, extra_files)


def holds_span_head(path):
  """True if the checkpoint at `path` stores a span head (any format)."""
  path = os.fspath(path)
  if model_dirs.has_card(path, SPAN_FILE):
    return True
  fmt, resolved = loading.resolve_checkpoint(path)
  if fmt == "hf":
    return hf.tensor_shape(resolved, "qa_outputs.weight") is not None
  if fmt == "tf1":
    return "cls/squad/output_weights" in tf.train.load_checkpoint(
        resolved).get_variable_to_shape_map()
  if resolved.endswith(".weights.h5"):
    return False
  if os.path.isdir(resolved):
    resolved = tf.train.latest_checkpoint(resolved) or resolved
  source = training_checkpoints.stored_model(resolved, bert_lib.BertConfig())
  return isinstance(source, heads.BertSpanLabeler)


def load_span_model(path, config=None, dtype=None):
  """A BertSpanLabeler rebuilt from a stored span model, weights loaded.

  Args:
    path: a save_span_model directory, a QA run's output directory (its
      latest checkpoint), or any checkpoint holding a span head.
    config: the BertConfig, when none is stored beside the weights.
  Raises:
    ValueError: nothing loadable, no span head, or weights that do not fit.
  """
  config = config or loading.stored_config(path)
  if not holds_span_head(path):
    raise ValueError(f"checkpoint {path}: holds no span (QA) head")
  return build_span_model(config, dtype, init_checkpoint=path)

