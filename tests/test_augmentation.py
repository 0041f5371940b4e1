"""augment_task_data: TinyBERT-style variants of a task's train split, with a tiny
random masked LM. Determinism, the invariants of a variant (only whole words
replaced, one side of a pair), the records made from it ([CLS] a [SEP] (b [SEP]),
variants unlabeled), stats, bad inputs and the stage contract."""

import dataclasses
import os
import random

import pytest
import tensorflow as tf

from modeling.augmentation import augment_run
from modeling.checkpoints import google
from modeling.models import heads
from modeling.networks import bert
from pipeline.core import stage
from pipeline.core.errors import ConfigError, InputError
from pipeline.corpus import augmented_data
from pipeline.records import classification_stage
from pipeline.records import tfrecord
from pipeline.text.tokenization import BertTokenizer
from tests.conftest import run_tool, tree_bytes
from tests.test_stages import _assert_one_line_error

WORDS = ("the movie film plot actor story good bad great boring funny dull scene "
         "music long short love hate it is was a an of and but not very").split()
SPECIAL = ["[PAD]", "[unused0]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
PIECES = [".", ",", "!", "?", "'", "-", "##s", "##ly", "##ing", "un", "##able"]
# Multi-piece words (embedding neighbours) among the single-piece ones (masked LM).
TEXT_WORDS = WORDS + ["movies", "unable", "boringly", "scenes"]
NUM_VARIANTS = 6


def _checkpoint(directory, vocab_size):
  """A random tiny BertPretrainer as a Google TF1 checkpoint (+ bert_config.json)."""
  config = bert.BertConfig(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=1,
                           num_attention_heads=2, intermediate_size=64,
                           max_position_embeddings=64, hidden_act="gelu_new")
  model = bert.ensure_built(heads.BertPretrainer(config))
  os.makedirs(directory)
  return google.save_tf1_checkpoint(model, os.path.join(directory, "bert_model.ckpt"))


def _sentence(rnd):
  words = [rnd.choice(TEXT_WORDS) for _ in range(rnd.randint(2, 10))]
  return " ".join(words).capitalize() + rnd.choice([" .", "!", ""])


def _write(path, lines):
  with open(path, "w", encoding="utf-8") as f:
    f.write("".join(line + "\n" for line in lines))


@pytest.fixture(scope="module")
def env(tmp_path_factory):
  d = tmp_path_factory.mktemp("aug")
  vocab = d / "vocab.txt"
  vocab.write_text("\n".join(SPECIAL + PIECES + WORDS) + "\n", encoding="utf-8")
  size = len(SPECIAL + PIECES + WORDS)
  rnd = random.Random(0)
  single = d / "single"
  os.makedirs(single)
  rows = [f"{_sentence(rnd)}\t{rnd.choice('01')}" for _ in range(36)]
  _write(single / "train.tsv", ["sentence\tlabel", *rows[:20], "Great\t1", "\t0", *rows[20:]])
  _write(single / "dev.tsv", ["sentence\tlabel", *rows[:4]])
  pair = d / "pair"
  os.makedirs(pair)
  _write(pair / "train.tsv", ["a\tb\tlabel"] + [
      f"{_sentence(rnd)}\t{_sentence(rnd)}\t{rnd.choice('01')}" for _ in range(16)])
  return {"dir": d, "vocab": str(vocab), "size": size, "single": str(single), "pair": str(pair),
          "mlm": _checkpoint(str(d / "mlm"), size),
          "wrong_mlm": _checkpoint(str(d / "wrong_mlm"), size + 3)}


def _config(env, out, pair=False, seed=0, **kw):
  columns = ({"text_a_column": "a", "text_b_column": "b"} if pair
             else {"text_a_column": "sentence"})
  settings = augmented_data.AugmentSettings(label_column="label", num_variants=NUM_VARIANTS,
                                            seed=seed, rows_per_shard=8, **columns)
  return augment_run.AugmentConfig(
      input_dir=env["pair" if pair else "single"], output_dir=str(out), vocab_file=env["vocab"],
      mlm_checkpoint=kw.pop("mlm", env["mlm"]), settings=settings, batch_size=32, **kw)


@pytest.fixture(scope="module")
def single(env):
  out = env["dir"] / "single_out"
  augment_run.augment(_config(env, out))
  return str(out)


@pytest.fixture(scope="module")
def pair(env):
  out = env["dir"] / "pair_out"
  augment_run.augment(_config(env, out, pair=True))
  return str(out)


def _rows(path):
  with open(path, encoding="utf-8") as f:
    return [line.rstrip("\n").split("\t") for line in f]


def _originals_and_variants(path):
  """[(original fields, [variant fields])] in file order (header dropped)."""
  groups = []
  for fields in _rows(path)[1:]:
    if fields[-1]:
      groups[-1][1].append(fields)
    else:
      groups.append((fields, []))
  return groups


def test_output_files_stats_and_copies(env, single):
  assert sorted(os.listdir(single)) == [".lock", "COMPLETED", "dev.tsv", "manifest.json",
                                        "stats.json", "train.tsv"]
  with open(os.path.join(single, "dev.tsv"), "rb") as f, open(
      os.path.join(env["single"], "dev.tsv"), "rb") as g:
    assert f.read() == g.read()
  stats = stage.read_json(os.path.join(single, "stats.json"))["train"]
  groups = _originals_and_variants(os.path.join(single, "train.tsv"))
  variants = sum(len(v) for _, v in groups)
  assert stats["inputs"] == len(groups) == 38
  assert (stats["skipped_empty"], stats["skipped_one_word"]) == (1, 1)
  assert stats["variants"] == variants > 0
  assert stats["variants"] + stats["duplicates_dropped"] == NUM_VARIANTS * (38 - 2)
  assert stats["variants_per_input"] == round(variants / 38, 4)
  assert 0 < stats["replaced_word_share"] < 1
  assert stats["mlm_words"] > 0 and stats["embedding_words"] > 0
  # Originals come through untouched, the empty and one-word ones included.
  with open(os.path.join(env["single"], "train.tsv"), encoding="utf-8") as f:
    assert [o[:2] for o, _ in groups] == [line.rstrip("\n").split("\t") for line in f][1:]


def _assert_replaced_words_only(tok, original, variant):
  words, new = tok.basic_tokenize(original), tok.basic_tokenize(variant)
  assert len(new) == len(words), (original, variant)
  changed = [i for i, (a, b) in enumerate(zip(words, new)) if a != b]
  assert changed, (original, variant)
  assert all(any(c.isalnum() for c in words[i]) for i in changed)  # punctuation kept


def test_variants_replace_whole_words_only(env, single):
  tok = BertTokenizer(env["vocab"])
  for line, (original, variants) in enumerate(
      _originals_and_variants(os.path.join(single, "train.tsv")), start=2):
    assert len(variants) <= NUM_VARIANTS
    assert len({v[0] for v in variants}) == len(variants)  # duplicates dropped
    for v in variants:
      assert v[1:] == ["", str(line)]  # no label; the original's line
      _assert_replaced_words_only(tok, original[0], v[0])


def test_pair_variants_change_one_side(env, pair):
  tok = BertTokenizer(env["vocab"])
  sides = set()
  for original, variants in _originals_and_variants(os.path.join(pair, "train.tsv")):
    for v in variants:
      changed = [i for i in (0, 1) if v[i] != original[i]]
      assert len(changed) == 1
      kept = 1 - changed[0]
      assert v[kept] == original[kept]  # the other side, byte for byte
      _assert_replaced_words_only(tok, original[changed[0]], v[changed[0]])
      sides.add(changed[0])
  assert sides == {0, 1}


def test_same_seed_same_bytes_other_seed_differs(env, single, tmp_path):
  augment_run.augment(_config(env, tmp_path / "again"))
  assert tree_bytes(str(tmp_path / "again")) == tree_bytes(single)
  augment_run.augment(_config(env, tmp_path / "seed1", seed=1))
  assert tree_bytes(str(tmp_path / "seed1"))["train.tsv"] != tree_bytes(single)["train.tsv"]


def _records(env, augmented, out, pair):
  columns = ({"text_a_column": "a", "text_b_column": "b"} if pair
             else {"text_a_column": "sentence"})
  classification_stage.run(classification_stage.ClassificationRecordsConfig(
      input_dir=augmented, output_dir=str(out), vocab_file=env["vocab"], label_column="label",
      labels=("0", "1"), max_seq_length=24, log_examples=0, **columns))
  return [{k: list(v.int64_list.value) for k, v in tf.train.Example.FromString(r)
           .features.feature.items()}
          for r in tfrecord.iter_records(os.path.join(out, "train", "part-00000.tfrecord"))]


def test_records_layout_and_unlabeled_variants(env, pair, tmp_path):
  groups = _originals_and_variants(os.path.join(pair, "train.tsv"))
  records = _records(env, pair, tmp_path / "records", pair=True)
  expected = []
  for original, variants in groups:  # variants: label id 2 = num_labels, the unlabeled id
    expected += [int(original[2])] + [2] * len(variants)
  assert [r["label_ids"][0] for r in records] == expected
  for r in records:
    n = sum(r["input_mask"])
    ids, segments = r["input_ids"][:n], r["segment_ids"][:n]
    assert ids[0] == 3 and ids[-1] == 4 and ids.count(4) == 2  # [CLS] a [SEP] b [SEP]
    first_sep = ids.index(4)
    assert segments == [0] * (first_sep + 1) + [1] * (n - first_sep - 1)
  manifest = stage.read_json(os.path.join(tmp_path / "records", "manifest.json"))
  assert manifest["config"]["variant_splits"] == ["train"]
  assert "train" not in manifest["config"]["unlabeled_splits"]


def test_records_refuse_other_columns(env, single, tmp_path):
  with pytest.raises(ConfigError, match="augmented with other columns"):
    classification_stage.run(classification_stage.ClassificationRecordsConfig(
        input_dir=single, output_dir=str(tmp_path / "r"), vocab_file=env["vocab"],
        text_a_column="label", label_column="sentence", labels=("0", "1")))


def test_bad_inputs_are_one_line_errors_and_write_nothing(env, tmp_path):
  out = tmp_path / "out"
  proc = run_tool("augment_task_data", f"--input_dir={env['single']}", f"--output_dir={out}",
                  f"--vocab_file={env['vocab']}", f"--mlm_checkpoint={env['wrong_mlm']}",
                  "--text_a_column=sentence", "--label_column=label", check=False)
  _assert_one_line_error(proc, env["wrong_mlm"], f"vocab_size {env['size'] + 3}",
                         f"{env['size']} entries")
  assert not os.path.exists(out)
  empty = tmp_path / "empty"
  os.makedirs(empty)
  _write(empty / "train.tsv", ["sentence\tlabel"])
  with pytest.raises(InputError, match="no data rows") as e:
    augment_run.augment(dataclasses.replace(_config(env, out), input_dir=str(empty)))
  assert str(empty / "train.tsv") in str(e.value) and "\n" not in str(e.value)
  os.remove(empty / "train.tsv")
  _write(empty / "dev.tsv", ["sentence\tlabel", "a fine film\t1"])
  with pytest.raises(InputError, match="no train.tsv to augment"):
    augment_run.augment(dataclasses.replace(_config(env, out), input_dir=str(empty)))
  assert not os.path.exists(out)


def test_rerun_noop_other_config_refused_killed_run_resumes(env, single, tmp_path, capsys,
                                                            monkeypatch):
  before = tree_bytes(single, skip=())
  augment_run.augment(_config(env, single))
  assert "up to date" in capsys.readouterr().out and tree_bytes(single, skip=()) == before
  with pytest.raises(InputError, match="differs in: seed"):
    augment_run.augment(_config(env, single, seed=3))
  real, calls = augmented_data.augment_rows, []

  def dies_on_third_shard(*args):
    calls.append(1)
    if len(calls) == 3:
      raise KeyboardInterrupt  # as a kill: two shards published, nothing else
    return real(*args)

  monkeypatch.setattr(augmented_data, "augment_rows", dies_on_third_shard)
  out = tmp_path / "killed"
  with pytest.raises(KeyboardInterrupt):
    augment_run.augment(_config(env, out))
  assert sorted(os.listdir(out / "train.shards")) == ["part-00000.tsv", "part-00001.tsv"]
  assert not os.path.exists(out / "COMPLETED")
  monkeypatch.setattr(augmented_data, "augment_rows", real)
  augment_run.augment(_config(env, out))
  assert tree_bytes(str(out)) == tree_bytes(single)


def test_headerless_csv_marks_variants_in_a_last_column(env, tmp_path):
  src = tmp_path / "csv"
  os.makedirs(src)
  _write(src / "train.csv", ['"A good, funny movie",1', '"Dull plot, bad actor",0', "Great,1"])
  settings = augmented_data.AugmentSettings(text_a_column="0", label_column="1", format="csv",
                                            has_header=False, num_variants=4)
  out = tmp_path / "out"
  augment_run.augment(augment_run.AugmentConfig(
      input_dir=str(src), output_dir=str(out), vocab_file=env["vocab"],
      mlm_checkpoint=env["mlm"], settings=settings))
  manifest = stage.read_json(str(out / "manifest.json"))
  assert manifest["config"]["variant_column"] == "2"
  with open(out / "train.csv", encoding="utf-8") as f:
    lines = f.read().splitlines()
  assert lines[0] == '"A good, funny movie",1,' and lines[-1] == "Great,1,"
  classification_stage.run(classification_stage.ClassificationRecordsConfig(
      input_dir=str(out), output_dir=str(tmp_path / "records"), vocab_file=env["vocab"],
      format="csv", has_header=False, text_a_column="0", label_column="1",
      labels=("0", "1"), max_seq_length=16, log_examples=0))
  stats = stage.read_json(str(tmp_path / "records" / "stats.json"))["train"]
  assert stats["examples"] == len(lines) and stats["unlabeled_variants"] == len(lines) - 3
