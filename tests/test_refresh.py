"""Unattended refreshes from a mirror served over HTTP on 127.0.0.1."""

import glob
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from pipeline.corpus import refresh
from tests import mirror_fixtures, wiki_fixtures
from tests.conftest import ROOT, synthetic_pages, tool_env
from tests.http_fixtures import serve
from tests.test_label_reuse import _source_records
from tests.test_label_reuse import tiny_teacher  # noqa: F401  pylint: disable=unused-import
from tests.test_incremental import _records_by_page, _second_version

WIKI = "testwiki"


def _pages_v1():
  return wiki_fixtures.sample_pages() + synthetic_pages(120)


def _cmd(root, url, *extra):
  return [sys.executable, os.path.join(ROOT, "tools", "refresh_corpus.py"), f"--root={root}",
          f"--mirror_url={url}", f"--wiki={WIKI}", "--num_shards=4", "--eval_fraction=0.05",
          "--min_article_chars=50", "--max_seq_length=64", "--max_predictions_per_seq=10",
          "--dupe_factor=2", "--num_workers=1", *extra]


def _refresh(root, url, *extra, vocab):
  return subprocess.run(_cmd(root, url, f"--vocab_file={vocab}", *extra), capture_output=True,
                        text=True, env=tool_env(), timeout=600)


@pytest.fixture(scope="module")
def mirror(tmp_path_factory):
  base = tmp_path_factory.mktemp("mirror")
  mirror_fixtures.add_dump(str(base), WIKI, "20260101", _pages_v1())
  with serve(base) as server:
    yield base, server


def test_first_then_incremental_refresh(mirror, corpus, tmp_path):
  base, server = mirror
  root = str(tmp_path / "corpus")
  first = _refresh(root, server.url, vocab=corpus["vocab"])
  assert first.returncode == 0, first.stdout + first.stderr
  assert "dump 20260101 is current" in first.stdout
  assert os.readlink(os.path.join(root, "current")) == os.path.join("versions", "20260101")
  again = _refresh(root, server.url, vocab=corpus["vocab"])
  assert again.returncode == 0 and "no new dump" in again.stdout
  # A newer finished dump with edits, and a newer one still in progress.
  mirror_fixtures.add_dump(str(base), WIKI, "20260201", _second_version(_pages_v1()))
  mirror_fixtures.add_dump(str(base), WIKI, "20260301", _pages_v1(), status="in-progress")
  second = _refresh(root, server.url, "--keep_versions=1", vocab=corpus["vocab"])
  assert second.returncode == 0, second.stdout + second.stderr
  assert "dump 20260201 is current" in second.stdout and "removed versions ['20260101']" in second.stdout
  state = json.load(open(os.path.join(root, "state.json")))
  changes = state["history"][-1]["changes"]
  assert changes["new"] == 5 and changes["deleted"] == 4 and changes["changed"] == 12
  v2 = os.path.join(root, "versions", "20260201")
  extract_stats = json.load(open(os.path.join(v2, "extract", "stats.json")))
  assert extract_stats["reused"] == changes["unchanged"]
  records = json.load(open(os.path.join(v2, "records", "stats.json")))
  # Placement is by page id, so an unchanged page is in the same shard as before.
  assert records["reused_documents"] == changes["unchanged"]
  assert len(os.listdir(os.path.join(root, "logs"))) == 2  # runs that did work


