"""extract_teacher_labels on generated classification records with a
tiny random classifier: the exact outputs, logits equal to the model's on the
records, the stage contract (no-op rerun, other config, SIGKILL resume) and
the refusals (another vocab, another number of labels, pretraining records)."""

import json
import os
import subprocess

import numpy as np
import pytest

from pipeline.inputs import classification_dataset as cds
from pipeline.records import schema
from pipeline.core import kinds
from pipeline.core import stage
from pipeline.records import tfrecord
from pipeline.labels import task_labels as task_stage
from pipeline.core.errors import InputError
from tests import classification_fixtures as fixtures
from tests.conftest import run_tool, start_tool, tree_bytes
from tests.test_stages import _assert_one_line_error, _kill_after_first, _listing

tf = pytest.importorskip("tensorflow")

SEQ = 16
FILES = ["dev/part-00000.tfrecord", "train/part-00000.tfrecord"]


def _save_classifier(directory, num_labels, vocab_size=fixtures.VOCAB_SIZE, seed=3):
  import keras  # pylint: disable=import-outside-toplevel
  from modeling.networks import bert  # pylint: disable=import-outside-toplevel
  from modeling.models import classification
  keras.utils.set_random_seed(seed)
  # A wide init spreads the logits, so they are not all alike.
  config = bert.BertConfig(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2,
                           num_attention_heads=2, intermediate_size=64,
                           max_position_embeddings=32, initializer_range=0.5)
  model = classification.build_classifier(config, num_labels)
  classification.save_classifier(model, str(directory))
  return str(directory)


@pytest.fixture(scope="module")
def task(tmp_path_factory):
  base = tmp_path_factory.mktemp("task")
  vocab = fixtures.write_vocab(str(base / "vocab.txt"))
  splits = {"train": fixtures.make_examples("single", 1500, SEQ, seed=1),
            "dev": fixtures.make_examples("single", 23, SEQ, seed=2),
            "test": fixtures.make_examples("single", 9, SEQ, seed=3)}
  records = fixtures.write_task(str(base / "records"), vocab, "single", splits, SEQ)
  return {"base": base, "vocab": vocab, "records": records, "splits": splits,
          "teacher": _save_classifier(base / "teacher", 3)}


def _flags(task, out, *extra, teacher=None, vocab=None, input_dir=None):
  return [f"--init_checkpoint={teacher or task['teacher']}",
          f"--vocab_file={vocab or task['vocab']}",
          f"--input_dir={input_dir or task['records']}", f"--output_dir={out}",
          "--batch_size=8", *extra]


@pytest.fixture(scope="module")
def labels(task):
  out = str(task["base"] / "labels")
  proc = run_tool("extract_teacher_labels", *_flags(task, out, "--splits=dev,train"))
  assert "23 dev, 1500 train examples" in proc.stdout
  return out


def _finished(proc):
  stdout, stderr = proc.communicate(timeout=300)
  return subprocess.CompletedProcess(proc.args, proc.returncode, stdout.decode(),
                                     stderr.decode())


def _records(path):
  return [tf.train.Example.FromString(r) for r in tfrecord.iter_records(path)]


def test_outputs_are_the_records_plus_the_teacher_logits(task, labels):
  assert _listing(labels) == sorted(["COMPLETED", "manifest.json", "stats.json"] + FILES)
  with open(os.path.join(labels, "manifest.json")) as f:
    manifest = json.load(f)
  assert manifest["stage"] == kinds.TASK_DISTILL_RECORDS.stage == "extract_task_labels"
  assert manifest["counts"] == {"dev_examples": 23, "train_examples": 1500, "examples": 1523}
  assert [f["name"] for f in manifest["features"]] == [
      f.name for f in schema.TASK_DISTILL_FEATURES]
  config = manifest["config"]
  assert config["num_labels"] == config["teacher_num_labels"] == 3
  assert config["splits"] == ["dev", "train"] and config["teacher_logits_temperature"] == 1.0
  assert len(config["teacher_fingerprint"]) == 64
  for name in FILES:
    ours, source = (_records(os.path.join(d, name)) for d in (labels, task["records"]))
    assert len(ours) == len(source)
    for a, b in zip(ours, source):
      features = dict(a.features.feature)
      assert len(features.pop("teacher_logits").float_list.value) == 3
      assert features == dict(b.features.feature)  # the original features, unchanged
  # The readers take it as task distill records.
  spec = cds.TaskSpec.from_manifest(kinds.read(labels, kinds.TASK_DISTILL_RECORDS)[1])
  assert spec.has_teacher_logits and spec.num_labels == 3


