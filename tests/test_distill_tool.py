"""tools/distill.py as a user runs it: labels from tools/extract_teacher_labels.py
with a tiny random teacher over the corpus fixture's records (S=64, P=10,
vocab 400), then a 2-layer H=32 student.

One single-process run ("straight") is the reference for the other tests: it
reads a label cache whose two train files are the same file and has no
dropout, so it must also match two mpirun ranks reading one file each
(see tests/test_pretrain_tool.py's _duplicated_records).
"""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from modeling.networks import bert
from modeling.checkpoints import google
from modeling.checkpoints import loading
from modeling.models import student as student_model
from modeling.models import heads
from pipeline.inputs import pretraining_dataset
from pipeline.inputs import distill_dataset
from pipeline.core import stage
from tests.conftest import MPIRUN, ROOT, run_tool, start_tool, tool_env
from tests.test_pretrain_tool import (_checkpoint_values, _train_losses, duplicate_train_file,
                                      _wait_for_checkpoint)

STUDENT = dict(vocab_size=400, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
               intermediate_size=64, max_position_embeddings=64, type_vocab_size=2,
               initializer_range=0.02, hidden_act="gelu", hidden_dropout_prob=0.0,
               attention_probs_dropout_prob=0.0)
STEPS = 30
RUN_FLAGS = ["--train_batch_size=8", f"--num_train_steps={STEPS}", "--num_warmup_steps=0",
             "--learning_rate=3e-3", "--optimizer=adamw", "--save_checkpoints_steps=10",
             "--eval_every_steps=5", "--log_every_steps=1", "--shuffle_buffer_size=0",
             "--alpha=0.2", "--kd_tail=bucket", "--deterministic"]


def _write_json(path, values):
  with open(path, "w") as f:
    json.dump(values, f)
  return str(path)


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
  """A random teacher (H=64, 4 heads) as a Google TF1 checkpoint."""
  import keras  # pylint: disable=import-outside-toplevel
  d = tmp_path_factory.mktemp("teacher")
  keras.utils.set_random_seed(3)
  # A wide init makes its distributions peaked: a clear top-1 to agree with.
  config = bert.BertConfig(vocab_size=400, hidden_size=64, num_hidden_layers=2,
                           num_attention_heads=4, intermediate_size=128,
                           max_position_embeddings=64, hidden_act="gelu_new",
                           initializer_range=0.5)
  model = bert.ensure_built(heads.BertPretrainer(config))
  prefix = google.save_tf1_checkpoint(model, str(d / "bert_model.ckpt"))
  return {"ckpt": prefix, "config": str(d / "bert_config.json")}


@pytest.fixture(scope="module")
def labels(corpus, teacher, tmp_path_factory):
  """{"full": the tool's top-K=8 labels at T=1, "dup": its duplicated copy}."""
  base = tmp_path_factory.mktemp("labels")
  full = str(base / "full")
  run_tool("extract_teacher_labels", f"--bert_config_file={teacher['config']}",
           f"--init_checkpoint={teacher['ckpt']}", f"--vocab_file={corpus['vocab']}",
           f"--input_dir={corpus['records']}", f"--output_dir={full}",
           "--truncation_factor=8", "--temperature=1.0", "--batch_size=64")
  return {"full": full, "dup": duplicate_train_file(full, base / "dup")}


@pytest.fixture(scope="module")
def student_config(tmp_path_factory):
  return _write_json(tmp_path_factory.mktemp("student") / "bert_config.json", STUDENT)


def _flags(corpus, config, labels_dir, out, *extra):
  return [f"--student_config={config}", f"--vocab_file={corpus['vocab']}",
          f"--teacher_labels_dir={labels_dir}", f"--output_dir={out}", *RUN_FLAGS, *extra]


@pytest.fixture(scope="module")
def straight(corpus, student_config, labels, tmp_path_factory):
  out = str(tmp_path_factory.mktemp("straight") / "run")
  run_tool("distill", *_flags(corpus, student_config, labels["dup"], out))
  return out


