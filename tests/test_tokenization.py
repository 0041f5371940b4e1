# coding=utf-8
"""Pins BertTokenizer to the google-research/bert reference algorithm.

The oracle below is an independent plain-Python rendering of the reference
BasicTokenizer + WordpieceTokenizer, written from its specification; the fast
tokenizer must agree with it token for token and id for id. Set
TOKENIZATION_FULL_SWEEP=1 to compare every Unicode code point in several
contexts (about two minutes) instead of the default sample.
"""

import os
import random
import subprocess
import sys
import unicodedata

import numpy as np
import pytest

from pipeline.text import tokenization
from pipeline.core.errors import InputError
from pipeline.text.tokenization import BertTokenizer
from pipeline.text.tokenization import load_vocab

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]

# ----------------------------------------------------------------------------
# Oracle: the reference algorithm, spelled out character by character.
# ----------------------------------------------------------------------------

_ORACLE_CJK = ((0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF),
               (0x2A700, 0x2B73F), (0x2B740, 0x2B81F), (0x2B820, 0x2CEAF),
               (0xF900, 0xFAFF), (0x2F800, 0x2FA1F))


def _oracle_removed(char):
  if char in "\t\n\r":
    return False
  return ord(char) in (0, 0xFFFD) or unicodedata.category(char) in ("Cc", "Cf")


def _oracle_space(char):
  return char in " \t\n\r" or unicodedata.category(char) == "Zs"


def _oracle_punct(char):
  if char.isascii() and char.isprintable() and not char.isalnum():
    return char != " "
  return unicodedata.category(char)[0] == "P"


def _oracle_cjk(char):
  return any(lo <= ord(char) <= hi for lo, hi in _ORACLE_CJK)


def _oracle_clean(text):
  kept = []
  for char in text:
    if _oracle_removed(char):
      continue
    if _oracle_space(char):
      kept.append(" ")
    elif _oracle_cjk(char):
      kept.append(" " + char + " ")
    else:
      kept.append(char)
  return "".join(kept)


def _oracle_split_punct(word):
  pieces, current = [], ""
  for char in word:
    if _oracle_punct(char):
      if current:
        pieces.append(current)
      pieces.append(char)
      current = ""
    else:
      current += char
  return pieces + ([current] if current else [])


def oracle_basic(text, lower):
  """Reference BasicTokenizer: clean, CJK, per-word lower/strip, punctuation."""
  words = []
  for word in _oracle_clean(text).split():
    if lower:
      word = unicodedata.normalize("NFD", word.lower())
      word = "".join(c for c in word if unicodedata.category(c) != "Mn")
    words.extend(_oracle_split_punct(word))
  return " ".join(words).split()


def oracle_wordpiece(word, vocab, max_chars=200):
  """Reference WordpieceTokenizer on one word: greedy longest match first."""
  if len(word) > max_chars:
    return ["[UNK]"]
  pieces, start = [], 0
  while start < len(word):
    for end in range(len(word), start, -1):
      candidate = ("##" if start else "") + word[start:end]
      if candidate in vocab:
        pieces.append(candidate)
        start = end
        break
    else:
      return ["[UNK]"]
  return pieces


def oracle_tokenize(text, vocab, lower):
  return [p for w in oracle_basic(text, lower)
          for p in oracle_wordpiece(w, vocab)]


# ----------------------------------------------------------------------------
# Vocabularies.
# ----------------------------------------------------------------------------

# Ids are list positions; PINNED expectations below depend on this order.
PINNED_VOCAB = SPECIALS + [
    "un", "##aff", "##able", "hello", "world", ",", "!",  # 5..11
    "cafe", "café", "[", "]", "mask", "$", "5", ".", "00",  # 12..20
    "中", "文", "e", "-", "mail", "οδος", "οδοσ", "ab",  # 21..28
    "x", "y", "\U0002B820", "a", "##a", "Café", "naive", "angstrom",  # 29..36
]

TRICKY_TEXTS = [
    "Café Ångström naïve NAÏVE résumé ÉCOLE",
    "中文字符 日本語のテキスト 한국어",
    "emoji 😀🥰 👍🏽 family 👨‍👩‍👧",
    "nul\x00bell\x07 zero\u200bwidth \ufeffbom rep\ufffdlacement",
    "Москва ПРИВЕТ мир, مرحبا بالعالم",
    "wait...!!! $5.00 e-mail “quotes” ‘single’ (paren) [bracket]",
    "a literal [MASK] and [CLS] and [unused1] in text",
    "x" * 101 + " " + "y" * 201 + " " + "ab" * 100,
    "tabs\tand\nnewlines\r\nand\u2028line\u2029sep\u00a0nbsp\u3000ideo",
    "ΟΔΟΣ ΑΣ. Σ ΣΑ ΑΣΑ ὈΔΥΣΣΕΎΣ",
    "private\ue000use \U000F0000 ext-e\U0002B820char İstanbul straße ﬁne",
    "  \t  ",
    "",
]

