"""Optimizer, schedule, losses and the trainer, in-process at tiny sizes."""

import dataclasses
import math
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from modeling.networks import bert
from modeling.models import heads
from modeling.losses import pretraining_losses
from modeling.training import optimization
from modeling.training import pretraining
from modeling.training import run
from modeling.training import trainer
from pipeline.inputs import pretraining_dataset
from pipeline.core import errors
from pipeline.core.errors import ConfigError, InputError

# No dropout: runs that should match must see the same function.
CONFIG = bert.BertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2,
                         num_attention_heads=4, intermediate_size=64,
                         max_position_embeddings=64, hidden_dropout_prob=0.0,
                         attention_probs_dropout_prob=0.0)
S, P = 16, 4


def _model(config=CONFIG, dtype=None, seed=0):
  keras.utils.set_random_seed(seed)
  return bert.ensure_built(heads.BertPretrainer(config, dtype=dtype))


def _trainer(model, steps, batch, tmp_path, k=1, optimizer="adamw", lr=1e-3,
             mixed_precision="none", warmup=0):
  schedule = optimization.WarmupPolynomialDecay(lr, steps, warmup)
  opt = optimization.create_optimizer(optimizer, schedule,
                                      model.trainable_variables,
                                      mixed_precision=mixed_precision)
  config = trainer.TrainerConfig(steps, batch, gradient_accumulation_steps=k,
                                 save_checkpoints_steps=1000,
                                 log_every_steps=1000)
  return trainer.Trainer(model, opt, pretraining.PretrainingTask(), config,
                         str(tmp_path))


# --- Learning rate and optimizer ------------------------------------------


def test_warmup_then_linear_decay_values():
  schedule = optimization.WarmupPolynomialDecay(1e-3, num_train_steps=100,
                                                num_warmup_steps=10)
  got = [float(schedule(step)) for step in (0, 5, 10, 55, 100, 150)]
  # Warmup: peak * step / 10; then peak * (1 - step / 100), Google's form.
  np.testing.assert_allclose(got, [0.0, 5e-4, 9e-4, 4.5e-4, 0.0, 0.0],
                             atol=1e-9)
  copy = optimization.WarmupPolynomialDecay.from_config(schedule.get_config())
  assert float(copy(42)) == float(schedule(42))
  assert float(optimization.WarmupPolynomialDecay(2.0, 4)(1)) == 1.5
  with pytest.raises(ValueError, match="num_warmup_steps"):
    optimization.WarmupPolynomialDecay(1e-3, 10, 11)


def test_lr_scales_with_world_size_only_when_asked():
  assert optimization.scaled_learning_rate(1e-4, 8, False) == 1e-4
  assert optimization.scaled_learning_rate(1e-4, 8, True) == 8e-4


def test_weight_decay_skips_layer_norm_and_biases():
  model = _model()
  excluded = {v.path for v in optimization.excluded_from_weight_decay(
      model.trainable_variables)}
  assert any(p.endswith("/layer_0/attention_layer_norm/gamma")
             for p in excluded)
  kinds = {p.rsplit("/", 1)[1] for p in excluded}
  assert kinds == {"gamma", "beta", "bias", "output_bias"}
  # Zero gradients leave Adam's update at 0: only decay moves a variable.
  opt = optimization.create_optimizer("adamw", 0.1, model.trainable_variables,
                                      weight_decay=0.5)
  before = [v.numpy().copy() for v in model.trainable_variables]
  opt.apply([tf.zeros_like(v) for v in model.trainable_variables],
            model.trainable_variables)
  for v, old in zip(model.trainable_variables, before):
    factor = 1.0 if v.path in excluded else 1.0 - 0.1 * 0.5
    np.testing.assert_allclose(v.numpy(), old * factor, rtol=1e-6,
                               err_msg=v.path)


# --- Losses -----------------------------------------------------------------


def _np_ce(logits, labels):
  shifted = logits - logits.max(-1, keepdims=True)
  log_probs = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
  return -np.take_along_axis(log_probs, labels[..., None], -1)[..., 0]


def test_losses_match_numpy():
  rng = np.random.default_rng(0)
  mlm = rng.standard_normal((3, 5, 11)).astype(np.float32)  # [B,P,V]
  ids = rng.integers(0, 11, (3, 5))
  weights = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]],
                     np.float32)
  nsp = rng.standard_normal((3, 2)).astype(np.float32)
  labels = np.array([[0], [1], [1]])
  ce = _np_ce(mlm, ids)
  want_mlm = (weights * ce).sum() / weights.sum()
  want_acc = (weights * (mlm.argmax(-1) == ids)).sum() / weights.sum()
  got = pretraining_losses.masked_lm_loss(mlm, ids, weights)
  np.testing.assert_allclose(float(got), want_mlm, rtol=1e-5)
  np.testing.assert_allclose(float(pretraining_losses.masked_lm_accuracy(
      mlm, ids, weights)), want_acc, rtol=1e-5)
  np.testing.assert_allclose(float(pretraining_losses.next_sentence_loss(nsp, labels)),
                             _np_ce(nsp, labels[:, 0]).mean(), rtol=1e-5)
  np.testing.assert_allclose(
      float(pretraining_losses.next_sentence_accuracy(nsp, labels)),
      (nsp.argmax(-1) == labels[:, 0]).mean())
  sums = pretraining_losses.pretraining_sums({"mlm_logits": mlm, "nsp_logits": nsp},
                                 {"masked_lm_ids": ids,
                                  "masked_lm_weights": weights,
                                  "next_sentence_labels": labels})
  numerator, denominator = sums["mlm_loss"]
  assert float(denominator) == weights.sum()
  np.testing.assert_allclose(float(numerator) / weights.sum(), want_mlm,
                             rtol=1e-5)


