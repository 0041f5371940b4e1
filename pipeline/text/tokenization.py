# coding=utf-8
"""WordPiece tokenization identical to google-research/bert's FullTokenizer.

The reference (BasicTokenizer then WordpieceTokenizer) is pure Python and far
too slow for a Wikipedia-sized corpus, so the heavy loops run in the Rust
`tokenizers` library. Its stock BERT components (BertNormalizer,
BertPreTokenizer) are NOT id-identical to the reference, though. Checked code
point by code point (and on random strings) against the reference algorithm run
on this interpreter, they differ in:

  1. clean_text: the stock normalizer drops every "C*" character, including
     the 137,468 private-use (Co) code points; the reference drops only
     U+0000, U+FFFD and categories Cc/Cf (except \t \n \r).
  2. CJK ranges: the stock range 0x2B920-0x2CEAF should start at 0x2B820, so
     U+2B820..U+2B91F are not split one per token.
  3. Lower-casing is per character in Rust, so a final capital sigma becomes
     "σ" instead of Python's context-sensitive "ς" ("ΟΔΟΣ" -> "οδοσ", reference
     "οδος"; the uncased BERT vocab has both).
  4. Unicode versions: Rust's punctuation, Cf, Mn, NFD and lower-case tables are
     from other Unicode versions than Python's unicodedata (e.g. U+2E55..U+2E5D
     are not split as punctuation, U+0890 is not removed, U+1C89 is
     lower-cased although Python leaves it alone).

The pipeline here is therefore built from exact pieces:

  * Python, per text (C-speed string methods, no per-token loop): remove
    U+0000, U+FFFD and Cc/Cf; then, when uncased, str.lower() and NFD. These are
    the very primitives the reference uses, so the Unicode tables agree.
    Lower-casing the whole text instead of each whitespace token is the same:
    separators (whitespace, CJK ideographs) are neither cased nor
    case-ignorable, so the final-sigma context never crosses them.
  * Python, one str.translate per text (prepare_text): delete nonspacing marks
    (Mn, uncased only), fold whitespace (str.isspace) to " ", and surround each
    punctuation character (ASCII non-alphanumeric printable, or Unicode P*)
    and each CJK ideograph (the reference's ranges) with spaces; the table is
    generated from unicodedata. A Rust regex split with these Unicode-sized
    classes took twice as long.
  * Rust: split on whitespace, then models.WordPiece: greedy longest-match-first
    with "##" continuation.

Lone surrogates (possible in a Python str, impossible in Rust) are replaced by
a Unicode noncharacter that no vocab token contains; both make the word [UNK].

No special tokens are registered with the Rust tokenizer, so a literal "[MASK]"
in text is split into "[", "mask", "]" exactly like the reference does.

"Identical" means identical to the reference run on the same interpreter: both
use this Python's unicodedata (Unicode 14.0.0 on Python 3.11).

The Rust batch API parallelizes according to the TOKENIZERS_PARALLELISM
environment variable; it is left entirely to the caller.
"""

import collections
import functools
import hashlib
import re
import sys
import unicodedata

import numpy as np
from tokenizers import Tokenizer
from tokenizers import models
from tokenizers import pre_tokenizers

from pipeline.core.errors import InputError

PAD_TOKEN = "[PAD]"
UNK_TOKEN = "[UNK]"
CLS_TOKEN = "[CLS]"
SEP_TOKEN = "[SEP]"
MASK_TOKEN = "[MASK]"
SPECIAL_TOKENS = (PAD_TOKEN, UNK_TOKEN, CLS_TOKEN, SEP_TOKEN, MASK_TOKEN)
CONTINUATION_PREFIX = "##"

# The reference FullTokenizer builds WordpieceTokenizer(vocab) with its default
# max_input_chars_per_word=200 (HuggingFace's BertTokenizer uses 100). Identical
# ids need the reference's value: a word of 101..200 characters is still split
# into word pieces, and only a longer one becomes [UNK].
MAX_INPUT_CHARS_PER_WORD = 200

# The reference's "CJK character" blocks (BasicTokenizer._is_chinese_char).
CJK_RANGES = (
    (0x4E00, 0x9FFF),
    (0x3400, 0x4DBF),
    (0x20000, 0x2A6DF),
    (0x2A700, 0x2B73F),
    (0x2B740, 0x2B81F),
    (0x2B820, 0x2CEAF),
    (0xF900, 0xFAFF),
    (0x2F800, 0x2FA1F),
)

