"""BERT encoder in Keras 3 (TensorFlow backend), numerically matching Google's.

Shape legend used in comments: B=batch, S=sequence length, H=hidden size,
N=attention heads, D=H/N size per head, I=intermediate size, V=vocab size,
L=number of layers.

Every layer takes a `BertConfig` (or its dict form) and passes its own dtype
policy to its sublayers, so `dtype="mixed_bfloat16"` on the top-level model
(or the global keras.mixed_precision policy) makes the whole stack compute in
bfloat16 while keeping float32 variables.
"""

import dataclasses
import json
import math
import os

import keras
import tensorflow as tf

_CONFIG_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                           "configs")

# Google's LayerNorm (tf.contrib.layers.layer_norm) hard-codes this epsilon.
_DEFAULT_LAYER_NORM_EPS = 1e-12


def _gelu_erf(x):
  # Exact GELU, x * Phi(x): what HF (and PyTorch) call "gelu", and what
  # google-research/bert's modeling.py used when it was first released.
  return keras.activations.gelu(x, approximate=False)


def _gelu_tanh(x):
  # 0.5x(1 + tanh(sqrt(2/pi)(x + 0.044715x^3))): the "gelu" of
  # google-research/bert's modeling.py as it stands (and OpenAI GPT's); HF
  # names it "gelu_new" / "gelu_pytorch_tanh". At most 4.7e-4 from erf.
  return keras.activations.gelu(x, approximate=True)


_ACTIVATIONS = {
    "gelu": _gelu_erf,
    "gelu_new": _gelu_tanh,
    "gelu_pytorch_tanh": _gelu_tanh,
    "relu": keras.activations.relu,
}

# What `hidden_act: "gelu"` means in a config file depends on whose code the
# file was written for: HF's "gelu" is exact erf, google-research/bert's is
# the tanh approximation. Reading a Google file maps it to HF's "gelu_new"
# (the same function) so the model computes what Google's code computes.
GELU_CONVENTIONS = ("hf", "google")
_GOOGLE_GELU = "gelu_new"


