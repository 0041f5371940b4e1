"""SavedModel export of a pretrained BERT for serving and for the teacher.

Signatures (all inputs int32 [B,S], positions [B,P]; outputs float32):
  serving_default: input_ids, input_mask, segment_ids, masked_lm_positions
                   -> mlm_logits [B,P,V], nsp_logits [B,2]
  encoder:         input_ids, input_mask, segment_ids
                   -> sequence_output [B,S,H], pooled_output [B,H]

The exported graph is always float32, whatever precision trained it: the
weights are copied into a fresh float32 model first.
"""

import os
import shutil

import keras
import tensorflow as tf

from modeling.networks import bert as bert_lib
from modeling.models import heads
from pipeline.core import stage


def _spec(name):
  return tf.TensorSpec([None, None], tf.int32, name=name)


_ENCODER_INPUTS = ("input_ids", "input_mask", "segment_ids")


def _endpoints(model):
  """(name, fn, input signature) of each signature of a BertPretrainer."""

  def pretraining(input_ids, input_mask, segment_ids, masked_lm_positions):
    outputs = model({"input_ids": input_ids, "input_mask": input_mask,
                     "segment_ids": segment_ids,
                     "masked_lm_positions": masked_lm_positions},
                    training=False)
    return {"mlm_logits": outputs["mlm_logits"],
            "nsp_logits": outputs["nsp_logits"]}

  def encoder(input_ids, input_mask, segment_ids):
    outputs = model.bert({"input_ids": input_ids, "input_mask": input_mask,
                          "segment_ids": segment_ids}, training=False)
    return {"sequence_output": outputs["sequence_output"],
            "pooled_output": outputs["pooled_output"]}

  return [("serving_default", pretraining,
           [_spec(n) for n in _ENCODER_INPUTS + ("masked_lm_positions",)]),
          ("encoder", encoder, [_spec(n) for n in _ENCODER_INPUTS])]


def float32_copy(model):
  """A float32 BertPretrainer with `model`'s weights (any dtype policy)."""
  copy = bert_lib.ensure_built(heads.BertPretrainer(model.config,
                                                    dtype="float32"))
  copy.set_weights(bert_lib.ensure_built(model).get_weights())
  return copy


def export_saved_model(model, export_dir):
  """Writes a BertPretrainer as a SavedModel; returns export_dir.

  Written to a sibling temp directory and renamed, so export_dir is either
  absent or complete; an existing export_dir is replaced.
  """
  if not isinstance(model, heads.BertPretrainer):
    raise TypeError(f"expected a BertPretrainer, got {type(model).__name__}")
  export_dir = os.path.abspath(export_dir)
  tmp = f"{export_dir}.tmp.{os.getpid()}"
  shutil.rmtree(tmp, ignore_errors=True)
  serving = float32_copy(model)
  # Keras' ExportArchive: tf.saved_model.save cannot walk a Keras 3 model.
  archive = keras.export.ExportArchive()
  archive.track(serving)
  for name, fn, signature in _endpoints(serving):
    archive.add_endpoint(name, fn, input_signature=signature)
  archive.write_out(tmp, verbose=False)
  model.config.to_json_file(os.path.join(tmp, "bert_config.json"))
  stage.replace_directory(tmp, export_dir)
  return export_dir