def _error_line(proc):
  stdout, stderr = proc.communicate(timeout=300)
  del stdout
  stderr = stderr.decode()
  assert proc.returncode == 2, stderr[-2000:]
  assert "Traceback" not in stderr, stderr[-2000:]
  (line,) = [l for l in stderr.splitlines() if l.startswith("error:")]
  return line


def test_output_contract_and_learning(straight, corpus, student_config, labels):
  for name in ("COMPLETED", "manifest.json", "train_config.json", "eval_results.json",
               "checkpoints/bert_config.json", f"checkpoints/ckpt-{STEPS}.index",
               "input_state/rank-0-of-1", "tensorboard"):
    assert os.path.exists(os.path.join(straight, name)), name
  results = json.load(open(os.path.join(straight, "eval_results.json")))
  assert [r["step"] for r in results] == list(range(5, STEPS + 1, 5))
  first, last = results[0], results[-1]
  assert set(last) == {"step", "mlm_accuracy", "mlm_loss", "nsp_accuracy", "nsp_loss",
                       "teacher_agreement", "kd_loss", "teacher_kl_bucket"}
  assert last["teacher_kl_bucket"] < first["teacher_kl_bucket"]
  assert last["kd_loss"] < first["kd_loss"]
  assert last["teacher_agreement"] > first["teacher_agreement"] + 0.05, results
  losses = _train_losses(straight)
  assert np.mean(losses[-5:]) < np.mean(losses[:5]) - 0.1, losses
  identity = json.load(open(os.path.join(straight, "train_config.json")))["identity"]
  assert identity["distill"]["kd_mode"] == "bucket" and identity["distill"]["temperature"] == 1.0
  # One after the other: a run at the same time would find the directory busy.
  again = start_tool("distill", *_flags(corpus, student_config, labels["dup"], straight))
  again.wait(timeout=300)
  other = start_tool("distill", *_flags(corpus, student_config, labels["dup"], straight),
                     "--kd_tail=renormalize")
  assert "nothing to do" in again.communicate(timeout=300)[0].decode()
  assert "different config (differs in: distill)" in _error_line(other)


def test_sigkill_then_resume_equals_straight_run(straight, corpus, student_config, labels,
                                                 tmp_path):
  out = str(tmp_path / "run")
  cmd = [sys.executable, os.path.join(ROOT, "tools", "distill.py"),
         *_flags(corpus, student_config, labels["dup"], out)]
  proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                          env=tool_env())
  _wait_for_checkpoint(proc, out, 10)
  proc.kill()
  proc.wait()
  assert not os.path.exists(os.path.join(out, "COMPLETED"))
  resumed = run_tool("distill", *_flags(corpus, student_config, labels["dup"], out))
  assert "resumed from step" in resumed.stderr
  _, want = _checkpoint_values(straight)
  _, got = _checkpoint_values(out)
  assert sorted(got) == sorted(want)
  for name in want:
    np.testing.assert_array_equal(got[name], want[name], err_msg=name)


def test_mpirun_two_ranks_match_one_process(straight, corpus, student_config, labels,
                                            tmp_path):
  out = str(tmp_path / "multi")
  cmd = MPIRUN + ["-np", "2", "-x", "OMPI_MCA_mpi_yield_when_idle=1", sys.executable,
                  os.path.join(ROOT, "tools", "distill.py"),
                  *_flags(corpus, student_config, labels["dup"], out)]
  proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=tool_env())
  assert proc.returncode == 0, proc.stderr[-3000:]
  want, got = _train_losses(straight), _train_losses(out)
  assert len(want) == STEPS and len(set(want)) == STEPS
  np.testing.assert_allclose(got, want, rtol=1e-5)
  evals = [json.load(open(os.path.join(d, "eval_results.json")))[-1] for d in (straight, out)]
  for key in ("kd_loss", "teacher_agreement", "mlm_loss"):
    np.testing.assert_allclose(evals[1][key], evals[0][key], rtol=1e-5)


