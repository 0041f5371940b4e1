"""The classifier, its checkpoints, the task losses and metrics, the task input.

modeling/models/classification.py, classification_metrics.py, task_distillation.py,
classification_training.py and pipeline/inputs/classification_dataset.py at tiny sizes;
losses against NumPy (1e-5), metrics against hand-computed values and brute force.
"""

import itertools
import json
import os
import threading

import keras
import numpy as np
import pytest
from safetensors import numpy as safetensors_numpy
import tensorflow as tf

from modeling.networks import bert
from modeling.checkpoints import google
from modeling.checkpoints import name_map
from modeling.models import classification
from modeling.models import heads
from modeling.evaluation import classification_metrics as cm
from modeling.training import classification_training as ct
from modeling.losses import task_losses as td
from pipeline.inputs import classification_dataset as cd
from pipeline.core.errors import ConfigError, InputError
from tests import classification_fixtures as fixtures

CONFIG = bert.BertConfig(vocab_size=40, hidden_size=32, num_hidden_layers=2,
                         num_attention_heads=4, intermediate_size=64,
                         max_position_embeddings=32, hidden_act="gelu_new")
B, S = 3, 12


def _inputs(seed=0):
  rng = np.random.default_rng(seed)
  mask = np.ones((B, S), np.int32)
  mask[1, 7:] = 0
  return {"input_ids": rng.integers(0, CONFIG.vocab_size, (B, S)).astype(np.int32),
          "input_mask": mask,
          "segment_ids": (np.arange(S)[None] >= 5).astype(np.int32).repeat(B, 0)}


def _weights(model):
  return {p.tf1_name: p.variable.numpy() for p in name_map.model_params(model)}


# --- The model ------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [None, "mixed_bfloat16"])
def test_logits_shape_and_dtype(dtype):
  model = classification.build_classifier(CONFIG, 3, dtype=dtype)
  logits = classification.logits(model, dict(_inputs(), label_ids=np.zeros((B, 1))))
  assert logits.shape == (B, 3) and logits.dtype == tf.float32
  # Padding does not change a row's logits (attention masks it out).
  changed = _inputs()
  changed["input_ids"][1, 7:] = 0
  np.testing.assert_allclose(classification.logits(model, changed)[1], logits[1],
                             atol=1e-2 if dtype else 1e-6)


def test_config_round_trip_gives_the_same_model():
  model = classification.build_classifier(CONFIG.to_dict(), 4, dropout_rate=0.3)
  clone = heads.BertClassifier.from_config(model.get_config())
  assert (clone.num_labels, clone.dropout_rate, clone.config) == (4, 0.3, CONFIG)
  bert.ensure_built(clone).set_weights(model.get_weights())
  np.testing.assert_array_equal(classification.logits(clone, _inputs()),
                                classification.logits(model, _inputs()))


def test_save_and_load_classifier_round_trip(tmp_path):
  model = classification.build_classifier(CONFIG, 3, dropout_rate=0.2)
  prefix = classification.save_classifier(model, tmp_path / "best", labels=["a", "b", "c"],
                                          info={"metric": "f1"}, step=7,
                                          extra_files={"note.txt": "x"})
  assert prefix.endswith("model.ckpt-7")
  assert sorted(os.listdir(tmp_path / "best")) == [
      "bert_config.json", "classifier.json", "model.ckpt-7.data-00000-of-00001",
      "model.ckpt-7.index", "note.txt"]
  info = classification.read_classifier_info(tmp_path / "best")
  assert (info["labels"], info["num_labels"], info["step"]) == (["a", "b", "c"], 3, 7)
  loaded = classification.load_classifier(str(tmp_path / "best"))
  assert (loaded.num_labels, loaded.dropout_rate, loaded.config) == (3, 0.2, CONFIG)
  np.testing.assert_array_equal(classification.logits(loaded, _inputs()),
                                classification.logits(model, _inputs()))
  # Saving again replaces the directory as a whole.
  classification.save_classifier(model, tmp_path / "best", step=9)
  assert "note.txt" not in os.listdir(tmp_path / "best")
  assert [n for n in os.listdir(tmp_path) if n != "best"] == []


