# coding=utf-8
"""Tests for WordPiece vocab learning and its Google BERT layout."""

import logging
import os
import random

import numpy as np
import pytest

from pipeline.text import tokenization
from pipeline.text import vocab
from pipeline.core.errors import InputError
from pipeline.text.tokenization import BertTokenizer

SPECIALS = ["[UNK]", "[CLS]", "[SEP]", "[MASK]"]
_SYLLABLES = ["ka", "to", "ri", "men", "sa", "lo", "vi", "dre", "qua", "ne",
              "ß", "é", "ø", "Ka", "Ö", "ing", "tion", "er"]


def _sentence(rng, words):
  body = " ".join(rng.choice(words) for _ in range(rng.randint(3, 12)))
  return body + rng.choice([".", "!", "?", ","])


def _make_corpus(directory):
  """Two files of generated documents, one sentence per line."""
  rng = random.Random(7)
  words = ["".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(1, 4)))
           for _ in range(600)]
  words += ["Café", "naïve", "中文字符", "ΟΔΟΣ", "Москва", "e-mail", "$5.00"]
  paths = []
  for name in ("a.txt", "b.txt"):
    docs = []
    for _ in range(40):
      sentences = [_sentence(rng, words) for _ in range(8)]
      docs.append("\n".join(sentences))
    path = directory / name
    path.write_text("\n\n".join(docs) + "\n", encoding="utf-8")
    paths.append(str(path))
  return paths


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
  return _make_corpus(tmp_path_factory.mktemp("corpus"))


@pytest.fixture(scope="module")
def google_vocab(corpus):
  return vocab.learn_wordpiece_vocab(corpus, 1200, lower_case=True,
                                     num_unused=994)


@pytest.fixture(scope="module")
def small_vocab(corpus):
  return vocab.learn_wordpiece_vocab(corpus, 300, lower_case=True)


def _unused(start, stop):
  return ["[unused%d]" % i for i in range(start, stop)]


def _lines(paths):
  return [line for p in paths
          for line in open(p, encoding="utf-8").read().split("\n")]


def test_google_layout_with_994_unused(google_vocab):
  assert len(google_vocab) == 1200
  assert google_vocab[0] == "[PAD]"
  assert google_vocab[1:100] == _unused(0, 99)
  assert google_vocab[100:104] == SPECIALS
  assert google_vocab[104:999] == _unused(99, 994)
  learned = google_vocab[999:]
  assert not any(t.startswith("[unused") for t in learned)
  assert "a" in learned and "##a" in learned
  assert any(len(t) > 1 and not t.startswith("##") for t in learned)


def test_special_layout_matches_google_uncased_vocab():
  layout = vocab.special_layout(994)
  assert len(layout) == 999
  assert layout.index("[UNK]") == 100 and layout.index("[MASK]") == 103
  assert layout[104] == "[unused99]" and layout[998] == "[unused993]"


def test_default_small_layout(small_vocab):
  assert vocab.default_num_unused(300) == 9
  assert len(small_vocab) == 300
  assert small_vocab[:14] == ["[PAD]"] + _unused(0, 9) + SPECIALS
  assert not any(t.startswith("[unused") for t in small_vocab[14:])


def test_few_unused_all_go_before_unk():
  assert vocab.special_layout(0) == ["[PAD]"] + SPECIALS
  assert vocab.special_layout(2) == ["[PAD]"] + _unused(0, 2) + SPECIALS
  assert vocab.special_layout(101)[100:106] == SPECIALS + _unused(99, 101)


def test_learned_part_is_ordered_like_google(small_vocab):
  """Single characters first (by code point), "##" characters last."""
  learned = small_vocab[14:]
  singles = [t for t in learned if len(t) == 1]
  hashed = [t for t in learned if len(t) == 3 and t.startswith("##")]
  assert learned[:len(singles)] == sorted(singles)
  assert learned[len(learned) - len(hashed):] == ["##" + c for c in singles]