def test_logits_equal_the_model_on_the_records(task, labels):
  from modeling.models import classification  # pylint: disable=import-outside-toplevel
  model = classification.load_classifier(task["teacher"])
  for split in ("dev", "train"):
    columns = task["splits"][split]
    expected = classification.logits(model, {k: tf.constant(columns[k], tf.int32)
                                             for k in schema.CLASSIFICATION_MODEL_INPUTS})
    got = [list(r.features.feature["teacher_logits"].float_list.value)
           for r in _records(os.path.join(labels, f"{split}/part-00000.tfrecord"))]
    # Another batch size: float32 sums in another order (1e-5 at these logits).
    np.testing.assert_allclose(np.asarray(got), expected.numpy(), rtol=1e-5, atol=1e-4)
    assert np.ptp(np.asarray(got)) > 1.0  # not all alike


def test_rerun_is_a_noop_and_another_config_is_refused(task, labels):
  before = tree_bytes(labels, skip=())
  other_teacher = _save_classifier(task["base"] / "other_teacher", 3, seed=4)
  # One after the other (a run at the same time would find the directory busy);
  # none of them writes.
  again, other_splits, other_weights = (
      _finished(start_tool("extract_teacher_labels", *args)) for args in (
          _flags(task, labels, "--splits=dev,train"), _flags(task, labels, "--splits=dev"),
          _flags(task, labels, "--splits=dev,train", teacher=other_teacher)))
  assert again.returncode == 0 and "up to date" in again.stdout, again.stderr
  _assert_one_line_error(other_splits, labels, "different config", "splits",
                         "--overwrite")
  _assert_one_line_error(other_weights, "teacher_fingerprint",
                         "teacher_weights_sha256")
  assert tree_bytes(labels, skip=()) == before


def test_sigkill_resumes_to_identical_bytes(task, labels, tmp_path):
  out = str(tmp_path / "labels")
  args = _flags(task, out, "--splits=dev,train")
  # dev (23 records) is published first; train (1500) is still being labelled.
  _kill_after_first(start_tool("extract_teacher_labels", *args), out, ".tfrecord")
  assert not os.path.exists(os.path.join(out, "COMPLETED"))
  run_tool("extract_teacher_labels", *args)
  a, b = tree_bytes(out), tree_bytes(labels)
  assert sorted(a) == sorted(b)
  assert [k for k in a if a[k] != b[k]] == []


def test_another_vocab_is_a_one_line_error(task, tmp_path):
  other_vocab = str(tmp_path / "other_vocab.txt")
  with open(task["vocab"]) as f, open(other_vocab, "w") as g:
    g.write(f.read().replace("w0\n", "w0x\n"))
  proc = run_tool("extract_teacher_labels", *_flags(task, tmp_path / "out", vocab=other_vocab),
                  check=False)
  _assert_one_line_error(proc, other_vocab, "vocab sha256", "another vocab")
  assert not os.path.exists(tmp_path / "out")


def _check(task, teacher_dir):
  from modeling.models import classification  # pylint: disable=import-outside-toplevel
  _, manifest = kinds.read(task["records"], kinds.CLASSIFICATION_RECORDS)
  model = classification.load_classifier(teacher_dir)
  task_stage.check_classifier(manifest, model.config, model.num_labels, teacher_dir,
                              task_stage.run_vocab_sha256(teacher_dir))


def test_teachers_that_do_not_fit_are_refused(task, labels, tmp_path):
  _check(task, task["teacher"])  # fits
  with pytest.raises(InputError, match="predicts 2 labels, the records have 3"):
    _check(task, _save_classifier(tmp_path / "two_labels", 2))
  with pytest.raises(InputError, match="vocab_size 50 differs from the records' vocab of 40"):
    _check(task, _save_classifier(tmp_path / "vocab_50", 3, vocab_size=50))
  # A fine-tuning run's manifest names the vocab it was trained with.
  run = tmp_path / "run"
  best = _save_classifier(run / "best", 3)
  stage.atomic_write_text(str(run / "manifest.json"), stage.json_dumps(
      {"stage": "finetune", "config": {"vocab_sha256": "f" * 64}}))
  with pytest.raises(InputError, match="fine-tuned with vocab ffffffffffff"):
    _check(task, best)
  _, manifest = kinds.read(task["records"], kinds.CLASSIFICATION_RECORDS)
  with pytest.raises(InputError, match="no records of split 'nope'"):
    schema.record_files(manifest["_dir"], ("train", "nope"))
  with pytest.raises(InputError, match="holds classification records with cached teacher "
                     "logits, expected classification records"):
    kinds.read(labels, kinds.CLASSIFICATION_RECORDS)