_KNOWN_CHARS = ("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
                ".,!?$-()[]“”‘’…éèêëïåÅÉÏçß中文字符日本語のテキストмирМПРИВЕТ"
                "οδςσαΑΟΔΣ\U0002B820\ue000")
_KNOWN_WORDS = ["cafe", "café", "Café", "angstrom", "ångström", "naive",
                "naïve", "resume", "ecole", "emoji", "family", "wait", "mail",
                "quotes", "literal", "mask", "and", "text", "tabs", "newlines",
                "line", "##s", "##ing", "##ed", "un", "##able", "ab", "##ab",
                "мир", "москва", "οδος", "ας", "private", "use", "ext", "char",
                "in"]


def _parity_vocab():
  tokens = list(SPECIALS) + _KNOWN_WORDS
  for char in _KNOWN_CHARS:
    tokens += [char, "##" + char]
  return list(dict.fromkeys(tokens))  # Dedupe, keeping the first position.


def _write(path, tokens):
  path.write_text("".join(t + "\n" for t in tokens), encoding="utf-8")
  return path


@pytest.fixture(scope="module")
def vocab_path(tmp_path_factory):
  return _write(tmp_path_factory.mktemp("vocab") / "vocab.txt", _parity_vocab())


@pytest.fixture(scope="module")
def pinned_path(tmp_path_factory):
  return _write(tmp_path_factory.mktemp("pinned") / "vocab.txt", PINNED_VOCAB)


def _with_placeholder(words):
  """The tokenizer maps lone surrogates to U+FFFF (never in the vocab)."""
  return ["".join("\uffff" if 0xD800 <= ord(c) <= 0xDFFF else c for c in w)
          for w in words]


# ----------------------------------------------------------------------------
# Parity with the oracle.
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("lower", [True, False])
@pytest.mark.parametrize("text", TRICKY_TEXTS)
def test_tricky_text_matches_oracle(vocab_path, lower, text):
  tokenizer = BertTokenizer(str(vocab_path), do_lower_case=lower)
  vocab = {t: i for i, t in enumerate(tokenizer.vocab)}
  expected = oracle_tokenize(text, vocab, lower)
  assert tokenizer.basic_tokenize(text) == oracle_basic(text, lower)
  assert tokenizer.tokenize(text) == expected
  assert tokenizer.encode(text).tolist() == [vocab[t] for t in expected]


@pytest.mark.parametrize("lower", [True, False])
def test_batch_matches_oracle_on_random_strings(vocab_path, lower):
  """Random mixes of the characters where stock `tokenizers` goes wrong."""
  tokenizer = BertTokenizer(str(vocab_path), do_lower_case=lower)
  vocab = {t: i for i, t in enumerate(tokenizer.vocab)}
  pool = list("aAbBzZ09 \t\n.,!$-'\"ΣΑσ中Å") + [
      "\u03a3", "\u03a3", "\x00", "\x07", "\x0b", "\x85", "\u200b", "\u200d",
      "\ufeff", "\ufffd", "\u0301", "\u0323", "\u0345", "\u02b0", "\u00ad",
      "İ", "ß", "ẞ", "\uf900", "\u2028", "\u3000", "\xa0", "\ue000",
      "\U0002B820", "\U0002B91F", "é", "ﬁ", "ǅ", "\u1fef", "\u037e", "ʼ", "·",
      "\u2e55", "\u0890", "\u1c89", "\U00011938", "😀", "\ud83d"]
  rng = random.Random(1234)
  texts = ["".join(rng.choice(pool) for _ in range(rng.randint(0, 16)))
           for _ in range(3000)]
  got = tokenizer.encode_batch(texts)
  for text, ids in zip(texts, got):
    assert ids.dtype == np.int32
    expected = [vocab.get(t) for t in oracle_tokenize(text, vocab, lower)]
    assert ids.tolist() == expected, repr(text)
    assert tokenizer.basic_tokenize(text) == _with_placeholder(
        oracle_basic(text, lower)), repr(text)


