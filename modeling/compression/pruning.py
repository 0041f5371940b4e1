"""Structured pruning of BERT's FFN intermediate neurons, for classifiers.

Shape legend: B=batch, S=sequence length, H=hidden size, I=intermediate size
(the FFN's width), I'=the kept intermediate size, L=layers, C=labels.

Each encoder layer's FFN is out = W_out · act(W_in · x + b_in) + b_out with
W_in [H,I] (Keras kernel layout [in,out]) and W_out [I,H]: intermediate
neuron j owns column j of W_in, entry j of b_in and row j of W_out. Removing
it removes exactly those; nothing else in the model changes shape. Every
layer keeps the same number I' of neurons, so the result is a standard
BertConfig with intermediate_size = I' that every engine (our Keras model,
SavedModel, ONNX, HF) runs as a smaller dense model.

Importance of neuron j in one layer (higher = keep):
  taylor (default)  sum over examples x of |sum over tokens s of a_sj · dL/da_sj|,
                    the first-order Taylor estimate of how much the loss L of
                    example x changes when the neuron's activation a is zeroed
                    (Molchanov et al. 2017; Michel et al. 2019 for heads). L is
                    the recovery loss itself (alpha·CE + (1-alpha)·T²·KL to the
                    cached teacher logits), so the score measures what the
                    distilled student needs, on the inputs it sees; the weights
                    alone do not say that (a large neuron that GELU keeps near
                    zero on real inputs costs nothing to remove).
  magnitude         ||W_in[:,j]||_2 · ||W_out[j,:]||_2: no data, no gradients;
                    the fallback when no examples are at hand.

Attention heads are not pruned: BertConfig (Google's bert_config.json) ties
the head size to hidden_size / num_attention_heads and the Q/K/V/output
projections to [H,H], so fewer heads of the same size is not a config it (or
HF's BertConfig without `pruned_heads`) can say.
"""

import contextlib

import numpy as np
import tensorflow as tf

from modeling.checkpoints import name_map
from modeling.losses import task_losses
from modeling.models import classification
from modeling.networks import bert as bert_lib

IMPORTANCE_METHODS = ("taylor", "magnitude")
DEFAULT_IMPORTANCE = "taylor"


def encoder_layers(model):
  """The TransformerLayers of a BertClassifier (or any model with a .bert)."""
  return bert_lib.backbone(bert_lib.ensure_built(model)).encoder_layers


def keep_count(intermediate_size, ratio):
  """I' = round(I · (1 - ratio)), at least 1: neurons kept in every layer."""
  return max(1, int(round(intermediate_size * (1.0 - ratio))))


# ---------------------------------------------------------------- importance


def magnitude_importance(model):
  """[L] float64 arrays [I]: ||W_in[:,j]|| · ||W_out[j,:]|| per neuron j."""
  scores = []
  for layer in encoder_layers(model):
    w_in = layer.intermediate.kernel.numpy().astype(np.float64)  # [H,I]
    w_out = layer.output_dense.kernel.numpy().astype(np.float64)  # [I,H]
    scores.append(np.linalg.norm(w_in, axis=0) * np.linalg.norm(w_out, axis=1))
  return scores


def per_example_loss(logits, batch, config):
  """The recovery loss per example, float32 [B]: alpha·CE + (1-alpha)·T²·KL.

  task_losses.task_distillation_loss averages over the batch; the Taylor score
  needs each example's own gradient (|·| is taken per example), and a sum of
  per-example losses gives exactly that to a per-example mask.
  """
  loss = config.alpha * task_losses.per_example_cross_entropy(logits, batch["label_ids"])
  if config.uses_teacher:
    kl = task_losses.per_example_kl(batch["teacher_logits"], logits, config.temperature)
    loss += (1.0 - config.alpha) * config.temperature ** 2 * kl
  return loss


def _masked(activation, mask):
  """act(x) · mask: x [B,S,I], mask [B,1,I] (one row per example)."""
  return lambda x: activation(x) * tf.cast(mask, x.dtype)


@contextlib.contextmanager
def masked_ffn(layers, masks):
  """While inside, each layer's FFN activation [B,S,I] is multiplied by its mask
  [B,1,I]. The model's own call runs (no copy of the forward pass to drift from
  it): Keras' Dense applies `self.activation` at call time."""
  originals = [layer.intermediate.activation for layer in layers]
  try:
    for layer, activation, mask in zip(layers, originals, masks):
      layer.intermediate.activation = _masked(activation, mask)
    yield
  finally:
    for layer, activation in zip(layers, originals):
      layer.intermediate.activation = activation


