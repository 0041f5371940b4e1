"""Distillation losses and tasks, in-process at tiny sizes: every KD variant
against a NumPy reference, the loss composition, padding, and the
checkpointed projections of the online teacher's hidden-state loss."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from modeling.networks import bert
from modeling.losses import distill_losses as dl
from modeling.models import student as student_model
from modeling.training import distillation
from modeling.training import distillation_setup
from modeling.models import heads
from modeling.training import pretraining
from modeling.checkpoints import training as training_checkpoints
from pipeline.labels import packed_labels
from pipeline.records import schema

B, P, V, K, S = 2, 5, 50, 6, 8
# Real masked positions come first; the rest are padding (weight 0).
WEIGHTS = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 0]], np.float32)
TOL = dict(rtol=1e-5, atol=1e-5)
STUDENT = bert.BertConfig(vocab_size=V, hidden_size=16, num_hidden_layers=2,
                          num_attention_heads=2, intermediate_size=32,
                          max_position_embeddings=16, hidden_dropout_prob=0.0,
                          attention_probs_dropout_prob=0.0)
TEACHER = STUDENT.replace(hidden_size=32, num_hidden_layers=4,
                          num_attention_heads=4, intermediate_size=64,
                          initializer_range=0.3)


# --- NumPy references ----------------------------------------------------------


def _log_softmax(x):
  x = x - x.max(-1, keepdims=True)
  return x - np.log(np.exp(x).sum(-1, keepdims=True))


def _xlogx(p):
  return np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0)


def _np_renormalize(log_q, ids, values):
  lq = np.take_along_axis(log_q, ids, -1)
  lq = _log_softmax(lq)  # renormalized over the K ids
  total = values.sum(-1, keepdims=True)
  p = np.divide(values, total, out=np.zeros_like(values), where=total > 0)
  return (_xlogx(p) - p * lq).sum(-1)


def _np_bucket(log_q, ids, values, tail):
  lq = np.take_along_axis(log_q, ids, -1)
  q = np.exp(log_q)
  member = np.zeros(q.shape, bool)
  np.put_along_axis(member, ids, True, -1)
  rest = np.log(np.maximum(np.where(member, 0.0, q).sum(-1), 1e-12))
  return (_xlogx(values) - values * lq).sum(-1) + _xlogx(tail) - tail * rest


def _np_cross_entropy(log_q, ids, values):
  return -(values * np.take_along_axis(log_q, ids, -1)).sum(-1)


def _np_mean(values, weights):
  return (weights * values).sum() / (weights.sum() + 1e-5)


def _np_kl(teacher_logits, student_logits, t=1.0):
  log_p = _log_softmax(teacher_logits / t)
  return (np.exp(log_p) * (log_p - _log_softmax(student_logits / t))).sum(-1)


def _topk_targets(rng, temperature):
  """Top-K p_T of random teacher logits; padding positions all 0."""
  p = np.exp(_log_softmax(rng.normal(0, 3, (B, P, V)) / temperature))
  ids = np.argsort(-p, -1, kind="stable")[..., :K]
  values = np.take_along_axis(p, ids, -1)
  tail = 1.0 - values.sum(-1)
  real = WEIGHTS[..., None] > 0
  return {"teacher_ids": np.where(real, ids, 0).astype(np.int32),
          "teacher_values": np.where(real, values, 0).astype(np.float16
                                                              ).astype(np.float32),
          "teacher_tail_mass": np.where(WEIGHTS > 0, tail, 0).astype(np.float16
                                                                      ).astype(np.float32)}


@pytest.fixture(name="case")
def _case():
  rng = np.random.default_rng(0)
  logits = rng.normal(0, 2, (B, P, V)).astype(np.float32)
  return logits, _topk_targets(rng, 2.0)


# --- Cached-label KD variants -------------------------------------------------


@pytest.mark.parametrize("mode,reference", [
    ("renormalize", lambda lq, t: _np_renormalize(lq, t["teacher_ids"], t["teacher_values"])),
    ("bucket", lambda lq, t: _np_bucket(lq, t["teacher_ids"], t["teacher_values"],
                                        t["teacher_tail_mass"])),
    ("ignore", lambda lq, t: _np_cross_entropy(lq, t["teacher_ids"], t["teacher_values"])),
])
def test_cached_kd_matches_numpy(case, mode, reference):
  logits, targets = case
  for temperature in (1.0, 2.0):
    log_q = dl.log_probs(logits, temperature)
    got = dl.cached_kd(log_q, {k: tf.constant(v) for k, v in targets.items()}, mode)
    want = reference(_log_softmax(logits.astype(np.float64) / temperature), targets)
    np.testing.assert_allclose(got.numpy() * WEIGHTS, want * WEIGHTS, **TOL)


def test_sampled_estimator_matches_numpy_and_is_unbiased():
  rng = np.random.default_rng(1)
  student = rng.normal(0, 1, (1, 1, V)).astype(np.float32)
  p = np.exp(_log_softmax(rng.normal(0, 2, V)))
  rows, draws = 4000, 16
  ids, weights = packed_labels.unique_with_weights(
      rng.choice(V, size=(rows, draws), p=p).astype(np.int32))
  log_q = tf.broadcast_to(dl.log_probs(student, 1.0), [1, rows, V])
  targets = {"teacher_ids": ids[None], "teacher_values": weights[None]}
  got = dl.cached_kd(log_q, targets, dl.SAMPLED).numpy()[0]  # [rows]
  log_q64 = np.broadcast_to(_log_softmax(student[0].astype(np.float64)), (rows, V))
  want = _np_cross_entropy(log_q64, ids, weights)
  np.testing.assert_allclose(got, want, **TOL)
  # E[-sum_k w_k log q(id_k)] = H(p, q): within 4 standard errors.
  exact = -(p * log_q64[0]).sum()
  assert abs(got.mean() - exact) < 4 * got.std() / np.sqrt(rows)


def test_bucket_kl_is_exact_when_the_student_is_the_teacher():
  rng = np.random.default_rng(2)
  teacher_logits = rng.normal(0, 3, (B, P, V)).astype(np.float32)
  p = np.exp(_log_softmax(teacher_logits.astype(np.float64)))
  ids = np.argsort(-p, -1)[..., :K].astype(np.int32)
  values = np.take_along_axis(p, ids, -1)
  kl = dl.bucket_kl(dl.log_probs(teacher_logits, 1.0), ids, values.astype(np.float32),
                    (1 - values.sum(-1)).astype(np.float32))
  np.testing.assert_allclose(kl.numpy(), 0.0, atol=1e-5)
  # renormalize and bucket are KLs (>= 0); the bucket never exceeds the full KL.
  student = rng.normal(0, 3, (B, P, V)).astype(np.float32)
  bucket = dl.bucket_kl(dl.log_probs(student, 1.0), ids, values.astype(np.float32),
                        (1 - values.sum(-1)).astype(np.float32)).numpy()
  assert (bucket >= -1e-6).all()
  assert (bucket <= _np_kl(teacher_logits, student) + 1e-5).all()


def test_top1_of_cached_labels(case):
  _, targets = case
  np.testing.assert_array_equal(dl.cached_top1(targets).numpy(), targets["teacher_ids"][..., 0])


# --- Online terms --------------------------------------------------------------


def test_full_kl_and_nsp_kl_match_numpy():
  rng = np.random.default_rng(3)
  t, s = rng.normal(0, 3, (2, B, P, V)).astype(np.float32)
  np.testing.assert_allclose(dl.full_kl(t, s, 2.0).numpy(), _np_kl(t, s, 2.0), **TOL)
  t2, s2 = rng.normal(0, 1, (2, B, 2)).astype(np.float32)
  np.testing.assert_allclose(dl.next_sentence_kl(t2, s2).numpy(), _np_kl(t2, s2).mean(), **TOL)


def _np_attention_kl(s, t, mask):
  if s.shape[1] != t.shape[1]:
    s, t = s.mean(1, keepdims=True), t.mean(1, keepdims=True)
  log_s = np.log(np.where(t > 0, s, 1.0))
  kl = (_xlogx(t) - np.where(t > 0, t * log_s, 0)).sum(-1).mean(1)  # [B,S]
  return _np_mean(kl, mask)


def test_attention_kl_matches_numpy_with_padding_keys():
  rng = np.random.default_rng(4)
  mask = np.array([[1] * S, [1] * 5 + [0] * 3], np.int32)
  bias = (1 - mask)[:, None, None, :] * -10000.0

  def probs(heads):
    return tf.nn.softmax(rng.normal(0, 2, (B, heads, S, S)) + bias).numpy()

  for student_heads, teacher_heads in ((4, 4), (2, 4)):
    s, t = probs(student_heads).astype(np.float32), probs(teacher_heads).astype(np.float32)
    got = dl.attention_kl(s, t, mask).numpy()
    np.testing.assert_allclose(got, _np_attention_kl(s.astype(np.float64), t, mask), **TOL)
  assert dl.attention_kl(t, t, mask).numpy() == pytest.approx(0.0, abs=1e-6)


def test_attention_kl_stays_finite_where_the_student_underflows():
  """A student probability of exactly 0 on a key the teacher attends to (a peaked
  head's softmax underflow) costs t * 87.3 (the log floored at the smallest normal
  float32), not inf, and every gradient stays finite."""
  mask = np.ones((1, 3), np.int32)
  t = np.array([[[[0.5, 0.3, 0.2]] * 3]], np.float32)  # [B=1,N=1,S=3,S=3]
  logits = tf.constant([[[[0.0, 200.0, -200.0]] * 3]])  # softmax: [~0, 1, exactly 0]
  with tf.GradientTape() as tape:
    tape.watch(logits)
    s = tf.nn.softmax(logits)
    kl = dl.attention_kl(s, t, mask)
  assert float(s[0, 0, 0, 2]) == 0.0
  floor = np.log(np.finfo(np.float32).tiny)
  log_s = np.log(np.maximum(s.numpy().astype(np.float64), np.finfo(np.float32).tiny))
  want = (_xlogx(t) - t * log_s).sum(-1).mean()
  assert np.isfinite(kl.numpy()) and kl.numpy() == pytest.approx(want, rel=1e-5)
  assert want > 0.2 * -floor  # the floored key dominates, as it should
  assert np.all(np.isfinite(tape.gradient(kl, logits).numpy()))


def test_uniform_layer_map():
  assert dl.uniform_layer_map(12, 4) == (3, 6, 9, 12)
  assert dl.uniform_layer_map(4, 2) == (2, 4)
  assert dl.uniform_layer_map(3, 3) == (1, 2, 3)
  with pytest.raises(ValueError, match="more than"):
    dl.uniform_layer_map(2, 4)


# --- Tasks ---------------------------------------------------------------------


def _batch(rng, targets=None):
  positions = np.sort(rng.choice(np.arange(1, S), (B, P)), -1)
  batch = {"input_ids": rng.integers(0, V, (B, S)),
           "input_mask": np.array([[1] * S, [1] * 6 + [0] * 2]),
           "segment_ids": np.array([[0] * 4 + [1] * 4] * B),
           "masked_lm_positions": positions, "masked_lm_ids": rng.integers(0, V, (B, P)),
           "next_sentence_labels": np.array([[0], [1]])}
  batch = {k: tf.constant(v, tf.int32) for k, v in batch.items()}
  batch["masked_lm_weights"] = tf.constant(WEIGHTS)
  batch["teacher_nsp_logits"] = tf.constant(rng.normal(0, 1, (B, 2)), tf.float32)
  batch.update({k: tf.constant(v) for k, v in (targets or {}).items()})
  return batch


def _model(config, seed, cls=heads.BertPretrainer, **kwargs):
  keras.utils.set_random_seed(seed)
  return bert.ensure_built(cls(config, **kwargs))


def test_alpha_one_is_the_pretraining_loss(case):
  _, targets = case
  batch = _batch(np.random.default_rng(5), targets)
  model = _model(STUDENT.replace(max_position_embeddings=S), 0)
  want, _ = pretraining.PretrainingTask().compute_loss(model, batch, training=False)
  for mode in dl.KD_TAILS:
    task = distillation.OfflineDistillationTask(
        distillation.DistillConfig(alpha=1.0, temperature=3.0, kd_mode=mode))
    got, _ = task.compute_loss(model, batch, training=False)
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-6)


def test_loss_composition_and_temperature_squared(case):
  logits, targets = case
  del logits
  batch = _batch(np.random.default_rng(6), targets)
  model = _model(STUDENT, 0)
  outputs = model({k: batch[k] for k in schema.PRETRAINING_MODEL_INPUTS}, training=False)
  student = outputs["mlm_logits"].numpy().astype(np.float64)
  for temperature in (1.0, 4.0):
    config = distillation.DistillConfig(alpha=0.3, temperature=temperature, kd_mode="bucket",
                                        nsp_weight=0.5, nsp_kd_weight=0.25)
    loss, terms = distillation.OfflineDistillationTask(config).compute_loss(
        model, batch, training=False)
    kd = _np_mean(_np_bucket(_log_softmax(student / temperature), targets["teacher_ids"],
                             targets["teacher_values"], targets["teacher_tail_mass"]), WEIGHTS)
    nsp_kd = _np_kl(batch["teacher_nsp_logits"].numpy(), outputs["nsp_logits"].numpy()).mean()
    np.testing.assert_allclose(terms["kd_loss"].numpy(), kd, **TOL)
    want = (0.3 * terms["mlm_loss"].numpy() + 0.7 * temperature ** 2 * kd +
            0.5 * terms["nsp_loss"].numpy() + 0.25 * nsp_kd)
    np.testing.assert_allclose(loss.numpy(), want, **TOL)


def test_padding_positions_are_ignored_and_gradients_finite(case):
  _, targets = case
  rng = np.random.default_rng(7)
  model = _model(STUDENT, 0)
  garbage = {k: v.copy() for k, v in targets.items()}
  pad = WEIGHTS == 0
  garbage["teacher_ids"][pad] = rng.integers(0, V, (pad.sum(), K))
  garbage["teacher_values"][pad] = 0.3
  garbage["teacher_tail_mass"][pad] = 0.9
  for mode in dl.KD_TAILS:
    task = distillation.OfflineDistillationTask(distillation.DistillConfig(
        alpha=0.0, kd_mode=mode))
    losses = []
    for t in (targets, garbage):
      batch = _batch(np.random.default_rng(8), t)
      with tf.GradientTape() as tape:
        loss, _ = task.compute_loss(model, batch, training=False)
      grads = tape.gradient(loss, model.trainable_variables)
      assert all(np.isfinite(g.numpy() if not isinstance(g, tf.IndexedSlices)
                             else g.values.numpy()).all() for g in grads if g is not None)
      losses.append(loss.numpy())
    np.testing.assert_allclose(losses[0], losses[1], rtol=1e-6)


def _projected_mse(model, student_hidden, teacher_hidden, mask, hidden_map):
  total = 0.0
  for i, (h, t) in enumerate(zip(student_hidden, hidden_map)):
    dense = getattr(model.projections, f"proj_{i}")
    projected = h.numpy() @ dense.kernel.numpy() + dense.bias.numpy()
    total += _np_mean(((projected - teacher_hidden[t].numpy()) ** 2).mean(-1), mask)
  return total / len(hidden_map)


def test_online_loss_matches_numpy_with_projections_and_attention():
  batch = _batch(np.random.default_rng(9))
  teacher = _model(TEACHER, 1)
  model = _model(STUDENT, 0, student_model.DistillationStudent, teacher_hidden_size=32)
  config = distillation.DistillConfig(alpha=0.2, temperature=2.0, nsp_kd_weight=0.5,
                                      hidden_weight=3.0, attention_weight=2.0)
  task = distillation.OnlineDistillationTask(teacher, config, STUDENT.num_hidden_layers)
  assert task.hidden_map == (0, 2, 4) and task.attention_map == (1, 3)
  loss, terms = task.compute_loss(model, batch, training=False)
  inputs = {k: batch[k] for k in schema.PRETRAINING_MODEL_INPUTS}
  s = model(inputs, output_hidden_states=True, output_attentions=True)
  t = teacher(inputs, output_hidden_states=True, output_attentions=True)
  mask = batch["input_mask"].numpy()
  hidden = _projected_mse(model, s["hidden_states"], t["hidden_states"], mask, (0, 2, 4))
  attention = np.mean([_np_attention_kl(s["attention_probs"][i].numpy().astype(np.float64),
                                        t["attention_probs"][j].numpy(), mask)
                       for i, j in enumerate((1, 3))])
  kd = _np_mean(_np_kl(t["mlm_logits"].numpy(), s["mlm_logits"].numpy(), 2.0), WEIGHTS)
  nsp_kd = _np_kl(t["nsp_logits"].numpy(), s["nsp_logits"].numpy()).mean()
  for name, want in (("hidden_mse", hidden), ("attention_kl", attention), ("kd_loss", kd)):
    np.testing.assert_allclose(terms[name].numpy(), want, err_msg=name, **TOL)
  want = (0.2 * terms["mlm_loss"].numpy() + 0.8 * 4.0 * kd + terms["nsp_loss"].numpy() +
          0.5 * nsp_kd + 3.0 * hidden + 2.0 * attention)
  np.testing.assert_allclose(loss.numpy(), want, **TOL)
  backbone = distillation.OnlineDistillationTask(teacher, distillation.DistillConfig(
      hidden_weight=3.0, attention_weight=2.0, phase="backbone"), 2)
  loss, _ = backbone.compute_loss(model, batch, training=False)
  np.testing.assert_allclose(loss.numpy(), 3.0 * hidden + 2.0 * attention, **TOL)


def test_projections_are_checkpointed_and_load_into_a_plain_pretrainer(tmp_path):
  model = _model(STUDENT, 0, student_model.DistillationStudent, teacher_hidden_size=32)
  assert len(model.projections.trainable_variables) == 2 * 3
  assert {id(v) for v in model.projections.trainable_variables} <= {
      id(v) for v in model.trainable_variables}
  prefix = tf.train.Checkpoint(model=model).write(str(tmp_path / "ckpt"))
  names = [n for n, _ in tf.train.list_variables(prefix)]
  assert sum("model/projections/proj_" in n for n in names) == 6, names
  copy = _model(STUDENT, 1, student_model.DistillationStudent, teacher_hidden_size=32)
  tf.train.Checkpoint(model=copy).read(prefix).assert_consumed()
  np.testing.assert_array_equal(copy.projections.proj_2.kernel.numpy(),
                                model.projections.proj_2.kernel.numpy())
  plain = _model(STUDENT, 2)
  training_checkpoints.load_model_weights(plain, prefix)
  np.testing.assert_array_equal(plain.bert.pooler.kernel.numpy(),
                                model.bert.pooler.kernel.numpy())
  config = student_model.HiddenProjections.from_config(model.projections.get_config())
  assert (config.num_states, config.teacher_hidden_size) == (3, 32)
  same_width = student_model.HiddenProjections(3, 16, 16)
  assert same_width.identity and not same_width.trainable_variables


def test_config_and_label_options_are_validated():
  with pytest.raises(ValueError, match="alpha"):
    distillation.DistillConfig(alpha=1.5)
  with pytest.raises(ValueError, match="backbone phase"):
    distillation.DistillConfig(phase="backbone")
  with pytest.raises(ValueError, match="online teacher"):
    distillation.OfflineDistillationTask(distillation.DistillConfig(hidden_weight=1.0))
  assert distillation_setup.label_options("topk", 2.0, None, "bucket", True) == (2.0, "bucket")
  assert distillation_setup.label_options("sampled", 1.0, 1.0, "renormalize", False) == (
      1.0, dl.SAMPLED)
  assert distillation_setup.label_options(None, None, None, "ignore", False) == (1.0, "ignore")
  with pytest.raises(ValueError, match="temperature 3.0 but"):
    distillation_setup.label_options("topk", 2.0, 3.0, "bucket", False)
  with pytest.raises(ValueError, match="sampled"):
    distillation_setup.label_options("sampled", 1.0, None, "bucket", True)


def test_student_initialisation(tmp_path):
  same_width = TEACHER.replace(initializer_range=0.02)
  teacher = _model(TEACHER, 1)
  student = _model(same_width.replace(num_hidden_layers=2), 0)
  distillation_setup.initialize_student(student, "teacher_layers", teacher)
  # default_layer_map(4, 2) == (0, 3): the first and the last layer.
  np.testing.assert_array_equal(student.bert.layer_1.intermediate.kernel.numpy(),
                                teacher.bert.layer_3.intermediate.kernel.numpy())
  with pytest.raises(ValueError, match="widths differ"):
    distillation_setup.initialize_student(_model(STUDENT, 0), "teacher_layers", teacher)
  prefix = tf.train.Checkpoint(model=student).write(str(tmp_path / "ckpt"))
  fresh = _model(same_width.replace(num_hidden_layers=2), 5)
  distillation_setup.initialize_student(fresh, "checkpoint", checkpoint=prefix)
  np.testing.assert_array_equal(fresh.bert.layer_1.intermediate.kernel.numpy(),
                                teacher.bert.layer_3.intermediate.kernel.numpy())
  with pytest.raises(ValueError, match="needs a checkpoint"):
    distillation_setup.initialize_student(fresh, "checkpoint")
