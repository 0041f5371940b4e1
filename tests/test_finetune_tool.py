"""tools/finetune.py and tools/distill.py (on task labels) as a user runs them, on generated
tasks with a learnable rule (tests/classification_fixtures.py: 512 train and 200
dev examples, S=16, vocab 40) and a 2-layer H=64 model.

"straight" fine-tunes the single-sentence task with shuffling off and no dropout:
it is the reference of the resume test and of two mpirun ranks, whose micro-batches
of 8 are exactly one process's batch of 16 (records are sharded r::2). It is also
the teacher whose logits tools/extract_teacher_labels.py --task caches for the
task distillation test.
"""

import glob
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from modeling.networks import bert
from modeling.models import classification
from modeling.models import heads
from modeling.evaluation import classification_metrics as cm
from pipeline.inputs import classification_dataset as cd
from tests import classification_fixtures as fixtures
from tests.conftest import MPIRUN, ROOT, run_tool, start_tool, tool_env
from tests.test_distill_tool import _error_line, _write_json
from tests.test_pretrain_tool import _train_losses, _wait_for_checkpoint

MODEL = dict(vocab_size=40, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
             intermediate_size=128, max_position_embeddings=64, type_vocab_size=2,
             initializer_range=0.1, hidden_act="gelu", hidden_dropout_prob=0.0,
             attention_probs_dropout_prob=0.0)