def test_deterministic(corpus, small_vocab, google_vocab):
  """Same inputs, same vocab.

  The raw WordPieceTrainer seeds its hash maps per instance, so repeated runs
  in one process already differ; with this corpus three runs at 300 and 600
  tokens exposed that every time.
  """
  for _ in range(2):
    assert vocab.learn_wordpiece_vocab(corpus, 300, True) == small_vocab
  runs = [vocab.learn_wordpiece_vocab(corpus, 600, True) for _ in range(3)]
  assert runs[0] == runs[1] == runs[2]
  assert vocab.learn_wordpiece_vocab(corpus, 1200, True, 994) == google_vocab


def _corpus_words(paths):
  """All words of the corpus as the uncased tokenizer sees them."""
  words = []
  for line in _lines(paths):
    words += tokenization.prepare_text(line, True).split()
  return words


def test_every_character_and_its_continuation_is_in_vocab(corpus, small_vocab):
  tokens = set(small_vocab)
  chars = set("".join(_corpus_words(corpus)))
  assert len(chars) > 20
  assert all(c in tokens and "##" + c in tokens for c in chars)


def test_round_trip_through_tokenizer_has_few_unks(tmp_path, corpus,
                                                   small_vocab):
  path = tmp_path / "vocab.txt"
  vocab.write_vocab(small_vocab, str(path))
  assert tokenization.load_vocab(str(path)) == small_vocab
  tokenizer = BertTokenizer(str(path), do_lower_case=True)
  ids = np.concatenate(tokenizer.encode_batch(_lines(corpus)))
  assert ids.size > 1000
  assert (ids == tokenizer.unk_id).mean() < 0.001


def test_cased_vocab_keeps_case_and_accents(corpus):
  tokens = vocab.learn_wordpiece_vocab(corpus, 300, lower_case=False)
  assert len(tokens) == 300
  assert {"K", "Ö", "é", "Ο"} <= set(tokens)


def test_pads_with_unused_when_text_is_too_small(tmp_path, caplog):
  path = tmp_path / "tiny.txt"
  path.write_text("abc abd\n\nabc\n", encoding="utf-8")
  with caplog.at_level(logging.WARNING):
    tokens = vocab.learn_wordpiece_vocab([str(path)], 500, lower_case=True)
  assert len(tokens) == 500 and len(set(tokens)) == 500
  num_unused = vocab.default_num_unused(500)
  learned = [t for t in tokens if not t.startswith("[")]
  assert {"a", "##b", "##c", "##d"} <= set(learned)
  padding = tokens[len(vocab.special_layout(num_unused)) + len(learned):]
  assert padding and padding == _unused(num_unused,
                                        num_unused + len(padding))
  assert "padded the vocab" in caplog.text


def test_vocab_size_too_small(corpus):
  with pytest.raises(ValueError):
    vocab.learn_wordpiece_vocab(corpus, 100, lower_case=True, num_unused=994)


def test_missing_training_file(tmp_path, corpus):
  missing = str(tmp_path / "missing.txt")
  with pytest.raises(InputError) as info:
    vocab.learn_wordpiece_vocab(corpus + [missing], 300, lower_case=True)
  assert missing in str(info.value)


def test_blank_training_text(tmp_path):
  path = tmp_path / "blank.txt"
  path.write_text("\n \t\n\n", encoding="utf-8")
  with pytest.raises(InputError) as info:
    vocab.learn_wordpiece_vocab([str(path)], 300, lower_case=True)
  assert str(path) in str(info.value)


def test_non_utf8_training_file(tmp_path):
  path = tmp_path / "latin1.txt"
  path.write_bytes("ok line\ncafé\n".encode("latin-1"))
  with pytest.raises(InputError) as info:
    vocab.learn_wordpiece_vocab([str(path)], 300, lower_case=True)
  assert str(path) in str(info.value) and "line 2" in str(info.value)


def test_write_vocab_is_atomic_and_leaves_no_temp_files(tmp_path):
  path = tmp_path / "vocab.txt"
  path.write_text("old\n", encoding="utf-8")
  vocab.write_vocab(["[PAD]", "a b", "##c"], str(path))
  assert path.read_bytes() == "[PAD]\na b\n##c\n".encode("utf-8")
  with pytest.raises(ValueError):
    vocab.write_vocab(["bad\ntoken"], str(path))
  assert path.read_bytes() == "[PAD]\na b\n##c\n".encode("utf-8")
  assert os.listdir(tmp_path) == ["vocab.txt"]
