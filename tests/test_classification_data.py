"""create_classification_data on generated GLUE-style files: single and pair
tasks, TSV and CSV, header or not, malformed rows reported with their line
numbers, unreadable files as one-line errors, and the stage contract."""

import json
import os
import random
import signal
import subprocess
import sys

import pytest
import tensorflow as tf

from pipeline.records import classification_data as cd
from pipeline.records import tfrecord
from pipeline.text.tokenization import BertTokenizer
from tests.conftest import ROOT, run_tool, tool_env, tree_bytes
from tests.test_stages import _assert_one_line_error, _listing

WORDS = ("the movie film plot actor story good bad great boring funny dull scene "
         "music long short love hate it is was a an of and but not very").split()
SPECIAL = ["[PAD]", "[unused0]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
PIECES = [".", ",", "!", "?", "'", '"', "-", "##s", "##ly", "##ing", "un", "##able"]


@pytest.fixture(scope="module")
def vocab(tmp_path_factory):
  path = tmp_path_factory.mktemp("vocab") / "vocab.txt"
  path.write_text("\n".join(SPECIAL + PIECES + list(WORDS)) + "\n", encoding="utf-8")
  return str(path)


def _sentence(rnd, n=None):
  words = [rnd.choice(WORDS) for _ in range(n or rnd.randint(3, 12))]
  return " ".join(words).capitalize() + rnd.choice([".", "!", " ?"])


def _write(path, lines):
  with open(path, "w", encoding="utf-8", newline="") as f:
    f.write("".join(line + "\n" for line in lines))
  return str(path)


def _single_tsv(d, n, seed, header=True):
  rnd = random.Random(seed)
  rows = [f"{_sentence(rnd, rnd.randint(3, 16))}\t{rnd.choice('01')}" for _ in range(n)]
  return _write(d, (["sentence\tlabel"] if header else []) + rows), rows


def _flags(vocab, out, *extra):
  return [f"--output_dir={out}", f"--vocab_file={vocab}", "--max_seq_length=16",
          "--log_examples=2", *extra]


SST = ("--text_a_column=sentence", "--label_column=label", "--labels=0,1")


def _records(path):
  return [tf.train.Example.FromString(r) for r in tfrecord.iter_records(path)]


def _values(example, name):
  return list(example.features.feature[name].int64_list.value)


def _reference_pair_truncation(a, b, budget):
  """google-research/bert's _truncate_seq_pair, verbatim in spirit."""
  a, b = list(a), list(b)
  while len(a) + len(b) > budget:
    (a if len(a) > len(b) else b).pop()
  return len(a), len(b)


def _expected(tok, a, b, label, seq):
  """The record google-research/bert's convert_single_example would write."""
  ta, tb = tok.tokenize(a), tok.tokenize(b) if b is not None else None
  if tb is None:
    ta = ta[:seq - 2]
    tokens, segments = ["[CLS]", *ta, "[SEP]"], [0] * (len(ta) + 2)
  else:
    la, lb = _reference_pair_truncation(ta, tb, seq - 3)
    tokens = ["[CLS]", *ta[:la], "[SEP]", *tb[:lb], "[SEP]"]
    segments = [0] * (la + 2) + [1] * (lb + 1)
  pad = seq - len(tokens)
  return {"input_ids": list(tok.convert_tokens_to_ids(tokens)) + [0] * pad,
          "input_mask": [1] * len(tokens) + [0] * pad, "segment_ids": segments + [0] * pad,
          "label_ids": [label]}


def _assert_records(path, tok, rows, seq):
  """rows: (text_a, text_b or None, label id) in file order."""
  records = list(tfrecord.iter_records(path))
  assert len(records) == len(rows)
  for raw, (a, b, label) in zip(records, rows):
    ex = tf.train.Example.FromString(raw)
    assert ex.SerializeToString(deterministic=True) == raw  # canonical bytes
    got = {k: _values(ex, k) for k in ("input_ids", "input_mask", "segment_ids", "label_ids")}
    assert got == _expected(tok, a, b, label, seq), (a, b)



def _json(d, name):
  with open(os.path.join(d, name), encoding="utf-8") as f:
    return json.load(f)



def test_truncation_equals_the_reference_loop():
  rnd = random.Random(0)
  for _ in range(3000):
    la, lb, budget = rnd.randint(0, 40), rnd.randint(0, 40), rnd.randint(1, 50)
    assert cd.truncated_lengths(la, lb, budget) == \
        _reference_pair_truncation(range(la), range(lb), budget), (la, lb, budget)


@pytest.fixture(scope="module")
def sst(tmp_path_factory, vocab):
  """A single-sentence task with header, SST-2 layout, through the tool."""
  d = tmp_path_factory.mktemp("sst")
  (d / "in").mkdir()
  data = {s: _single_tsv(d / "in" / f"{s}.tsv", n, seed)
          for s, n, seed in (("train", 300, 1), ("dev", 40, 2), ("test", 30, 3))}
  out = str(d / "out")
  proc = run_tool("create_classification_data", f"--input_dir={d / 'in'}", *SST,
                  *_flags(vocab, out))
  return {"dir": d, "out": out, "data": data, "proc": proc}


def test_single_sentence_tsv_records_and_manifest(sst, vocab):
  out = sst["out"]
  assert _listing(out) == ["COMPLETED", "dev/part-00000.tfrecord", "manifest.json",
                           "stats.json", "test/part-00000.tfrecord", "train/part-00000.tfrecord"]
  tok = BertTokenizer(vocab)
  for split, (_, rows) in sst["data"].items():
    expected = [(r.split("\t")[0], None, int(r.split("\t")[1])) for r in rows]
    _assert_records(os.path.join(out, split, "part-00000.tfrecord"), tok, expected, 16)
  manifest = _json(out, "manifest.json")
  config = manifest["config"]
  assert (config["labels"], config["num_labels"], config["max_seq_length"]) == (["0", "1"], 2, 16)
  assert config["columns"] == {"text_a": "sentence", "text_b": None, "label": "label"}
  assert config["vocab_size"] == len(SPECIAL + PIECES) + len(WORDS)
  assert len(config["vocab_sha256"]) == 64 and config["unlabeled_splits"] == []
  assert manifest["counts"] == {"train_examples": 300, "dev_examples": 40,
                                "test_examples": 30, "malformed_rows": 0}
  assert [f["name"] for f in manifest["features"]] == [
      "input_ids", "input_mask", "segment_ids", "label_ids"]
  stats = _json(out, "stats.json")
  assert sum(stats["train"]["labels"].values()) == 300
  assert stats["train"]["truncated_examples"] > 0  # up to 16 words + punctuation > 14
  assert "*** Example (train, line 2) ***" in sst["proc"].stderr
  assert "tokens: [CLS] " in sst["proc"].stderr


def test_rerun_noop_other_config_refused_and_bytes_identical(sst, vocab, tmp_path):
  inp, out = str(sst["dir"] / "in"), sst["out"]
  before = tree_bytes(out)
  proc = run_tool("create_classification_data", f"--input_dir={inp}", *SST, *_flags(vocab, out))
  assert "up to date" in proc.stdout and tree_bytes(out) == before
  other = run_tool("create_classification_data", f"--input_dir={inp}", *SST,
                   *_flags(vocab, out), "--max_seq_length=32", check=False)
  _assert_one_line_error(other, "differs in: max_seq_length", "--overwrite")
  labels = run_tool("create_classification_data", f"--input_dir={inp}", "--text_a_column=0",
                    "--label_column=label", "--labels=1,0", *_flags(vocab, out), check=False)
  _assert_one_line_error(labels, "columns", "labels")
  again = str(tmp_path / "again")
  run_tool("create_classification_data", f"--input_dir={inp}", *SST, *_flags(vocab, again))
  assert tree_bytes(again, skip=("stats.json", "manifest.json")) == \
      tree_bytes(out, skip=("stats.json", "manifest.json"))
  assert _json(again, "manifest.json")["files"] == _json(out, "manifest.json")["files"]
  run_tool("create_classification_data", f"--input_dir={inp}", *SST, *_flags(vocab, again),
           "--max_seq_length=32", "--overwrite")
  assert _json(again, "manifest.json")["config"]["max_seq_length"] == 32


def test_pair_csv_without_header_by_index(vocab, tmp_path):
  rnd = random.Random(5)
  rows, lines = [], []
  for i in range(120):
    a, b = _sentence(rnd, rnd.randint(2, 20)), _sentence(rnd, rnd.randint(2, 20))
    if i % 10 == 0:  # a quoted field with a comma, a quote and a newline inside
      a = f'{a}, "so" it\nwent'
    label = rnd.choice(["same", "different"])
    rows.append((a, b, ["different", "same"].index(label)))
    quoted = a.replace('"', '""')
    lines.append(f'{i},"{quoted}",{b},{label}')
  path = _write(tmp_path / "train.csv", lines)
  out = str(tmp_path / "out")
  run_tool("create_classification_data", f"--train_file={path}", "--format=csv",
           "--nohas_header", "--text_a_column=1", "--text_b_column=2", "--label_column=3",
           "--labels=different,same", *_flags(vocab, out))
  assert _listing(out) == ["COMPLETED", "manifest.json", "stats.json",
                           "train/part-00000.tfrecord"]
  _assert_records(os.path.join(out, "train", "part-00000.tfrecord"), BertTokenizer(vocab),
                  [(a.strip(), b.strip(), y) for a, b, y in rows], 16)
  segments = [_values(e, "segment_ids") for e in _records(
      os.path.join(out, "train", "part-00000.tfrecord"))]
  assert all(1 in s for s in segments)  # every pair has a second segment


def test_pair_tsv_with_header_by_name_like_mrpc(vocab, tmp_path):
  rnd = random.Random(6)
  header = "Quality\t#1 ID\t#2 ID\t#1 String\t#2 String"
  rows = [(_sentence(rnd), _sentence(rnd), rnd.randint(0, 1)) for _ in range(50)]
  lines = [header] + [f'{y}\t{i}\t{i + 1}\t{a} "quoted"\t{b}' for i, (a, b, y) in enumerate(rows)]
  path = _write(tmp_path / "train.tsv", lines)
  out = str(tmp_path / "out")
  run_tool("create_classification_data", f"--train_file={path}", "--text_a_column=#1 String",
           "--text_b_column=#2 String", "--label_column=Quality", "--labels=0,1",
           *_flags(vocab, out))
  _assert_records(os.path.join(out, "train", "part-00000.tfrecord"), BertTokenizer(vocab),
                  [(f'{a} "quoted"', b, y) for a, b, y in rows], 16)


def test_malformed_rows_are_counted_with_line_numbers(vocab, tmp_path):
  lines = ["sentence\tlabel", "a good movie\t1", "too\tmany\tcolumns", "a bad film\t0",
           "what a film\tmaybe", "", "too few columns", "   \t1", "the plot\t1",
           "more\textra\tcols", "it was dull\t 0 "]
  path = _write(tmp_path / "train.tsv", lines)
  out = str(tmp_path / "out")
  proc = run_tool("create_classification_data", f"--train_file={path}", *SST, *_flags(vocab, out))
  stats = _json(out, "stats.json")["train"]
  assert stats["malformed"] == {
      "wrong_column_count": {"count": 3, "first_lines": [3, 7, 10]},
      "unknown_label": {"count": 1, "first_lines": [5]},
      "empty_text_a": {"count": 1, "first_lines": [8]}}
  assert (stats["rows"], stats["examples"], stats["blank_lines"]) == (9, 4, 1)
  assert stats["malformed_rows"] == 5 == _json(out, "manifest.json")["counts"]["malformed_rows"]
  assert "skipped 3 wrong_column_count rows (first lines 3, 7, 10)" in proc.stderr
  assert "skipped 1 unknown_label rows (first lines 5)" in proc.stderr
  labels = [_values(e, "label_ids")[0] for e in _records(
      os.path.join(out, "train", "part-00000.tfrecord"))]
  assert labels == [1, 0, 1, 0]  # " 0 " is stripped to a known label


def test_first_lines_are_capped_and_pair_empty_b_is_reported(vocab, tmp_path):
  lines = ["a\tb\tlabel"] + [f"text {i}\t\t1" for i in range(12)] + ["x\ty\t1"]
  path = _write(tmp_path / "train.tsv", lines)
  out = str(tmp_path / "out")
  run_tool("create_classification_data", f"--train_file={path}", "--text_a_column=a",
           "--text_b_column=b", "--label_column=label", "--labels=0,1", *_flags(vocab, out))
  assert _json(out, "stats.json")["train"]["malformed"] == {
      "empty_text_b": {"count": 12, "first_lines": [2, 3, 4, 5, 6]}}


def test_unlabeled_test_split_like_glue(vocab, tmp_path):
  rnd = random.Random(7)
  train, _ = _single_tsv(tmp_path / "train.tsv", 20, 8)
  test = _write(tmp_path / "test.tsv", ["index\tsentence"] +
                [f"{i}\t{_sentence(rnd)}" for i in range(15)])
  out = str(tmp_path / "out")
  run_tool("create_classification_data", f"--train_file={train}", f"--test_file={test}", *SST,
           "--notest_labels", *_flags(vocab, out))
  config = _json(out, "manifest.json")["config"]
  assert config["unlabeled_splits"] == ["test"] and config["unlabeled_label_id"] == 2
  labels = {_values(e, "label_ids")[0] for e in _records(
      os.path.join(out, "test", "part-00000.tfrecord"))}
  assert labels == {2}
  with_labels = run_tool("create_classification_data", f"--train_file={train}",
                         f"--test_file={test}", *SST, *_flags(vocab, str(tmp_path / "o2")),
                         check=False)
  _assert_one_line_error(with_labels, "test.tsv", "no column 'label' in the header")


@pytest.mark.parametrize("name,content,flags,fragments", [
    ("missing", None, (), ("no such file",)),
    ("latin1", "sentence\tlabel\ncaf\xe9 ok\t1\n".encode("latin-1"), (), ("not valid UTF-8",)),
    ("empty", b"", (), ("empty file",)),
    ("headeronly", b"sentence\tlabel\n", (), ("no data rows",)),
    ("csv_as_tsv", b"sentence,label\n\"a, b\",1\nc,0\n", (),
     ("no column 'sentence'",)),
    ("wrong_format", b"\"a, b\",1\nc,0\n", ("--nohas_header", "--text_a_column=0",
                                             "--label_column=1"),
     ("no valid rows", "wrong_column_count")),
    ("unknown_labels", b"sentence\tlabel\ngood\tpos\nbad\tneg\n", (),
     ("no valid rows", "unknown_label 2 (first lines [2, 3])")),
    ("name_no_header", b"good\t1\n", ("--nohas_header",), ("is a column name but the file "
                                                            "has no header",)),
    ("runaway_quote", b'sentence,label\ngood,1\n"bad,0\nok,1\n', ("--format=csv",),
     ("line 3: malformed CSV",)),
])
def test_unreadable_files_are_one_line_errors(vocab, tmp_path, name, content, flags, fragments):
  path = tmp_path / f"{name}.tsv"
  if content is not None:
    path.write_bytes(content)
  args = [a for a in SST if not any(a.startswith(f.split("=")[0] + "=") for f in flags)]
  out = tmp_path / "out"
  proc = run_tool("create_classification_data", f"--train_file={path}", *args, *flags,
                  *_flags(vocab, str(out)), check=False)
  _assert_one_line_error(proc, str(path) if name != "missing" else "missing.tsv", *fragments)
  if name == "runaway_quote":  # found after the first rows were converted
    assert not (out / "COMPLETED").exists()
  else:  # refused before the output directory was claimed
    assert not out.exists()


def test_incomplete_input_stage_is_refused(sst, vocab, tmp_path):
  inp = tmp_path / "fetch"
  inp.mkdir()
  for split in ("train", "dev"):
    (inp / f"{split}.tsv").write_bytes((sst["dir"] / "in" / f"{split}.tsv").read_bytes())
  (inp / ".run.json").write_text("{}")  # a fetch that was killed before COMPLETED
  proc = run_tool("create_classification_data", f"--input_dir={inp}", *SST,
                  *_flags(vocab, str(tmp_path / "out")), check=False)
  _assert_one_line_error(proc, "incomplete")


_KILL_IN_DEV = """
import os, runpy, signal, sys
sys.path[:0] = [{root!r}, os.path.join({root!r}, "tools")]
from pipeline.records import classification_data as cd
convert = cd.convert_file
def convert_then_die(path, out_path, *args, **kwargs):
  if os.path.basename(path).startswith("dev"):
    open(out_path, "wb").write(b"half a file")
    os.kill(os.getpid(), signal.SIGKILL)
  return convert(path, out_path, *args, **kwargs)
cd.convert_file = convert_then_die
sys.argv = [{tool!r}] + {args!r}
runpy.run_path({tool!r}, run_name="__main__")
"""


def test_sigkill_mid_run_resumes_to_identical_bytes(sst, vocab, tmp_path):
  out = str(tmp_path / "out")
  args = [f"--input_dir={sst['dir'] / 'in'}", *SST, *_flags(vocab, out)]
  tool = os.path.join(ROOT, "tools", "create_classification_data.py")
  code = _KILL_IN_DEV.format(root=ROOT, tool=tool, args=args)
  proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                        env=tool_env(), timeout=300)
  assert proc.returncode == -signal.SIGKILL, proc.stderr
  assert os.path.exists(os.path.join(out, "train", "part-00000.tfrecord"))
  assert not os.path.exists(os.path.join(out, "COMPLETED"))
  resumed = run_tool("create_classification_data", *args)
  assert "*** Example (train" not in resumed.stderr  # train was kept, not redone
  assert tree_bytes(out, skip=("stats.json", "manifest.json")) == \
      tree_bytes(sst["out"], skip=("stats.json", "manifest.json"))
  assert _json(out, "manifest.json")["files"] == _json(sst["out"], "manifest.json")["files"]
