"""A BERT model's ONNX graph, written op by op from its Keras weights.

Shape legend: B=batch, S=sequence length, H=hidden size, N=attention heads,
D=H/N head size, I=intermediate size, C=number of labels.

Why not tf2onnx: it converts our Keras 3 models exactly (max diff ~1e-8),
but Keras 3 writes LayerNorm as moments (GlobalAveragePool, Max, Reciprocal)
and the einsum attention as Shape/ReduceProd/Reshape chains, so neither ONNX
Runtime's Python BERT fusions (model_type "bert" or "bert_tf") nor its C++
graph fusions match anything: 0 fused ops. Here every block is written in
the op pattern those fusions look for (the layout of Hugging Face's BERT
export), so optimize_model turns it into EmbedLayerNormalization, Attention,
SkipLayerNormalization and BiasGelu / FastGelu. onnx_export.py checks the
result against the Keras model after every step.

Inputs: input_ids, input_mask, segment_ids int32 [B,S] (the SavedModel's and
the records' dtype; also what the fused ops take, so no Cast is needed).
Outputs by head: classifier logits [B,C]; span model start_logits,
end_logits [B,S]; pretrainer / encoder sequence_output [B,S,H],
pooled_output [B,H].
"""

import math

import numpy as np
import onnx
from onnx import helper
from onnx import numpy_helper
from onnx import TensorProto

from modeling.models import heads
from modeling.networks import bert as bert_lib

OPSET = 17  # LayerNormalization is a standard op from 17 on.
INPUTS = ("input_ids", "input_mask", "segment_ids")
PRODUCER = "bert-distill"
MASK_VALUE = -10000.0  # As attention.attention_bias_from_mask.


def head_kind(model):
  """"classifier", "span" or "encoder" (a BertPretrainer or a bare BertModel)."""
  if isinstance(model, heads.BertClassifier):
    return "classifier"
  if isinstance(model, heads.BertSpanLabeler):
    return "span"
  bert_lib.backbone(model)  # TypeError for anything else
  return "encoder"


def output_names(model):
  return {"classifier": ("logits",), "span": ("start_logits", "end_logits"),
          "encoder": ("sequence_output", "pooled_output")}[head_kind(model)]


class _Builder:
  """Collects nodes and initializers; each op returns its output's name."""

  def __init__(self):
    self.nodes, self.initializers, self._count = [], [], 0

  def const(self, name, value, dtype=np.float32):
    self.initializers.append(numpy_helper.from_array(np.asarray(value, dtype), name))
    return name

  def op(self, op_type, inputs, name=None, **attrs):
    self._count += 1
    out = name or f"{op_type.lower()}_{self._count}"
    self.nodes.append(helper.make_node(op_type, list(inputs), [out],
                                       name=f"{op_type}_{self._count}", **attrs))
    return out

  def dense(self, x, layer, name):
    """x [..,in] -> [..,out]: MatMul then Add (the bias Add the fusions absorb)."""
    kernel = self.const(f"{name}/kernel", layer.kernel.numpy())
    bias = self.const(f"{name}/bias", layer.bias.numpy())
    return self.op("Add", [self.op("MatMul", [x, kernel]), bias])

  def layer_norm(self, x, layer, name, epsilon):
    gamma = self.const(f"{name}/gamma", layer.gamma.numpy())
    beta = self.const(f"{name}/beta", layer.beta.numpy())
    return self.op("LayerNormalization", [x, gamma, beta], axis=-1, epsilon=epsilon)


