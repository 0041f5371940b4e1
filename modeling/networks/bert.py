"""BERT encoder in Keras 3 (TensorFlow backend), numerically matching Google's.

Shape legend used in comments: B=batch, S=sequence length, H=hidden size,
N=attention heads, D=H/N size per head, I=intermediate size, V=vocab size,
L=number of layers.

BertModel takes a `BertConfig` (or its dict form), builds its layers (from
modeling/layers, which know nothing of BertConfig) from it and passes its own
dtype policy to them, so `dtype="mixed_bfloat16"` on the top-level model
(or the global keras.mixed_precision policy) makes the whole stack compute in
bfloat16 while keeping float32 variables.
"""

import dataclasses
import json
import os

import keras
import tensorflow as tf

from modeling.layers import activations
from modeling.layers import common
from modeling.layers import embeddings
from modeling.layers import transformer

_CONFIG_DIR = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")

# Google's LayerNorm (tf.contrib.layers.layer_norm) hard-codes this epsilon.
_DEFAULT_LAYER_NORM_EPS = 1e-12


# What `hidden_act: "gelu"` means in a config file depends on whose code the
# file was written for: HF's "gelu" is exact erf, google-research/bert's is
# the tanh approximation. Reading a Google file maps it to HF's "gelu_new"
# (the same function) so the model computes what Google's code computes.
GELU_CONVENTIONS = ("hf", "google")
_GOOGLE_GELU = "gelu_new"


@dataclasses.dataclass(frozen=True)
class BertConfig:
  """Architecture hyper-parameters, with exactly the keys of bert_config.json.

  `layer_norm_eps` is not a Google key: it is read from HF config.json files
  and only written back out when it differs from BERT's 1e-12, so configs
  written for Google-style models stay byte-compatible with Google's files.
  """
  vocab_size: int = 30522
  hidden_size: int = 768
  num_hidden_layers: int = 12
  num_attention_heads: int = 12
  intermediate_size: int = 3072
  hidden_act: str = "gelu"
  hidden_dropout_prob: float = 0.1
  attention_probs_dropout_prob: float = 0.1
  max_position_embeddings: int = 512
  type_vocab_size: int = 2
  initializer_range: float = 0.02
  layer_norm_eps: float = _DEFAULT_LAYER_NORM_EPS

  def __post_init__(self):
    problems = self._problems()
    if problems:
      raise ValueError("invalid BertConfig: " + "; ".join(problems))

  def _problems(self):
    """Lists every invalid field, so one error reports all of them."""
    problems = []
    for name in ("vocab_size", "hidden_size", "num_hidden_layers",
                 "num_attention_heads", "intermediate_size",
                 "max_position_embeddings", "type_vocab_size"):
      value = getattr(self, name)
      if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        problems.append(f"{name} must be a positive int, got {value!r}")
    for name in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
      value = getattr(self, name)
      if not _is_number(value) or not 0.0 <= value < 1.0:
        problems.append(f"{name} must be in [0, 1), got {value!r}")
    for name in ("initializer_range", "layer_norm_eps"):
      value = getattr(self, name)
      if not _is_number(value) or value <= 0:
        problems.append(f"{name} must be a positive number, got {value!r}")
    if self.hidden_act not in activations.activation_names():
      problems.append("hidden_act must be one of "
                      f"{activations.activation_names()}, "
                      f"got {self.hidden_act!r}")
    if not problems and self.hidden_size % self.num_attention_heads:
      problems.append(f"hidden_size {self.hidden_size} is not divisible by "
                      f"num_attention_heads {self.num_attention_heads}")
    return problems

  @property
  def head_size(self):
    return self.hidden_size // self.num_attention_heads

  def replace(self, **changes):
    """Returns a validated copy with `changes`, e.g. replace(vocab_size=n)."""
    return dataclasses.replace(self, **changes)

  @classmethod
  def from_dict(cls, values, gelu_convention="hf"):
    """Builds a config from Google's or HF's dict; unknown keys are ignored.

    All eleven Google keys are required (a file missing one is more likely
    not a BERT config than one relying on defaults). `gelu_convention`
    says whose "gelu" the dict means: "hf" (exact erf; also this project's
    own files) or "google" (google-research/bert: the tanh approximation,
    read as "gelu_new").
    """
    google_keys = [f.name for f in dataclasses.fields(cls)
                   if f.name != "layer_norm_eps"]
    missing = [key for key in google_keys if key not in values]
    if missing:
      raise ValueError(f"BERT config is missing keys {missing}")
    kwargs = {key: values[key] for key in google_keys}
    if values.get("layer_norm_eps") is not None:
      kwargs["layer_norm_eps"] = values["layer_norm_eps"]
    kwargs["hidden_act"] = _read_gelu(kwargs["hidden_act"], gelu_convention)
    return cls(**kwargs)

  @classmethod
  def from_json_file(cls, path, gelu_convention="hf"):
    """Reads bert_config.json / config.json; see from_dict for the GELU."""
    with open(path, encoding="utf-8") as f:
      values = json.load(f)
    if not isinstance(values, dict):
      raise ValueError(f"{path}: expected a JSON object")
    try:
      return cls.from_dict(values, gelu_convention)
    except ValueError as e:
      raise ValueError(f"{path}: {e}") from None

  def to_dict(self, gelu_convention="hf"):
    """The config as a dict; "google" writes the tanh GELU as Google's
    "gelu" (and refuses exact erf, which Google's code cannot express)."""
    values = dataclasses.asdict(self)
    if values["layer_norm_eps"] == _DEFAULT_LAYER_NORM_EPS:
      del values["layer_norm_eps"]
    values["hidden_act"] = _write_gelu(self.hidden_act, gelu_convention)
    return values

  def to_json_string(self, gelu_convention="hf"):
    # Google's own format: sorted keys, 2-space indent.
    return json.dumps(self.to_dict(gelu_convention), indent=2,
                      sort_keys=True) + "\n"

  def to_json_file(self, path, gelu_convention="hf"):
    with open(path, "w", encoding="utf-8") as f:
      f.write(self.to_json_string(gelu_convention))


