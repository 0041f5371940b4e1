"""The one name mapping all checkpoint formats share, and strict loading.

Every model variable has a name in Google's TF1 layout and one in Hugging
Face's; model_params lists them. A loader reads the stored {name: shape},
plan_load matches it against the model's params, and assign copies values
only once the plan has no problems (loading is atomic: every problem is
listed in one ValueError and no variable changes).

The format readers (google.py, hf.py, training.py) build on this module;
it imports none of them.

Shape legend: H=hidden size, V=vocab size, C=number of labels.
"""

import collections
import os

import numpy as np

from modeling.models import heads
from modeling.networks import bert as bert_lib

# One model variable and where it lives in each format. `*_transposed` means
# the stored array is the transpose of the Keras variable: PyTorch Linear
# weights are [out,in] while Keras kernels are [in,out]; Google also stores
# its NSP/classifier `output_weights` as [out,in].
Param = collections.namedtuple(
    "Param", "tf1_name hf_name variable tf1_transposed hf_transposed required")

LoadResult = collections.namedtuple("LoadResult", "loaded ignored")

_MAX_LISTED = 20


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
  # Google stores output_weights as [2,H]; the Keras kernel is [H,2]. Optional: an
  # MLM-only checkpoint (HF BertForMaskedLM) has no NSP head, which keeps its init.
  params += _dense_params("cls/seq_relationship/output_weights",
                          "cls/seq_relationship/output_bias",
                          "cls.seq_relationship", model.next_sentence,
                          tf1_transposed=True, required=False)
  return params


def _classifier_head_params(model):
  # run_classifier.py / BertForSequenceClassification names. Optional: a
  # pre-training checkpoint has no classifier, which then keeps its init.
  return _dense_params("output_weights", "output_bias", "classifier",
                       model.classifier, tf1_transposed=True, required=False)


def _span_head_params(model):
  # run_squad.py (cls/squad/output_*, [2,H]) / BertForQuestionAnswering
  # (qa_outputs.*) names. Optional, as the classifier's.
  return _dense_params("cls/squad/output_weights", "cls/squad/output_bias", "qa_outputs",
                       model.span_outputs, tf1_transposed=True, required=False)


def model_params(model):
  """Lists every variable of a BertModel/BertPretrainer/BertClassifier/BertSpanLabeler.

  Builds the model first if needed. The order is Google's variable order.
  """
  bert_lib.ensure_built(model)
  params = _backbone_params(bert_lib.backbone(model))
  if isinstance(model, heads.BertPretrainer):
    params += _pretrainer_head_params(model)
  elif isinstance(model, heads.BertClassifier):
    params += _classifier_head_params(model)
  elif isinstance(model, heads.BertSpanLabeler):
    params += _span_head_params(model)
  return params


def tf1_variable_map(model):
  """Maps Google TF1 variable names to the model's Keras variables."""
  return {p.tf1_name: p.variable for p in model_params(model)}


def absent_head_prefixes(model, pretrainer_prefix, classifier_prefixes, span_prefixes=()):
  """Checkpoint name prefixes of heads that `model` doesn't have (skipped)."""
  prefixes = []
  if not isinstance(model, heads.BertPretrainer):
    prefixes.append(pretrainer_prefix)
  if not isinstance(model, heads.BertClassifier):
    prefixes += classifier_prefixes
  if not isinstance(model, heads.BertSpanLabeler):
    prefixes += span_prefixes
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


class LoadPlan:
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


def plan_load(params, stored_shapes, fmt, is_ignored):
  """Matches model params against {stored name: shape}.

  Args:
    params: model_params of the model to fill.
    stored_shapes: {stored name: shape} of the checkpoint.
    fmt: "tf1" or "hf": whose names and layout `stored_shapes` uses.
    is_ignored: name -> bool, for stored entries the model may leave unused.

  Returns:
    A LoadPlan; raise_if_problems before assign.
  """
  plan = LoadPlan()
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


def assign(plan, read, fmt):
  """Copies stored values (from `read(name)`) into the matched variables.

  `read` returns the stored array (in `fmt`'s layout) of a stored name.
  """
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


def config_problems(config_path, model_config, gelu_convention):
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
