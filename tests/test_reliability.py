"""Reliability (issue 11): one writer per output, no hangs, inputs checked by
content, corrupt records and unwritable outputs as one-line errors, and the
wiki's own URLs. Tools run as subprocesses, with timeouts, as a user runs them."""

import importlib
import inspect
import json
import os
import pickle
import pkgutil
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest

import pipeline
from pipeline.core import stage
from pipeline.core import workers
from pipeline.core.errors import CorruptRecordError, InputError
from pipeline.corpus import wiki
from pipeline.labels import pretraining_labels
from pipeline.records import tfrecord
from tests import wiki_fixtures
from tests.conftest import ROOT, records_flags, run_tool, start_tool, tree_bytes, tool_env
from tests.test_teacher_labels import _flags as teacher_flags
from tests.test_teacher_labels import teacher  # noqa: F401  pylint: disable=unused-import

HANG_TIMEOUT = 120  # seconds; each of these runs takes a few when it does not hang
EXIT_BUSY, EXIT_NO_SPACE = 75, 4


def _one_line(proc, status, *fragments):
  assert proc.returncode == status, (proc.returncode, proc.stderr)
  assert "Traceback" not in proc.stderr, proc.stderr
  last = proc.stderr.strip().splitlines()[-1]
  assert last.startswith("error: "), proc.stderr
  for fragment in fragments:
    assert fragment in last, last
  return last


def _flip(path, offset, new=None):
  """Changes one byte of a file in place (same size)."""
  data = bytearray(open(path, "rb").read())
  data[offset] = new if new is not None else data[offset] ^ 0x01
  open(path, "wb").write(bytes(data))


def _published(d):
  return [f for f in tree_bytes(d) if not f.endswith(".json") or "/" in f]


# --- 2. errors cross processes ---------------------------------------------------

_ARGS = {"InputError": ("a/b", "why"), "DivergedError": ("a/b", "loss nan"),
         "OutputError": ("a/b", "full", True),
         "OutputBusyError": ("a/b", 123), "CorruptRecordError": ("a/b", 778417),
         "ConfigError": ("bad flag",), "AlreadyRunning": ("root",),
         "StageFailed": ("x exited 2",), "_CutShort": ("short", 10)}


def _pipeline_error_classes():
  found = {}
  for info in pkgutil.walk_packages(pipeline.__path__, "pipeline."):
    module = importlib.import_module(info.name)
    for name, obj in vars(module).items():
      if (inspect.isclass(obj) and issubclass(obj, BaseException) and
          obj.__module__ == info.name):
        found[name] = obj
  return found


def test_every_error_class_round_trips_through_pickle():
  classes = _pipeline_error_classes()
  assert set(classes) == set(_ARGS), "give new error classes arguments in _ARGS"
  for name, cls in classes.items():
    error = cls(*_ARGS[name])
    back = pickle.loads(pickle.dumps(error))
    assert type(back) is cls and str(back) == str(error)
    assert vars(back) == vars(error)


def _fail_on_three(x):
  if x == 3:
    raise InputError(f"item{x}", "bad")
  return x


def test_worker_error_cancels_the_pool_and_reraises():
  with pytest.raises(InputError, match="item3: bad"):
    list(workers.imap_unordered(_fail_on_three, range(40), 2))


def test_records_with_two_workers_and_a_bad_byte_do_not_hang(corpus, tmp_path):
  shards = str(tmp_path / "shards")
  shutil.copytree(corpus["shards"], shards)
  shard = os.path.join(shards, "train", "part-00002.txt")
  _flip(shard, 10, 0xFF)
  out = tmp_path / "records"
  proc = run_tool("create_pretraining_data", *records_flags(
      dict(corpus, shards=shards), str(out), "--num_workers=2"), check=False,
                  timeout=HANG_TIMEOUT)
  _one_line(proc, 2, shard, "invalid UTF-8")
  assert not (out / "COMPLETED").exists()


def test_shard_text_with_a_bad_byte_does_not_hang(corpus, tmp_path):
  extract = str(tmp_path / "extract")
  shutil.copytree(corpus["extract"], extract)
  docs = os.path.join(extract, "docs", "part-000-00001.jsonl")
  _flip(docs, 30, 0xFF)
  out = tmp_path / "shards"
  proc = run_tool("shard_text", f"--input_dir={extract}", f"--output_dir={out}",
                  "--num_shards=2", "--num_workers=1", check=False, timeout=HANG_TIMEOUT)
  _one_line(proc, 2, docs, "UnicodeDecodeError")
  assert not (out / "COMPLETED").exists()


# --- 3. inputs verified by content -----------------------------------------------

