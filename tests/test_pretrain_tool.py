"""tools/pretrain.py and tools/export.py as a user runs them, on the corpus
fixture's records (S=64, P=10, vocab 400) with a 2-layer, H=32 model.

The runs take a few seconds each; a module fixture trains once ("straight")
and the other tests compare against it.
"""

import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from modeling.networks import bert
from modeling.checkpoints import loading
from modeling.models import heads
from modeling.training import pretraining
from pipeline.inputs import pretraining_dataset
from pipeline.core import stage
from tests.conftest import MPIRUN, ROOT, records_flags, run_tool, tool_env

TINY = dict(vocab_size=400, hidden_size=32, num_hidden_layers=2,
            num_attention_heads=4, intermediate_size=64,
            max_position_embeddings=128, type_vocab_size=2,
            initializer_range=0.02, hidden_act="gelu")
STEPS = 60
RUN_FLAGS = ["--train_batch_size=16", f"--num_train_steps={STEPS}",
             "--num_warmup_steps=4", "--learning_rate=5e-3",
             "--save_checkpoints_steps=20", "--eval_every_steps=30",
             "--log_every_steps=10", "--deterministic"]


def _write_config(path, **changes):
  values = dict(TINY, hidden_dropout_prob=0.1,
                attention_probs_dropout_prob=0.1)
  values.update(changes)
  with open(path, "w") as f:
    json.dump(values, f)
  return str(path)


@pytest.fixture(scope="module")
def tiny_config(tmp_path_factory):
  return _write_config(tmp_path_factory.mktemp("cfg") / "bert_config.json")


def _flags(corpus, config, out, *extra):
  return [f"--bert_config_file={config}", f"--input_dir={corpus['records']}",
          f"--output_dir={out}", *RUN_FLAGS, *extra]


@pytest.fixture(scope="module")
def straight(corpus, tiny_config, tmp_path_factory):
  """An uninterrupted run with dropout on, plus its SavedModel export."""
  base = tmp_path_factory.mktemp("straight")
  out, export_dir = str(base / "run"), str(base / "export")
  run_tool("pretrain", *_flags(corpus, tiny_config, out),
           f"--export_dir={export_dir}")
  return out, export_dir


def _checkpoint_values(out):
  prefix = tf.train.latest_checkpoint(os.path.join(out, "checkpoints"))
  return prefix, {n: tf.train.load_variable(prefix, n)
                  for n, _ in tf.train.list_variables(prefix)
                  if n != "_CHECKPOINTABLE_OBJECT_GRAPH"}


def _error_lines(proc):
  assert proc.returncode == 2, proc.stderr[-2000:]
  assert "Traceback" not in proc.stderr
  return [l for l in proc.stderr.splitlines() if l.startswith("error:")]


def test_output_dir_contract(straight, corpus, tiny_config):
  out, _ = straight
  for name in ("COMPLETED", "manifest.json", "stats.json", "train_config.json",
               "eval_results.json", "checkpoints/bert_config.json",
               f"checkpoints/ckpt-{STEPS}.index", "input_state/rank-0-of-1"):
    assert os.path.exists(os.path.join(out, name)), name
  assert glob.glob(os.path.join(out, "tensorboard", "events.*"))
  results = json.load(open(os.path.join(out, "eval_results.json")))
  assert [r["step"] for r in results] == [30, STEPS]
  assert set(results[-1]) == {"step", "mlm_accuracy", "mlm_loss",
                              "nsp_accuracy", "nsp_loss"}
  config = json.load(open(os.path.join(out, "train_config.json")))
  assert config["flags"]["num_train_steps"] == STEPS
  assert config["identity"]["bert_config"]["vocab_size"] == 400
  assert config["input_manifest_sha256"] and config["code_version"]
  again = run_tool("pretrain", *_flags(corpus, tiny_config, out))
  assert "nothing to do" in again.stdout
  other = run_tool("pretrain", *_flags(corpus, tiny_config, out),
                   "--learning_rate=1e-3", check=False)
  (line,) = _error_lines(other)
  assert "different config (differs in: learning_rate)" in line


def _wait_for_checkpoint(proc, out, step):
  state = os.path.join(out, "checkpoints", "checkpoint")
  while not (os.path.exists(state) and f"ckpt-{step}\"" in open(state).read()):
    assert proc.poll() is None, "the run ended before it could be killed"
    time.sleep(0.01)