EPOCHS, STEPS_PER_EPOCH = 2, 512 // 16
STEPS = EPOCHS * STEPS_PER_EPOCH
RUN_FLAGS = ["--train_batch_size=16", f"--num_train_epochs={EPOCHS}", "--learning_rate=1e-3",
             "--log_every_steps=1", "--deterministic"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
  """Vocab, model configs and the tasks: single, pair, and "blind": single's
  records with every train label 0 (for distillation, where only the teacher's
  logits then carry the rule)."""
  base = tmp_path_factory.mktemp("tasks")
  vocab = fixtures.write_vocab(str(base / "vocab.txt"))
  found = {"vocab": vocab, "config": _write_json(base / "config.json", MODEL),
           "dropout_config": _write_json(base / "dropout.json", dict(
               MODEL, hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1))}
  for kind in ("single", "pair"):
    splits = {"train": fixtures.make_examples(kind, 512, seed=1),
              "dev": fixtures.make_examples(kind, 200, seed=2)}
    found[kind] = fixtures.write_task(str(base / kind), vocab, kind, splits)
    found[kind + "_splits"] = splits
  splits = found["single_splits"]
  blind = dict(splits["train"], label_ids=np.zeros_like(splits["train"]["label_ids"]))
  found["blind"] = fixtures.write_task(str(base / "blind"), vocab, "single",
                                       {"train": blind, "dev": splits["dev"]})
  return found


def _flags(data, task, out, *extra, config="config"):
  return [f"--model_config={data[config]}", f"--vocab_file={data['vocab']}",
          f"--data_dir={data[task]}", f"--output_dir={out}", *RUN_FLAGS, *extra]


@pytest.fixture(scope="module")
def straight(data, tmp_path_factory):
  out = str(tmp_path_factory.mktemp("straight") / "run")
  run_tool("finetune", *_flags(data, "single", out, "--shuffle_buffer_size=0"))
  return out


def _saved_values(directory):
  """{variable: value} of the latest (or only) checkpoint in a directory."""
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  prefix = tf.train.latest_checkpoint(directory) or glob.glob(
      os.path.join(directory, "*.index"))[0][:-len(".index")]
  return prefix, {n: tf.train.load_variable(prefix, n) for n, _ in tf.train.list_variables(prefix)
                  if n != "_CHECKPOINTABLE_OBJECT_GRAPH"}


def _dev_accuracy(model, task_dir, vocab):
  _, spec = cd.read_task_input(task_dir, vocab)
  labels, logits = [], []
  for batch in cd.eval_dataset(task_dir, spec, 64):
    logits.append(classification.logits(model, batch).numpy())
    labels.append(batch["label_ids"].numpy()[:, 0])
  return cm.classification_metrics(np.concatenate(labels), np.concatenate(logits))


def test_single_sentence_task_learns_and_keeps_the_best(straight, data):
  for name in ("COMPLETED", "manifest.json", "train_config.json", "eval_results.json",
               "checkpoints/bert_config.json", f"checkpoints/ckpt-{STEPS}.index",
               "best/classifier.json", "best/eval_report.json", "tensorboard"):
    assert os.path.exists(os.path.join(straight, name)), name
  results = json.load(open(os.path.join(straight, "eval_results.json")))
  assert [r["step"] for r in results] == [STEPS_PER_EPOCH, STEPS]  # Every epoch.
  assert set(results[0]) == {"step", "accuracy", "precision", "recall", "f1", "mcc", "loss"}
  info = classification.read_classifier_info(os.path.join(straight, "best"))
  best = max(results, key=lambda r: r["accuracy"])
  assert (info["info"]["step"], info["info"]["value"]) == (best["step"], best["accuracy"])
  assert best["accuracy"] >= 0.95, results
  assert info["labels"] == ["first", "second", "third"]
  # best/ rebuilds the classifier alone and gives the recorded figures.
  model = classification.load_classifier(os.path.join(straight, "best"))
  got = _dev_accuracy(model, data["single"], data["vocab"])
  assert got["accuracy"] == pytest.approx(best["accuracy"])
  assert got["mcc"] == pytest.approx(best["mcc"], abs=1e-6)
  report = json.load(open(os.path.join(straight, "best", "eval_report.json")))
  assert sum(c["support"] for c in report["per_class"].values()) == 200
  manifest = json.load(open(os.path.join(straight, "manifest.json")))
  assert "best/classifier.json" in [f["name"] for f in manifest["files"]]
  config = json.load(open(os.path.join(straight, "train_config.json")))
  assert config["flags"]["num_train_steps"] == STEPS and config["flags"]["optimizer"] == "adamw"
  assert config["flags"]["num_warmup_steps"] == int(STEPS * 0.1)
  # One after the other: a run at the same time would find the directory busy.
  again = start_tool("finetune", *_flags(data, "single", straight, "--shuffle_buffer_size=0"))
  assert "nothing to do" in again.communicate(timeout=300)[0].decode()
  other = start_tool("finetune", *_flags(data, "single", straight, "--best_metric=f1"))
  assert "different config (differs in: best_metric, shuffle_buffer_size)" in _error_line(other)


def test_sigkill_then_resume_equals_straight_run(straight, data, tmp_path):
  out = str(tmp_path / "run")
  cmd = [sys.executable, os.path.join(ROOT, "tools", "finetune.py"),
         *_flags(data, "single", out, "--shuffle_buffer_size=0")]
  proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                          env=tool_env())
  _wait_for_checkpoint(proc, out, STEPS_PER_EPOCH)
  proc.kill()
  proc.wait()
  assert not os.path.exists(os.path.join(out, "COMPLETED"))
  resumed = run_tool("finetune", *_flags(data, "single", out, "--shuffle_buffer_size=0"))
  assert "resumed from step" in resumed.stderr
  for directory in ("checkpoints", "best"):
    want_prefix, want = _saved_values(os.path.join(straight, directory))
    got_prefix, got = _saved_values(os.path.join(out, directory))
    assert os.path.basename(got_prefix) == os.path.basename(want_prefix)
    assert sorted(got) == sorted(want)
    for name in want:
      np.testing.assert_array_equal(got[name], want[name], err_msg=name)
  want, got = (json.load(open(os.path.join(d, "eval_results.json"))) for d in (straight, out))
  assert got == want


def test_mpirun_two_ranks_match_one_process(straight, data, tmp_path):
  out = str(tmp_path / "multi")
  cmd = MPIRUN + ["-np", "2", "-x", "OMPI_MCA_mpi_yield_when_idle=1", sys.executable,
                  os.path.join(ROOT, "tools", "finetune.py"),
                  *_flags(data, "single", out, "--shuffle_buffer_size=0")]
  proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=tool_env())
  assert proc.returncode == 0, proc.stderr[-3000:]
  want, got = _train_losses(straight), _train_losses(out)
  assert len(want) == STEPS and len(set(want)) == STEPS
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
  evals = [json.load(open(os.path.join(d, "eval_results.json"))) for d in (straight, out)]
  for want_eval, got_eval in zip(*evals):
    for key, value in want_eval.items():
      np.testing.assert_allclose(got_eval[key], value, rtol=1e-4, atol=1e-6, err_msg=key)
  identity = json.load(open(os.path.join(out, "train_config.json")))["identity"]
  assert identity["world_size"] == 2