UnicodeTables = collections.namedtuple(
    "UnicodeTables",
    ["dropped", "whitespace", "punctuation", "nonspacing_marks"])
UnicodeTables.__doc__ = """Sorted inclusive code point ranges, from unicodedata.

dropped: removed by the reference's _clean_text (U+0000, U+FFFD, Cc, Cf but
  not \\t \\n \\r). whitespace: what str.split() splits on. punctuation: the
  reference's _is_punctuation. nonspacing_marks: category Mn (accents).
"""


def _is_ascii_punctuation(code_point):
  """The reference counts non-alphanumeric printable ASCII as punctuation."""
  return (33 <= code_point <= 47 or 58 <= code_point <= 64 or
          91 <= code_point <= 96 or 123 <= code_point <= 126)


def _to_ranges(code_points):
  """Compresses sorted code points into inclusive (start, end) runs."""
  ranges = []
  for code_point in code_points:
    if ranges and ranges[-1][1] == code_point - 1:
      ranges[-1][1] = code_point
    else:
      ranges.append([code_point, code_point])
  return [tuple(r) for r in ranges]


@functools.lru_cache(maxsize=None)
def unicode_tables():
  """Classifies every code point once per process (~0.3 s), like the reference.

  Deriving the tables from this interpreter's unicodedata (instead of shipping
  constants) keeps them in lockstep with the reference run on the same Python.

  Returns:
    A UnicodeTables of range lists.
  """
  dropped, whitespace, punctuation, marks = [], [], [], []
  for code_point in range(sys.maxunicode + 1):
    char = chr(code_point)
    category = unicodedata.category(char)
    if code_point in (0, 0xFFFD) or (category in ("Cc", "Cf") and
                                     char not in "\t\n\r"):
      dropped.append(code_point)
    if char.isspace():
      whitespace.append(code_point)
    if _is_ascii_punctuation(code_point) or category.startswith("P"):
      punctuation.append(code_point)
    if category == "Mn":
      marks.append(code_point)
  return UnicodeTables(*map(_to_ranges, (dropped, whitespace, punctuation,
                                         marks)))


def _python_class(ranges):
  """A Python `re` character class; \\U escapes keep control chars out of it."""
  parts = []
  for start, end in ranges:
    parts.append("\\U%08x" % start if start == end else
                 "\\U%08x-\\U%08x" % (start, end))
  return "[" + "".join(parts) + "]"


@functools.lru_cache(maxsize=None)
def _dropped_chars_re():
  return re.compile(_python_class(unicode_tables().dropped))


# Lone surrogates can sit in a Python str (e.g. from a broken "\ud83d" JSON
# escape) but cannot be passed to Rust. To the reference they are ordinary
# word characters that no vocab token contains, so the word becomes [UNK]. A
# Unicode noncharacter behaves the same at every step (not dropped, not
# whitespace/punctuation/CJK/Mn, neither cased nor case-ignorable, unchanged by
# lower() and NFD), so it stands in for each surrogate.
_SURROGATES_RE = re.compile("[\ud800-\udfff]")
_NONCHARACTERS = tuple(
    [chr(0xFFFF + plane * 0x10000) for plane in range(17)] +
    [chr(cp) for cp in range(0xFDD0, 0xFDF0)])


def _surrogate_placeholder(vocab):
  """A noncharacter absent from every vocab token, so it can never match."""
  used = set("".join(vocab))
  for char in _NONCHARACTERS:
    if char not in used:
      return char
  raise ValueError("vocab uses every Unicode noncharacter")


def normalize_text(text, do_lower_case, surrogate_placeholder="\uffff"):
  """The part of the reference's normalization that must run in Python.

  Removes U+0000, U+FFFD and Cc/Cf characters and, when uncased, lower-cases
  (with Python's final-sigma rule) and decomposes to NFD. Removal comes first
  because a removed control character would otherwise block the final-sigma
  context. Nonspacing marks are deleted later by the Rust normalizer.

  Args:
    text: str, or UTF-8 bytes (decoded like the reference: invalid bytes are
      ignored).
    do_lower_case: whether the tokenizer is uncased.
    surrogate_placeholder: replaces lone surrogates; must not occur in the
      vocab (see _surrogate_placeholder).

  Returns:
    The normalized str; prepare_text splits it into words for the Rust side.
  """
  if isinstance(text, bytes):
    text = text.decode("utf-8", "ignore")
  text = _dropped_chars_re().sub("", text)
  if text.isascii():  # An O(1) check; ASCII needs no surrogate or NFD step.
    return text.lower() if do_lower_case else text
  text = _SURROGATES_RE.sub(surrogate_placeholder, text)
  if do_lower_case:
    text = unicodedata.normalize("NFD", text.lower())
  return text