def test_sigkill_then_resume_equals_straight_run(straight, corpus, tiny_config,
                                                 tmp_path):
  out = str(tmp_path / "run")
  cmd = [sys.executable, os.path.join(ROOT, "tools", "pretrain.py"),
         *_flags(corpus, tiny_config, out)]
  proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL, env=tool_env())
  _wait_for_checkpoint(proc, out, 20)
  proc.send_signal(signal.SIGKILL)
  assert proc.wait() == -signal.SIGKILL
  assert not os.path.exists(os.path.join(out, "COMPLETED"))
  resumed = run_tool("pretrain", *_flags(corpus, tiny_config, out))
  assert "resumed from step" in resumed.stderr
  # Weights, optimizer slots and step: bitwise equal to the straight run.
  _, want = _checkpoint_values(straight[0])
  _, got = _checkpoint_values(out)
  assert sorted(got) == sorted(want)
  for name in want:
    np.testing.assert_array_equal(got[name], want[name], err_msg=name)


def _eval_batch(corpus):
  batch = next(iter(pretraining_dataset.eval_dataset(corpus["records"], 8, 64, 10)))
  return {k: batch[k] for k in pretraining.MODEL_INPUTS}


def test_export_savedmodel_gives_the_checkpoint_logits(straight, corpus,
                                                       tmp_path):
  out, export_dir = straight
  model = heads.BertPretrainer(bert.BertConfig.from_dict(TINY | {
      "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1}))
  loading.load_checkpoint(model, out)  # Our own run directory.
  inputs = _eval_batch(corpus)
  want = model(inputs, training=False)
  tool_dir = str(tmp_path / "tool_export")
  run_tool("export", f"--checkpoint={out}", f"--export_dir={tool_dir}")
  for directory in (export_dir, tool_dir):
    loaded = tf.saved_model.load(directory)
    got = loaded.signatures["serving_default"](**inputs)
    for key in ("mlm_logits", "nsp_logits"):
      np.testing.assert_allclose(got[key], want[key], rtol=1e-5, atol=1e-5)
    encoder = loaded.signatures["encoder"](
        **{k: inputs[k] for k in ("input_ids", "input_mask", "segment_ids")})
    np.testing.assert_allclose(encoder["pooled_output"],
                               want["pooled_output"], rtol=1e-5, atol=1e-5)


def test_phase2_longer_sequences_start_from_phase1(straight, corpus,
                                                   tiny_config, tmp_path):
  records = str(tmp_path / "records128")
  run_tool("create_pretraining_data", *records_flags(
      corpus, records, "--max_seq_length=128", "--max_predictions_per_seq=20"))
  out = str(tmp_path / "phase2")
  # One step whose learning rate is 0 (warmup from 0): the weights must be
  # exactly phase 1's, now run on 128-token sequences.
  run_tool("pretrain", f"--bert_config_file={tiny_config}",
           f"--input_dir={records}", f"--output_dir={out}",
           f"--init_checkpoint={straight[0]}", "--train_batch_size=8",
           "--num_train_steps=1", "--num_warmup_steps=1")
  config = json.load(open(os.path.join(out, "train_config.json")))
  assert config["identity"]["max_seq_length"] == 128
  _, phase1 = _checkpoint_values(straight[0])
  _, phase2 = _checkpoint_values(out)
  model_keys = [k for k in phase1 if "_trainable_variables" in k or
                k.startswith("model/")]
  assert len(model_keys) > 30
  for key in model_keys:
    np.testing.assert_array_equal(phase2[key], phase1[key], err_msg=key)


def _duplicated_records(corpus, directory):
  """Records whose two train files are the same file.

  Rank r of 2 reads file r, one process reads both interleaved: with no
  shuffling, the single process's batch of 8 is rank 0's batch of 4 with
  every example twice, which has the same loss and gradient. So the runs
  must agree to float rounding.
  """
  return duplicate_train_file(corpus["records"], directory)


def duplicate_train_file(source, directory):
  """A copy of a records (or label cache) dir whose train/part-00001 is part-00000."""
  copies = {"train/part-00000.tfrecord": "train/part-00000.tfrecord",
            "train/part-00001.tfrecord": "train/part-00000.tfrecord",
            "eval/part-00000.tfrecord": "eval/part-00000.tfrecord"}
  manifest = json.load(open(os.path.join(source, "manifest.json")))
  manifest["files"] = []
  for name, original in copies.items():
    path = os.path.join(directory, name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    shutil.copyfile(os.path.join(source, original), path)
    manifest["files"].append({"name": name, "bytes": os.path.getsize(path),
                              "sha256": stage.file_sha256(path)})
  stage.atomic_write_text(os.path.join(directory, "manifest.json"),
                          stage.json_dumps(manifest))
  open(os.path.join(directory, "COMPLETED"), "w").close()
  return str(directory)
  return str(directory)


def _train_losses(out):
  """train/loss per step from TensorBoard (a resumed step: its last value)."""
  losses = {}
  for path in sorted(glob.glob(os.path.join(out, "tensorboard", "events.*")),
                     key=os.path.getmtime):
    for event in tf.compat.v1.train.summary_iterator(path):
      for value in event.summary.value:
        if value.tag == "train/loss":
          losses[event.step] = float(tf.make_ndarray(value.tensor))
  return [losses[step] for step in sorted(losses)]


def _children(pid):
  """Descendant pids of `pid` (mpirun's ranks), from /proc."""
  found = []
  for entry in os.listdir("/proc"):
    try:
      with open(f"/proc/{entry}/stat") as f:
        parent = int(f.read().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
      continue
    if parent == pid:
      found += [int(entry)] + _children(int(entry))
  return found


def _mpirun_killed_at(cmd, out, step):
  """Starts cmd under mpirun; SIGKILLs every rank once `step` is saved."""
  proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL, env=tool_env())
  _wait_for_checkpoint(proc, out, step)
  for pid in _children(proc.pid) + [proc.pid]:
    os.kill(pid, signal.SIGKILL)
  proc.wait()


def test_mpirun_two_ranks_match_one_process_through_a_kill(corpus, tmp_path):
  records = _duplicated_records(corpus, tmp_path / "records")
  config = _write_config(tmp_path / "bert_config.json", hidden_dropout_prob=0.0,
                         attention_probs_dropout_prob=0.0)
  flags = [f"--bert_config_file={config}", f"--input_dir={records}",
           "--train_batch_size=8", "--num_train_steps=30",
           "--num_warmup_steps=0", "--learning_rate=1e-3",
           "--save_checkpoints_steps=10", "--shuffle_buffer_size=0",
           "--log_every_steps=1", "--deterministic"]
  single, multi = str(tmp_path / "single"), str(tmp_path / "multi")
  run_tool("pretrain", *flags, f"--output_dir={single}")
  cmd = MPIRUN + ["-np", "2", "-x", "OMPI_MCA_mpi_yield_when_idle=1",
                  sys.executable, os.path.join(ROOT, "tools", "pretrain.py"),
                  *flags, f"--output_dir={multi}"]
  # Killed after step 10, then resumed: each rank reads back its own input
  # position (input_state/rank-<r>-of-2).
  _mpirun_killed_at(cmd, multi, 10)
  proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                        env=tool_env())
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "resumed from step" in proc.stderr
  want, got = _train_losses(single), _train_losses(multi)
  assert len(want) == 30 and len(set(want)) == 30
  np.testing.assert_allclose(got, want, rtol=1e-5)
  evals = [json.load(open(os.path.join(d, "eval_results.json")))[-1]
           for d in (single, multi)]
  for key in ("mlm_loss", "nsp_loss", "mlm_accuracy"):
    np.testing.assert_allclose(evals[1][key], evals[0][key], rtol=1e-5)
  _, want_weights = _checkpoint_values(single)
  _, got_weights = _checkpoint_values(multi)
  for name, value in want_weights.items():
    np.testing.assert_allclose(got_weights[name], value, rtol=1e-4,
                               atol=1e-6, err_msg=name)


def test_bad_inputs_are_one_line_errors(corpus, tiny_config, tmp_path):
  out = str(tmp_path / "run")
  cases = [
      ([f"--input_dir={tmp_path / 'missing'}"], "input directory does not exist"),
      (["--max_seq_length=128"],
       "--max_seq_length=128 but the records were written with "
       "max_seq_length=64"),
      ([f"--bert_config_file={_write_config(tmp_path / 'c.json', vocab_size=500)}"],
       "vocab_size 500 differs from the records' vocab of 400 ids"),
  ]
  for extra, message in cases:
    proc = run_tool("pretrain", *_flags(corpus, tiny_config, out), *extra,
                    check=False)
    (line,) = _error_lines(proc)
    assert message in line, line
  assert not os.path.exists(out)
