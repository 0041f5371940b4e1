"""Task distillation in two phases: intermediate layers, then predictions.

Phase 1 (--distill_phase=backbone on task distill records): hidden-state MSE
through learned projections and attention KL to a fine-tuned teacher run
online (classification_training.IntermediateDistillationTask, with the loss
pieces of modeling/losses/distill_losses.py that pretraining distillation
uses); phase 2: alpha * CE + (1 - alpha) * T^2 * KL on logits, from phase 1's
weights. Also: unlabeled rows (label id C) leave the hard-label CE and its
accuracy but not KD. Tiny models: a 2-layer H=32 student, a 4-layer H=48
teacher, S=16.
"""

import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from modeling.checkpoints import name_map
from modeling.losses import distill_losses as dl
from modeling.losses import task_losses as td
from modeling.models import classification
from modeling.models import student as student_lib
from modeling.models import heads
from modeling.networks import bert
from modeling.training import classification_training as ct
from modeling.training import classifier_runs
from modeling.training import distill_runs
from modeling.training import run
from pipeline.core.errors import ConfigError, InputError
from tests import classification_fixtures as fixtures
from tests.conftest import run_tool
from tests.test_distill_tool import _write_json

B, S, C = 3, 16, 3
TOL = dict(rtol=1e-5, atol=1e-6)
STUDENT = dict(vocab_size=fixtures.VOCAB_SIZE, hidden_size=32, num_hidden_layers=2,
               num_attention_heads=2, intermediate_size=64, max_position_embeddings=64,
               type_vocab_size=2, initializer_range=0.1, hidden_act="gelu",
               hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
TEACHER = dict(STUDENT, hidden_size=48, num_hidden_layers=4, num_attention_heads=4,
               intermediate_size=96)


def _batch(seed=0):
  columns = fixtures.make_examples("single", B, seq_length=S, seed=seed)
  return {k: tf.constant(v, tf.int32) for k, v in columns.items()}


def _model(config, seed, cls=heads.BertClassifier, **kwargs):
  keras.utils.set_random_seed(seed)
  return bert.ensure_built(cls(bert.BertConfig(**config), C, **kwargs))


def _task(hidden=0.0, attention=0.0, layer_map="uniform"):
  teacher = _model(TEACHER, 1)
  teacher.trainable = False
  config = td.IntermediateConfig(hidden, attention, layer_map)
  return ct.IntermediateDistillationTask(teacher, config, STUDENT["num_hidden_layers"])


def _states(model, batch):
  return model(classification.model_inputs(batch), output_hidden_states=True,
               output_attentions=True)


def _np_mean(values, mask):
  return (mask * values).sum() / (mask.sum() + 1e-5)


def _np_attention_kl(s, t, mask):
  """KL(t || s) over keys [B,N,S,S], heads averaged first when counts differ."""
  if s.shape[1] != t.shape[1]:
    s, t = s.mean(1, keepdims=True), t.mean(1, keepdims=True)
  kept = t > 0  # Padding keys: 0 in both, no term.
  kl = np.where(kept, t * (np.log(np.where(kept, t, 1)) - np.log(np.where(kept, s, 1))),
                0).sum(-1)
  return _np_mean(kl.mean(1), mask)


@pytest.mark.parametrize("layer_map,layers", [("uniform", (2, 4)), ("last_k", (3, 4)),
                                              ("1,3", (1, 3))])
def test_hidden_mse_through_the_projections_matches_numpy(layer_map, layers):
  batch = _batch(1)
  student = _model(STUDENT, 0, student_lib.ProjectedClassifier, teacher_hidden_size=48)
  task = _task(hidden=2.0, layer_map=layer_map)
  assert task.layers == layers
  loss, terms = task.compute_loss(student, batch, training=False)
  s, t = _states(student, batch), _states(task.teacher, batch)
  mask = batch["input_mask"].numpy()
  want = 0.0
  for i, j in enumerate((0,) + layers):  # Embeddings <- embeddings, then the map.
    dense = getattr(student.projections, f"proj_{i}")
    projected = s["hidden_states"][i].numpy() @ dense.kernel.numpy() + dense.bias.numpy()
    want += _np_mean(((projected - t["hidden_states"][j].numpy()) ** 2).mean(-1), mask)
  want /= len(layers) + 1
  assert set(terms) == {"hidden_mse"}
  np.testing.assert_allclose(terms["hidden_mse"].numpy(), want, **TOL)
  np.testing.assert_allclose(loss.numpy(), 2.0 * want, **TOL)


def test_attention_kl_matches_numpy():
  batch = _batch(2)
  task = _task(attention=3.0)
  mask = batch["input_mask"].numpy()
  t = _states(task.teacher, batch)["attention_probs"]
  for heads_count in (2, 4):  # Averaged over heads / head by head.
    student = _model(dict(STUDENT, num_attention_heads=heads_count), 0)
    loss, terms = task.compute_loss(student, batch, training=False)
    s = _states(student, batch)["attention_probs"]
    want = np.mean([_np_attention_kl(s[i].numpy().astype(np.float64), t[j - 1].numpy(), mask)
                    for i, j in enumerate((2, 4))])
    assert set(terms) == {"attention_kl"}
    np.testing.assert_allclose(terms["attention_kl"].numpy(), want, **TOL)
    np.testing.assert_allclose(loss.numpy(), 3.0 * want, **TOL)


def test_phase_switch_phase_one_has_no_logits_terms_and_leaves_the_head():
  batch = _batch(3)
  batch["teacher_logits"] = tf.constant(fixtures.rule_logits(batch["label_ids"], C))
  student = _model(STUDENT, 0, student_lib.ProjectedClassifier, teacher_hidden_size=48)
  task = _task(hidden=1.0, attention=1.0)
  with tf.GradientTape() as tape:
    loss, terms = task.compute_loss(student, batch, training=True)
  head = [student.classifier.kernel, student.classifier.bias, student.bert.pooler.kernel]
  grads = tape.gradient(loss, head + student.projections.trainable_variables)
  assert set(terms) == {"hidden_mse", "attention_kl"}  # No ce_loss, no kd_loss.
  assert all(g is None for g in grads[:3]) and all(g is not None for g in grads[3:])
  ct.freeze_prediction_layers(student)
  trainable = {id(v) for v in student.trainable_variables}
  assert not trainable & {id(v) for v in head}
  assert {id(v) for v in student.projections.trainable_variables} <= trainable
  # Phase 2 is the logits loss, on every row (KD) and the labelled ones (CE).
  phase2 = ct.ClassificationTask(C, td.TaskDistillConfig(alpha=0.5, temperature=2.0))
  loss, terms = phase2.compute_loss(student, batch, training=False)
  assert set(terms) == {"ce_loss", "kd_loss", "accuracy"}
  np.testing.assert_allclose(loss.numpy(), 0.5 * terms["ce_loss"].numpy() +
                             0.5 * 4.0 * terms["kd_loss"].numpy(), **TOL)


def test_phase_settings_are_validated():
  base = dict(model_config="c", data_dir="d", vocab_file="v", output_dir="o",
              stage="distill_task")
  teacher = dict(teacher_config="t.json", teacher_checkpoint="t")
  cases = [dict(hidden_mse_weight=1.0),  # The final phase is the logits loss.
           dict(layer_map="last_k"),
           dict(distill_phase="backbone", hidden_mse_weight=1.0),  # No teacher.
           dict(distill_phase="backbone", **teacher),  # No term weighted.
           dict(distill_phase="backbone", attention_kl_weight=1.0, layer_map="2,x", **teacher),
           dict(distill_phase="intermediate", **teacher)]
  for case in cases:
    with pytest.raises(ConfigError):
      classifier_runs.ClassifierConfig(**base, **case)
  ok = classifier_runs.ClassifierConfig(**base, **teacher, distill_phase="backbone",
                                        hidden_mse_weight=1.0, layer_map="2,4")
  assert ok.intermediate == td.IntermediateConfig(1.0, 0.0, "2,4")
  assert dl.layer_map("2,4", 4, 2) == (2, 4) and dl.layer_map("last_k", 6, 2) == (5, 6)
  for spec, teacher_layers in (("2,4", 3), ("1,2,3", 4), ("uniform", 1)):
    with pytest.raises(ConfigError):
      dl.layer_map(spec, teacher_layers, 2)


def test_unlabeled_rows_leave_the_hard_label_terms_only():
  rng = np.random.default_rng(4)
  logits = rng.normal(0, 2, (5, C)).astype(np.float32)
  teacher = rng.normal(0, 2, (5, C)).astype(np.float32)
  labels = np.array([[0], [C], [2], [C], [1]])  # C: the records' unlabeled id.
  log_q = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  kept = labels[:, 0] < C
  want_ce = -log_q[kept, labels[kept, 0]].mean()
  want_acc = (logits.argmax(-1)[kept] == labels[kept, 0]).mean()
  config = td.TaskDistillConfig(alpha=0.3, temperature=2.0)
  loss, terms = td.task_distillation_loss(logits, labels, teacher, config)
  np.testing.assert_allclose(terms["ce_loss"].numpy(), want_ce, **TOL)
  np.testing.assert_allclose(td.accuracy(logits, labels).numpy(), want_acc, **TOL)
  kd = td.per_example_kl(teacher, logits, 2.0).numpy().mean()  # Every row.
  np.testing.assert_allclose(terms["kd_loss"].numpy(), kd, **TOL)
  np.testing.assert_allclose(loss.numpy(), 0.3 * want_ce + 0.7 * 4 * kd, **TOL)
  none = np.full((5, 1), C)  # No labelled row: CE 0 (finite gradient), KD as before.
  variable = tf.Variable(logits)
  with tf.GradientTape() as tape:
    loss, terms = td.task_distillation_loss(variable, none, teacher, config)
  assert terms["ce_loss"].numpy() == 0.0 and td.accuracy(logits, none).numpy() == 0.0
  assert np.isfinite(tape.gradient(loss, variable).numpy()).all()
  np.testing.assert_allclose(loss.numpy(), 0.7 * 4 * kd, **TOL)


# --- Through tools/distill.py ----------------------------------------------------


@pytest.fixture(scope="module")
def task(tmp_path_factory):
  """Task distill records (128 train rows, 16 of them unlabeled; 32 dev), a random
  fine-tuned-teacher stand-in saved as a classifier directory, the student config."""
  base = tmp_path_factory.mktemp("task")
  vocab = fixtures.write_vocab(str(base / "vocab.txt"))
  splits = {"train": fixtures.make_examples("single", 128, seq_length=S, seed=1),
            "dev": fixtures.make_examples("single", 32, seq_length=S, seed=2)}
  logits = {k: fixtures.rule_logits(v["label_ids"], C) for k, v in splits.items()}
  splits["train"]["label_ids"][::8] = C  # Teacher-labelled only.
  labels = fixtures.write_task(str(base / "labels"), vocab, "single", splits, seq_length=S,
                               teacher_logits=logits)
  teacher = str(base / "teacher")
  classification.save_classifier(_model(TEACHER, 1), teacher, fixtures.LABELS["single"])
  return {"vocab": vocab, "labels": labels, "teacher": teacher,
          "student": _write_json(base / "student.json", STUDENT), "base": base}


def _run(task, out, *extra):
  return run_tool("distill", f"--student_config={task['student']}",
                  f"--vocab_file={task['vocab']}", f"--teacher_labels_dir={task['labels']}",
                  f"--output_dir={out}", "--train_batch_size=16", "--learning_rate=2e-3",
                  "--log_every_steps=4", *extra)


def test_phase_one_then_phase_two_through_the_tool(task, tmp_path):
  phase1, phase2 = str(tmp_path / "phase1"), str(tmp_path / "phase2")
  proc = _run(task, phase1, "--distill_phase=backbone", "--num_train_epochs=2",
              f"--teacher_config={task['teacher']}/bert_config.json",
              f"--teacher_checkpoint={task['teacher']}", "--hidden_mse_weight=1",
              "--attention_kl_weight=1", "--layer_map=last_k")
  assert "distill_task (backbone phase): 16 steps" in proc.stdout
  results = json.load(open(os.path.join(phase1, "eval_results.json")))
  assert [r["step"] for r in results] == [8, 16]
  assert set(results[0]) == {"step", "loss", "hidden_mse", "attention_kl"}
  assert results[-1]["loss"] < results[0]["loss"]
  assert not os.path.exists(os.path.join(phase1, "best"))
  identity = json.load(open(os.path.join(phase1, "train_config.json")))["identity"]
  assert identity["distill"] == {"phase": "backbone", "hidden_weight": 1.0,
                                 "attention_weight": 1.0, "layer_map": "last_k"}
  # Phase 1's run loads into a plain classifier: encoder and head, no projections.
  stored = tf.train.latest_checkpoint(os.path.join(phase1, "checkpoints"))
  projected = _model(STUDENT, 7, student_lib.ProjectedClassifier, teacher_hidden_size=48)
  tf.train.Checkpoint(model=projected).read(stored).expect_partial(
  ).assert_existing_objects_matched()  # The projections are in the checkpoint.
  plain = _model(STUDENT, 8)
  result = classification.load_weights(plain, phase1)
  assert not result.ignored and not any("proj" in n for n in result.loaded)
  for name, variable in name_map.tf1_variable_map(plain).items():
    want = name_map.tf1_variable_map(projected)[name].numpy()
    np.testing.assert_array_equal(variable.numpy(), want, err_msg=name)
  proc = _run(task, phase2, "--num_train_epochs=1", "--alpha=0.5", "--temperature=2",
              "--init_from=checkpoint", f"--init_checkpoint={phase1}")
  assert "best accuracy" in proc.stdout
  results = json.load(open(os.path.join(phase2, "eval_results.json")))
  assert {"kd_loss", "teacher_agreement", "accuracy"} <= set(results[-1])


def test_phase_one_refusals(task):
  other = str(task["base"] / "wide_vocab.json")
  _write_json(other, dict(TEACHER, vocab_size=fixtures.VOCAB_SIZE + 8))
  config = classifier_runs.ClassifierConfig(
      model_config=task["student"], data_dir=task["labels"], vocab_file=task["vocab"],
      output_dir=str(task["base"] / "never"), stage="distill_task", distill_phase="backbone",
      teacher_config=other, teacher_checkpoint=task["teacher"], hidden_mse_weight=1.0)
  with pytest.raises(InputError) as error:
    classifier_runs.ClassifierRecipe(config).read_input()
  assert error.value.path == task["teacher"] and "vocab_size 48" in str(error.value)
  run_config = distill_runs.DistillRunConfig(
      student_config=task["student"], vocab_file=task["vocab"], output_dir="never",
      teacher_labels_dir=task["labels"], distill_phase="backbone", hidden_mse_weight=1.0,
      teacher_config=other, teacher_checkpoint=task["teacher"], given=frozenset({"alpha"}))
  with pytest.raises(ConfigError, match="--alpha: not used by --distill_phase=backbone"):
    distill_runs.distill(run_config, run.LoopConfig())
