"""Structured FFN pruning (modeling/compression/pruning.py) and tools/prune.py.

Tiny models (H=16, 2 layers, I=32) on the generated 3-label task of
tests/classification_fixtures.py with a rule "teacher"'s cached logits.
"""

import dataclasses
import json
import os

import numpy as np
import pytest
import tensorflow as tf

from modeling.compression import pruning
from modeling.losses import task_losses
from modeling.models import classification
from modeling.networks import bert
from modeling.training import prune_runs
from modeling.training import run
from pipeline.core.errors import ConfigError, InputError
from tests import classification_fixtures as fx
from tests.conftest import run_tool

CONFIG = bert.BertConfig(vocab_size=fx.VOCAB_SIZE, hidden_size=16, num_hidden_layers=2,
                         num_attention_heads=2, intermediate_size=32,
                         max_position_embeddings=16, hidden_dropout_prob=0.0,
                         attention_probs_dropout_prob=0.0)


def _classifier(num_labels=3, seed=0, config=CONFIG):
  tf.keras.utils.set_random_seed(seed)
  return classification.build_classifier(config, num_labels)


def _batch(n=8, seed=1):
  columns = fx.make_examples("single", n, seed=seed)
  batch = {k: tf.constant(v) for k, v in columns.items()}
  batch["teacher_logits"] = tf.constant(fx.rule_logits(columns["label_ids"], 3, seed=seed))
  return batch


@pytest.fixture(scope="module")
def task(tmp_path_factory):
  """{vocab, labels (task distill records), student (a saved classifier dir)}."""
  base = tmp_path_factory.mktemp("prune_task")
  vocab = fx.write_vocab(str(base / "vocab.txt"))
  splits = {"train": fx.make_examples("single", 64, seed=0),
            "dev": fx.make_examples("single", 32, seed=1)}
  logits = {name: fx.rule_logits(columns["label_ids"], 3, seed=i)
            for i, (name, columns) in enumerate(splits.items())}
  labels = fx.write_task(str(base / "labels"), vocab, "single", splits, teacher_logits=logits)
  student = str(base / "student")
  classification.save_classifier(_classifier(), student, labels=fx.LABELS["single"])
  return {"vocab": vocab, "labels": labels, "student": student, "base": base}


def test_keeping_every_neuron_gives_identical_logits():
  model = _classifier()
  keep = pruning.select_neurons(pruning.magnitude_importance(model), 32)
  pruned = pruning.prune_classifier(model, keep)
  batch = _batch()
  np.testing.assert_array_equal(classification.logits(model, batch).numpy(),
                                classification.logits(pruned, batch).numpy())


def test_the_highest_scores_are_kept_with_their_rows_and_columns():
  model = _classifier()
  layer = pruning.encoder_layers(model)[0]
  # Hand-made weights: neuron j's input column and output row scale with w[j].
  w = np.array([5, 1, 9, 0, 7, 3] + [0.5] * 26, np.float32)
  layer.intermediate.kernel.assign(np.ones([16, 32], np.float32) * w)
  layer.output_dense.kernel.assign(np.ones([32, 16], np.float32) * w[:, None])
  scores = pruning.magnitude_importance(model)
  np.testing.assert_allclose(scores[0], 16 * w.astype(np.float64) ** 2, rtol=1e-6)
  keep = pruning.select_neurons(scores, 4)
  assert keep[0].tolist() == [0, 2, 4, 5]
  assert pruning.top_neurons([1, 2, 2, 0], 2).tolist() == [1, 2]  # ties: lower index
  pruned = pruning.prune_classifier(model, keep)
  small = pruning.encoder_layers(pruned)[0]
  np.testing.assert_array_equal(small.intermediate.kernel.numpy(),
                                layer.intermediate.kernel.numpy()[:, [0, 2, 4, 5]])
  np.testing.assert_array_equal(small.output_dense.kernel.numpy(),
                                layer.output_dense.kernel.numpy()[[0, 2, 4, 5]])
  np.testing.assert_array_equal(small.intermediate.bias.numpy(),
                                layer.intermediate.bias.numpy()[[0, 2, 4, 5]])


def test_pruned_config_and_parameter_count():
  model = _classifier()
  pruned = pruning.prune_classifier(model, pruning.select_neurons(
      pruning.magnitude_importance(model), pruning.keep_count(32, 0.75)))
  assert pruned.config == CONFIG.replace(intermediate_size=8)
  # Per layer: W_in [H,I] + b_in [I] + W_out [I,H] lose (32 - 8) * (2H + 1).
  removed = 2 * (32 - 8) * (2 * 16 + 1)
  assert pruning.count_parameters(pruned) == pruning.count_parameters(model) - removed


def test_taylor_scores_are_the_per_example_activation_times_gradient():
  model, batch = _classifier(), _batch(4)
  config = task_losses.TaskDistillConfig(0.5, 2.0)
  scores = pruning.taylor_importance(model, [batch], config)
  layers = pruning.encoder_layers(model)
  # Reference for layer 1: one example at a time, |d loss / d mask| of a mask
  # [I] on its activations (= |sum_s a_s * dL/da_s|), summed over the examples.
  expected = np.zeros(32)
  for i in range(4):
    one = {k: v[i:i + 1] for k, v in batch.items()}
    mask = tf.ones([32])
    with tf.GradientTape() as tape:
      tape.watch(mask)
      with pruning.masked_ffn(layers, [tf.ones([1, 1, 32]), mask[None, None]]):
        logits = classification.logits(model, one)
      loss = pruning.per_example_loss(logits, one, config)[0]
    expected += np.abs(tape.gradient(loss, mask).numpy())
  np.testing.assert_allclose(scores[1], expected / 4, rtol=1e-4, atol=1e-7)
  assert scores[1].max() > 0