@functools.lru_cache(maxsize=None)
def _split_table(do_lower_case):
  """A str.translate table doing the reference's word splitting in one C pass.

  Whitespace (str.isspace) becomes " ", each punctuation character and CJK
  ideograph is surrounded by spaces, and (uncased only) nonspacing marks are
  deleted, which after NFD is the reference's accent stripping. The Rust side
  then splits on " " alone. This is about twice as fast as Rust regex splitting
  with these Unicode-sized character classes, and identical by construction
  (the classes are disjoint and come from the same unicodedata tables).
  """
  tables = unicode_tables()
  table = {}
  for start, end in tables.whitespace:
    table.update(dict.fromkeys(range(start, end + 1), " "))
  for start, end in tables.punctuation + list(CJK_RANGES):
    table.update({cp: " %s " % chr(cp) for cp in range(start, end + 1)})
  if do_lower_case:
    for start, end in tables.nonspacing_marks:
      table.update(dict.fromkeys(range(start, end + 1), None))
  return table


def prepare_text(text, do_lower_case, surrogate_placeholder="\uffff"):
  """normalize_text, then split into space-separated words (see _split_table):
  the input of the Rust tokenizer built by build_rust_tokenizer."""
  return normalize_text(text, do_lower_case, surrogate_placeholder).translate(
      _split_table(bool(do_lower_case)))


def build_rust_tokenizer(vocab):
  """The Rust half of the pipeline; feed it prepare_text() output.

  Args:
    vocab: dict token -> id for models.WordPiece, or None for an empty model
      (vocabulary learning fills it in).

  Returns:
    A tokenizers.Tokenizer splitting on whitespace only, then WordPiece; no
    normalizer, no post-processor, no added tokens.
  """
  model = models.WordPiece(
      vocab or {}, unk_token=UNK_TOKEN,
      continuing_subword_prefix=CONTINUATION_PREFIX,
      max_input_chars_per_word=MAX_INPUT_CHARS_PER_WORD)
  tokenizer = Tokenizer(model)
  tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
  return tokenizer


def _read_file_bytes(path):
  """Reads a whole file, turning OS errors into a one-line InputError."""
  try:
    with open(path, "rb") as f:
      return f.read()
  except FileNotFoundError:
    raise InputError(path, "no such file") from None
  except IsADirectoryError:
    raise InputError(path, "is a directory, expected a vocab file") from None
  except OSError as e:
    raise InputError(path, "cannot read: %s" % (e.strerror or e)) from None


def _parse_vocab(path, raw):
  """Decodes and validates vocab file contents; line order is the id."""
  try:
    text = raw.decode("utf-8")
  except UnicodeDecodeError as e:
    raise InputError(path,
                     "not valid UTF-8 (byte offset %d)" % e.start) from None
  # split("\n"), not splitlines(): U+2028, \x1c.. must not end a token.
  tokens = text.split("\n")
  if text.endswith("\n"):
    tokens.pop()
  if not tokens or tokens == [""]:
    raise InputError(path, "empty vocab")
  _check_unique(path, tokens)
  _check_special_tokens(path, tokens)
  return tokens


def _check_unique(path, tokens):
  first_line = {}
  for line, token in enumerate(tokens, start=1):
    if token in first_line:
      raise InputError(path, "duplicate token %r on lines %d and %d" %
                       (token, first_line[token], line))
    first_line[token] = line


def _check_special_tokens(path, tokens):
  present = set(tokens)
  missing = [t for t in SPECIAL_TOKENS if t not in present]
  if missing:
    hint = " (lines end in \\r: convert CRLF to LF)" if any(
        t.endswith("\r") for t in tokens) else ""
    raise InputError(path, "missing required special tokens %s%s" %
                     (" ".join(missing), hint))