def _same_length_edit(path):
  """Replaces one word of the prose of a text file by another of the same length."""
  text = open(path, encoding="utf-8").read()
  start = text.find('"text": "') + 1  # 0 for a text shard: all of it is prose
  match = next(m for m in re.finditer(r"\b[a-z]{5,}\b", text[start:])
               if m.group() != m.group()[::-1])
  at = start + match.start()
  edited = text[:at] + match.group()[::-1] + text[at + len(match.group()):]
  open(path, "w", encoding="utf-8").write(edited)


def test_records_refuse_a_shard_edited_to_the_same_size(corpus, tmp_path):
  shards = str(tmp_path / "shards")
  shutil.copytree(corpus["shards"], shards)
  shard = os.path.join(shards, "train", "part-00001.txt")
  _same_length_edit(shard)
  out = tmp_path / "records"
  proc = run_tool("create_pretraining_data", *records_flags(
      dict(corpus, shards=shards), str(out), "--num_workers=1"), check=False)
  _one_line(proc, 2, shard, "sha256 mismatch")
  assert not os.path.exists(out / "train" / "part-00001.tfrecord")
  assert not (out / "COMPLETED").exists()


def test_shard_text_refuses_docs_edited_to_the_same_size(corpus, tmp_path):
  extract = str(tmp_path / "extract")
  shutil.copytree(corpus["extract"], extract)
  docs = os.path.join(extract, "docs", "part-000-00000.jsonl")
  _same_length_edit(docs)
  out = tmp_path / "shards"
  proc = run_tool("shard_text", f"--input_dir={extract}", f"--output_dir={out}",
                  "--num_shards=2", "--num_workers=1", check=False, timeout=HANG_TIMEOUT)
  _one_line(proc, 2, docs, "sha256 mismatch")
  assert not (out / "COMPLETED").exists() and not (out / "train").exists()


def test_label_stage_checks_records_by_content(corpus, tmp_path):
  records = str(tmp_path / "records")
  shutil.copytree(corpus["records"], records)
  name = "train/part-00000.tfrecord"
  pretraining_labels.check_records(records, [name])  # intact: no error
  path = os.path.join(records, name)
  first = bytearray(next(tfrecord.iter_records(path)))
  first[len(first) // 2] ^= 1
  with open(path, "r+b") as f:  # a valid record, other bytes: CRCs fine, sha256 not
    f.seek(12)
    f.write(bytes(first) + tfrecord.struct.pack("<I", tfrecord.masked_crc32c(bytes(first))))
  with pytest.raises(InputError, match="sha256 mismatch"):
    pretraining_labels.check_records(records, [name])


def test_verify_input_files(corpus, tmp_path):
  records = str(tmp_path / "records")
  shutil.copytree(corpus["records"], records)
  manifest = stage.read_input(records, "create_pretraining_data")
  stage.verify_input_files(manifest)
  _flip(os.path.join(records, "eval", "part-00000.tfrecord"), 100)
  with pytest.raises(InputError, match="eval/part-00000.tfrecord: .*sha256 mismatch"):
    stage.verify_input_files(manifest, ["eval/part-00000.tfrecord"])


# --- 4. corrupt records ---------------------------------------------------------

def test_corrupt_record_names_the_byte(corpus, tmp_path):
  path = str(tmp_path / "x.tfrecord")
  shutil.copy(os.path.join(corpus["records"], "train", "part-00000.tfrecord"), path)
  lengths = [len(r) for r in tfrecord.iter_records(path)]
  start = 16 * 2 + sum(lengths[:2])  # the third record
  _flip(path, start + 12 + 5)
  with pytest.raises(CorruptRecordError) as info:
    list(tfrecord.iter_records(path))
  assert str(info.value) == f"{path}: corrupted record at byte {start} (CRC mismatch)"


def test_label_stage_fails_a_corrupt_file_without_publishing(corpus, teacher, tmp_path):
  """extract_teacher_labels with a flipped byte in the last records file."""
  records = str(tmp_path / "records")
  shutil.copytree(corpus["records"], records)
  bad = os.path.join(records, "train", "part-00003.tfrecord")
  _flip(bad, 20)
  out = tmp_path / "labels"
  proc = run_tool("extract_teacher_labels", *teacher_flags(
      dict(corpus, records=records), teacher, str(out)), check=False)
  _one_line(proc, 2, bad, "corrupted record at byte 0 (CRC mismatch)")
  assert not any(f.endswith(".tfrecord") for f in tree_bytes(str(out)))


# --- 1. one writer per output directory -----------------------------------------

def _wait_for(path, proc, timeout=60):
  deadline = time.time() + timeout
  while time.time() < deadline:
    if os.path.exists(path) and open(path).read().strip():
      return
    assert proc.poll() is None, proc.communicate()
    time.sleep(0.01)
  raise AssertionError(f"{path} did not appear")


def test_second_run_on_a_locked_directory_stops_untouched(corpus, tmp_path):
  out = str(tmp_path / "records")
  first = start_tool("create_pretraining_data", *records_flags(corpus, out, "--num_workers=1"))
  try:
    _wait_for(os.path.join(out, ".run.json"), first)
    first.send_signal(signal.SIGSTOP)  # still holding the lock when the second starts
    second = run_tool("create_pretraining_data", *records_flags(
        corpus, out, "--num_workers=1", "--dupe_factor=3", "--overwrite"), check=False,
                      timeout=HANG_TIMEOUT)
    last = _one_line(second, EXIT_BUSY)
    assert last == f"error: {out} is being written by another run (pid {first.pid})"
  finally:
    first.send_signal(signal.SIGCONT)
    _, err = first.communicate(timeout=300)
  assert first.returncode == 0, err
  assert tree_bytes(out) == tree_bytes(corpus["records"])


def test_two_identical_extractions_at_once(corpus, tmp_path):
  out = str(tmp_path / "extract")
  args = [f"--input={corpus['dump']}", f"--output_dir={out}", "--pages_per_file=40",
          f"--min_article_chars={wiki_fixtures.SAMPLE_MIN_CHARS}", "--num_workers=1"]
  procs = [start_tool("extract_wiki", *args) for _ in range(2)]
  results = [(p.wait(timeout=300), p.communicate()[1].decode()) for p in procs]
  statuses = sorted(r for r, _ in results)
  assert statuses in ([0, 0], [0, EXIT_BUSY]), results  # [0, 0]: one finished first
  for status, err in results:
    if status == EXIT_BUSY:
      assert "is being written by another run" in err and "Traceback" not in err
  assert tree_bytes(out) == tree_bytes(corpus["extract"])


def test_lock_is_released_when_the_holder_is_killed(tmp_path):
  out = str(tmp_path / "out")
  code = (f"from pipeline.core import stage\n"
          f"out = stage.StageOutput({out!r}, 's', {{}}, 'h')\nout.prepare()\n"
          f"print('locked', flush=True)\nimport time; time.sleep(600)\n")
  holder = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE)
  try:
    assert holder.stdout.readline() == b"locked\n"
    with pytest.raises(InputError, match=f"pid {holder.pid}"):
      stage.StageOutput(out, "s", {}, "h").prepare()
  finally:
    holder.kill()
    holder.wait()
  assert stage.StageOutput(out, "s", {}, "h").prepare() is False


