"""Import (and export) pre-trained BERT weights.

Formats:
  * Google's original TF1 checkpoints (`bert_model.ckpt.index/.data-*`), read
    by variable name with tf.train.load_checkpoint.
  * Hugging Face safetensors (`model.safetensors` [+ config.json]), read with
    safetensors.numpy. Pickle-based PyTorch files are refused: unpickling runs
    arbitrary code.

Loading is strict and atomic: every model variable must be found with the
right shape and every checkpoint entry must be used (optimizer slots and heads
the model does not have excepted); otherwise one ValueError lists all
problems and no variable is changed.

Shape legend: H=hidden size, V=vocab size, C=number of labels.
"""

import collections
import glob
import json
import os
import re

import numpy as np
import safetensors
from safetensors import numpy as safetensors_numpy
import tensorflow as tf

from modeling.networks import bert as bert_lib
from modeling.models import heads

# One model variable and where it lives in each format. `*_transposed` means
# the stored array is the transpose of the Keras variable: PyTorch Linear
# weights are [out,in] while Keras kernels are [in,out]; Google also stores
# its NSP/classifier `output_weights` as [out,in].
Param = collections.namedtuple(
    "Param", "tf1_name hf_name variable tf1_transposed hf_transposed required")

LoadResult = collections.namedtuple("LoadResult", "loaded ignored")

_PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle")
_MAX_LISTED = 20

# Optimizer state and bookkeeping found in training checkpoints.
_TF1_IGNORED = re.compile(
    r"(^|/)(global_step|adam_m|adam_v|Adam|Adam_1|beta1_power|beta2_power|"
    r"Momentum|loss_scale|good_steps|current_loss_scale)$")
# Non-parameter buffers that HF saves.
_HF_IGNORED = re.compile(r"^bert\.embeddings\.position_ids$")


def _param(tf1, hf, variable, tf1_transposed=False, hf_transposed=False,
           required=True):
  return Param(tf1, hf, variable, tf1_transposed, hf_transposed, required)


def _dense_params(tf1_kernel, tf1_bias, hf, dense, tf1_transposed=False,
                  required=True):
  """Kernel [in,out] + bias [out]; HF stores the kernel as [out,in]."""
  return [
      _param(tf1_kernel, f"{hf}.weight", dense.kernel, tf1_transposed, True,
             required),
      _param(tf1_bias, f"{hf}.bias", dense.bias, required=required),
  ]


def _tf1_dense_params(tf1, hf, dense):
  """A tf.layers.dense scope: `<tf1>/kernel` and `<tf1>/bias`."""
  return _dense_params(f"{tf1}/kernel", f"{tf1}/bias", hf, dense)


def _layer_norm_params(tf1, hf, layer_norm):
  return [_param(f"{tf1}/gamma", f"{hf}.weight", layer_norm.gamma),
          _param(f"{tf1}/beta", f"{hf}.bias", layer_norm.beta)]


def _encoder_layer_params(index, layer):
  tf1, hf = f"bert/encoder/layer_{index}", f"bert.encoder.layer.{index}"
  attention = layer.attention
  params = []
  for name in ("query", "key", "value"):
    params += _tf1_dense_params(f"{tf1}/attention/self/{name}",
                                f"{hf}.attention.self.{name}",
                                getattr(attention, name))
  params += _tf1_dense_params(f"{tf1}/attention/output/dense",
                              f"{hf}.attention.output.dense",
                              layer.attention_output)
  params += _layer_norm_params(f"{tf1}/attention/output/LayerNorm",
                               f"{hf}.attention.output.LayerNorm",
                               layer.attention_layer_norm)
  params += _tf1_dense_params(f"{tf1}/intermediate/dense",
                              f"{hf}.intermediate.dense", layer.intermediate)
  params += _tf1_dense_params(f"{tf1}/output/dense", f"{hf}.output.dense",
                              layer.output_dense)
  params += _layer_norm_params(f"{tf1}/output/LayerNorm",
                               f"{hf}.output.LayerNorm",
                               layer.output_layer_norm)
  return params


