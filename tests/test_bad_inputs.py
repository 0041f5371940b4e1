"""Bad input: one line naming the file and the cause, exit status 2, nothing kept."""

import bz2
import os
import shutil

import pytest

from tests import wiki_fixtures
from tests.conftest import records_flags, run_tool


def _assert_error(proc, path, cause):
  assert proc.returncode == 2, proc.stderr
  assert "Traceback" not in proc.stderr
  last = proc.stderr.strip().splitlines()[-1]
  assert last.startswith(f"error: {path}"), last
  assert cause in last, last


def _good_dump(tmp_path):
  return wiki_fixtures.write_dump(str(tmp_path / "good.xml.bz2"), wiki_fixtures.sample_pages())


def _truncated(tmp_path):
  data = open(_good_dump(tmp_path), "rb").read()
  path = tmp_path / "truncated.xml.bz2"
  path.write_bytes(data[:len(data) // 2])
  return str(path), "truncated"


def _corrupt(tmp_path):
  data = bytearray(open(_good_dump(tmp_path), "rb").read())
  data[200:260] = b"\x00" * 60
  path = tmp_path / "corrupt.xml.bz2"
  path.write_bytes(bytes(data))
  return str(path), "corrupt"


def _malformed(tmp_path):
  xml = wiki_fixtures.dump_xml(wiki_fixtures.sample_pages()).replace("</title>", "</titel>", 1)
  path = tmp_path / "malformed.xml"
  path.write_text(xml, encoding="utf-8")
  return str(path), "malformed XML"


def _old_version(tmp_path):
  path = wiki_fixtures.write_dump(str(tmp_path / "old.xml"), wiki_fixtures.sample_pages(),
                                  version="0.3")
  return str(path), "version 0.3"


def _empty(tmp_path):
  path = tmp_path / "empty.xml.bz2"
  path.write_bytes(bz2.compress(b""))
  return str(path), "empty"


def _missing(tmp_path):
  return str(tmp_path / "nope.xml.bz2"), "no such"


@pytest.mark.parametrize("make", [_truncated, _corrupt, _malformed, _old_version, _empty,
                                  _missing])
def test_bad_dump(tmp_path, make):
  path, cause = make(tmp_path)
  out = tmp_path / "out"
  proc = run_tool("extract_wiki", f"--input={path}", f"--output_dir={out}", check=False)
  _assert_error(proc, path, cause)
  assert not (out / "COMPLETED").exists()


def test_non_utf8_text_shard(corpus, tmp_path):
  shards = str(tmp_path / "shards")
  shutil.copytree(corpus["shards"], shards)
  shard = os.path.join(shards, "train", "part-00002.txt")
  data = bytearray(open(shard, "rb").read())
  data[10] = 0xFF  # same size, so it passes the manifest check and fails decoding
  open(shard, "wb").write(bytes(data))
  out = tmp_path / "records"
  proc = run_tool("create_pretraining_data",
                  *records_flags(dict(corpus, shards=shards), str(out), "--num_workers=1"),
                  check=False)
  _assert_error(proc, shard, "invalid UTF-8")
  assert not (out / "COMPLETED").exists()


@pytest.mark.parametrize("content,cause", [(None, "no such"), (b"", "empty"),
                                           (b"[PAD]\n[UNK]\nhello\n", "[CLS]"),
                                           (b"[PAD]\n\xff\xfe\n", "UTF-8")])
def test_bad_vocab(corpus, tmp_path, content, cause):
  vocab = tmp_path / "vocab.txt"
  if content is not None:
    vocab.write_bytes(content)
  proc = run_tool("create_pretraining_data",
                  *records_flags(dict(corpus, vocab=str(vocab)), str(tmp_path / "r")),
                  check=False)
  _assert_error(proc, str(vocab), cause)


def test_stage_input_without_completed(corpus, tmp_path):
  extract = str(tmp_path / "extract")
  shutil.copytree(corpus["extract"], extract)
  os.remove(os.path.join(extract, "COMPLETED"))
  proc = run_tool("shard_text", f"--input_dir={extract}", f"--output_dir={tmp_path / 's'}",
                  check=False)
  _assert_error(proc, extract, "COMPLETED")


def test_own_vocab_is_not_overwritten(corpus, tmp_path):
  mine = tmp_path / "vocab.txt"
  shutil.copy(corpus["vocab"], mine)
  proc = run_tool("build_vocab", f"--input_dir={corpus['shards']}", f"--output_file={mine}",
                  "--vocab_size=300", check=False)
  _assert_error(proc, str(mine), "not made by build_vocab")


def test_dump_without_articles_is_an_error(tmp_path):
  pages = [dict(id=1, title="A", redirect="B", text="#REDIRECT [[B]]"),
           dict(id=2, title="Talk:A", ns=1, text="Some talk. " * 40)]
  path = wiki_fixtures.write_dump(str(tmp_path / "noarticles.xml"), pages)
  out = tmp_path / "out"
  proc = run_tool("extract_wiki", f"--input={path}", f"--output_dir={out}", check=False)
  _assert_error(proc, path, "no article survived")
  assert not (out / "COMPLETED").exists()