# --- 5. unwritable outputs ------------------------------------------------------

def _shard_flags(corpus, out):
  return [f"--input_dir={corpus['extract']}", f"--output_dir={out}", "--num_shards=2",
          "--num_workers=1"]


def test_regular_file_as_output_dir_or_parent(corpus, tmp_path):
  plain = tmp_path / "plain"
  plain.write_text("x")
  proc = run_tool("shard_text", *_shard_flags(corpus, plain), check=False)
  _one_line(proc, 2, str(plain), "exists and is not a directory")
  proc = run_tool("shard_text", *_shard_flags(corpus, plain / "out"), check=False)
  _one_line(proc, 2, str(plain / "out"), "not a directory")
  assert plain.read_text() == "x"


def test_immutable_output_dir(corpus, tmp_path):
  out = tmp_path / "ro"
  out.mkdir()
  if subprocess.run(["chattr", "+i", str(out)], capture_output=True).returncode:
    pytest.skip("chattr +i unsupported here")
  try:
    proc = run_tool("shard_text", *_shard_flags(corpus, out), check=False)
  finally:
    subprocess.run(["chattr", "-i", str(out)], check=True)
  _one_line(proc, 2, str(out), "Operation not permitted")


def _in_mount_namespace(script):
  """Runs a shell script as root of a new user+mount namespace (a private tmpfs)."""
  if not shutil.which("unshare") or subprocess.run(
      ["unshare", "-r", "-m", "true"], capture_output=True).returncode:
    pytest.skip("unprivileged mount namespaces unavailable")
  return subprocess.run(["unshare", "-r", "-m", "sh", "-c", script], capture_output=True,
                        text=True, timeout=300, env=tool_env())


def _tool_cmd(name, *args):
  return " ".join([sys.executable, os.path.join(ROOT, "tools", name + ".py"),
                   *(f"'{a}'" for a in args)])


def test_read_only_filesystem(corpus, tmp_path):
  mnt = tmp_path / "mnt"
  mnt.mkdir()
  proc = _in_mount_namespace(
      f"mount -t tmpfs tmpfs {mnt} && mount -o remount,ro {mnt} && "
      + _tool_cmd("shard_text", *_shard_flags(corpus, mnt / "out")))
  _one_line(proc, 2, str(mnt / "out"), "Read-only file system")