def _backbone_params(model):
  embeddings = model.embeddings
  params = [
      _param("bert/embeddings/word_embeddings",
             "bert.embeddings.word_embeddings.weight",
             embeddings.word_embeddings),
      _param("bert/embeddings/position_embeddings",
             "bert.embeddings.position_embeddings.weight",
             embeddings.position_embeddings),
      _param("bert/embeddings/token_type_embeddings",
             "bert.embeddings.token_type_embeddings.weight",
             embeddings.token_type_embeddings),
  ]
  params += _layer_norm_params("bert/embeddings/LayerNorm",
                               "bert.embeddings.LayerNorm",
                               embeddings.layer_norm)
  for index, layer in enumerate(model.encoder_layers):
    params += _encoder_layer_params(index, layer)
  params += _tf1_dense_params("bert/pooler/dense", "bert.pooler.dense",
                              model.pooler)
  return params


def _pretrainer_head_params(model):
  mlm = model.masked_lm
  params = _tf1_dense_params("cls/predictions/transform/dense",
                             "cls.predictions.transform.dense", mlm.transform)
  params += _layer_norm_params("cls/predictions/transform/LayerNorm",
                               "cls.predictions.transform.LayerNorm",
                               mlm.layer_norm)
  params.append(_param("cls/predictions/output_bias", "cls.predictions.bias",
                       mlm.output_bias))
  # Google stores output_weights as [2,H]; the Keras kernel is [H,2].
  params += _dense_params("cls/seq_relationship/output_weights",
                          "cls/seq_relationship/output_bias",
                          "cls.seq_relationship", model.next_sentence,
                          tf1_transposed=True)
  return params


def _classifier_head_params(model):
  # run_classifier.py / BertForSequenceClassification names. Optional: a
  # pre-training checkpoint has no classifier, which then keeps its init.
  return _dense_params("output_weights", "output_bias", "classifier",
                       model.classifier, tf1_transposed=True, required=False)


def model_params(model):
  """Lists every variable of a BertModel/BertPretrainer/BertClassifier.

  Builds the model first if needed. The order is Google's variable order.
  """
  bert_lib.ensure_built(model)
  params = _backbone_params(bert_lib.backbone(model))
  if isinstance(model, heads.BertPretrainer):
    params += _pretrainer_head_params(model)
  elif isinstance(model, heads.BertClassifier):
    params += _classifier_head_params(model)
  return params


def tf1_variable_map(model):
  """Maps Google TF1 variable names to the model's Keras variables."""
  return {p.tf1_name: p.variable for p in model_params(model)}


def _absent_head_prefixes(model, pretrainer_prefix, classifier_prefixes):
  """Checkpoint name prefixes of heads that `model` doesn't have (skipped)."""
  prefixes = []
  if not isinstance(model, heads.BertPretrainer):
    prefixes.append(pretrainer_prefix)
  if not isinstance(model, heads.BertClassifier):
    prefixes += classifier_prefixes
  return tuple(prefixes)


def _stored_name(param, fmt):
  return param.tf1_name if fmt == "tf1" else param.hf_name


def _is_transposed(param, fmt):
  return param.tf1_transposed if fmt == "tf1" else param.hf_transposed


def _stored_shape(param, fmt):
  shape = tuple(param.variable.shape)
  return shape[::-1] if _is_transposed(param, fmt) else shape


def _short_list(items):
  items = list(items)
  shown = ", ".join(items[:_MAX_LISTED])
  if len(items) > _MAX_LISTED:
    shown += f", ... and {len(items) - _MAX_LISTED} more"
  return f"[{shown}]"