def _embeddings(b, emb, config):
  """Word + segment + position embeddings, then LayerNorm: [B,S,H].

  Positions are Gather(table, Slice(arange [1,P], 0, S)): the pattern the
  EmbedLayerNormalization fusion recognises as BERT's.
  """
  words = b.op("Gather", [b.const("embeddings/word", emb.word_embeddings.numpy()), "input_ids"])
  types = b.op("Gather", [b.const("embeddings/token_type",
                                  emb.token_type_embeddings.numpy()), "segment_ids"])
  summed = b.op("Add", [words, types])
  seq = b.op("Gather", [b.op("Shape", ["input_ids"]), b.const("one", 1, np.int64)], axis=0)
  seq = b.op("Unsqueeze", [seq, b.const("axes_0", [0], np.int64)])  # [1]
  positions = b.op("Slice", [
      b.const("position_ids", np.arange(config.max_position_embeddings)[None], np.int64),
      b.const("zero_1d", [0], np.int64), seq, b.const("axes_1", [1], np.int64),
      b.const("one_1d", [1], np.int64)])  # [1,S]
  positions = b.op("Gather", [b.const("embeddings/position",
                                      emb.position_embeddings.numpy()), positions])
  summed = b.op("Add", [summed, positions])  # [B,S,H]
  return b.layer_norm(summed, emb.layer_norm, "embeddings/layer_norm", config.layer_norm_eps)


def _attention_bias(b):
  """input_mask int [B,S] -> additive float [B,1,1,S], shared by every layer."""
  mask = b.op("Unsqueeze", ["input_mask", b.const("axes_1", [1], np.int64)])
  mask = b.op("Unsqueeze", [mask, b.const("axes_2", [2], np.int64)])
  mask = b.op("Cast", [mask], to=TensorProto.FLOAT)
  inverted = b.op("Sub", [b.const("float_one", 1.0), mask])
  return b.op("Mul", [inverted, b.const("mask_value", MASK_VALUE)])


def _heads(b, x, dense, name, config, perm):
  """Projection [B,S,H] -> [B,S,N,D] -> transposed by `perm`."""
  shape = b.const(f"{name}/split_shape", [0, 0, config.num_attention_heads,
                                          config.head_size], np.int64)
  return b.op("Transpose", [b.op("Reshape", [b.dense(x, dense, name), shape])], perm=perm)


def _self_attention(b, x, bias, layer, name, config):
  """Context before the output dense: [B,S,H]."""
  att = layer.attention
  q = _heads(b, x, att.query, f"{name}/query", config, [0, 2, 1, 3])  # [B,N,S,D]
  k = _heads(b, x, att.key, f"{name}/key", config, [0, 2, 3, 1])  # [B,N,D,T]
  v = _heads(b, x, att.value, f"{name}/value", config, [0, 2, 1, 3])  # [B,N,T,D]
  scores = b.op("Div", [b.op("MatMul", [q, k]),
                        b.const(f"{name}/scale", math.sqrt(config.head_size))])  # [B,N,S,T]
  probs = b.op("Softmax", [b.op("Add", [scores, bias])], axis=-1)
  context = b.op("Transpose", [b.op("MatMul", [probs, v])], perm=[0, 2, 1, 3])  # [B,S,N,D]
  merge = b.const(f"{name}/merge_shape", [0, 0, config.hidden_size], np.int64)
  return b.op("Reshape", [context, merge])


def _gelu(b, x, act):
  """The activations.py functions in the op patterns of ORT's Gelu / FastGelu fusions."""
  if act == "relu":
    return b.op("Relu", [x])
  if act == "gelu":  # exact: 0.5 * x * (1 + erf(x / sqrt(2)))
    erf = b.op("Erf", [b.op("Div", [x, b.const("sqrt2", math.sqrt(2.0))])])
    product = b.op("Mul", [x, b.op("Add", [erf, b.const("float_one", 1.0)])])
    return b.op("Mul", [product, b.const("half", 0.5)])
  # tanh: 0.5x(1 + tanh(sqrt(2/pi)(x + 0.044715x^3)))
  cube = b.op("Mul", [b.op("Pow", [x, b.const("three", 3.0)]), b.const("gelu_c", 0.044715)])
  inner = b.op("Mul", [b.op("Add", [x, cube]), b.const("sqrt_2_pi", math.sqrt(2.0 / math.pi))])
  one_plus = b.op("Add", [b.op("Tanh", [inner]), b.const("float_one", 1.0)])
  return b.op("Mul", [b.op("Mul", [x, b.const("half", 0.5)]), one_plus])


