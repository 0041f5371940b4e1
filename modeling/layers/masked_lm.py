"""BERT's masked-LM head, with the output projection tied to the embeddings.

Shape legend: B=batch, S=sequence length, H=hidden size, P=masked positions
per sequence, V=vocab size.
"""

import keras
import tensorflow as tf

from modeling.layers import activations
from modeling.layers import common


@keras.saving.register_keras_serializable(package="bert_distill")
class MaskedLMHead(keras.layers.Layer):
  """Transform (dense + act + LayerNorm), then tied-embedding logits + bias.

  Only the P masked positions are gathered before the transform, so the
  vocab projection costs B*P*H*V instead of B*S*H*V. Logits are float32
  whatever the compute dtype.
  """

  def __init__(self, *, vocab_size, hidden_size, activation="gelu",
               initializer_range=0.02, layer_norm_eps=1e-12, **kwargs):
    super().__init__(**kwargs)
    self.vocab_size = vocab_size
    self.hidden_size = hidden_size
    self.activation = activation
    self.initializer_range = initializer_range
    self.layer_norm_eps = layer_norm_eps
    dtype = self.dtype_policy
    self.transform = common.make_dense(
        hidden_size, "transform", dtype, initializer_range,
        activations.get_activation(activation))
    self.layer_norm = common.make_layer_norm("layer_norm", dtype,
                                             layer_norm_eps)

  def build(self, input_shape=None):
    hidden_shape = (None, None, self.hidden_size)
    self.transform.build(hidden_shape)
    self.layer_norm.build(hidden_shape)
    # autocast=False: the bias is added to float32 logits, keep it float32.
    self.output_bias = self.add_weight(name="output_bias",
                                       shape=(self.vocab_size,),
                                       initializer="zeros", autocast=False)

  def call(self, sequence_output, masked_lm_positions, word_embeddings):
    """sequence_output [B,S,H], positions int [B,P], table [V,H] -> [B,P,V]."""
    positions = tf.cast(masked_lm_positions, tf.int32)
    picked = tf.gather(sequence_output, positions, batch_dims=1)  # [B,P,H]
    hidden = self.layer_norm(self.transform(picked))  # [B,P,H]
    table = tf.cast(word_embeddings, hidden.dtype)  # [V,H], tied weights
    logits = tf.einsum("bph,vh->bpv", hidden, table)  # [B,P,V]
    return tf.cast(logits, tf.float32) + self.output_bias

  def get_config(self):
    config = super().get_config()
    config.update(vocab_size=self.vocab_size, hidden_size=self.hidden_size,
                  activation=self.activation,
                  initializer_range=self.initializer_range,
                  layer_norm_eps=self.layer_norm_eps)
    return config
