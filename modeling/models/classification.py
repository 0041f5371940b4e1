"""Sequence classification with BERT: building, loading and saving classifiers.

Shape legend: B=batch, S=sequence length, H=hidden size, C=number of labels.

The model is heads.BertClassifier (encoder + pooler + dropout + dense H->C):
called with {input_ids, input_mask, segment_ids} int [B,S] it returns the
BertModel dict plus "logits" float32 [B,C]; `logits(model, batch)` returns
just those. Its variables carry run_classifier.py's names (output_weights /
output_bias) in Google's layout and BertForSequenceClassification's
(classifier.*) in Hugging Face's, so loading.load_checkpoint fills it
from any checkpoint the project reads:

  * a pretraining / distillation run or Google / HF pre-trained weights:
    the encoder (and pooler) are loaded, the classifier keeps its init;
  * a fine-tuned classifier (our runs, a `best/` directory, Google's
    run_classifier output, HF BertForSequenceClassification): everything.

A saved classifier directory (save_classifier) holds
  bert_config.json   the encoder's config (HF "gelu")
  classifier.json    num_labels, dropout_rate, label names, free-form info
  model.ckpt-<step>.index/.data-*   tf.train.Checkpoint(model=...) weights
and load_classifier(directory) rebuilds the model from those alone.
"""

import os

import tensorflow as tf

from modeling.checkpoints import hf
from modeling.checkpoints import loading
from modeling.checkpoints import model_dirs
from modeling.checkpoints import name_map
from modeling.checkpoints import training as training_checkpoints
from modeling.models import heads
from modeling.networks import bert as bert_lib
from pipeline.records.schema import CLASSIFICATION_MODEL_INPUTS as MODEL_INPUTS

CLASSIFIER_FILE = "classifier.json"
CONFIG_FILE = training_checkpoints.CONFIG_FILE


def build_classifier(bert_config, num_labels, dropout_rate=None, dtype=None,
                     init_checkpoint=None):
  """A built BertClassifier, optionally initialised from a checkpoint.

  Args:
    bert_config: BertConfig, its dict, a bert_config.json path or a bundled
      config name.
    num_labels: C.
    dropout_rate: before the classifier dense; default the config's hidden
      dropout (as run_classifier.py).
    dtype: Keras dtype policy ("float32", "mixed_bfloat16", ...).
    init_checkpoint: any checkpoint load_checkpoint reads (see module doc
      and load_weights).

  Raises:
    ValueError: bad config, or a checkpoint that does not fit the model.
  """
  if isinstance(bert_config, str):
    bert_config = bert_lib.load_config(bert_config)
  model = heads.BertClassifier(bert_config, num_labels,
                               dropout_rate=dropout_rate, dtype=dtype)
  model.build(None)
  if init_checkpoint:
    load_weights(model, init_checkpoint)
  return model


def model_inputs(batch):
  """The encoder inputs of a batch dict (labels, teacher logits dropped)."""
  return {k: batch[k] for k in MODEL_INPUTS}


def logits(model, batch, training=False):
  """float32 [B,C] logits of a BertClassifier for a batch dict."""
  return model(model_inputs(batch), training=training)["logits"]


def load_weights(model, path):
  """Loads any supported checkpoint into a BertClassifier.

  A stored classifier head with another number of labels (a model
  fine-tuned on another task) is left out: the encoder and pooler load,
  the head keeps its init and is listed as ignored.

  Returns:
    name_map.LoadResult.
  Raises:
    ValueError: a checkpoint that does not fit the model.
  """
  bert_lib.ensure_built(model)
  stored = stored_num_labels(path)
  if stored is None or stored == model.num_labels:
    return loading.load_checkpoint(model, path)
  source = build_classifier(model.config, stored, init_checkpoint=path)
  targets = name_map.tf1_variable_map(model)
  loaded = []
  for name, variable in name_map.tf1_variable_map(source).items():
    if name.startswith("bert/"):
      targets[name].assign(variable)
      loaded.append(name)
  return name_map.LoadResult(loaded=loaded,
                             ignored=[n for n in targets if n not in loaded])


