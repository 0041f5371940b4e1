"""One entry point for every checkpoint format: what is at this path?

resolve_checkpoint tells Google TF1 prefixes, Hugging Face safetensors and
this project's own trainer checkpoints apart by what the path holds;
load_checkpoint hands the path to that format's reader (google.py, hf.py,
training.py). Pickle files are refused (hf.refuse_pickle).
"""

import glob
import os

import tensorflow as tf

from modeling.checkpoints import google
from modeling.checkpoints import hf
from modeling.checkpoints import training
from modeling.networks import bert as bert_lib


def _tf_prefix_in_directory(directory):
  """The latest (or only) TF checkpoint prefix in `directory`, or None."""
  latest = tf.train.latest_checkpoint(directory)
  if latest:
    return latest
  indexes = sorted(glob.glob(os.path.join(directory, "*.index")))
  return indexes[0][:-len(".index")] if len(indexes) == 1 else None


def _tf_prefix_format(prefix):
  shapes = google.read_tf_checkpoint(prefix).get_variable_to_shape_map()
  return ("own" if google.is_object_based(shapes) else "tf1"), prefix


def _resolve_directory(path):
  """(format or None, path) for a directory."""
  # A training run's output directory keeps its checkpoints in checkpoints/.
  run_checkpoints = os.path.join(path, training.CHECKPOINTS)
  if os.path.isdir(run_checkpoints) and _tf_prefix_in_directory(
      run_checkpoints):
    path = run_checkpoints
  if glob.glob(os.path.join(path, "model.safetensors*")):
    return "hf", path
  prefix = _tf_prefix_in_directory(path)
  if prefix:
    return _tf_prefix_format(prefix)
  if hf.has_pickle_files(path):
    hf.refuse_pickle(path)
  return None, path


def resolve_checkpoint(path):
  """Returns (format, path) for what load_checkpoint would load.

  format is "tf1" (Google's name-based TF1 layout), "hf" (safetensors) or
  "own" (this project's trainer checkpoints, or a Keras .weights.h5); path is
  the prefix/file/directory that format's loader takes.

  Raises:
    ValueError: pickle files, or nothing loadable at `path`.
  """
  path = os.fspath(path)
  if path.endswith(hf.PICKLE_SUFFIXES):
    hf.refuse_pickle(path)
  if path.endswith((".safetensors", ".safetensors.index.json")):
    return "hf", path
  if path.endswith(".weights.h5"):
    return "own", path
  if os.path.exists(path + ".index"):
    return _tf_prefix_format(path)
  fmt = None
  if os.path.isdir(path):
    fmt, path = _resolve_directory(path)
  if fmt is None:
    raise ValueError(f"checkpoint {path}: not a TF checkpoint prefix, "
                     "safetensors file or a directory holding one")
  return fmt, path


def load_checkpoint(model, path):
  """Loads weights from any supported checkpoint, chosen by what `path` is.

  * a TF1 prefix (`path + ".index"` exists), or a directory holding one
    (Google's downloads: bert_model.ckpt.*);
  * a `.safetensors` file, or a directory with model.safetensors;
  * our own trainer checkpoints: a prefix, the checkpoints/ directory or the
    training run's output directory (its latest checkpoint), or a Keras
    `.weights.h5` file;
  * pickle files (.bin/.pt/.pth) are refused with a conversion hint.

  Returns:
    name_map.LoadResult.
  """
  fmt, path = resolve_checkpoint(path)
  if fmt == "hf":
    return hf.load_safetensors(model, path)
  if fmt == "tf1":
    return google.load_tf1_checkpoint(model, path)
  return training.load_model_weights(model, path)


def stored_config(path):
  """The BertConfig stored beside a checkpoint (ours, Google's or HF's).

  Raises:
    ValueError: nothing loadable at `path`, or no config file beside it.
  """
  fmt, resolved = resolve_checkpoint(path)
  directory = resolved if os.path.isdir(resolved) else os.path.dirname(resolved)
  if fmt == "hf":
    name, convention = "config.json", "hf"
  elif fmt == "tf1":
    name, convention = "bert_config.json", "google"
  else:
    name, convention = training.CONFIG_FILE, "hf"
  config_path = os.path.join(directory, name)
  if not os.path.isfile(config_path):
    raise ValueError(f"checkpoint {path}: no {name} beside the weights (pass the config)")
  return bert_lib.BertConfig.from_json_file(config_path, convention)
