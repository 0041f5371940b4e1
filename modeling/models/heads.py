"""The trainable BERT models: BertModel + pre-training, classification or span heads.

Shape legend: B=batch, S=sequence length, H=hidden size, P=masked positions
per sequence, V=vocab size, C=number of labels.

All logits are returned as float32 whatever the compute dtype, so losses and
distillation targets never see bfloat16 rounding of their inputs' last step.
"""

import keras
import tensorflow as tf

from modeling.layers import common
from modeling.layers import masked_lm
from modeling.networks import bert as bert_lib


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
    self.masked_lm = masked_lm.MaskedLMHead(
        vocab_size=c.vocab_size, hidden_size=c.hidden_size,
        activation=c.hidden_act, initializer_range=c.initializer_range,
        layer_norm_eps=c.layer_norm_eps, name="masked_lm", dtype=dtype)
    self.next_sentence = common.make_dense(2, "next_sentence", dtype,
                                           c.initializer_range)

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
    self.classifier = common.make_dense(num_labels, "classifier", dtype,
                                        c.initializer_range)

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


@keras.saving.register_keras_serializable(package="bert_distill")
class BertSpanLabeler(bert_lib.ConfigSerializable, keras.Model):
  """BertModel + dense H->2 on every token (extractive QA, run_squad's head).

  Outputs: the BertModel dict plus start_logits and end_logits float32 [B,S]:
  the scores of each token being the answer's first / last token. As in
  run_squad and BertForQuestionAnswering there is no dropout before the
  dense and no masking here: losses and span selection mask the padding.
  """

  def __init__(self, config, **kwargs):
    kwargs.setdefault("name", "bert_span_labeler")
    super().__init__(**kwargs)
    self.config = bert_lib.as_config(config)
    c, dtype = self.config, self.dtype_policy
    self.bert = bert_lib.BertModel(c, name="bert", dtype=dtype)
    self.span_outputs = common.make_dense(2, "span_outputs", dtype, c.initializer_range)

  def build(self, input_shape=None):
    self.bert.build(None)
    self.span_outputs.build((None, None, self.config.hidden_size))

  def call(self, inputs, training=None, output_hidden_states=False,
           output_attentions=False):
    outputs = self.bert(inputs, training=training,
                        output_hidden_states=output_hidden_states,
                        output_attentions=output_attentions)
    spans = tf.cast(self.span_outputs(outputs["sequence_output"]), tf.float32)  # [B,S,2]
    outputs["start_logits"] = spans[:, :, 0]  # [B,S]
    outputs["end_logits"] = spans[:, :, 1]  # [B,S]
    return outputs