def _pretraining_run(directory, config):
  """A pretraining run's checkpoints/ (the trainer's layout) with random weights."""
  model = bert.ensure_built(heads.BertPretrainer(config))
  step = tf.Variable(5, dtype=tf.int64)
  manager = tf.train.CheckpointManager(tf.train.Checkpoint(model=model, step=step),
                                       os.path.join(directory, "checkpoints"), 3)
  manager.save(checkpoint_number=5)
  config.to_json_file(os.path.join(directory, "checkpoints", "bert_config.json"))
  return model


def test_encoder_loads_from_a_pretraining_run_and_the_head_starts_fresh(tmp_path):
  keras.utils.set_random_seed(1)
  source = _pretraining_run(str(tmp_path / "run"), CONFIG)
  keras.utils.set_random_seed(2)
  fresh = classification.build_classifier(CONFIG, 2)
  keras.utils.set_random_seed(2)
  model = classification.build_classifier(CONFIG, 2, init_checkpoint=str(tmp_path / "run"))
  want, got, init = _weights(source), _weights(model), _weights(fresh)
  encoder = [n for n in got if n.startswith("bert/")]
  assert len(encoder) == len([n for n in want if n.startswith("bert/")]) > 30
  for name in encoder:
    np.testing.assert_array_equal(got[name], want[name], err_msg=name)
  for name in ("output_weights", "output_bias"):
    np.testing.assert_array_equal(got[name], init[name], err_msg=name)
  assert classification.stored_num_labels(str(tmp_path / "run")) is None
  with pytest.raises(ValueError, match="holds no classifier head"):
    classification.load_classifier(str(tmp_path / "run"))


def test_another_tasks_head_is_left_out(tmp_path):
  other = classification.build_classifier(CONFIG, 3)
  classification.save_classifier(other, tmp_path / "other")
  keras.utils.set_random_seed(4)
  fresh = _weights(classification.build_classifier(CONFIG, 2))
  keras.utils.set_random_seed(4)
  model = classification.build_classifier(CONFIG, 2)
  result = classification.load_weights(model, str(tmp_path / "other"))
  assert result.ignored == ["output_weights", "output_bias"]
  got, want = _weights(model), _weights(other)
  for name in result.loaded:
    np.testing.assert_array_equal(got[name], want[name], err_msg=name)
  for name in result.ignored:
    np.testing.assert_array_equal(got[name], fresh[name], err_msg=name)
  assert len(result.loaded) == len(got) - 2


def test_whole_classifier_from_google_and_hf_files(tmp_path):
  model = classification.build_classifier(CONFIG, 5)
  prefix = google.save_tf1_checkpoint(model, str(tmp_path / "g" / "model.ckpt"))
  hf_dir = tmp_path / "hf"
  hf_dir.mkdir()
  safetensors_numpy.save_file(
      {p.hf_name: np.ascontiguousarray(p.variable.numpy().T if p.hf_transposed
                                       else p.variable.numpy())
       for p in name_map.model_params(model)}, str(hf_dir / "model.safetensors"))
  with open(hf_dir / "config.json", "w") as f:
    json.dump(CONFIG.to_dict(), f)
  want = classification.logits(model, _inputs())
  for path in (prefix, str(hf_dir)):
    assert classification.stored_num_labels(path) == 5
    loaded = classification.load_classifier(path)
    np.testing.assert_allclose(classification.logits(loaded, _inputs()), want, atol=1e-6)


# --- Losses against NumPy ----------------------------------------------------------


def _np_log_softmax(x):
  x = np.asarray(x, np.float64)
  shifted = x - x.max(-1, keepdims=True)
  return shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))


def _np_loss(student, labels, teacher, alpha, temperature):
  ce = -_np_log_softmax(student)[np.arange(len(labels)), labels].mean()
  log_p = _np_log_softmax(teacher / temperature)
  log_q = _np_log_softmax(student / temperature)
  kl = (np.exp(log_p) * (log_p - log_q)).sum(-1).mean()
  return alpha * ce + (1 - alpha) * temperature ** 2 * kl, ce, kl


@pytest.mark.parametrize("alpha, temperature", [(1.0, 1.0), (0.5, 1.0), (0.0, 2.0),
                                                (0.3, 4.0), (0.9, 0.5)])