class _Plan:
  """Which stored entries fill which variables, and what does not fit."""

  def __init__(self):
    self.matched = []  # Params whose stored entry has the right shape.
    self.ignored = []
    self.problems = collections.OrderedDict(
        (label, []) for label in ("missing", "unexpected", "shape mismatch",
                                  "config mismatch", "other"))

  def raise_if_problems(self, path):
    sections = [f"{label} {_short_list(items)}"
                for label, items in self.problems.items() if items]
    if sections:
      raise ValueError(f"checkpoint {path}: " + "; ".join(sections))


def _plan_load(params, stored_shapes, fmt, is_ignored):
  """Matches model params against {stored name: shape}."""
  plan = _Plan()
  by_name = {_stored_name(p, fmt): p for p in params}
  for name, param in by_name.items():
    if name not in stored_shapes:
      if param.required:
        plan.problems["missing"].append(name)
      continue
    stored, expected = tuple(stored_shapes[name]), _stored_shape(param, fmt)
    if stored != expected:
      plan.problems["shape mismatch"].append(
          f"{name}: ckpt {stored} vs model {expected}")
    else:
      plan.matched.append(param)
  for name in stored_shapes:
    if name not in by_name:
      target = plan.ignored if is_ignored(name) else plan.problems[
          "unexpected"]
      target.append(name)
  return plan


def _assign(plan, read, fmt):
  """Copies stored values (from `read(name)`) into the matched variables."""
  for param in plan.matched:
    value = np.asarray(read(_stored_name(param, fmt)))
    if _is_transposed(param, fmt):
      value = value.T
    param.variable.assign(value.astype(param.variable.dtype))
  return LoadResult(loaded=[_stored_name(p, fmt) for p in plan.matched],
                    ignored=plan.ignored)


_ARCH_FIELDS = ("vocab_size", "hidden_size", "num_hidden_layers",
                "num_attention_heads", "intermediate_size", "hidden_act",
                "max_position_embeddings", "type_vocab_size",
                "layer_norm_eps")


def _config_problems(config_path, model_config, gelu_convention):
  """Compares a config file found beside the weights with the model's.

  Shapes cannot reveal a different head count or activation, the file can.
  `gelu_convention` is whose "gelu" the file means (bert_lib.from_dict).
  """
  if not config_path or not os.path.exists(config_path):
    return []
  try:
    stored = bert_lib.BertConfig.from_json_file(config_path, gelu_convention)
  except ValueError as e:
    return [str(e)]
  file_name = os.path.basename(config_path)
  problems = []
  for field in _ARCH_FIELDS:
    theirs, ours = getattr(stored, field), getattr(model_config, field)
    if theirs != ours:
      problems.append(f"{field}: {file_name} {theirs!r} vs model {ours!r}")
  return problems


def _tf1_reader(ckpt_prefix):
  try:
    return tf.train.load_checkpoint(ckpt_prefix)
  except (tf.errors.OpError, ValueError) as e:
    raise ValueError(f"checkpoint {ckpt_prefix}: not a readable TF "
                     f"checkpoint ({e})") from None


def _is_object_based(shapes):
  # tf.train.Checkpoint (TF2 / Keras) bundles carry their object graph.
  return "_CHECKPOINTABLE_OBJECT_GRAPH" in shapes


