"""BERT's multi-head self-attention and its padding mask.

Shape legend: B=batch, S=sequence length (queries), T=sequence length
(keys), H=hidden size, N=attention heads, D=H/N size per head.
"""

import math

import keras
import tensorflow as tf

from modeling.layers import common


def attention_bias_from_mask(input_mask):
  """input_mask int [B,S] (1 = real token) -> additive float32 [B,1,1,S].

  -10000 as in Google's BERT (not -inf): rows that are all padding still get
  a finite uniform softmax instead of NaN.
  """
  mask = tf.cast(input_mask, tf.float32)
  return (1.0 - mask)[:, tf.newaxis, tf.newaxis, :] * -10000.0


@keras.saving.register_keras_serializable(package="bert_distill")
class BertSelfAttention(keras.layers.Layer):
  """Multi-head self-attention: Q/K/V projections, masked softmax, context.

  Returns the context before the output projection (BERT's attention/output
  dense lives in TransformerLayer) and the attention probabilities.
  """

  def __init__(self, *, hidden_size, num_heads, initializer_range=0.02,
               dropout_rate=0.1, **kwargs):
    super().__init__(**kwargs)
    if hidden_size % num_heads:
      raise ValueError(f"hidden_size {hidden_size} is not divisible by "
                       f"num_heads {num_heads}")
    self.hidden_size = hidden_size
    self.num_heads = num_heads
    self.head_size = hidden_size // num_heads
    self.initializer_range = initializer_range
    self.dropout_rate = dropout_rate
    dtype = self.dtype_policy
    self.query = common.make_dense(hidden_size, "query", dtype,
                                   initializer_range)
    self.key = common.make_dense(hidden_size, "key", dtype, initializer_range)
    self.value = common.make_dense(hidden_size, "value", dtype,
                                   initializer_range)
    self.dropout = keras.layers.Dropout(dropout_rate, dtype=dtype)

  def build(self, input_shape=None):
    shape = (None, None, self.hidden_size)
    for dense in (self.query, self.key, self.value):
      dense.build(shape)

  def _split_heads(self, x):
    # [B,S,H] -> [B,S,N,D]
    return tf.reshape(x, [-1, tf.shape(x)[1], self.num_heads,
                          self.head_size])

  def call(self, hidden, input_mask, training=None):
    """hidden [B,S,H]; input_mask int [B,S] (1 = attend to this token)."""
    # The mask travels as ints: Keras would cast a float bias argument to
    # the compute dtype, and -10000 is not exact in bfloat16.
    attention_bias = attention_bias_from_mask(input_mask)  # [B,1,1,T]
    q = self._split_heads(self.query(hidden))  # [B,S,N,D]
    k = self._split_heads(self.key(hidden))  # [B,T,N,D]
    v = self._split_heads(self.value(hidden))
    scores = tf.einsum("bsnd,btnd->bnst", q, k)  # [B,N,S,T]
    scores *= 1.0 / math.sqrt(self.head_size)
    # Softmax in float32: in bf16 the -10000 bias and exp() lose too much.
    probs = tf.nn.softmax(tf.cast(scores, tf.float32) + attention_bias)
    dropped = self.dropout(tf.cast(probs, self.compute_dtype),
                           training=training)
    context = tf.einsum("bnst,btnd->bsnd", dropped, v)  # [B,S,N,D]
    context = tf.reshape(context, [-1, tf.shape(context)[1],
                                   self.hidden_size])  # [B,S,H]
    return context, probs

  def get_config(self):
    config = super().get_config()
    config.update(hidden_size=self.hidden_size, num_heads=self.num_heads,
                  initializer_range=self.initializer_range,
                  dropout_rate=self.dropout_rate)
    return config
