"""Optimizers (Keras 3's own LAMB and AdamW) and BERT's learning-rate schedule.

As in google-research/bert: linear warmup from 0 to the peak rate over
num_warmup_steps, then linear decay to 0 at num_train_steps; decoupled weight
decay (0.01) on every variable except LayerNorm parameters and biases;
gradients clipped to global norm 1.0.
"""

import keras
import tensorflow as tf

OPTIMIZERS = ("lamb", "adamw")
# keras.mixed_precision policy for each --mixed_precision value.
PRECISION_POLICIES = {"none": "float32", "bf16": "mixed_bfloat16",
                      "fp16": "mixed_float16"}


@keras.saving.register_keras_serializable(package="bert_distill")
class WarmupPolynomialDecay(keras.optimizers.schedules.LearningRateSchedule):
  """lr(step) = peak * step / warmup while step < warmup, else
  (peak - end) * (1 - min(step, total) / total) ** power + end.

  Like google-research/bert's optimization.py, the decay is a function of
  the global step counted from 0 (not from the end of warmup), and step 0
  has learning rate 0 when there is a warmup.
  """

  def __init__(self, learning_rate, num_train_steps, num_warmup_steps=0,
               power=1.0, end_learning_rate=0.0):
    if num_train_steps <= 0:
      raise ValueError(f"num_train_steps must be > 0, got {num_train_steps}")
    if not 0 <= num_warmup_steps <= num_train_steps:
      raise ValueError(f"num_warmup_steps must be in [0, num_train_steps], "
                       f"got {num_warmup_steps}")
    self.learning_rate = learning_rate
    self.num_train_steps = num_train_steps
    self.num_warmup_steps = num_warmup_steps
    self.power = power
    self.end_learning_rate = end_learning_rate

  def __call__(self, step):
    step = tf.cast(step, tf.float32)
    total = float(self.num_train_steps)
    done = tf.minimum(step, total) / total
    decayed = ((self.learning_rate - self.end_learning_rate) *
               (1.0 - done) ** self.power + self.end_learning_rate)
    if not self.num_warmup_steps:
      return decayed
    warmup = self.learning_rate * step / float(self.num_warmup_steps)
    return tf.where(step < self.num_warmup_steps, warmup, decayed)

  def get_config(self):
    return {"learning_rate": self.learning_rate,
            "num_train_steps": self.num_train_steps,
            "num_warmup_steps": self.num_warmup_steps,
            "power": self.power, "end_learning_rate": self.end_learning_rate}


def scaled_learning_rate(learning_rate, world_size, scale_with_world_size):
  """Peak rate for `world_size` ranks: multiplied only when asked to.

  Linear scaling suits a global batch that grows with the ranks; with a
  fixed global batch (this project's --train_batch_size) keep it off.
  """
  return learning_rate * world_size if scale_with_world_size else learning_rate


def excluded_from_weight_decay(variables):
  """LayerNorm scales/offsets and all biases (Google's "LayerNorm", "bias").

  Keras variable names are the short names given to add_weight: LayerNorm's
  are "gamma"/"beta", Dense's "bias", the MLM head's "output_bias".
  """
  return [v for v in variables
          if v.name in ("gamma", "beta") or v.name.endswith("bias")]


def _inner_optimizer(name, learning_rate, weight_decay, global_clipnorm,
                     epsilon):
  kwargs = dict(learning_rate=learning_rate, weight_decay=weight_decay,
                global_clipnorm=global_clipnorm, beta_1=0.9, beta_2=0.999,
                epsilon=epsilon)
  if name == "lamb":
    return keras.optimizers.Lamb(**kwargs)
  if name == "adamw":
    return keras.optimizers.AdamW(**kwargs)
  raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {name!r}")


def create_optimizer(name, learning_rate, trainable_variables,
                     weight_decay=0.01, global_clipnorm=1.0, epsilon=1e-6,
                     mixed_precision="none"):
  """A built LAMB or AdamW optimizer for `trainable_variables`.

  Args:
    name: "lamb" or "adamw".
    learning_rate: a float or a LearningRateSchedule.
    trainable_variables: the model's; LayerNorm/bias ones skip weight decay.
    weight_decay: decoupled decay rate (0 disables it).
    global_clipnorm: clip gradients to this global norm (None: no clipping).
    epsilon: 1e-6 as in BERT's AdamW and NVIDIA's LAMB.
    mixed_precision: "fp16" wraps the optimizer in a dynamic
      LossScaleOptimizer (float16 gradients underflow without it).

  Returns:
    The optimizer, built (slots exist, so it can be restored/broadcast).
  """
  optimizer = _inner_optimizer(name, learning_rate, float(weight_decay),
                               global_clipnorm, epsilon)
  optimizer.exclude_from_weight_decay(
      var_list=excluded_from_weight_decay(trainable_variables))
  if mixed_precision == "fp16":
    optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
  elif mixed_precision not in PRECISION_POLICIES:
    raise ValueError(f"mixed_precision must be one of "
                     f"{sorted(PRECISION_POLICIES)}, got {mixed_precision!r}")
  optimizer.build(trainable_variables)
  return optimizer