def test_disk_full_is_one_line_and_the_rerun_resumes(corpus, tmp_path):
  mnt, copy = tmp_path / "mnt", tmp_path / "copy"
  mnt.mkdir()
  size = sum(len(b) for b in tree_bytes(corpus["records"]).values()) // 2
  out = mnt / "records"
  flags = records_flags(corpus, str(out), "--num_workers=1")
  proc = _in_mount_namespace(
      f"mount -t tmpfs -o size={size} tmpfs {mnt} && {_tool_cmd('create_pretraining_data', *flags)};"
      f" status=$?; cp -a {mnt}/. {copy}/; exit $status")
  _one_line(proc, EXIT_NO_SPACE, str(out), "No space left on device")
  published = tree_bytes(str(copy / "records"))
  expected = tree_bytes(corpus["records"])
  assert published and all(expected[k] == v for k, v in published.items())
  run_tool("create_pretraining_data", *records_flags(corpus, str(copy / "records"),
                                                     "--num_workers=1"))
  assert tree_bytes(str(copy / "records")) == expected


# --- 6. the wiki's own URLs -------------------------------------------------------

_BG_PAGE = {"id": 558, "title": "Ямбол",
            "text": "'''Ямбол''' е град в Югоизточна България. " * 5}


def _bulgarian_xml(siteinfo=True):
  xml = wiki_fixtures.dump_xml([_BG_PAGE])
  xml = xml.replace("https://en.wikipedia.org/wiki/Main_Page",
                    "https://bg.wikipedia.org/wiki/Начална_страница")
  xml = xml.replace("<dbname>enwiki</dbname>", "<dbname>bgwiki</dbname>")
  return xml if siteinfo else re.sub(r"<siteinfo>.*</siteinfo>\n", "", xml, flags=re.S)


@pytest.mark.parametrize("siteinfo,name", [(True, "dump.xml"),
                                           (False, "bgwiki-20240101-pages-articles.xml")])
def test_urls_point_at_the_dumps_own_wiki(tmp_path, siteinfo, name):
  path = tmp_path / name
  path.write_text(_bulgarian_xml(siteinfo), encoding="utf-8")
  (page,) = wiki.iter_pages(str(path))
  doc, reason = wiki.clean_page(page, 10)
  assert reason is None
  assert doc["url"] == "https://bg.wikipedia.org/wiki?curid=558"


def test_extract_tool_writes_bulgarian_urls(tmp_path):
  path = tmp_path / "bgwiki-latest-pages-articles.xml"
  path.write_text(_bulgarian_xml(), encoding="utf-8")
  out = tmp_path / "extract"
  run_tool("extract_wiki", f"--input={path}", f"--output_dir={out}", "--num_workers=1",
           "--min_article_chars=10")
  doc = json.loads((out / "docs" / "part-000-00000.jsonl").read_text(encoding="utf-8"))
  assert doc["url"] == "https://bg.wikipedia.org/wiki?curid=558"


# --- 7. the README names the counter the stage writes ----------------------------

def test_readme_names_the_broken_page_counter(tmp_path):
  readme = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
  sentence = re.search(r"One broken page among\s+good ones is skipped and counted in "
                       r"`stats.json` \(`(\w+)`", readme)
  assert sentence, "the README's sentence about broken pages moved"
  xml = wiki_fixtures.dump_xml(wiki_fixtures.sample_pages())
  xml = re.sub(r"<revision>.*?</revision>", "", xml, count=1, flags=re.S)  # a broken page
  dump = tmp_path / "dump.xml"
  dump.write_text(xml, encoding="utf-8")
  out = tmp_path / "extract"
  run_tool("extract_wiki", f"--input={dump}", f"--output_dir={out}", "--num_workers=1",
           "--min_article_chars=1")
  stats = json.loads((out / "stats.json").read_text())
  assert stats[sentence.group(1)] == 1


def test_disk_full_during_training_is_one_line(corpus, tmp_path):
  """A checkpoint that does not fit: `cannot write`, the disk-full status, no traceback."""
  from tests.test_pretrain_tool import _write_config  # pylint: disable=import-outside-toplevel
  mnt = tmp_path / "mnt"
  mnt.mkdir()
  config = _write_config(tmp_path / "bert_config.json")
  out = mnt / "run"
  flags = [f"--bert_config_file={config}", f"--input_dir={corpus['records']}",
           f"--output_dir={out}", "--train_batch_size=8", "--num_train_steps=4",
           "--num_warmup_steps=1", "--save_checkpoints_steps=2"]
  # 200 KB: the run's config and logs fit, a checkpoint with its optimizer slots does not.
  proc = _in_mount_namespace(
      f"mount -t tmpfs -o size=200k tmpfs {mnt} && {_tool_cmd('pretrain', *flags)}")
  _one_line(proc, EXIT_NO_SPACE, str(out), "No space left on device")