def load_google_tf1_checkpoint(model, ckpt_prefix):
  """Loads Google's TF1 BERT checkpoint (e.g. ".../bert_model.ckpt").

  Args:
    model: BertModel, BertPretrainer or BertClassifier. `cls/*` entries are
      skipped for models without pre-training heads, and run_classifier's
      `output_weights/output_bias` for models that are not classifiers.
    ckpt_prefix: the prefix, without ".index". A `bert_config.json` beside it
      is checked against the model's config.

  Returns:
    LoadResult(loaded=[names], ignored=[names]).

  Raises:
    ValueError: listing all missing/unexpected/mis-shaped variables.
  """
  ckpt_prefix = os.fspath(ckpt_prefix)
  reader = _tf1_reader(ckpt_prefix)
  shapes = reader.get_variable_to_shape_map()
  if _is_object_based(shapes):
    raise ValueError(f"checkpoint {ckpt_prefix}: a TF2 object-based "
                     "checkpoint, not Google's TF1 name-based layout")
  skipped = _absent_head_prefixes(model, "cls/",
                                  ["output_weights", "output_bias"])
  plan = _plan_load(
      model_params(model), shapes, "tf1",
      lambda name: bool(_TF1_IGNORED.search(name)) or name.startswith(skipped))
  # Google's bert_config.json means the tanh GELU by "gelu": a model built
  # from it with the default (erf) reading is reported as a mismatch.
  config_path = os.path.join(os.path.dirname(ckpt_prefix), "bert_config.json")
  plan.problems["config mismatch"] += _config_problems(
      config_path, bert_lib.backbone(model).config, "google")
  plan.raise_if_problems(ckpt_prefix)
  return _assign(plan, reader.get_tensor, "tf1")


def save_google_tf1_checkpoint(model, ckpt_prefix, write_config=True):
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
  for param in model_params(model):
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


def _refuse_pickle(path):
  raise ValueError(
      f"checkpoint {path}: refusing to unpickle a PyTorch checkpoint "
      "(loading pickle can execute arbitrary code). Convert it to "
      "safetensors first, e.g. with transformers: "
      "`BertForPreTraining.from_pretrained(src_dir).save_pretrained("
      "out_dir, safe_serialization=True)`, then load out_dir")


def _has_pickle_files(directory):
  return any(name.endswith(_PICKLE_SUFFIXES) for name in os.listdir(directory))


def _hf_files(directory_or_file):
  """Returns ([safetensors files], config.json path or None)."""
  path = os.fspath(directory_or_file)
  if path.endswith(_PICKLE_SUFFIXES):
    _refuse_pickle(path)
  directory = path if os.path.isdir(path) else os.path.dirname(path)
  if os.path.isdir(path):
    for name in ("model.safetensors", "model.safetensors.index.json"):
      if os.path.exists(os.path.join(path, name)):
        path = os.path.join(path, name)
        break
    else:
      if _has_pickle_files(path):
        _refuse_pickle(path)
      raise ValueError(f"checkpoint {path}: no model.safetensors in directory")
  if not os.path.exists(path):
    raise ValueError(f"checkpoint {path}: no such file")
  files = [path]
  if path.endswith(".index.json"):
    # Sharded: {"weight_map": {tensor name: shard file}}.
    with open(path, encoding="utf-8") as f:
      shards = sorted(set(json.load(f)["weight_map"].values()))
    files = [os.path.join(directory, shard) for shard in shards]
  return files, os.path.join(directory, "config.json")


def _hf_canonical_name(name):
  """Old LayerNorm gamma/beta -> weight/bias; adds the "bert." prefix that
  BertModel (as opposed to BertFor*) checkpoints lack."""
  name = re.sub(r"LayerNorm\.gamma$", "LayerNorm.weight", name)
  name = re.sub(r"LayerNorm\.beta$", "LayerNorm.bias", name)
  if not name.startswith(("bert.", "cls.", "classifier.")):
    name = "bert." + name
  return name


def _read_hf_tensors(files):
  tensors = {}
  for path in files:
    try:
      loaded = safetensors_numpy.load_file(path)
    except (safetensors.SafetensorError, OSError) as e:
      raise ValueError(f"checkpoint {path}: not a readable safetensors file "
                       f"({e})") from None
    for name, value in loaded.items():
      canonical = _hf_canonical_name(name)
      # On a clash keep the original name: it then shows up as unexpected.
      tensors[name if canonical in tensors else canonical] = value
  return tensors