def test_sentence_pair_task_learns_with_dropout_and_shuffling(data, tmp_path):
  out = str(tmp_path / "pair")
  run_tool("finetune", *_flags(data, "pair", out, "--best_metric=roc_auc",
                               config="dropout_config"))
  results = json.load(open(os.path.join(out, "eval_results.json")))
  assert {"roc_auc", "f1", "mcc"} <= set(results[-1])
  assert max(r["accuracy"] for r in results) >= 0.95, results
  info = classification.read_classifier_info(os.path.join(out, "best"))["info"]
  assert info["metric"] == "roc_auc" and info["value"] == max(r["roc_auc"] for r in results)


def _general_student(directory):
  """A "general-distillation" run's checkpoint (the trainer's layout) to start from."""
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  config = bert.BertConfig.from_dict(MODEL)
  model = bert.ensure_built(heads.BertPretrainer(config))
  manager = tf.train.CheckpointManager(tf.train.Checkpoint(model=model),
                                       os.path.join(directory, "checkpoints"), 1)
  manager.save(checkpoint_number=1)
  config.to_json_file(os.path.join(directory, "checkpoints", "bert_config.json"))
  return str(directory)


@pytest.fixture(scope="module")
def task_labels(straight, data, tmp_path_factory):
  """The fine-tuned "straight" teacher's logits over the blind task, cached by
  tools/extract_teacher_labels.py on classification records (train and dev)."""
  out = str(tmp_path_factory.mktemp("labels") / "labels")
  run_tool("extract_teacher_labels",
           f"--init_checkpoint={os.path.join(straight, 'best')}",
           f"--vocab_file={data['vocab']}", f"--input_dir={data['blind']}", f"--output_dir={out}")
  return out


def test_task_distillation_learns_from_the_cached_teacher_logits(task_labels, data, tmp_path):
  """Train labels are all 0, so what the student learns comes from the logits.
  The labels' kind makes it a task distillation; the old --task flag is accepted
  and said to be unneeded."""
  out = str(tmp_path / "student")
  init = _general_student(tmp_path / "general")
  proc = run_tool("distill", "--task", f"--student_config={data['config']}",
                  f"--vocab_file={data['vocab']}", f"--teacher_labels_dir={task_labels}",
                  f"--output_dir={out}", "--alpha=0.0", "--temperature=2.0",
                  "--init_from=checkpoint", f"--init_checkpoint={init}",
                  "--train_batch_size=16", "--num_train_epochs=3", "--learning_rate=1e-3")
  assert "best accuracy" in proc.stdout
  assert "--task is no longer needed" in proc.stderr
  assert "distill_task: 1 process on CPU" in proc.stderr  # The run's first line.
  results = json.load(open(os.path.join(out, "eval_results.json")))
  assert [r["step"] for r in results] == [32, 64, 96]
  assert results[-1]["kd_loss"] < results[0]["kd_loss"]
  assert results[-1]["teacher_agreement"] >= 0.9, results
  majority = np.bincount(data["single_splits"]["dev"]["label_ids"][:, 0]).max() / 200
  assert max(r["accuracy"] for r in results) >= 0.9 > majority + 0.4, results
  identity = json.load(open(os.path.join(out, "train_config.json")))["identity"]
  assert identity["distill"] == {"alpha": 0.0, "temperature": 2.0}
  assert identity["init_checkpoint"] == init


def test_bad_inputs_are_one_line_errors(straight, task_labels, data, tmp_path):
  other_vocab = tmp_path / "vocab.txt"
  other_vocab.write_text(open(data["vocab"]).read() + "extra\n")
  narrow = _write_json(tmp_path / "narrow.json", dict(MODEL, hidden_size=32))
  out = str(tmp_path / "run")
  cases = [
      ("distill", [f"--student_config={narrow}", f"--vocab_file={data['vocab']}",
                   f"--teacher_labels_dir={task_labels}", f"--output_dir={out}",
                   "--init_from=teacher_layers", f"--teacher_config={data['config']}",
                   f"--teacher_checkpoint={os.path.join(straight, 'best')}"], "widths differ"),
      ("finetune", _flags(data, "single", out, f"--vocab_file={other_vocab}"),
       "were made with another vocab"),
      ("distill", [f"--student_config={data['config']}",
                   f"--vocab_file={data['vocab']}", f"--teacher_labels_dir={task_labels}",
                   f"--output_dir={out}", "--kd_tail=bucket"],
       "error: flags: --kd_tail does not apply to classification records with cached "
       "teacher logits"),
  ]
  procs = [start_tool(tool, *flags) for tool, flags, _ in cases]
  for proc, (_, _, message) in zip(procs, cases):
    assert message in _error_line(proc)
  assert not os.path.exists(out)