def test_task_distillation_loss_matches_numpy(alpha, temperature):
  rng = np.random.default_rng(int(alpha * 10 + temperature))
  student = rng.normal(0, 3, (16, 4)).astype(np.float32)
  teacher = rng.normal(0, 3, (16, 4)).astype(np.float32)
  labels = rng.integers(0, 4, (16, 1))
  config = td.TaskDistillConfig(alpha, temperature)
  loss, terms = td.task_distillation_loss(student, labels, teacher, config)
  want, ce, kl = _np_loss(student, labels[:, 0], teacher, alpha, temperature)
  np.testing.assert_allclose(float(loss), want, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(float(terms["ce_loss"]), ce, rtol=1e-5)
  if alpha < 1:
    np.testing.assert_allclose(float(terms["kd_loss"]), kl, rtol=1e-5, atol=1e-7)
  else:
    assert "kd_loss" not in terms  # Plain fine-tuning: no teacher needed.
  assert float(td.kd_loss(teacher, teacher, temperature)) == pytest.approx(0, abs=1e-6)


def test_task_distill_config_is_validated():
  for kwargs, message in (({"alpha": 1.5}, "alpha must be in"),
                          ({"temperature": 0}, "temperature must be > 0")):
    with pytest.raises(ValueError, match=message):
      td.TaskDistillConfig(**kwargs)
  with pytest.raises(ValueError, match="needs the teacher's logits"):
    td.task_distillation_loss(np.zeros((2, 2), np.float32), [[0], [1]], None,
                              td.TaskDistillConfig(0.5))


# --- Metrics ------------------------------------------------------------------------


def test_binary_metrics_by_hand():
  labels = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0, 0])
  predictions = np.array([1, 1, 1, 0, 1, 1, 0, 0, 0, 0])  # TP 3, FN 1, FP 2, TN 4
  logits = np.eye(2)[predictions] * 2.0
  assert cm.confusion_matrix(labels, predictions, 2).tolist() == [[4, 2], [1, 3]]
  got = cm.classification_metrics(labels, logits)
  precision, recall = 3 / 5, 3 / 4
  mcc = (3 * 4 - 2 * 1) / np.sqrt(5 * 4 * 6 * 5)
  assert got["accuracy"] == pytest.approx(0.7)
  assert got["precision"] == pytest.approx(precision)
  assert got["recall"] == pytest.approx(recall)
  assert got["f1"] == pytest.approx(2 * precision * recall / (precision + recall))
  assert got["mcc"] == pytest.approx(mcc)
  # Two distinct scores: AUC = P(pos > neg) + 0.5 P(tie) = (3*4 + 0.5*(3*2 + 1*4)) / 24.
  assert got["roc_auc"] == pytest.approx((12 + 0.5 * 10) / 24)


def test_multiclass_macro_and_mcc_against_definitions():
  rng = np.random.default_rng(0)
  labels = rng.integers(0, 4, 300)
  logits = rng.normal(size=(300, 4)) + 2 * np.eye(4)[labels]
  got = cm.classification_metrics(labels, logits)
  predictions = logits.argmax(-1)
  f1s, precisions, recalls = [], [], []
  for c in range(4):
    tp = np.sum((predictions == c) & (labels == c))
    p, r = tp / np.sum(predictions == c), tp / np.sum(labels == c)
    precisions.append(p), recalls.append(r), f1s.append(2 * p * r / (p + r))
  assert got["precision"] == pytest.approx(np.mean(precisions))
  assert got["recall"] == pytest.approx(np.mean(recalls))
  assert got["f1"] == pytest.approx(np.mean(f1s))
  # R_K = cov(X, Y) / sqrt(cov(X, X) cov(Y, Y)) over one-hot matrices (Gorodkin).
  x, y = np.eye(4)[labels], np.eye(4)[predictions]
  x, y = x - x.mean(0), y - y.mean(0)
  want = np.sum(x * y) / np.sqrt(np.sum(x * x) * np.sum(y * y))
  assert got["mcc"] == pytest.approx(want)
  assert "roc_auc" not in got
  assert got["loss"] == pytest.approx(-_np_log_softmax(logits)[np.arange(300), labels].mean())


def test_roc_auc_is_the_pairwise_probability_with_ties():
  rng = np.random.default_rng(1)
  labels = rng.integers(0, 2, 60)
  scores = rng.integers(0, 5, 60) / 4.0  # Many ties.
  pairs = [(s_p > s_n) + 0.5 * (s_p == s_n)
           for s_p, s_n in itertools.product(scores[labels == 1], scores[labels == 0])]
  assert cm.roc_auc(labels, scores) == pytest.approx(np.mean(pairs))
  assert np.isnan(cm.roc_auc(np.ones(4), np.arange(4)))