def _untied_decoder_problems(tensors):
  """The decoder is tied to the embeddings in BERT; our model cannot hold
  a different matrix, so a file with one would load wrongly."""
  problems = []
  for copy, source in (("cls.predictions.decoder.weight",
                        "bert.embeddings.word_embeddings.weight"),
                       ("cls.predictions.decoder.bias",
                        "cls.predictions.bias")):
    if copy not in tensors or source not in tensors:
      continue
    if (tensors[copy].shape != tensors[source].shape or
        not np.array_equal(tensors[copy], tensors[source])):
      problems.append(f"{copy} differs from {source} (untied output "
                      "embeddings are not supported)")
  return problems


def load_hf_safetensors(model, directory_or_file):
  """Loads Hugging Face BERT weights from safetensors (never from pickle).

  Args:
    model: BertModel, BertPretrainer or BertClassifier (`cls.*` is skipped
      for models without pre-training heads, `classifier.*` for models that
      are not classifiers).
    directory_or_file: a directory with model.safetensors (or a sharded
      model.safetensors.index.json), or the file itself. A config.json beside
      it is checked against the model's config.

  Returns:
    LoadResult(loaded=[names], ignored=[names]).

  Raises:
    ValueError: for pickle files, and listing all missing/unexpected/
      mis-shaped tensors.
  """
  files, config_path = _hf_files(directory_or_file)
  tensors = _read_hf_tensors(files)
  skipped = _absent_head_prefixes(model, "cls.", ["classifier."])
  tied_copies = ("cls.predictions.decoder.weight",
                 "cls.predictions.decoder.bias")

  def is_ignored(name):
    return (bool(_HF_IGNORED.search(name)) or name.startswith(skipped) or
            name in tied_copies)

  shapes = {name: value.shape for name, value in tensors.items()}
  plan = _plan_load(model_params(model), shapes, "hf", is_ignored)
  if isinstance(model, heads.BertPretrainer):
    plan.problems["other"] += _untied_decoder_problems(tensors)
  plan.problems["config mismatch"] += _config_problems(
      config_path, bert_lib.backbone(model).config, "hf")
  plan.raise_if_problems(os.fspath(directory_or_file))
  return _assign(plan, tensors.__getitem__, "hf")


def _load_own_checkpoint(model, path):
  # The trainer's checkpoint layout lives with the trainer; imported here
  # lazily because that module builds on this one's name mapping.
  from modeling.checkpoints import training_checkpoints  # pylint: disable=import-outside-toplevel
  return training_checkpoints.load_model_weights(model, path)


def _tf_prefix_in_directory(directory):
  """The latest (or only) TF checkpoint prefix in `directory`, or None."""
  latest = tf.train.latest_checkpoint(directory)
  if latest:
    return latest
  indexes = sorted(glob.glob(os.path.join(directory, "*.index")))
  return indexes[0][:-len(".index")] if len(indexes) == 1 else None


def _tf_prefix_format(prefix):
  shapes = _tf1_reader(prefix).get_variable_to_shape_map()
  return ("own" if _is_object_based(shapes) else "tf1"), prefix


def _resolve_directory(path):
  """(format or None, path) for a directory."""
  # A training run's output directory keeps its checkpoints in checkpoints/.
  run_checkpoints = os.path.join(path, "checkpoints")
  if os.path.isdir(run_checkpoints) and _tf_prefix_in_directory(
      run_checkpoints):
    path = run_checkpoints
  if glob.glob(os.path.join(path, "model.safetensors*")):
    return "hf", path
  prefix = _tf_prefix_in_directory(path)
  if prefix:
    return _tf_prefix_format(prefix)
  if _has_pickle_files(path):
    _refuse_pickle(path)
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
  if path.endswith(_PICKLE_SUFFIXES):
    _refuse_pickle(path)
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
    LoadResult.
  """
  fmt, path = resolve_checkpoint(path)
  if fmt == "hf":
    return load_hf_safetensors(model, path)
  if fmt == "tf1":
    return load_google_tf1_checkpoint(model, path)
  return _load_own_checkpoint(model, path)
