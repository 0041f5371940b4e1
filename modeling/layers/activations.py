"""The activation functions a BERT config may name in `hidden_act`.

Two GELUs coexist in the ecosystem, and which one a file's "gelu" means
depends on whose code wrote it (see networks/bert.py's gelu_convention):
HF/PyTorch's "gelu" is exact erf, google-research/bert's is the tanh form.
"""

import keras


def gelu_erf(x):
  # Exact GELU, x * Phi(x): what HF (and PyTorch) call "gelu", and what
  # google-research/bert's modeling.py used when it was first released.
  return keras.activations.gelu(x, approximate=False)


def gelu_tanh(x):
  # 0.5x(1 + tanh(sqrt(2/pi)(x + 0.044715x^3))): the "gelu" of
  # google-research/bert's modeling.py as it stands (and OpenAI GPT's); HF
  # names it "gelu_new" / "gelu_pytorch_tanh". At most 4.7e-4 from erf.
  return keras.activations.gelu(x, approximate=True)


# Keys are HF's names, the meaning this project's own config files use.
_ACTIVATIONS = {
    "gelu": gelu_erf,
    "gelu_new": gelu_tanh,
    "gelu_pytorch_tanh": gelu_tanh,
    "relu": keras.activations.relu,
}


def activation_names():
  """The `hidden_act` values get_activation accepts, sorted."""
  return sorted(_ACTIVATIONS)


def get_activation(name):
  """Returns the activation function for a `hidden_act` name."""
  if name not in _ACTIVATIONS:
    raise ValueError(f"unsupported hidden_act {name!r}; expected one of "
                     f"{activation_names()}")
  return _ACTIVATIONS[name]