def test_degenerate_cases_are_zero_not_nan():
  got = cm.summarize(cm.confusion_matrix([0, 0, 0], [0, 0, 0], 2))
  assert got == {"accuracy": 1.0, "precision": 0.0, "recall": 0.0, "f1": 0.0, "mcc": 0.0}
  with pytest.raises(ValueError, match="labels must be in"):
    cm.confusion_matrix([0, 3], [0, 1], 3)


def test_report_and_best_comparison():
  report = cm.report([0, 1, 1, 2], np.eye(3)[[0, 1, 2, 2]], ["x", "y", "z"])
  assert report["per_class"]["y"] == {"precision": 1.0, "recall": 0.5, "f1": 2 / 3,
                                      "support": 2}
  assert report["confusion_matrix"] == [[1, 0, 0], [0, 1, 1], [0, 0, 1]]
  assert cm.is_better("accuracy", 0.8, 0.7) and not cm.is_better("accuracy", 0.7, 0.7)
  assert cm.is_better("loss", 0.1, 0.2) and not cm.is_better("loss", 0.3, 0.2)
  assert cm.is_better("f1", 0.0, None) and not cm.is_better("roc_auc", float("nan"), 0.1)


# --- Training pieces ----------------------------------------------------------------


class _ThreadRank:
  """Rank r of n, one thread each: allreduce_sum really sums over the threads."""

  def __init__(self, rank, size, slots, barrier):
    self.rank, self.size, self._slots, self._barrier = rank, size, slots, barrier

  def allreduce_sum(self, values):
    self._slots[self.rank] = np.asarray(values, np.float64)
    self._barrier.wait()
    total = sum(self._slots)
    self._barrier.wait()  # Everyone has read the slots before they are reused.
    return total


def test_gather_rows_puts_rank_shares_back_in_record_order():
  rows = np.arange(7 * 2, dtype=np.float64).reshape(7, 2)  # 7 records, 3 ranks.
  labels = np.arange(7) % 2
  slots, barrier, results = [None] * 3, threading.Barrier(3), [None] * 3

  def rank_main(rank):
    world = _ThreadRank(rank, 3, slots, barrier)
    results[rank] = ct.gather_rows({"x": rows[rank::3], "y": labels[rank::3]}, world)

  threads = [threading.Thread(target=rank_main, args=(r,)) for r in range(3)]
  for t in threads:
    t.start()
  for t in threads:
    t.join()
  for got in results:
    np.testing.assert_array_equal(got["x"], rows)
    np.testing.assert_array_equal(got["y"], labels)


def test_best_checkpoint_keeps_the_best_step(tmp_path):
  model = classification.build_classifier(CONFIG, 2)
  keeper = ct.BestCheckpoint(str(tmp_path), "f1", model, ["n", "p"])
  assert keeper.best() == (None, None)
  assert keeper.update(10, {"f1": 0.5, "loss": 1.0}, {"r": 1})
  assert not keeper.update(20, {"f1": 0.5, "loss": 0.5})  # A tie keeps step 10.
  assert keeper.update(30, {"f1": 0.7, "loss": 0.9})
  assert not keeper.update(40, {"f1": 0.6, "loss": 0.1})
  assert keeper.best() == (30, 0.7)
  assert not os.path.exists(tmp_path / "best" / ct.REPORT_FILE)  # Report of step 30: none.
  # Killed between save_classifier's renames: the previous save comes back.
  os.replace(tmp_path / "best", str(tmp_path / "best") + ".old")
  os.makedirs(str(tmp_path / "best") + ".tmp.123")
  assert ct.BestCheckpoint(str(tmp_path), "f1", model).best() == (30, 0.7)
  assert sorted(os.listdir(tmp_path)) == ["best"]
  by_loss = ct.BestCheckpoint(str(tmp_path), "loss", model)
  assert by_loss.best() == (None, None)  # Chosen by another metric: starts over.
  with pytest.raises(ValueError, match="not among the eval metrics"):
    keeper.update(50, {"accuracy": 1.0})
  ct.check_metric("roc_auc", 2, distill=False)
  ct.check_metric("teacher_agreement", 3, distill=True)
  for metric, num_labels in (("roc_auc", 3), ("kd_loss", 2), ("auc", 2)):
    with pytest.raises(ConfigError, match=f"--best_metric={metric}: not one of"):
      ct.check_metric(metric, num_labels, distill=False)
  assert ct.epoch_steps(100, 16, 2.5) == (6, 15)
  with pytest.raises(ValueError, match="no full batch"):
    ct.epoch_steps(10, 16, 1)


