"""Google's TF1 BERT checkpoints (`bert_model.ckpt.index/.data-*`).

Read by variable name with tf.train.load_checkpoint, written with a TF1
Saver so the names stay exactly Google's; a `bert_config.json` beside the
prefix is checked on load (with Google's meaning of "gelu", the tanh form).
"""

import os
import re

import tensorflow as tf

from modeling.checkpoints import name_map
from modeling.networks import bert as bert_lib

# Optimizer state and bookkeeping found in training checkpoints.
_TF1_IGNORED = re.compile(
    r"(^|/)(global_step|adam_m|adam_v|Adam|Adam_1|beta1_power|beta2_power|"
    r"Momentum|loss_scale|good_steps|current_loss_scale)$")


def read_tf_checkpoint(ckpt_prefix):
  """tf.train.load_checkpoint; an unreadable prefix raises ValueError."""
  try:
    return tf.train.load_checkpoint(ckpt_prefix)
  except (tf.errors.OpError, ValueError) as e:
    raise ValueError(f"checkpoint {ckpt_prefix}: not a readable TF "
                     f"checkpoint ({e})") from None


def is_object_based(shapes):
  """True for a TF2 object-based checkpoint's {name: shape}, False for TF1."""
  # tf.train.Checkpoint (TF2 / Keras) bundles carry their object graph.
  return "_CHECKPOINTABLE_OBJECT_GRAPH" in shapes


def load_tf1_checkpoint(model, ckpt_prefix):
  """Loads Google's TF1 BERT checkpoint (e.g. ".../bert_model.ckpt").

  Args:
    model: BertModel, BertPretrainer, BertClassifier or BertSpanLabeler.
      `cls/*` entries are skipped for models without pre-training heads,
      run_classifier's `output_weights/output_bias` for models that are not
      classifiers, run_squad's `cls/squad/*` for models without a span head.
    ckpt_prefix: the prefix, without ".index". A `bert_config.json` beside it
      is checked against the model's config.

  Returns:
    name_map.LoadResult(loaded=[names], ignored=[names]).

  Raises:
    ValueError: listing all missing/unexpected/mis-shaped variables.
  """
  ckpt_prefix = os.fspath(ckpt_prefix)
  reader = read_tf_checkpoint(ckpt_prefix)
  shapes = reader.get_variable_to_shape_map()
  if is_object_based(shapes):
    raise ValueError(f"checkpoint {ckpt_prefix}: a TF2 object-based "
                     "checkpoint, not Google's TF1 name-based layout")
  skipped = name_map.absent_head_prefixes(model, "cls/", ["output_weights", "output_bias"],
                                          ["cls/squad/"])
  plan = name_map.plan_load(
      name_map.model_params(model), shapes, "tf1",
      lambda name: bool(_TF1_IGNORED.search(name)) or name.startswith(skipped))
  # Google's bert_config.json means the tanh GELU by "gelu": a model built
  # from it with the default (erf) reading is reported as a mismatch.
  config_path = os.path.join(os.path.dirname(ckpt_prefix), "bert_config.json")
  plan.problems["config mismatch"] += name_map.config_problems(
      config_path, bert_lib.backbone(model).config, "google")
  plan.raise_if_problems(ckpt_prefix)
  return name_map.assign(plan, reader.get_tensor, "tf1")


def save_tf1_checkpoint(model, ckpt_prefix, write_config=True):
  """Writes the model under Google's TF1 variable names.

  tf.compat.v1.train.Saver with an explicit {name: variable} dict keeps the
  names exactly (tf.train.Checkpoint would write object paths such as
  "model/bert/.../.ATTRIBUTES/VARIABLE_VALUE", which Google's code and
  init_from_checkpoint cannot map).

  Args:
    model: BertModel, BertPretrainer or BertClassifier.
    ckpt_prefix: e.g. "out/bert_model.ckpt".
    write_config: also write Google's `bert_config.json` beside it (with
      Google's meaning of "gelu", the tanh form; an exact-erf model raises
      ValueError, as Google's code cannot run it).

  Returns:
    The checkpoint prefix written.
  """
  ckpt_prefix = os.fspath(ckpt_prefix)
  config = bert_lib.backbone(model).config
  google_config = config.to_json_string("google") if write_config else None
  directory = os.path.dirname(ckpt_prefix)
  if directory:
    os.makedirs(directory, exist_ok=True)
  named = {}
  for param in name_map.model_params(model):
    value = param.variable.numpy()
    named[param.tf1_name] = tf.Variable(
        value.T if param.tf1_transposed else value, trainable=False)
  saver = tf.compat.v1.train.Saver(var_list=named)
  path = saver.save(None, ckpt_prefix, write_meta_graph=False)
  if write_config:
    with open(os.path.join(directory, "bert_config.json"), "w",
              encoding="utf-8") as f:
      f.write(google_config)
  return path
