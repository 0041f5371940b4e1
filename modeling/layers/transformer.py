"""One BERT encoder layer (post-LayerNorm, as in the original Transformer).

Shape legend: B=batch, S=sequence length, H=hidden size, N=attention heads,
I=intermediate size.
"""

import keras

from modeling.layers import activations
from modeling.layers import attention as attention_lib
from modeling.layers import common


@keras.saving.register_keras_serializable(package="bert_distill")
class TransformerLayer(keras.layers.Layer):
  """Attention block, then FFN block, each: dropout, residual, LayerNorm.

  `activation` is a `hidden_act` name (activations.get_activation), kept as
  a name so get_config stays JSON.
  """

  def __init__(self, *, hidden_size, num_heads, intermediate_size,
               activation="gelu", hidden_dropout_rate=0.1,
               attention_dropout_rate=0.1, initializer_range=0.02,
               layer_norm_eps=1e-12, **kwargs):
    super().__init__(**kwargs)
    self.hidden_size = hidden_size
    self.num_heads = num_heads
    self.intermediate_size = intermediate_size
    self.activation = activation
    self.hidden_dropout_rate = hidden_dropout_rate
    self.attention_dropout_rate = attention_dropout_rate
    self.initializer_range = initializer_range
    self.layer_norm_eps = layer_norm_eps
    self._make_sublayers()

  def _make_sublayers(self):
    # Attribute names (and creation order) are the checkpoints' object
    # paths and the dropout seed order: keep them.
    h, dtype, init = self.hidden_size, self.dtype_policy, self.initializer_range
    self.attention = attention_lib.BertSelfAttention(
        hidden_size=h, num_heads=self.num_heads, initializer_range=init,
        dropout_rate=self.attention_dropout_rate, name="attention",
        dtype=dtype)
    self.attention_output = common.make_dense(h, "attention_output", dtype,
                                              init)
    self.attention_layer_norm = common.make_layer_norm(
        "attention_layer_norm", dtype, self.layer_norm_eps)
    self.intermediate = common.make_dense(
        self.intermediate_size, "intermediate", dtype, init,
        activations.get_activation(self.activation))
    # Not `self.output`: that name is a keras.layers.Layer property.
    self.output_dense = common.make_dense(h, "output", dtype, init)
    self.output_layer_norm = common.make_layer_norm(
        "output_layer_norm", dtype, self.layer_norm_eps)
    self.dropout = keras.layers.Dropout(self.hidden_dropout_rate, dtype=dtype)

  def build(self, input_shape=None):
    hidden_shape = (None, None, self.hidden_size)
    self.attention.build(hidden_shape)
    for layer in (self.attention_output, self.attention_layer_norm,
                  self.intermediate, self.output_layer_norm):
      layer.build(hidden_shape)
    self.output_dense.build((None, None, self.intermediate_size))

  def call(self, hidden, input_mask, training=None):
    """hidden [B,S,H], input_mask int [B,S] -> ([B,S,H], probs [B,N,S,S])."""
    context, probs = self.attention(hidden, input_mask, training=training)
    attended = self.dropout(self.attention_output(context), training=training)
    attended = self.attention_layer_norm(hidden + attended)  # [B,S,H]
    ffn = self.output_dense(self.intermediate(attended))  # [B,S,I] -> [B,S,H]
    ffn = self.dropout(ffn, training=training)
    return self.output_layer_norm(attended + ffn), probs

  def get_config(self):
    config = super().get_config()
    config.update(hidden_size=self.hidden_size, num_heads=self.num_heads,
                  intermediate_size=self.intermediate_size,
                  activation=self.activation,
                  hidden_dropout_rate=self.hidden_dropout_rate,
                  attention_dropout_rate=self.attention_dropout_rate,
                  initializer_range=self.initializer_range,
                  layer_norm_eps=self.layer_norm_eps)
    return config