# --- Input -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def task_dirs(tmp_path_factory):
  base = tmp_path_factory.mktemp("task")
  vocab = fixtures.write_vocab(str(base / "vocab.txt"))
  splits = {"train": fixtures.make_examples("pair", 50, seed=1),
            "dev": fixtures.make_examples("pair", 21, seed=2)}
  logits = {k: fixtures.rule_logits(v["label_ids"], 2) for k, v in splits.items()}
  return {"vocab": vocab, "splits": splits, "logits": logits,
          "task": fixtures.write_task(str(base / "task"), vocab, "pair", splits),
          "distill": fixtures.write_task(str(base / "distill"), vocab, "pair", splits,
                                         teacher_logits=logits)}


def test_eval_batches_are_the_records_with_teacher_logits(task_dirs):
  _, spec = cd.read_task_input(task_dirs["distill"], task_dirs["vocab"], teacher_logits=True)
  assert (spec.num_labels, spec.labels, spec.has_teacher_logits) == (2, ("in_a", "in_b"), True)
  batches = list(cd.eval_dataset(task_dirs["distill"], spec, 8))
  assert [len(b["label_ids"]) for b in batches] == [8, 8, 5]
  got = {k: np.concatenate([b[k].numpy() for b in batches]) for k in batches[0]}
  for name, value in task_dirs["splits"]["dev"].items():
    np.testing.assert_array_equal(got[name], value, err_msg=name)
  np.testing.assert_array_equal(got["teacher_logits"], task_dirs["logits"]["dev"])
  assert got["input_ids"].dtype == np.int32 and got["teacher_logits"].dtype == np.float32


def test_ranks_read_disjoint_shares_that_make_up_the_batch_of_one(task_dirs):
  manifest, spec = cd.read_task_input(task_dirs["task"], task_dirs["vocab"])
  assert cd.split_size(manifest, "train") == 50
  one = next(iter(cd.train_dataset(task_dirs["task"], spec, 8, 0, shuffle_buffer_size=0)))
  ranks = [next(iter(cd.train_dataset(task_dirs["task"], spec, 4, 0, r, 2, 0)))
           for r in range(2)]
  merged = np.stack([r["input_ids"].numpy() for r in ranks], 1).reshape(8, -1)
  np.testing.assert_array_equal(merged, one["input_ids"])
  shuffled = [b["input_ids"].numpy() for b, _ in zip(
      cd.train_dataset(task_dirs["task"], spec, 5, 3), range(20))]
  again = [b["input_ids"].numpy() for b, _ in zip(
      cd.train_dataset(task_dirs["task"], spec, 5, 3), range(20))]
  np.testing.assert_array_equal(shuffled, again)  # Seeded: the same order.
  assert len({r.tobytes() for r in np.concatenate(shuffled[:10])}) == 50  # One epoch.


def test_bad_task_inputs(task_dirs, tmp_path):
  other = tmp_path / "vocab.txt"
  other.write_text(open(task_dirs["vocab"]).read() + "extra\n")
  with pytest.raises(InputError, match="made with another vocab"):
    cd.read_task_input(task_dirs["task"], str(other))
  with pytest.raises(InputError, match="holds classification records, expected "
                     "classification records with cached teacher logits"):
    cd.read_task_input(task_dirs["task"], task_dirs["vocab"], teacher_logits=True)
  manifest, _ = cd.read_task_input(task_dirs["task"], task_dirs["vocab"])
  manifest["config"]["unlabeled_splits"] = ["dev"]
  with pytest.raises(InputError, match="this split has no labels"):
    cd.check_labeled(manifest, "dev")
  del manifest["counts"]  # Without counts the records are counted.
  assert cd.split_size(manifest, "dev") == 21
  with pytest.raises(InputError, match="no .tfrecord files"):
    list(cd.eval_dataset(task_dirs["task"], cd.TaskSpec(16, 2, ("a", "b"), 40, False), 4,
                         split="test"))
