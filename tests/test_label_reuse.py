"""extract_teacher_labels --reuse_dir: a second corpus version's labels copy
the earlier distill records of unchanged records and equal a fresh run."""

import collections
import json
import os

import numpy as np
import pytest

from pipeline.labels import reuse
from pipeline.core import stage
from pipeline.records import tfrecord
from tests.conftest import run_tool, start_tool
from tests.test_incremental import versions  # noqa: F401  pylint: disable=unused-import
from tests.test_stages import _kill_after_first

pytest.importorskip("tensorflow")

TEACHER = ["--bert_config_file=tiny_teacher", "--truncation_factor=8", "--batch_size=32"]
SAMPLED = ["--label_method=sampled", "--seed=5"]


@pytest.fixture(scope="module")
def tiny_teacher(tmp_path_factory):
  """modeling/configs/tiny_teacher.json at the fixture's vocab (400), random
  weights saved as a Google TF1 checkpoint."""
  import keras  # pylint: disable=import-outside-toplevel
  from modeling.networks import bert  # pylint: disable=import-outside-toplevel
  from modeling.checkpoints import google
  from modeling.models import heads
  keras.utils.set_random_seed(11)
  config = bert.load_config("tiny_teacher", vocab_size=400, initializer_range=0.5)
  model = heads.BertPretrainer(config)
  model.build(None)
  return google.save_tf1_checkpoint(
      model, str(tmp_path_factory.mktemp("tiny_teacher") / "bert_model.ckpt"),
      write_config=False)  # the bundled config name is given instead


def _args(corpus, ckpt, records, out, *extra):
  return [f"--init_checkpoint={ckpt}", f"--vocab_file={corpus['vocab']}",
          f"--input_dir={records}", f"--output_dir={out}", *TEACHER, *extra]


def _labels(corpus, ckpt, records, out, *extra):
  return run_tool("extract_teacher_labels", *_args(corpus, ckpt, records, out, *extra))


def _data_files(d):
  """{name: bytes} of every file the manifest lists (records and sidecars)."""
  manifest = stage.read_json(os.path.join(d, "manifest.json"))
  return {f["name"]: open(os.path.join(d, f["name"]), "rb").read() for f in manifest["files"]}


def _source_records(records_dir):
  """{file name: [record bytes]} of a records dir."""
  manifest = stage.read_json(os.path.join(records_dir, "manifest.json"))
  return {f["name"]: list(tfrecord.iter_records(os.path.join(records_dir, f["name"])))
          for f in manifest["files"] if f["name"].endswith(".tfrecord")}


def _by_page(d):
  """{page id: sorted distill records} of a labels dir (its .index.npy)."""
  out = collections.defaultdict(list)
  for name in _source_records(d):
    index = np.load(os.path.join(d, name[:-len(".tfrecord")] + ".index.npy"))
    for (page, _), record in zip(index.tolist(), tfrecord.iter_records(os.path.join(d, name))):
      out[page].append(record)
  return {p: sorted(v) for p, v in out.items()}


@pytest.fixture(scope="module")
def v1_labels(corpus, tiny_teacher, tmp_path_factory):
  """Top-k labels of the first corpus version."""
  out = str(tmp_path_factory.mktemp("labels") / "v1")
  _labels(corpus, tiny_teacher, corpus["records"], out)
  return out