def _sweep_code_points():
  if os.environ.get("TOKENIZATION_FULL_SWEEP") == "1":
    return range(sys.maxunicode + 1), ("a%sb", "%s", "%s\u0301", "中%s",
                                       "Α%sΣ")
  # Every BMP code point, a sample of the rest, and the CJK range edges.
  edges = [cp + delta for lo, hi in _ORACLE_CJK for cp in (lo, hi)
           for delta in (-1, 0, 1)]
  sample = list(range(0x10000)) + list(range(0x10000, sys.maxunicode + 1, 61))
  return sorted(set(sample + edges)), ("a%sb",)


@pytest.mark.parametrize("lower", [True, False])
def test_code_point_sweep_matches_oracle(pinned_path, lower):
  """Catches Unicode table drift between Rust and Python's unicodedata."""
  tokenizer = BertTokenizer(str(pinned_path), do_lower_case=lower)
  code_points, templates = _sweep_code_points()
  mismatches = []
  for cp in code_points:
    for template in templates:
      text = template % chr(cp)
      expected = _with_placeholder(oracle_basic(text, lower))
      if tokenizer.basic_tokenize(text) != expected:
        mismatches.append(hex(cp))
        break
  assert not mismatches, mismatches[:20]


# ----------------------------------------------------------------------------
# Hand-pinned expectations (ids must never drift).
# ----------------------------------------------------------------------------

PINNED = [
    # (text, lower, tokens, ids)
    ("Unaffable, Hello World!", True,
     ["un", "##aff", "##able", ",", "hello", "world", "!"],
     [5, 6, 7, 10, 8, 9, 11]),
    ("Café", True, ["cafe"], [12]),
    ("café", False, ["café"], [13]),
    ("Café", False, ["Café"], [34]),
    ("CAFÉ", False, ["[UNK]"], [1]),
    ("NAÏVE Ångström", True, ["naive", "angstrom"], [35, 36]),
    ("[MASK]", True, ["[", "mask", "]"], [14, 16, 15]),
    ("[MASK]", False, ["[", "[UNK]", "]"], [14, 1, 15]),
    ("$5.00", True, ["$", "5", ".", "00"], [17, 18, 19, 20]),
    ("中文", True, ["中", "文"], [21, 22]),
    ("e-mail", True, ["e", "-", "mail"], [23, 24, 25]),
    # Python's final sigma; stock tokenizers would give "οδοσ" (27).
    ("ΟΔΟΣ", True, ["οδος"], [26]),
    # Private use is kept by the reference; stock tokenizers drops it -> "ab".
    ("a\ue000b", True, ["[UNK]"], [1]),
    # U+2B820 is CJK to the reference; stock tokenizers' table starts later.
    ("x\U0002B820y", False, ["x", "\U0002B820", "y"], [29, 31, 30]),
    ("hel\x00lo\u200b wor\x07ld\ufffd \ufeff", True, ["hello", "world"],
     [8, 9]),
    ("hello\tworld\nhello\r\n", True, ["hello", "world", "hello"], [8, 9, 8]),
    ("a" * 200, True, ["a"] + ["##a"] * 199, [32] + [33] * 199),
    ("a" * 201, True, ["[UNK]"], [1]),
    ("x😀", True, ["[UNK]"], [1]),
    ("", True, [], []),
]


@pytest.mark.parametrize("text,lower,tokens,ids", PINNED)
def test_pinned_tokens_and_ids(pinned_path, text, lower, tokens, ids):
  tokenizer = BertTokenizer(str(pinned_path), do_lower_case=lower)
  assert tokenizer.tokenize(text) == tokens
  assert tokenizer.encode(text).tolist() == ids
  assert oracle_tokenize(text, set(PINNED_VOCAB), lower) == tokens


def test_max_chars_per_word_is_reference_value():
  """The reference FullTokenizer uses WordpieceTokenizer's default of 200."""
  assert tokenization.MAX_INPUT_CHARS_PER_WORD == 200


# ----------------------------------------------------------------------------
# API surface.
# ----------------------------------------------------------------------------


def test_properties_and_special_ids(pinned_path):
  tokenizer = BertTokenizer(str(pinned_path))
  assert tokenizer.vocab == PINNED_VOCAB
  assert tokenizer.vocab_size == len(PINNED_VOCAB)
  assert (tokenizer.pad_id, tokenizer.unk_id, tokenizer.cls_id,
          tokenizer.sep_id, tokenizer.mask_id) == (0, 1, 2, 3, 4)
  flags = tokenizer.is_continuation
  assert flags.dtype == bool and flags.shape == (len(PINNED_VOCAB),)
  assert np.flatnonzero(flags).tolist() == [6, 7, 33]
  ids = tokenizer.encode("unaffable hello aaa")
  assert np.flatnonzero(~flags[ids]).tolist() == [0, 3, 4]  # Word starts.


