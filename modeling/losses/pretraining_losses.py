"""Pretraining losses and metrics: pure functions of float32 tensors.

Shape legend: B=batch, P=masked positions per sequence, V=vocab size.

The masked-LM loss is google-research/bert's: the mean cross-entropy over the
real (weight 1) masked positions, sum(w * ce) / sum(w), so padding slots of
masked_lm_positions (weight 0) count for nothing. Eval aggregates the same
sums over the whole eval set (`*_sums`) rather than averaging per-batch
means, so the result does not depend on the batch size or number of ranks.
"""

import tensorflow as tf

# Keeps the ratio finite for a batch without any masked position.
_EPSILON = 1e-5


def _mlm_terms(mlm_logits, masked_lm_ids, masked_lm_weights):
  """Per-position cross-entropy, correctness and weight, each [B*P]."""
  vocab_size = tf.shape(mlm_logits)[-1]
  logits = tf.reshape(tf.cast(mlm_logits, tf.float32), [-1, vocab_size])
  labels = tf.reshape(masked_lm_ids, [-1])  # [B*P]
  weights = tf.reshape(tf.cast(masked_lm_weights, tf.float32), [-1])
  ce = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels,
                                                      logits=logits)
  correct = tf.cast(tf.equal(tf.argmax(logits, -1, output_type=labels.dtype),
                             labels), tf.float32)
  return ce, correct, weights


def _nsp_terms(nsp_logits, next_sentence_labels):
  """Per-example cross-entropy and correctness, each [B]."""
  labels = tf.reshape(next_sentence_labels, [-1])  # [B,1] or [B] -> [B]
  logits = tf.cast(nsp_logits, tf.float32)  # [B,2]
  ce = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels,
                                                      logits=logits)
  correct = tf.cast(tf.equal(tf.argmax(logits, -1, output_type=labels.dtype),
                             labels), tf.float32)
  return ce, correct


def masked_lm_loss(mlm_logits, masked_lm_ids, masked_lm_weights):
  """logits [B,P,V], ids [B,P], weights [B,P] -> scalar sum(w*ce)/sum(w)."""
  ce, _, weights = _mlm_terms(mlm_logits, masked_lm_ids, masked_lm_weights)
  return tf.reduce_sum(weights * ce) / (tf.reduce_sum(weights) + _EPSILON)


def masked_lm_accuracy(mlm_logits, masked_lm_ids, masked_lm_weights):
  """Weighted fraction of masked positions whose argmax is the label."""
  _, correct, weights = _mlm_terms(mlm_logits, masked_lm_ids,
                                   masked_lm_weights)
  return tf.reduce_sum(weights * correct) / (tf.reduce_sum(weights) +
                                             _EPSILON)


def next_sentence_loss(nsp_logits, next_sentence_labels):
  """logits [B,2], labels [B,1] or [B] (1 = random next) -> mean CE."""
  ce, _ = _nsp_terms(nsp_logits, next_sentence_labels)
  return tf.reduce_mean(ce)


def next_sentence_accuracy(nsp_logits, next_sentence_labels):
  _, correct = _nsp_terms(nsp_logits, next_sentence_labels)
  return tf.reduce_mean(correct)


def pretraining_sums(outputs, batch):
  """{metric: (numerator, denominator)} of one batch, for exact eval sums.

  Args:
    outputs: the BertPretrainer dict (mlm_logits [B,P,V], nsp_logits [B,2]).
    batch: the input dict (masked_lm_ids/weights [B,P], labels [B,1]).
  """
  ce, correct, weights = _mlm_terms(outputs["mlm_logits"],
                                    batch["masked_lm_ids"],
                                    batch["masked_lm_weights"])
  nsp_ce, nsp_correct = _nsp_terms(outputs["nsp_logits"],
                                   batch["next_sentence_labels"])
  masked, examples = tf.reduce_sum(weights), tf.cast(tf.size(nsp_ce),
                                                     tf.float32)
  return {
      "mlm_loss": (tf.reduce_sum(weights * ce), masked),
      "mlm_accuracy": (tf.reduce_sum(weights * correct), masked),
      "nsp_loss": (tf.reduce_sum(nsp_ce), examples),
      "nsp_accuracy": (tf.reduce_sum(nsp_correct), examples),
  }