# --- Whole-classifier save / restore ----------------------------------------


def save_classifier(model, directory, labels=None, info=None, step=0,
                    extra_files=None):
  """Writes `model` as a self-describing classifier directory (model_dirs).

  Args:
    model: a BertClassifier.
    directory: output directory (an existing one is replaced atomically).
    labels: optional label names (index i = class i).
    info: optional JSON-able dict stored in classifier.json (e.g. the metric
      that selected this checkpoint).
    step: the training step, part of the weights' file name.
    extra_files: optional {file name: text} written into the directory.
  Returns:
    The weights' checkpoint prefix.
  """
  if not isinstance(model, heads.BertClassifier):
    raise TypeError(f"expected a BertClassifier, got {type(model).__name__}")
  meta = {"num_labels": model.num_labels, "dropout_rate": model.dropout_rate,
          "labels": list(labels) if labels is not None else None,
          "step": step, "info": info or {}}
  return model_dirs.write_model_dir(model, directory, CLASSIFIER_FILE, meta, step,
                                    extra_files)


def recover_interrupted_save(directory):
  """Cleans up after a killed save_classifier (model_dirs.recover_interrupted)."""
  model_dirs.recover_interrupted(directory, CLASSIFIER_FILE)


def read_classifier_info(directory):
  """classifier.json of a save_classifier directory (ValueError if absent)."""
  return model_dirs.read_card(directory, CLASSIFIER_FILE, "classifier")


def stored_num_labels(path):
  """C of the classifier stored at `path`, or None if it holds no classifier.

  Reads classifier.json when there is one, else the classifier kernel's
  shape in any checkpoint format.
  """
  path = os.fspath(path)
  if model_dirs.has_card(path, CLASSIFIER_FILE):
    return int(read_classifier_info(path)["num_labels"])
  fmt, resolved = loading.resolve_checkpoint(path)
  if fmt == "hf":
    return _hf_num_labels(resolved)
  if fmt == "tf1":
    shapes = tf.train.load_checkpoint(resolved).get_variable_to_shape_map()
    shape = shapes.get("output_weights")  # run_classifier: [C,H]
    return int(shape[0]) if shape else None
  return _own_num_labels(resolved)


def _hf_num_labels(path):
  shape = hf.tensor_shape(path, "classifier.weight")  # [C,H]
  return int(shape[0]) if shape else None


def _own_num_labels(prefix):
  if prefix.endswith(".weights.h5"):
    return None
  if os.path.isdir(prefix):
    prefix = tf.train.latest_checkpoint(prefix) or prefix
  config = bert_lib.BertConfig()  # Only the head's class matters here.
  source = training_checkpoints.stored_model(prefix, config)
  return source.num_labels if isinstance(source, heads.BertClassifier) else None


def load_classifier(path, dtype=None, num_labels=None, config=None):
  """A BertClassifier rebuilt from a stored classifier, weights loaded.

  Args:
    path: a save_classifier directory, a fine-tuning run's output directory
      (its latest checkpoint), or any checkpoint holding a classifier.
    dtype: Keras dtype policy of the rebuilt model.
    num_labels, config: override what is read from `path` (needed when
      `path` has no classifier head or no config file beside it).
  Raises:
    ValueError: nothing loadable, no classifier head and no num_labels, or
      weights that do not fit.
  """
  config = config or loading.stored_config(path)
  num_labels = num_labels or stored_num_labels(path)
  if not num_labels:
    raise ValueError(f"checkpoint {path}: holds no classifier head (pass "
                     "num_labels to start a new one)")
  dropout_rate = None
  if model_dirs.has_card(path, CLASSIFIER_FILE):
    dropout_rate = read_classifier_info(path)["dropout_rate"]
  return build_classifier(config, num_labels, dropout_rate, dtype,
                          init_checkpoint=path)
