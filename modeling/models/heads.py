"""BERT pre-training and classification heads on top of `BertModel`.

Shape legend: B=batch, S=sequence length, H=hidden size, P=masked positions
per sequence, V=vocab size, C=number of labels.

All logits are returned as float32 whatever the compute dtype, so losses and
distillation targets never see bfloat16 rounding of their inputs' last step.
"""

import keras
import tensorflow as tf

from modeling.networks import bert as bert_lib


@keras.saving.register_keras_serializable(package="bert_distill")
class MaskedLMHead(bert_lib.ConfigSerializable, keras.layers.Layer):
  """Transform (dense + act + LayerNorm), then tied-embedding logits + bias.

  Only the P masked positions are gathered before the transform, so the
  vocab projection costs B*P*H*V instead of B*S*H*V.
  """

  def __init__(self, config, **kwargs):
    super().__init__(**kwargs)
    self.config = bert_lib.as_config(config)
    c, dtype = self.config, self.dtype_policy
    self.transform = bert_lib.make_dense(c, c.hidden_size, "transform", dtype,
                                         bert_lib.get_activation(c.hidden_act))
    self.layer_norm = bert_lib.make_layer_norm(c, "layer_norm", dtype)

  def build(self, input_shape=None):
    c = self.config
    hidden_shape = (None, None, c.hidden_size)
    self.transform.build(hidden_shape)
    self.layer_norm.build(hidden_shape)
    # autocast=False: the bias is added to float32 logits, keep it float32.
    self.output_bias = self.add_weight(name="output_bias",
                                       shape=(c.vocab_size,),
                                       initializer="zeros", autocast=False)

  def call(self, sequence_output, masked_lm_positions, word_embeddings):
    """sequence_output [B,S,H], positions int [B,P], table [V,H] -> [B,P,V]."""
    positions = tf.cast(masked_lm_positions, tf.int32)
    picked = tf.gather(sequence_output, positions, batch_dims=1)  # [B,P,H]
    hidden = self.layer_norm(self.transform(picked))  # [B,P,H]
    table = tf.cast(word_embeddings, hidden.dtype)  # [V,H], tied weights
    logits = tf.einsum("bph,vh->bpv", hidden, table)  # [B,P,V]
    return tf.cast(logits, tf.float32) + self.output_bias


@keras.saving.register_keras_serializable(package="bert_distill")
class BertPretrainer(bert_lib.ConfigSerializable, keras.Model):
  """BertModel + masked-LM head + next-sentence head.

  Inputs: dict with input_ids, input_mask, segment_ids [B,S] and
  masked_lm_positions [B,P]. Outputs: the BertModel dict plus
  mlm_logits float32 [B,P,V] and nsp_logits float32 [B,2].
  """

  def __init__(self, config, **kwargs):
    kwargs.setdefault("name", "bert_pretrainer")
    super().__init__(**kwargs)
    self.config = bert_lib.as_config(config)
    c, dtype = self.config, self.dtype_policy
    self.bert = bert_lib.BertModel(c, name="bert", dtype=dtype)
    self.masked_lm = MaskedLMHead(c, name="masked_lm", dtype=dtype)
    self.next_sentence = bert_lib.make_dense(c, 2, "next_sentence", dtype)

  def build(self, input_shape=None):
    self.bert.build(None)
    self.masked_lm.build(None)
    self.next_sentence.build((None, self.config.hidden_size))

  def call(self, inputs, training=None, output_hidden_states=False,
           output_attentions=False):
    outputs = self.bert(inputs, training=training,
                        output_hidden_states=output_hidden_states,
                        output_attentions=output_attentions)
    outputs["mlm_logits"] = self.masked_lm(
        outputs["sequence_output"], inputs["masked_lm_positions"],
        self.bert.embeddings.word_embeddings)
    nsp = self.next_sentence(outputs["pooled_output"])  # [B,2]
    outputs["nsp_logits"] = tf.cast(nsp, tf.float32)
    return outputs


@keras.saving.register_keras_serializable(package="bert_distill")
class BertClassifier(bert_lib.ConfigSerializable, keras.Model):
  """BertModel + dropout + dense H->C on the pooled output.

  Outputs: the BertModel dict plus logits float32 [B,C].
  """

  def __init__(self, config, num_labels, dropout_rate=None, **kwargs):
    kwargs.setdefault("name", "bert_classifier")
    super().__init__(**kwargs)
    self.config = bert_lib.as_config(config)
    if isinstance(num_labels, bool) or not isinstance(num_labels, int) or (
        num_labels < 1):
      raise ValueError(f"num_labels must be a positive int, got {num_labels!r}")
    self.num_labels = num_labels
    # Default as in Google's run_classifier: the config's hidden dropout.
    self.dropout_rate = (self.config.hidden_dropout_prob
                         if dropout_rate is None else dropout_rate)
    c, dtype = self.config, self.dtype_policy
    self.bert = bert_lib.BertModel(c, name="bert", dtype=dtype)
    self.dropout = keras.layers.Dropout(self.dropout_rate, dtype=dtype)
    self.classifier = bert_lib.make_dense(c, num_labels, "classifier", dtype)

  def build(self, input_shape=None):
    self.bert.build(None)
    self.classifier.build((None, self.config.hidden_size))

  def call(self, inputs, training=None, output_hidden_states=False,
           output_attentions=False):
    outputs = self.bert(inputs, training=training,
                        output_hidden_states=output_hidden_states,
                        output_attentions=output_attentions)
    pooled = self.dropout(outputs["pooled_output"], training=training)
    outputs["logits"] = tf.cast(self.classifier(pooled), tf.float32)  # [B,C]
    return outputs

  def get_config(self):
    config = super().get_config()
    config.update(num_labels=self.num_labels, dropout_rate=self.dropout_rate)
    return config