def test_unchanged_documents_keep_their_records_and_labels(mirror, corpus, tiny_teacher,
                                                          tmp_path):
  root = str(tmp_path / "corpus")
  mirror_v1 = tmp_path / "m1"
  teacher = ["--teacher_config=tiny_teacher", f"--teacher_checkpoint={tiny_teacher}",
             "--truncation_factor=8", "--label_batch_size=32"]
  mirror_fixtures.add_dump(str(mirror_v1), WIKI, "20260101", _pages_v1())
  first = _refresh(root, str(mirror_v1), *teacher, vocab=corpus["vocab"])
  assert first.returncode == 0, first.stdout + first.stderr
  v1 = os.path.join(root, "versions", "20260101")
  v1_records, v1_labels = (_records_by_page(os.path.join(v1, d)) for d in ("records", "distill"))
  mirror_fixtures.add_dump(str(mirror_v1), WIKI, "20260201", _second_version(_pages_v1()))
  second = _refresh(root, str(mirror_v1), *teacher, vocab=corpus["vocab"])
  assert second.returncode == 0, second.stdout + second.stderr
  v2 = os.path.join(root, "versions", "20260201")
  v2_records, v2_labels = (_records_by_page(os.path.join(v2, d)) for d in ("records", "distill"))
  edited = {p["id"] for p in _second_version(_pages_v1()) if p.get("revid", 0) >= 10**6}
  unchanged = [p for p in v2_records if p in v1_records and p not in edited]
  assert len(unchanged) > 90
  assert all(v2_records[p] == v1_records[p] for p in unchanged)
  assert all(v2_labels[p] == v1_labels[p] for p in unchanged)  # copied, byte for byte
  # The records of unchanged documents (and any other record whose bytes did
  # not change, e.g. of a new revision with the same text) keep their labels;
  # the rest went through the teacher.
  old, new = (_source_records(os.path.join(v, "records")) for v in (v1, v2))
  same = sum(r in set(old.get(name, ())) for name, rs in new.items() for r in rs)
  records = json.load(open(os.path.join(v2, "records", "stats.json")))
  labels = json.load(open(os.path.join(v2, "distill", "stats.json")))
  assert labels["reused_records"] == same >= records["reused_instances"] > 0
  assert labels["computed_records"] == records["instances"] - same > 0
  assert (f"labels reused {labels['reused_records']}, computed {labels['computed_records']}"
          in second.stdout)
  log = open(sorted(glob.glob(os.path.join(root, "logs", "*.log")))[-1]).read()
  assert f"reuse_dir='{os.path.join(v1, 'distill')}'" in log  # the label stage's config


def test_interrupted_download_resumes_from_the_partial_file(tmp_path, corpus):
  base = tmp_path / "m"
  name = mirror_fixtures.add_dump(str(base), WIKI, "20260101", _pages_v1())
  size = os.path.getsize(base / WIKI / "20260101" / name)
  with serve(base) as server:
    server.cut_after[name] = size // 3
    proc = _refresh(str(tmp_path / "corpus"), server.url, vocab=corpus["vocab"])
    assert proc.returncode == 0, proc.stdout + proc.stderr
  # The cut attempt sent a third; the retry resumed and sent only the rest.
  assert server.sent_by_name[name] == size
  assert f"downloaded {size} bytes" in proc.stdout


def test_corrupt_download_fails_and_keeps_the_current_version(tmp_path, corpus):
  base = tmp_path / "m"
  mirror_fixtures.add_dump(str(base), WIKI, "20260101", _pages_v1())
  root = str(tmp_path / "corpus")
  with serve(base) as server:
    assert _refresh(root, server.url, vocab=corpus["vocab"]).returncode == 0
    name = mirror_fixtures.add_dump(str(base), WIKI, "20260201", _pages_v1(), corrupt=True)
    proc = _refresh(root, server.url, vocab=corpus["vocab"])
  assert proc.returncode == 3, proc.stdout + proc.stderr
  assert "sha1 mismatch" in proc.stdout and "current version kept" in proc.stdout
  assert os.readlink(os.path.join(root, "current")).endswith("20260101")
  dump_dir = os.path.join(root, "versions", "20260201", "dump")
  assert not os.path.exists(os.path.join(dump_dir, name + ".part"))
  assert not os.path.exists(os.path.join(dump_dir, name))


def test_second_concurrent_run_exits_already_running(tmp_path, corpus):
  root = str(tmp_path / "corpus")
  with refresh.exclusive(root):
    proc = _refresh(root, str(tmp_path / "nowhere"), vocab=corpus["vocab"])
  assert proc.returncode == 0 and "already running" in proc.stdout


def test_sigkill_during_rebuild_keeps_current_then_resumes(tmp_path, corpus):
  base = tmp_path / "m"
  mirror_fixtures.add_dump(str(base), WIKI, "20260101", _pages_v1())
  root = str(tmp_path / "corpus")
  assert _refresh(root, str(base), vocab=corpus["vocab"]).returncode == 0
  mirror_fixtures.add_dump(str(base), WIKI, "20260201", _second_version(_pages_v1()))
  proc = subprocess.Popen(_cmd(root, str(base), f"--vocab_file={corpus['vocab']}"),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=tool_env(),
                          start_new_session=True)
  marker = os.path.join(root, "versions", "20260201", "extract", "COMPLETED")
  deadline = time.time() + 120
  while not os.path.exists(marker):
    assert proc.poll() is None and time.time() < deadline, "refresh ended before the kill"
    time.sleep(0.01)
  os.killpg(proc.pid, signal.SIGKILL)  # the refresh and the stage it is running
  proc.wait()
  assert os.readlink(os.path.join(root, "current")).endswith("20260101")
  resumed = _refresh(root, str(base), vocab=corpus["vocab"])
  assert resumed.returncode == 0, resumed.stdout + resumed.stderr
  assert os.readlink(os.path.join(root, "current")).endswith("20260201")