# --- Training ---------------------------------------------------------------


def test_tiny_pretraining_run_lowers_the_loss(corpus, tmp_path):
  config = CONFIG.replace(vocab_size=400)
  model = _model(config)
  loop = _trainer(model, 40, 16, tmp_path, lr=3e-3)
  evals = pretraining_dataset.eval_dataset(corpus["records"], 16, 64, 10)
  before = loop.evaluate(evals)
  summary = loop.train(pretraining_dataset.train_dataset(corpus["records"], 16, 64, 10,
                                             seed=1), evals)
  after = summary["eval"]
  assert summary["step"] == 40 and loop.step == 40
  assert before["mlm_loss"] > math.log(400) - 0.2
  assert after["mlm_loss"] < before["mlm_loss"] - 0.3, (before, after)


def _fixed_examples(n):
  # Every masked position has weight 1, so each micro-batch normalises the
  # MLM loss by the same count and k micro-batches equal one big batch.
  batch = pretraining_dataset.synthetic_batch(n, S, P, CONFIG.vocab_size, seed=3)
  return tf.data.Dataset.from_tensor_slices(batch)


def _sgd_trainer(model, k, tmp_path):
  # Plain SGD: unlike Adam/LAMB its step scales with the gradient, so a
  # sum where a mean is due would show.
  optimizer = keras.optimizers.SGD(0.5)
  optimizer.build(model.trainable_variables)
  config = trainer.TrainerConfig(2, 8, gradient_accumulation_steps=k)
  return trainer.Trainer(model, optimizer, pretraining.PretrainingTask(),
                         config, str(tmp_path))


def test_gradient_accumulation_equals_one_big_batch(tmp_path):
  big, small = _model(seed=5), _model(seed=5)
  examples = _fixed_examples(16)
  _sgd_trainer(big, 1, tmp_path / "big").train(examples.batch(8).repeat())
  _sgd_trainer(small, 4, tmp_path / "small").train(examples.batch(2).repeat())
  for a, b in zip(big.trainable_variables, small.trainable_variables):
    np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-4, atol=1e-6,
                               err_msg=a.path)
  moved = _model(seed=5).trainable_variables[0].numpy()
  assert not np.allclose(moved, big.trainable_variables[0].numpy())


def test_a_diverged_run_stops_with_a_one_line_error(tmp_path):
  """A NaN loss (here: weights overflowed by a huge SGD step) stops the run at the
  next logged step instead of training on for nothing and reporting success."""
  model = _model(seed=5)
  optimizer = keras.optimizers.SGD(1e30)
  optimizer.build(model.trainable_variables)
  config = trainer.TrainerConfig(6, 8, log_every_steps=2)
  loop = trainer.Trainer(model, optimizer, pretraining.PretrainingTask(), config,
                         str(tmp_path))
  with pytest.raises(errors.DivergedError, match=r"loss (nan|inf) at step \d: the run "
                     "diverged"):
    loop.train(_fixed_examples(16).batch(8).repeat())
  assert loop.step < 6


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_trains(precision, tmp_path):
  policy = optimization.PRECISION_POLICIES[precision]
  model = _model(dtype=policy)
  loop = _trainer(model, 3, 4, tmp_path, mixed_precision=precision,
                  optimizer="lamb")
  summary = loop.train(_fixed_examples(8).batch(4).repeat(),
                       _fixed_examples(8).batch(4))
  assert model.trainable_variables[0].dtype == "float32"
  assert model.bert.layer_0.intermediate.compute_dtype == policy[len("mixed_"):]
  assert all(np.isfinite(v) for v in summary["eval"].values())
  if precision == "fp16":
    scaled = loop._optimizer  # pylint: disable=protected-access
    assert isinstance(scaled, keras.optimizers.LossScaleOptimizer)


# --- Settings checks --------------------------------------------------------


def test_settings_are_checked_against_the_records():
  manifest = {"_dir": "/records", "config": {
      "max_seq_length": 64, "max_predictions_per_seq": 10, "vocab_size": 400}}
  assert pretraining.records_shapes(manifest) == (64, 10)
  assert pretraining.records_shapes(manifest, 64, 10) == (64, 10)
  with pytest.raises(InputError, match="--max_seq_length=128 but the records"):
    pretraining.records_shapes(manifest, 128)
  assert pretraining.model_config("tiny_teacher", manifest).vocab_size == 400
  with pytest.raises(InputError, match="vocab_size 30522 differs"):
    pretraining.model_config(os.path.join(os.path.dirname(os.path.dirname(bert.__file__)),
                                          "configs", "bert_base.json"),
                             manifest)
  loop = run.LoopConfig(train_batch_size=32, gradient_accumulation_steps=4)
  assert loop.micro_batch_size(2) == 4
  with pytest.raises(ConfigError, match="not a multiple"):
    dataclasses.replace(loop, train_batch_size=30).micro_batch_size(2)
  with pytest.raises(ConfigError, match="num_warmup_steps=20 must be <= num_train_steps=10"):
    run.LoopConfig(num_train_steps=10, num_warmup_steps=20).check()
  with pytest.raises(ValueError, match="num_train_steps must be >= 1"):
    trainer.TrainerConfig(num_train_steps=0, global_batch_size=8)