def load_vocab(path):
  """Reads a vocab file: one token per line, line order = id.

  Only the trailing newline is stripped from each line (a token may contain
  other whitespace).

  Args:
    path: the vocab file.

  Returns:
    list of str tokens.

  Raises:
    InputError: missing/unreadable file, not UTF-8, empty, duplicate tokens or
      a missing [PAD] [UNK] [CLS] [SEP] [MASK].
  """
  return _parse_vocab(path, _read_file_bytes(path))


class BertTokenizer(object):
  """Fast tokenizer whose ids equal the reference FullTokenizer's."""

  def __init__(self, vocab_file, do_lower_case=True):
    raw = _read_file_bytes(vocab_file)
    self._vocab = _parse_vocab(vocab_file, raw)
    self._do_lower_case = bool(do_lower_case)
    self._fingerprint = hashlib.sha256(
        raw + b"\0do_lower_case=%d" % self._do_lower_case).hexdigest()
    self._ids = {token: i for i, token in enumerate(self._vocab)}
    self._placeholder = _surrogate_placeholder(self._vocab)
    self._rust = build_rust_tokenizer(self._ids)
    self._is_continuation = np.array(
        [t.startswith(CONTINUATION_PREFIX) for t in self._vocab], dtype=bool)
    self._is_continuation.setflags(write=False)

  @property
  def vocab(self):
    """The token list (id -> token); shared, do not mutate."""
    return self._vocab

  @property
  def vocab_size(self):
    return len(self._vocab)

  @property
  def do_lower_case(self):
    return self._do_lower_case

  @property
  def pad_id(self):
    return self._ids[PAD_TOKEN]

  @property
  def unk_id(self):
    return self._ids[UNK_TOKEN]

  @property
  def cls_id(self):
    return self._ids[CLS_TOKEN]

  @property
  def sep_id(self):
    return self._ids[SEP_TOKEN]

  @property
  def mask_id(self):
    return self._ids[MASK_TOKEN]

  @property
  def is_continuation(self):
    """Read-only bool [vocab_size]: the token starts with "##".

    Whole-word masking gets word starts as ~is_continuation[ids].
    """
    return self._is_continuation

  def fingerprint(self):
    """sha256 hex of the vocab file bytes and the lower-case flag.

    Identifies the exact tokenization, e.g. to refuse mixing shards that were
    written with different vocabularies or casing.
    """
    return self._fingerprint

  def _normalize(self, text):
    return prepare_text(text, self._do_lower_case, self._placeholder)

  def basic_tokenize(self, text):
    """The words before WordPiece: the reference BasicTokenizer's output."""
    return self._normalize(text).split()

  def tokenize(self, text):
    """Word pieces of `text`, e.g. "unaffable" -> ["un", "##aff", "##able"]."""
    normalized = self._normalize(text)
    return self._rust.encode(normalized, add_special_tokens=False).tokens

  def encode(self, text):
    """Ids of `text` as an int32 vector (no [CLS]/[SEP] added)."""
    normalized = self._normalize(text)
    ids = self._rust.encode(normalized, add_special_tokens=False).ids
    return np.array(ids, dtype=np.int32)

  def encode_batch(self, texts):
    """Ids of each text, tokenized by the Rust batch API (the hot path).

    The Python loop is per text, never per token. encode_batch_fast skips
    character offset bookkeeping, which nobody here needs.

    Args:
      texts: list of str.

    Returns:
      list of int32 vectors, one per text.
    """
    normalized = [self._normalize(t) for t in texts]
    encodings = self._rust.encode_batch_fast(normalized,
                                             add_special_tokens=False)
    return [np.array(e.ids, dtype=np.int32) for e in encodings]

  def convert_ids_to_tokens(self, ids):
    """Tokens for a sequence of ids; out-of-range ids raise ValueError."""
    ids = np.asarray(ids, dtype=np.int64).reshape(-1)
    if ids.size and (ids.min() < 0 or ids.max() >= len(self._vocab)):
      raise ValueError("token id out of range [0, %d)" % len(self._vocab))
    return [self._vocab[i] for i in ids.tolist()]

  def convert_tokens_to_ids(self, tokens):
    """Ids for tokens, [UNK]'s id for unknown ones (like the reference)."""
    unk = self.unk_id
    return np.array([self._ids.get(t, unk) for t in tokens], dtype=np.int32)