def test_encode_batch_equals_encode(vocab_path):
  tokenizer = BertTokenizer(str(vocab_path))
  out = tokenizer.encode_batch(TRICKY_TEXTS)
  assert len(out) == len(TRICKY_TEXTS)
  for text, ids in zip(TRICKY_TEXTS, out):
    assert ids.dtype == np.int32
    np.testing.assert_array_equal(ids, tokenizer.encode(text))
  assert tokenizer.encode_batch([]) == []


def test_convert_ids_to_tokens(pinned_path):
  tokenizer = BertTokenizer(str(pinned_path))
  ids = tokenizer.encode("Unaffable!")
  assert tokenizer.convert_ids_to_tokens(ids) == ["un", "##aff", "##able", "!"]
  assert tokenizer.convert_ids_to_tokens([0, 4]) == ["[PAD]", "[MASK]"]
  with pytest.raises(ValueError):
    tokenizer.convert_ids_to_tokens([len(PINNED_VOCAB)])
  with pytest.raises(ValueError):
    tokenizer.convert_ids_to_tokens([-1])


def test_fingerprint(tmp_path, pinned_path):
  uncased = BertTokenizer(str(pinned_path)).fingerprint()
  assert len(uncased) == 64 and int(uncased, 16) >= 0
  assert BertTokenizer(str(pinned_path)).fingerprint() == uncased
  assert BertTokenizer(str(pinned_path), False).fingerprint() != uncased
  other = _write(tmp_path / "other.txt", PINNED_VOCAB + ["zzz"])
  assert BertTokenizer(str(other)).fingerprint() != uncased


def test_bytes_input_is_decoded_like_reference(pinned_path):
  tokenizer = BertTokenizer(str(pinned_path))
  assert tokenizer.tokenize("Café!".encode("utf-8") + b"\xff") == ["cafe", "!"]


def test_leaves_tokenizers_parallelism_alone(pinned_path):
  """The caller owns TOKENIZERS_PARALLELISM; the module must not set it."""
  env = {k: v for k, v in os.environ.items() if k != "TOKENIZERS_PARALLELISM"}
  code = ("import os; from pipeline.text.tokenization import BertTokenizer as B; "
          "B(%r).encode_batch(['a b'] * 100); "
          "print(os.environ.get('TOKENIZERS_PARALLELISM'))" % str(pinned_path))
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  out = subprocess.run([sys.executable, "-c", code], cwd=root, env=env,
                       capture_output=True, text=True, check=True)
  assert out.stdout.strip() == "None"


# ----------------------------------------------------------------------------
# load_vocab.
# ----------------------------------------------------------------------------


def test_load_vocab_keeps_line_order_and_inner_whitespace(tmp_path):
  path = tmp_path / "v.txt"
  path.write_bytes("\n".join(SPECIALS + ["a b", " c", "é\t"]).encode("utf-8"))
  assert load_vocab(str(path)) == SPECIALS + ["a b", " c", "é\t"]


def _expect_input_error(path, fragment):
  with pytest.raises(InputError) as info:
    load_vocab(str(path))
  assert str(path) in str(info.value)
  assert fragment in info.value.cause
  assert "\n" not in str(info.value)


def test_load_vocab_missing_file(tmp_path):
  _expect_input_error(tmp_path / "nope.txt", "no such file")


def test_load_vocab_empty(tmp_path):
  path = tmp_path / "empty.txt"
  path.write_bytes(b"")
  _expect_input_error(path, "empty")


def test_load_vocab_duplicates(tmp_path):
  path = _write(tmp_path / "dup.txt", SPECIALS + ["a", "b", "a"])
  _expect_input_error(path, "duplicate token 'a' on lines 6 and 8")


def test_load_vocab_missing_unk(tmp_path):
  path = _write(tmp_path / "nounk.txt", [t for t in SPECIALS if t != "[UNK]"])
  _expect_input_error(path, "[UNK]")


def test_load_vocab_crlf_is_explained(tmp_path):
  path = tmp_path / "crlf.txt"
  path.write_bytes("".join(t + "\r\n" for t in SPECIALS).encode("utf-8"))
  _expect_input_error(path, "CRLF")


def test_load_vocab_bad_utf8(tmp_path):
  path = tmp_path / "latin1.txt"
  path.write_bytes("\n".join(SPECIALS + ["café"]).encode("latin-1"))
  _expect_input_error(path, "UTF-8")


def test_tokenizer_raises_input_error_too(tmp_path):
  with pytest.raises(InputError):
    BertTokenizer(str(tmp_path / "missing.txt"))