def _transformer_layer(b, x, bias, layer, name, config):
  """Post-LayerNorm block as TransformerLayer.call: [B,S,H] -> [B,S,H]."""
  context = _self_attention(b, x, bias, layer, name, config)
  attended = b.dense(context, layer.attention_output, f"{name}/attention_output")
  x = b.layer_norm(b.op("Add", [attended, x]), layer.attention_layer_norm,
                   f"{name}/attention_layer_norm", config.layer_norm_eps)
  inner = _gelu(b, b.dense(x, layer.intermediate, f"{name}/intermediate"),
                config.hidden_act)  # [B,S,I]
  ffn = b.dense(inner, layer.output_dense, f"{name}/output")
  return b.layer_norm(b.op("Add", [ffn, x]), layer.output_layer_norm,
                      f"{name}/output_layer_norm", config.layer_norm_eps)


def _encoder(b, bert):
  """(sequence_output [B,S,H], pooled_output [B,H]) of a BertModel."""
  config = bert.config
  x = _embeddings(b, bert.embeddings, config)
  bias = _attention_bias(b)
  for i, layer in enumerate(bert.encoder_layers):
    x = _transformer_layer(b, x, bias, layer, f"layer_{i}", config)
  first = b.op("Gather", [x, b.const("zero", 0, np.int64)], axis=1)  # [B,H]: [CLS]
  return x, b.op("Tanh", [b.dense(first, bert.pooler, "pooler")])


def _outputs(b, model, sequence, pooled):
  """{output name: tensor name} of the model's head."""
  kind = head_kind(model)
  if kind == "classifier":  # Dropout is the identity at inference.
    return {"logits": b.dense(pooled, model.classifier, "classifier")}
  if kind == "span":
    spans = b.dense(sequence, model.span_outputs, "span_outputs")  # [B,S,2]
    return {"start_logits": b.op("Gather", [spans, b.const("zero", 0, np.int64)], axis=2),
            "end_logits": b.op("Gather", [spans, b.const("one", 1, np.int64)], axis=2)}
  return {"sequence_output": sequence, "pooled_output": pooled}


def _value_info(name, shape):
  return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def build_model(model):
  """The float32 ONNX ModelProto of a built BertClassifier, BertSpanLabeler,
  BertPretrainer (its encoder) or BertModel, checked by onnx.checker."""
  bert = bert_lib.backbone(bert_lib.ensure_built(model))
  b = _Builder()
  sequence, pooled = _encoder(b, bert)
  outputs = _outputs(b, model, sequence, pooled)
  b.nodes += [helper.make_node("Identity", [tensor], [name], name=f"output_{name}")
              for name, tensor in outputs.items()]
  shapes = {"logits": ["batch", getattr(model, "num_labels", 0)],
            "start_logits": ["batch", "sequence"], "end_logits": ["batch", "sequence"],
            "sequence_output": ["batch", "sequence", bert.config.hidden_size],
            "pooled_output": ["batch", bert.config.hidden_size]}
  graph = helper.make_graph(
      b.nodes, f"{head_kind(model)}_graph",
      [helper.make_tensor_value_info(n, TensorProto.INT32, ["batch", "sequence"])
       for n in INPUTS],
      [_value_info(name, shapes[name]) for name in outputs],
      _unique(b.initializers))
  proto = helper.make_model(graph, producer_name=PRODUCER,
                            opset_imports=[helper.make_opsetid("", OPSET)])
  proto.ir_version = 8  # What every ONNX Runtime since 1.14 loads.
  onnx.checker.check_model(proto)
  return proto


def _unique(initializers):
  """Shared constants (float_one, half, ...) are made once per use: keep the first."""
  seen, unique = set(), []
  for tensor in initializers:
    if tensor.name not in seen:
      seen.add(tensor.name)
      unique.append(tensor)
  return unique
