"""BERT's input embeddings: word + position + token type, then LayerNorm.

Shape legend: B=batch, S=sequence length, H=hidden size, V=vocab size.
"""

import keras
import tensorflow as tf

from modeling.layers import common


@keras.saving.register_keras_serializable(package="bert_distill")
class BertEmbeddings(keras.layers.Layer):
  """Word + position + token-type embeddings, then LayerNorm and dropout.

  The tables are `word_embeddings` [V,H], `position_embeddings` [max_pos,H]
  and `token_type_embeddings` [type_vocab,H]; heads tie their output
  projection to `word_embeddings`.
  """

  def __init__(self, *, vocab_size, hidden_size, max_position_embeddings,
               type_vocab_size, initializer_range=0.02, layer_norm_eps=1e-12,
               dropout_rate=0.1, **kwargs):
    super().__init__(**kwargs)
    self.vocab_size = vocab_size
    self.hidden_size = hidden_size
    self.max_position_embeddings = max_position_embeddings
    self.type_vocab_size = type_vocab_size
    self.initializer_range = initializer_range
    self.layer_norm_eps = layer_norm_eps
    self.dropout_rate = dropout_rate
    self.layer_norm = common.make_layer_norm("layer_norm", self.dtype_policy,
                                             layer_norm_eps)
    self.dropout = keras.layers.Dropout(dropout_rate, dtype=self.dtype_policy)

  def _table(self, name, rows):
    return self.add_weight(
        name=name, shape=(rows, self.hidden_size),
        initializer=common.truncated_normal(self.initializer_range))

  def build(self, input_shape=None):
    self.word_embeddings = self._table("word_embeddings", self.vocab_size)
    self.position_embeddings = self._table("position_embeddings",
                                           self.max_position_embeddings)
    self.token_type_embeddings = self._table("token_type_embeddings",
                                             self.type_vocab_size)
    self.layer_norm.build((None, None, self.hidden_size))

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

  def get_config(self):
    config = super().get_config()
    config.update(vocab_size=self.vocab_size, hidden_size=self.hidden_size,
                  max_position_embeddings=self.max_position_embeddings,
                  type_vocab_size=self.type_vocab_size,
                  initializer_range=self.initializer_range,
                  layer_norm_eps=self.layer_norm_eps,
                  dropout_rate=self.dropout_rate)
    return config
