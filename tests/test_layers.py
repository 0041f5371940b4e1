"""Tests for modeling/layers at tiny sizes: serialization and variable names.

The layers' weight names are the checkpoints' names (object paths in our own
checkpoints, Keras paths in .weights.h5): they must not drift.
"""

import keras
import numpy as np
import pytest

from modeling.layers import activations
from modeling.layers import attention
from modeling.layers import embeddings
from modeling.layers import masked_lm
from modeling.layers import transformer

H, N, I, V = 32, 4, 64, 40


def _embeddings():
  return embeddings.BertEmbeddings(
      vocab_size=V, hidden_size=H, max_position_embeddings=16,
      type_vocab_size=2, name="embeddings")


def _attention():
  return attention.BertSelfAttention(hidden_size=H, num_heads=N,
                                     name="attention")


def _transformer():
  return transformer.TransformerLayer(
      hidden_size=H, num_heads=N, intermediate_size=I, activation="gelu_new",
      hidden_dropout_rate=0.2, name="layer_0")


def _masked_lm():
  return masked_lm.MaskedLMHead(vocab_size=V, hidden_size=H,
                                name="masked_lm")


@pytest.mark.parametrize("make", [_embeddings, _attention, _transformer,
                                  _masked_lm])
def test_get_config_round_trip(make):
  layer = make()
  config = layer.get_config()
  clone = type(layer).from_config(config)
  assert clone.get_config() == config
  revived = keras.saving.deserialize_keras_object(
      keras.saving.serialize_keras_object(layer))
  assert type(revived) is type(layer) and revived.get_config() == config


@pytest.mark.parametrize("make, paths", [
    (_embeddings, ["embeddings/word_embeddings",
                   "embeddings/position_embeddings",
                   "embeddings/token_type_embeddings",
                   "embeddings/layer_norm/gamma",
                   "embeddings/layer_norm/beta"]),
    (_transformer, [f"layer_0/{p}" for p in (
        "attention/query/kernel", "attention/query/bias",
        "attention/key/kernel", "attention/key/bias",
        "attention/value/kernel", "attention/value/bias",
        "attention_output/kernel", "attention_output/bias",
        "attention_layer_norm/gamma", "attention_layer_norm/beta",
        "intermediate/kernel", "intermediate/bias",
        "output/kernel", "output/bias",
        "output_layer_norm/gamma", "output_layer_norm/beta")]),
    (_masked_lm, ["masked_lm/transform/kernel", "masked_lm/transform/bias",
                  "masked_lm/layer_norm/gamma", "masked_lm/layer_norm/beta",
                  "masked_lm/output_bias"]),
])
def test_weight_paths_are_stable(make, paths):
  layer = make()
  layer.build(None)
  assert sorted(w.path for w in layer.weights) == sorted(paths)


def test_attention_rejects_indivisible_heads():
  with pytest.raises(ValueError, match="divisible"):
    attention.BertSelfAttention(hidden_size=30, num_heads=4)


def test_attention_bias_masks_padding():
  bias = attention.attention_bias_from_mask(np.array([[1, 1, 0]]))
  assert bias.shape == (1, 1, 1, 3)
  np.testing.assert_array_equal(bias[0, 0, 0], [0.0, 0.0, -10000.0])


def test_activation_names():
  assert activations.get_activation("gelu_new") is activations.gelu_tanh
  with pytest.raises(ValueError, match="hidden_act"):
    activations.get_activation("swish")
