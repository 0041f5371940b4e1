"""Keras' stock Dense and LayerNormalization with Google BERT's defaults.

Every kernel and embedding table of BERT starts from a truncated normal (cut
at 2 stddev) of stddev `initializer_range`; the LayerNorm epsilon is the
config's (Google hard-codes 1e-12).
"""

import keras


def truncated_normal(initializer_range):
  return keras.initializers.TruncatedNormal(stddev=initializer_range)


def make_dense(units, name, dtype, initializer_range, activation=None):
  """A Dense [..,in] -> [..,units] with BERT's kernel initializer."""
  return keras.layers.Dense(
      units, activation=activation,
      kernel_initializer=truncated_normal(initializer_range), name=name,
      dtype=dtype)


def make_layer_norm(name, dtype, epsilon):
  return keras.layers.LayerNormalization(epsilon=epsilon, name=name,
                                         dtype=dtype)