def _check_convention(gelu_convention):
  if gelu_convention not in GELU_CONVENTIONS:
    raise ValueError(f"gelu_convention must be one of {GELU_CONVENTIONS}, "
                     f"got {gelu_convention!r}")


def _read_gelu(hidden_act, gelu_convention):
  _check_convention(gelu_convention)
  if gelu_convention == "google" and hidden_act == "gelu":
    return _GOOGLE_GELU
  return hidden_act


def _write_gelu(hidden_act, gelu_convention):
  _check_convention(gelu_convention)
  if gelu_convention != "google":
    return hidden_act
  if (hidden_act in activations.activation_names() and
      activations.get_activation(hidden_act) is activations.gelu_tanh):
    return "gelu"
  if hidden_act == "gelu":
    raise ValueError("exact-erf GELU has no name in google-research/bert's "
                     "config (its \"gelu\" is the tanh approximation)")
  return hidden_act


def _is_number(value):
  return isinstance(value, (int, float)) and not isinstance(value, bool)


def load_config(name_or_path, gelu_convention="hf", **overrides):
  """Loads a config file, or a bundled one by name ("bert_base"), + overrides.

  Callers override `vocab_size` with the size of their vocab file. Pass
  gelu_convention="google" for a bert_config.json that came with a Google
  TF1 checkpoint (see BertConfig.from_dict).
  """
  path = name_or_path
  if not os.path.exists(path):
    path = os.path.join(_CONFIG_DIR, f"{name_or_path}.json")
  if not os.path.exists(path):
    raise ValueError(f"{name_or_path}: no such config file or bundled config "
                     f"(bundled: {bundled_config_names()})")
  config = BertConfig.from_json_file(path, gelu_convention)
  return config.replace(**overrides) if overrides else config


def is_bundled_config(name_or_path):
  """True for a bundled config name ("tiny_teacher"), not a file path."""
  return (not os.path.exists(name_or_path) and
          name_or_path in bundled_config_names())


def bundled_config_names():
  return sorted(name[:-len(".json")] for name in os.listdir(_CONFIG_DIR)
                if name.endswith(".json"))


def as_config(config):
  if isinstance(config, BertConfig):
    return config
  if isinstance(config, dict):
    return BertConfig.from_dict(config)
  raise TypeError(f"expected BertConfig or dict, got {type(config).__name__}")


def unpack_inputs(inputs):
  """Returns int32 (input_ids, input_mask, segment_ids), each [B,S].

  `inputs` is a dict with those keys (mask and segments optional: all-ones
  and all-zeros) or a 3-sequence in that order.
  """
  if isinstance(inputs, dict):
    input_ids = inputs["input_ids"]
    input_mask = inputs.get("input_mask")
    segment_ids = inputs.get("segment_ids")
  else:
    input_ids, input_mask, segment_ids = inputs
  input_ids = tf.cast(input_ids, tf.int32)
  if input_mask is None:
    input_mask = tf.ones_like(input_ids)
  if segment_ids is None:
    segment_ids = tf.zeros_like(input_ids)
  return input_ids, tf.cast(input_mask, tf.int32), tf.cast(segment_ids,
                                                           tf.int32)