@pytest.mark.parametrize("method", [[], SAMPLED], ids=["topk", "sampled"])
def test_reuse_equals_a_fresh_run_and_copies_unchanged_records(
    corpus, versions, tiny_teacher, v1_labels, tmp_path, method):  # noqa: F811
  """Also: a reusing run killed after its first file resumes to the same bytes."""
  v2_records = versions[0]["records"]
  v1, fresh, reused = (str(tmp_path / n) for n in ("v1", "v2_fresh", "v2_reused"))
  if method:
    _labels(corpus, tiny_teacher, corpus["records"], v1, *method)
  else:
    v1 = v1_labels
  _labels(corpus, tiny_teacher, v2_records, fresh, *method)
  args = _args(corpus, tiny_teacher, v2_records, reused, *method, f"--reuse_dir={v1}")
  if not method:  # killed after its first file, then resumed
    _kill_after_first(start_tool("extract_teacher_labels", *args), reused, ".tfrecord")
  proc = run_tool("extract_teacher_labels", *args)
  assert _data_files(reused) == _data_files(fresh)  # every record, index and sidecar
  # What should be reused: v2 records whose exact bytes are in v1's same file.
  old, new = _source_records(corpus["records"]), _source_records(v2_records)
  expected = sum(r in set(old.get(name, ())) for name, rs in new.items() for r in rs)
  total = sum(map(len, new.values()))
  stats = json.load(open(os.path.join(reused, "stats.json")))
  assert 0.5 * total < stats["reused_records"] == expected < total
  assert stats["computed_records"] == total - expected
  assert sum(p["reused_records"] for p in stats["files"].values()) == expected
  manifest = json.load(open(os.path.join(reused, "manifest.json")))
  assert manifest["config"]["reuse_from"] == stage.file_sha256(os.path.join(v1, "manifest.json"))
  assert manifest["counts"]["instances"] == total
  assert f"{expected} reused" in proc.stdout
  # Documents with the same page id and revision keep their distill records.
  before, after = _by_page(v1), _by_page(reused)
  unchanged = [p for p, r in _revisions(v2_records).items() if _revisions(
      corpus["records"]).get(p) == r]
  assert len(unchanged) > 90 and all(after[p] == before[p] for p in unchanged)


def _revisions(records_dir):
  """{page id: revid} of the documents with records in a records dir."""
  out = {}
  for name in _source_records(records_dir):
    index = np.load(os.path.join(records_dir, name[:-len(".tfrecord")] + ".index.npy"))
    out.update({int(p): int(r) for p, r in index.tolist()})
  return out


def test_nothing_changed_copies_everything(corpus, tiny_teacher, v1_labels, tmp_path):
  again = str(tmp_path / "again")
  _labels(corpus, tiny_teacher, corpus["records"], again, f"--reuse_dir={v1_labels}")
  stats = json.load(open(os.path.join(again, "stats.json")))
  assert stats["computed_records"] == 0 and stats["reused_records"] == stats["instances"]
  assert _data_files(again) == _data_files(v1_labels)


def test_another_fingerprint_or_no_cache_is_not_reused(corpus, tiny_teacher, v1_labels,
                                                      tmp_path):
  other = str(tmp_path / "other")
  proc = _labels(corpus, tiny_teacher, corpus["records"], other, "--temperature=2.0",
                 f"--reuse_dir={v1_labels}")
  assert "not reusing" in proc.stderr and "(differs in: temperature)" in proc.stderr
  stats = json.load(open(os.path.join(other, "stats.json")))
  assert stats["reused_records"] == 0 and stats["computed_records"] == stats["instances"]
  manifest = json.load(open(os.path.join(other, "manifest.json")))
  assert "reuse_from" not in manifest["config"]
  missing = _labels(corpus, tiny_teacher, corpus["records"], str(tmp_path / "x"),
                    f"--reuse_dir={tmp_path / 'nowhere'}", "--truncation_factor=4")
  assert "not reusing" in missing.stderr and "does not exist" in missing.stderr


def test_match_by_digest_handles_duplicates_and_absent_records():
  old = reuse.digests([b"a", b"b", b"a", b"c"])
  new = reuse.digests([b"c", b"d", b"a", b"b"])
  index = reuse._match(new, old)  # pylint: disable=protected-access
  assert index[0] == 3 and index[1] == -1 and index[2] in (0, 2) and index[3] == 1
  assert (reuse._match(new, old[:0]) == -1).all()  # pylint: disable=protected-access


def test_a_corrupt_earlier_file_is_an_error(tmp_path):
  path = str(tmp_path / "f.tfrecord")
  with tfrecord.TFRecordWriter(path) as w:
    for record in (b"one", b"two", b"three"):
      w.write_raw(record)
  assert [reuse.OldFile(path).record(i) for i in range(3)] == [b"one", b"two", b"three"]
  data = bytearray(open(path, "rb").read())
  data[-6] ^= 1  # inside the last record's payload
  open(path, "wb").write(bytes(data))
  with pytest.raises(reuse.InputError, match="corrupt"):
    reuse.OldFile(path)