def _batch_taylor(model, layers, batch, config):
  """[L] arrays [I]: sum over the batch's examples of |dL_x/dm_j|, where m is a
  per-example mask of ones on the activations (dL_x/dm_j = sum_s a_sj·dL_x/da_sj)."""
  rows = int(batch["input_ids"].shape[0])
  masks = [tf.ones([rows, 1, layer.intermediate_size]) for layer in layers]
  with tf.GradientTape() as tape:
    tape.watch(masks)
    with masked_ffn(layers, masks):
      logits = classification.logits(model, batch, training=False)  # [B,C]
    loss = tf.reduce_sum(per_example_loss(logits, batch, config))
  grads = tape.gradient(loss, masks)  # [L] x [B,1,I]
  return [np.abs(g.numpy().astype(np.float64)).sum(axis=(0, 1)) for g in grads]


def taylor_importance(model, batches, config):
  """[L] float64 arrays [I]: the module doc's Taylor score, averaged over examples.

  Args:
    model: a float32 BertClassifier (dropout off: training=False).
    batches: an iterable of batch dicts (inputs, label_ids [B,1], and
      teacher_logits [B,C] when config.uses_teacher).
    config: task_losses.TaskDistillConfig, the recovery's alpha and T.
  Raises:
    ValueError: no batches.
  """
  layers = encoder_layers(model)
  totals = [np.zeros(layer.intermediate_size) for layer in layers]
  examples = 0
  for batch in batches:
    for total, scores in zip(totals, _batch_taylor(model, layers, batch, config)):
      total += scores
    examples += int(batch["input_ids"].shape[0])
  if not examples:
    raise ValueError("no examples to score the neurons on")
  return [total / examples for total in totals]


# ---------------------------------------------------------------- pruning


def top_neurons(scores, count):
  """Indices of the `count` highest scores, ascending (ties: the lower index)."""
  scores = np.asarray(scores)
  if not 1 <= count <= scores.size:
    raise ValueError(f"cannot keep {count} of {scores.size} neurons")
  order = np.argsort(-scores, kind="stable")  # Stable: equal scores keep index order.
  return np.sort(order[:count])


def select_neurons(scores, count):
  """[L] int arrays [I']: each layer's top `count` neurons (the same count in all)."""
  return [top_neurons(layer_scores, count) for layer_scores in scores]


def _ffn_slices(keep):
  """{TF1 name (name_map) of an FFN variable: its kept part, as a function of
  the stored array}."""
  slices = {}
  for i, kept in enumerate(keep):
    scope = f"bert/encoder/layer_{i}"
    slices[f"{scope}/intermediate/dense/kernel"] = lambda w, k=kept: w[:, k]  # [H,I']
    slices[f"{scope}/intermediate/dense/bias"] = lambda w, k=kept: w[k]  # [I']
    slices[f"{scope}/output/dense/kernel"] = lambda w, k=kept: w[k, :]  # [I',H]
  return slices


def prune_classifier(model, keep):
  """A new float32 BertClassifier with only the `keep` neurons of each FFN.

  Args:
    model: a BertClassifier of intermediate size I.
    keep: [L] index arrays, all of one length I' (select_neurons).
  Returns:
    The smaller model: intermediate_size I', every other variable copied,
    the kept rows / columns of the FFN ones. With all I neurons kept its
    outputs equal the original's.
  """
  sizes = {len(k) for k in keep}
  if len(keep) != model.config.num_hidden_layers or len(sizes) != 1:
    raise ValueError(f"keep: one index list per layer ({model.config.num_hidden_layers}), "
                     f"all of one length; got lengths {[len(k) for k in keep]}")
  config = model.config.replace(intermediate_size=sizes.pop())
  pruned = classification.build_classifier(config, model.num_labels,
                                           dropout_rate=model.dropout_rate, dtype="float32")
  source, slices = name_map.tf1_variable_map(model), _ffn_slices(keep)
  for name, variable in name_map.tf1_variable_map(pruned).items():
    value = source[name].numpy()
    variable.assign(slices[name](value) if name in slices else value)
  return pruned


def count_parameters(model):
  """Scalars in all of the model's variables."""
  return int(sum(np.prod(v.shape) for v in model.weights))