def get_activation(name):
  """Returns the activation function for a `hidden_act` name."""
  if name not in _ACTIVATIONS:
    raise ValueError(f"unsupported hidden_act {name!r}; expected one of "
                     f"{sorted(_ACTIVATIONS)}")
  return _ACTIVATIONS[name]


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
    if self.hidden_act not in _ACTIVATIONS:
      problems.append(f"hidden_act must be one of {sorted(_ACTIVATIONS)}, "
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
  if _ACTIVATIONS.get(hidden_act) is _gelu_tanh:
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


def _initializer(config):
  # Google: truncated normal (cut at 2 stddev) for every kernel and table.
  return keras.initializers.TruncatedNormal(stddev=config.initializer_range)


def make_dense(config, units, name, dtype, activation=None):
  return keras.layers.Dense(units, activation=activation,
                            kernel_initializer=_initializer(config),
                            name=name, dtype=dtype)


def make_layer_norm(config, name, dtype):
  return keras.layers.LayerNormalization(epsilon=config.layer_norm_eps,
                                         name=name, dtype=dtype)


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


def attention_bias_from_mask(input_mask):
  """input_mask int [B,S] (1 = real token) -> additive float32 [B,1,1,S].

  -10000 as in Google's BERT (not -inf): rows that are all padding still get
  a finite uniform softmax instead of NaN.
  """
  mask = tf.cast(input_mask, tf.float32)
  return (1.0 - mask)[:, tf.newaxis, tf.newaxis, :] * -10000.0


class ConfigSerializable:
  """get_config for classes whose only architecture argument is `config`.

  Mixed into keras.layers.Layer / keras.Model subclasses; Keras' default
  from_config (cls(**config)) then works because __init__ accepts the dict.
  """

  def get_config(self):
    base = super().get_config()
    base["config"] = self.config.to_dict()
    return base


@keras.saving.register_keras_serializable(package="bert_distill")
class BertEmbeddings(ConfigSerializable, keras.layers.Layer):
  """Word + position + token-type embeddings, then LayerNorm and dropout."""

  def __init__(self, config, **kwargs):
    super().__init__(**kwargs)
    self.config = as_config(config)
    self.layer_norm = make_layer_norm(self.config, "layer_norm",
                                      self.dtype_policy)
    self.dropout = keras.layers.Dropout(self.config.hidden_dropout_prob,
                                        dtype=self.dtype_policy)

  def _table(self, name, rows):
    return self.add_weight(name=name, shape=(rows, self.config.hidden_size),
                           initializer=_initializer(self.config))

  def build(self, input_shape=None):
    c = self.config
    self.word_embeddings = self._table("word_embeddings", c.vocab_size)
    self.position_embeddings = self._table("position_embeddings",
                                           c.max_position_embeddings)
    self.token_type_embeddings = self._table("token_type_embeddings",
                                             c.type_vocab_size)
    self.layer_norm.build((None, None, c.hidden_size))

  def call(self, input_ids, segment_ids, training=None):
    # input_ids, segment_ids: int32 [B,S]. Variables read inside call are
    # autocast to the compute dtype.
    seq_length = tf.shape(input_ids)[1]
    words = tf.gather(self.word_embeddings, input_ids)  # [B,S,H]
    types = tf.gather(self.token_type_embeddings, segment_ids)  # [B,S,H]
    # Positions are 0..S-1 for every row: slice instead of gathering.
    positions = self.position_embeddings[:seq_length]  # [S,H]
    summed = words + types + positions[tf.newaxis]
    return self.dropout(self.layer_norm(summed), training=training)


@keras.saving.register_keras_serializable(package="bert_distill")
class BertSelfAttention(ConfigSerializable, keras.layers.Layer):
  """Multi-head self-attention: Q/K/V projections, masked softmax, context.

  Returns the context before the output projection (BERT's attention/output
  dense lives in TransformerLayer) and the attention probabilities.
  """

  def __init__(self, config, **kwargs):
    super().__init__(**kwargs)
    self.config = as_config(config)
    c, dtype = self.config, self.dtype_policy
    self.query = make_dense(c, c.hidden_size, "query", dtype)
    self.key = make_dense(c, c.hidden_size, "key", dtype)
    self.value = make_dense(c, c.hidden_size, "value", dtype)
    self.dropout = keras.layers.Dropout(c.attention_probs_dropout_prob,
                                        dtype=dtype)

  def build(self, input_shape=None):
    shape = (None, None, self.config.hidden_size)
    for dense in (self.query, self.key, self.value):
      dense.build(shape)

  def _split_heads(self, x):
    # [B,S,H] -> [B,S,N,D]
    c = self.config
    return tf.reshape(x, [-1, tf.shape(x)[1], c.num_attention_heads,
                          c.head_size])

  def call(self, hidden, input_mask, training=None):
    """hidden [B,S,H]; input_mask int [B,S] (1 = attend to this token)."""
    # The mask travels as ints: Keras would cast a float bias argument to
    # the compute dtype, and -10000 is not exact in bfloat16.
    attention_bias = attention_bias_from_mask(input_mask)  # [B,1,1,S]
    q = self._split_heads(self.query(hidden))  # [B,S,N,D]
    k = self._split_heads(self.key(hidden))
    v = self._split_heads(self.value(hidden))
    scores = tf.einsum("bsnd,btnd->bnst", q, k)  # [B,N,S,S]
    scores *= 1.0 / math.sqrt(self.config.head_size)
    # Softmax in float32: in bf16 the -10000 bias and exp() lose too much.
    probs = tf.nn.softmax(tf.cast(scores, tf.float32) + attention_bias)
    dropped = self.dropout(tf.cast(probs, self.compute_dtype),
                           training=training)
    context = tf.einsum("bnst,btnd->bsnd", dropped, v)  # [B,S,N,D]
    context = tf.reshape(context, [-1, tf.shape(context)[1],
                                   self.config.hidden_size])  # [B,S,H]
    return context, probs


@keras.saving.register_keras_serializable(package="bert_distill")
class TransformerLayer(ConfigSerializable, keras.layers.Layer):
  """One post-LayerNorm encoder layer: attention block, then GELU FFN block."""

  def __init__(self, config, **kwargs):
    super().__init__(**kwargs)
    self.config = as_config(config)
    c, dtype = self.config, self.dtype_policy
    self.attention = BertSelfAttention(c, name="attention", dtype=dtype)
    self.attention_output = make_dense(c, c.hidden_size, "attention_output",
                                       dtype)
    self.attention_layer_norm = make_layer_norm(c, "attention_layer_norm",
                                                dtype)
    self.intermediate = make_dense(c, c.intermediate_size, "intermediate",
                                   dtype, get_activation(c.hidden_act))
    # Not `self.output`: that name is a keras.layers.Layer property.
    self.output_dense = make_dense(c, c.hidden_size, "output", dtype)
    self.output_layer_norm = make_layer_norm(c, "output_layer_norm", dtype)
    self.dropout = keras.layers.Dropout(c.hidden_dropout_prob, dtype=dtype)

  def build(self, input_shape=None):
    c = self.config
    hidden_shape = (None, None, c.hidden_size)
    self.attention.build(hidden_shape)
    for layer in (self.attention_output, self.attention_layer_norm,
                  self.intermediate, self.output_layer_norm):
      layer.build(hidden_shape)
    self.output_dense.build((None, None, c.intermediate_size))

  def call(self, hidden, input_mask, training=None):
    """hidden [B,S,H], input_mask int [B,S] -> ([B,S,H], probs [B,N,S,S])."""
    context, probs = self.attention(hidden, input_mask, training=training)
    attended = self.dropout(self.attention_output(context), training=training)
    attended = self.attention_layer_norm(hidden + attended)  # [B,S,H]
    ffn = self.output_dense(self.intermediate(attended))  # [B,S,I] -> [B,S,H]
    ffn = self.dropout(ffn, training=training)
    return self.output_layer_norm(attended + ffn), probs


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
    self.embeddings = BertEmbeddings(c, name="embeddings", dtype=dtype)
    # One attribute per layer rather than a list: tf.train.Checkpoint does
    # not see layers held in a Keras-tracked list (their variables would be
    # silently left out of checkpoints).
    for i in range(c.num_hidden_layers):
      setattr(self, f"layer_{i}",
              TransformerLayer(c, name=f"layer_{i}", dtype=dtype))
    self.pooler = make_dense(c, c.hidden_size, "pooler", dtype, "tanh")

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