def test_mismatched_cache_and_bad_flags_are_one_line_errors(corpus, student_config, labels,
                                                            teacher, tmp_path):
  other_vocab = str(tmp_path / "vocab.txt")
  shutil.copyfile(corpus["vocab"], other_vocab)
  with open(other_vocab, "a") as f:
    f.write("extra\n")
  wide = _write_json(tmp_path / "wide.json", dict(STUDENT, vocab_size=500))
  out = str(tmp_path / "run")
  cases = [
      ([f"--vocab_file={other_vocab}"], "teacher labels were made with another vocab"),
      ([f"--student_config={wide}"], "vocab_size 500 differs"),
      (["--init_from=teacher_layers", f"--teacher_config={teacher['config']}",
        f"--teacher_checkpoint={teacher['ckpt']}"], "widths differ"),
  ]
  procs = [start_tool("distill", *_flags(corpus, student_config, labels["full"], out), *extra)
           for extra, _ in cases]
  for proc, (_, message) in zip(procs, cases):
    assert message in _error_line(proc)
  assert not os.path.exists(out)


def test_online_teacher_with_backbone_losses(corpus, student_config, teacher, tmp_path):
  out = str(tmp_path / "online")
  proc = run_tool("distill", f"--student_config={student_config}",
                  f"--vocab_file={corpus['vocab']}", "--online_teacher",
                  f"--records_dir={corpus['records']}", f"--teacher_config={teacher['config']}",
                  f"--teacher_checkpoint={teacher['ckpt']}", f"--output_dir={out}",
                  "--train_batch_size=8", "--num_train_steps=12", "--num_warmup_steps=0",
                  "--learning_rate=3e-3", "--optimizer=adamw", "--log_every_steps=1",
                  "--hidden_mse_weight=1.0", "--attention_kl_weight=1.0", "--temperature=2.0")
  assert "teacher_kl_full" in proc.stdout
  result = json.load(open(os.path.join(out, "eval_results.json")))[-1]
  assert {"teacher_agreement", "teacher_kl_full"} <= set(result)
  identity = json.load(open(os.path.join(out, "train_config.json")))["identity"]
  assert len(identity["teacher"]["weights_sha256"]) == 64
  # The checkpoint holds the projections (H=32 -> 64, hidden states 0..2).
  student = student_model.build_student(bert.BertConfig.from_dict(STUDENT), None, 64)
  tf.train.Checkpoint(model=student).read(tf.train.latest_checkpoint(
      os.path.join(out, "checkpoints"))).expect_partial().assert_existing_objects_matched()
  assert len(student.projections.trainable_variables) == 2 * 3
  losses = _train_losses(out)
  assert np.mean(losses[-3:]) < np.mean(losses[:3]), losses
  # The run's checkpoint loads into a plain BertPretrainer (projections skipped).
  model = heads.BertPretrainer(bert.BertConfig.from_dict(STUDENT))
  loading.load_checkpoint(model, out)


def test_dataset_batches_are_the_records_plus_decoded_labels(corpus, labels):
  manifest = distill_dataset.read_labels(labels["full"], corpus["vocab"])
  spec = distill_dataset.LabelSpec.from_manifest(manifest)
  assert (spec.truncation_factor, spec.label_method, spec.vocab_size) == (8, "topk", 400)
  got = next(iter(distill_dataset.eval_dataset(labels["full"], spec, 4)))
  want = next(iter(pretraining_dataset.eval_dataset(corpus["records"], 4, 64, 10)))
  for name, value in want.items():
    np.testing.assert_array_equal(got[name], value, err_msg=name)
  assert got["teacher_ids"].shape == got["teacher_values"].shape == (4, 10, 8)
  real = got["masked_lm_weights"].numpy() > 0
  values, tail = got["teacher_values"].numpy(), got["teacher_tail_mass"].numpy()
  np.testing.assert_allclose(values.sum(-1)[real] + tail[real], 1.0, atol=2e-3)
  assert not values[~real].any() and not tail[~real].any()
  assert got["teacher_nsp_logits"].dtype == tf.float32