class ConfigSerializable:
  """get_config for classes whose only architecture argument is `config`.

  Mixed into keras.layers.Layer / keras.Model subclasses; Keras' default
  from_config (cls(**config)) then works because __init__ accepts the dict.
  """

  def get_config(self):
    base = super().get_config()
    base["config"] = self.config.to_dict()
    return base


def _make_embeddings(config, dtype):
  c = config
  return embeddings.BertEmbeddings(
      vocab_size=c.vocab_size, hidden_size=c.hidden_size,
      max_position_embeddings=c.max_position_embeddings,
      type_vocab_size=c.type_vocab_size,
      initializer_range=c.initializer_range, layer_norm_eps=c.layer_norm_eps,
      dropout_rate=c.hidden_dropout_prob, name="embeddings", dtype=dtype)


def _make_transformer_layer(config, name, dtype):
  c = config
  return transformer.TransformerLayer(
      hidden_size=c.hidden_size, num_heads=c.num_attention_heads,
      intermediate_size=c.intermediate_size, activation=c.hidden_act,
      hidden_dropout_rate=c.hidden_dropout_prob,
      attention_dropout_rate=c.attention_probs_dropout_prob,
      initializer_range=c.initializer_range, layer_norm_eps=c.layer_norm_eps,
      name=name, dtype=dtype)


@keras.saving.register_keras_serializable(package="bert_distill")
class BertModel(ConfigSerializable, keras.Model):
  """The BERT encoder: embeddings, L transformer layers and the pooler.

  Call with a dict {input_ids, input_mask, segment_ids} of int [B,S]. Returns
  a dict with sequence_output [B,S,H] and pooled_output [B,H] (compute
  dtype), plus on request hidden_states (L+1 tensors [B,S,H]: the embedding
  output then each layer's output) and attention_probs (L float32 tensors
  [B,N,S,S], before attention dropout), for distillation losses.
  """

  def __init__(self, config, **kwargs):
    kwargs.setdefault("name", "bert")
    super().__init__(**kwargs)
    self.config = as_config(config)
    c, dtype = self.config, self.dtype_policy
    self.embeddings = _make_embeddings(c, dtype)
    # One attribute per layer rather than a list: tf.train.Checkpoint does
    # not see layers held in a Keras-tracked list (their variables would be
    # silently left out of checkpoints).
    for i in range(c.num_hidden_layers):
      setattr(self, f"layer_{i}", _make_transformer_layer(c, f"layer_{i}",
                                                          dtype))
    self.pooler = common.make_dense(c.hidden_size, "pooler", dtype,
                                    c.initializer_range, "tanh")

  @property
  def encoder_layers(self):
    return [getattr(self, f"layer_{i}")
            for i in range(self.config.num_hidden_layers)]

  def build(self, input_shape=None):
    # Shapes of all variables depend only on the config, so building needs
    # no inputs: `model.build(None)` creates every variable.
    hidden_shape = (None, None, self.config.hidden_size)
    self.embeddings.build(None)
    for layer in self.encoder_layers:
      layer.build(hidden_shape)
    self.pooler.build(hidden_shape)

  def call(self, inputs, training=None, output_hidden_states=False,
           output_attentions=False):
    input_ids, input_mask, segment_ids = unpack_inputs(inputs)
    self._check_length(input_ids)
    hidden = self.embeddings(input_ids, segment_ids, training=training)
    all_hidden, all_probs = [hidden], []
    for layer in self.encoder_layers:
      hidden, probs = layer(hidden, input_mask, training=training)
      all_hidden.append(hidden)
      all_probs.append(probs)
    # Pool the [CLS] token: [B,S,H] -> [B,H].
    outputs = {"sequence_output": hidden,
               "pooled_output": self.pooler(hidden[:, 0])}
    if output_hidden_states:
      outputs["hidden_states"] = all_hidden
    if output_attentions:
      outputs["attention_probs"] = all_probs
    return outputs

  def _check_length(self, input_ids):
    seq_length = input_ids.shape[1]
    limit = self.config.max_position_embeddings
    if seq_length is not None and seq_length > limit:
      raise ValueError(f"sequence length {seq_length} exceeds "
                       f"max_position_embeddings {limit}")


def backbone(model):
  """Returns the BertModel of a BertModel or of a model with a `.bert`."""
  if isinstance(model, BertModel):
    return model
  bert = getattr(model, "bert", None)
  if not isinstance(bert, BertModel):
    raise TypeError(f"{type(model).__name__} has no BertModel backbone")
  return bert


def ensure_built(model):
  """Creates all variables of `model` (no-op when already built)."""
  if not model.built:
    model.build(None)
  return model