def test_bad_ratios_and_mismatched_label_cache(task):
  for ratios in ((0.5, 0.25), (0.0, 0.5), (0.5, 1.0), ()):
    with pytest.raises(ConfigError, match="strictly increasing"):
      prune_runs.PruneConfig(student_checkpoint="s", teacher_labels_dir="l", vocab_file="v",
                             output_dir="o", ratios=ratios)
  with pytest.raises(ConfigError, match="both keep"):
    prune_runs.keep_sizes(32, (0.5, 0.51))
  other = str(task["base"] / "two_labels")
  classification.save_classifier(_classifier(num_labels=2), other)
  config = prune_runs.PruneConfig(student_checkpoint=other, teacher_labels_dir=task["labels"],
                                  vocab_file=task["vocab"], output_dir="unused")
  with pytest.raises(InputError, match="predicts 2 labels, the records have 3") as e:
    prune_runs.read_inputs(config)
  assert e.value.path == other and "\n" not in str(e.value)


_SETTINGS = dict(ratios=(0.25, 0.5), recovery_epochs=1.0, importance_examples=24,
                 speed_repeats=2, throughput_batch=4)
_LOOP = dict(train_batch_size=16, learning_rate=1e-3, shuffle_buffer_size=0)


def _tool_flags(task, out, *extra):
  """tools/prune.py's flags for the same settings as _SETTINGS and _LOOP."""
  return [f"--student_checkpoint={task['student']}", f"--teacher_labels_dir={task['labels']}",
          f"--vocab_file={task['vocab']}", f"--output_dir={out}", "--ratios=0.25,0.5",
          "--recovery_epochs=1", "--importance_examples=24", "--speed_repeats=2",
          "--throughput_batch=4", "--train_batch_size=16", "--learning_rate=1e-3",
          "--shuffle_buffer_size=0", *extra]


@pytest.fixture(scope="module")
def pruned(task):
  """Two steps run in this process (saves a TensorFlow start-up); the tool's
  rerun below must find it complete, so the tool maps its flags to the same run."""
  out = str(task["base"] / "pruned")
  config = prune_runs.PruneConfig(student_checkpoint=task["student"],
                                  teacher_labels_dir=task["labels"], vocab_file=task["vocab"],
                                  output_dir=out, **_SETTINGS)
  prune_runs.prune(config, run.LoopConfig(**_LOOP))
  return out, config


def test_two_steps_write_the_report(pruned):
  out, _ = pruned
  for name in ("COMPLETED", "manifest.json", "pruning.md", "pruning.png", "pruning.json",
               "step-1/pruned/classifier.json", "step-1/pruned/pruning_indices.json",
               "step-2/recover/COMPLETED", "step-2/recover/best/classifier.json"):
    assert os.path.exists(os.path.join(out, name)), name
  steps = json.load(open(os.path.join(out, "pruning.json")))["steps"]
  assert [s["name"] for s in steps] == ["start", "step-1", "step-2"]
  assert [s["intermediate_size"] for s in steps] == [32, 24, 16]
  assert [s["ratio"] for s in steps] == [0.0, 0.25, 0.5]
  assert steps[0]["parameters"] > steps[1]["parameters"] > steps[2]["parameters"]
  assert all(s["latency_ms"]["mean"] > 0 and s["metrics"]["accuracy"] is not None
             for s in steps)
  assert open(os.path.join(out, "pruning.png"), "rb").read(8) == b"\x89PNG\r\n\x1a\n"
  assert "| step-2 | 50.0% | 16 |" in open(os.path.join(out, "pruning.md")).read()
  manifest = json.load(open(os.path.join(out, "manifest.json")))
  assert manifest["stage"] == "prune"
  assert "step-2/recover/best/classifier.json" in [f["name"] for f in manifest["files"]]


def test_tool_rerun_is_a_no_op_and_another_config_an_error(task, pruned):
  out, config = pruned
  before = {n: os.path.getmtime(os.path.join(out, n)) for n in ("pruning.json", "COMPLETED")}
  again = run_tool("prune", *_tool_flags(task, out))
  assert "is complete (nothing to do)" in again.stdout, again.stdout + again.stderr[-2000:]
  assert before == {n: os.path.getmtime(os.path.join(out, n)) for n in before}
  other = dataclasses.replace(config, importance="magnitude")
  with pytest.raises(InputError, match="differs in: importance.*--overwrite"):
    prune_runs.prune(other, run.LoopConfig(**_LOOP))


def test_tool_bad_ratios_is_one_line(task, tmp_path):
  proc = run_tool("prune", *_tool_flags(task, str(tmp_path / "o"), "--ratios=0.5,0.25"),
                  check=False)
  assert proc.returncode == 2 and "Traceback" not in proc.stderr
  (line,) = [l for l in proc.stderr.splitlines() if l.startswith("error:")]
  assert "strictly increasing" in line
