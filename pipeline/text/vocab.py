# coding=utf-8
"""Learns a WordPiece vocab laid out like Google's BERT vocab files.

Google's uncased vocab starts with [PAD], 99 [unusedN] slots, [UNK] [CLS] [SEP]
[MASK] and 895 more [unusedN] slots (ids 0..998); the learned entries follow.
Keeping that layout means the special ids match the published checkpoints and
the unused slots stay available for task-specific tokens.

The learning itself is tokenizers' WordPieceTrainer, fed text normalized and
pre-tokenized by exactly the pipeline of pipeline.text.tokenization, so learned
tokens are in the form BertTokenizer looks them up in.

Two things are done around the trainer, which on its own is neither
deterministic nor guaranteed to cover every character:
  * It gives "##c" forms ids in the iteration order of a randomly seeded hash
    map, and merge ties are broken by id, so two runs on the same text differ.
    The alphabet is therefore chosen here (most frequent first, ties by code
    point) and every "##c" is registered up front as a special token, which
    fixes all ids before any merge.
  * It only creates "##c" for characters seen inside a word; registering all
    of them makes every alphabet character usable at any position, so a word
    made of known characters never becomes [UNK].
"""

import dataclasses
import os
import tempfile
from typing import Optional

from absl import logging
import numpy as np
from tokenizers import trainers

from pipeline.core import kinds
from pipeline.core import stage
from pipeline.core.errors import ConfigError, InputError
from pipeline.text import tokenization

GOOGLE_NUM_UNUSED = 994
MAX_UNUSED_BEFORE_UNK = 99
DEFAULT_LIMIT_ALPHABET = 1000
_LINES_PER_BATCH = 4096
_NUM_CODE_POINTS = 0x110000


def default_num_unused(vocab_size):
  """Google's 994 unused slots, scaled down so tiny test vocabs stay usable."""
  return min(GOOGLE_NUM_UNUSED, vocab_size // 32)


def _unused(start, stop):
  return ["[unused%d]" % i for i in range(start, stop)]


def special_layout(num_unused):
  """[PAD], up to 99 unused, [UNK] [CLS] [SEP] [MASK], the remaining unused."""
  before = min(MAX_UNUSED_BEFORE_UNK, num_unused)
  return ([tokenization.PAD_TOKEN] + _unused(0, before) +
          [tokenization.UNK_TOKEN, tokenization.CLS_TOKEN,
           tokenization.SEP_TOKEN, tokenization.MASK_TOKEN] +
          _unused(before, num_unused))


def _check_readable(files):
  """Fails before the (long) first pass if any input is missing."""
  for path in files:
    if not os.path.exists(path):
      raise InputError(path, "no such file")
    if os.path.isdir(path):
      raise InputError(path, "is a directory, expected a text file")


def _normalized_batches(files, lower_case):
  """Yields lists of normalized lines, decoding strictly to name bad files.

  Binary reading splits on b"\\n" only, so the reported line number is exact;
  a trailing "\\r" is whitespace to the tokenizer anyway.
  """
  for path in files:
    batch = []
    with open(path, "rb") as f:
      for line_number, raw in enumerate(f, start=1):
        try:
          line = raw.decode("utf-8")
        except UnicodeDecodeError:
          raise InputError(path, "not valid UTF-8 (line %d)" %
                           line_number) from None
        batch.append(tokenization.prepare_text(line, lower_case))
        if len(batch) == _LINES_PER_BATCH:
          yield batch
          batch = []
    if batch:
      yield batch


def _zero_ranges(counts, ranges):
  for start, end in ranges:
    counts[start:end + 1] = 0


def _char_counts(files, lower_case):
  """How often each code point occurs inside words, as the trainer sees them.

  Whitespace never reaches a word, and nonspacing marks are deleted by the
  uncased Rust normalizer, so neither may claim an alphabet slot.
  """
  counts = np.zeros(_NUM_CODE_POINTS, dtype=np.int64)
  for batch in _normalized_batches(files, lower_case):
    codes = np.frombuffer("".join(batch).encode("utf-32-le"), dtype="<u4")
    if codes.size:
      batch_counts = np.bincount(codes)
      counts[:batch_counts.size] += batch_counts
  tables = tokenization.unicode_tables()
  _zero_ranges(counts, tables.whitespace)
  if lower_case:
    _zero_ranges(counts, tables.nonspacing_marks)
  return counts


def _choose_alphabet(counts, limit):
  """The `limit` most frequent characters (ties by code point), sorted."""
  seen = np.flatnonzero(counts)
  by_frequency = seen[np.lexsort((seen, -counts[seen]))]
  return [chr(c) for c in np.sort(by_frequency[:limit])]


def _train(files, lower_case, budget, alphabet):
  """Runs WordPieceTrainer; returns its tokens in id order (merge order)."""
  prefix = tokenization.CONTINUATION_PREFIX
  tokenizer = tokenization.build_rust_tokenizer(None)
  trainer = trainers.WordPieceTrainer(
      vocab_size=budget,
      show_progress=False,
      special_tokens=[prefix + c for c in alphabet],
      initial_alphabet=alphabet,
      limit_alphabet=len(alphabet),
      continuing_subword_prefix=prefix)
  tokenizer.train_from_iterator(_normalized_batches(files, lower_case), trainer)
  vocab = tokenizer.get_vocab()
  return sorted(vocab, key=vocab.get)


def _arrange_learned(learned, alphabet, budget):
  """Single characters, then merged pieces by priority, then "##c" forms.

  Mirrors Google's files (single characters right after the unused slots,
  "##" characters at the very end); merged pieces beyond the budget are the
  least useful ones and are dropped.
  """
  prefix = tokenization.CONTINUATION_PREFIX
  continuations = [prefix + c for c in alphabet]
  fixed = set(alphabet) | set(continuations)
  merged = [t for t in learned if t not in fixed]
  merged = merged[:budget - len(alphabet) - len(continuations)]
  return list(alphabet) + merged + continuations


def learn_wordpiece_vocab(files, vocab_size, lower_case, num_unused=None,
                          limit_alphabet=DEFAULT_LIMIT_ALPHABET):
  """Learns a vocab of exactly `vocab_size` tokens in Google's BERT layout.

  Args:
    files: paths of UTF-8 text files (one sentence per line, blank lines
      between documents); a single path is accepted too.
    vocab_size: length of the result.
    lower_case: learn for an uncased tokenizer (lower-case, strip accents).
    num_unused: [unusedN] slots; None means min(994, vocab_size // 32). The
      first min(99, num_unused) go before [UNK].
    limit_alphabet: at most this many distinct characters (each also as a
      "##" form); capped at half of the learned part.

  Returns:
    list of vocab_size tokens. If the text supports fewer learned tokens,
    further [unusedN] entries fill the end and a warning is logged.

  Raises:
    InputError: a file is missing, not UTF-8, or all files have no text.
    ValueError: vocab_size leaves no room for learned tokens.
  """
  files = [files] if isinstance(files, (str, os.PathLike)) else list(files)
  if num_unused is None:
    num_unused = default_num_unused(vocab_size)
  specials = special_layout(num_unused)
  budget = vocab_size - len(specials)
  if budget < 2:
    raise ValueError("vocab_size %d leaves no room for learned tokens after "
                     "%d special/unused entries" % (vocab_size, len(specials)))
  _check_readable(files)
  counts = _char_counts(files, lower_case)
  alphabet = _choose_alphabet(counts, min(limit_alphabet, budget // 2))
  if not alphabet:
    raise InputError(files[0] if len(files) == 1 else ", ".join(files),
                     "no text to learn a vocabulary from")
  learned = _arrange_learned(_train(files, lower_case, budget, alphabet),
                             alphabet, budget)
  return _pad_with_unused(specials + learned, vocab_size, num_unused)


def _pad_with_unused(tokens, vocab_size, num_unused):
  """Fills the vocab up to vocab_size with more [unusedN] entries."""
  missing = vocab_size - len(tokens)
  if missing > 0:
    num_learned = len(tokens) - len(special_layout(num_unused))
    logging.warning(
        "The training text yields only %d learned tokens; padded the vocab "
        "with %d extra unused entries ([unused%d]..[unused%d]) to reach %d.",
        num_learned, missing, num_unused, num_unused + missing - 1, vocab_size)
    tokens = tokens + _unused(num_unused, num_unused + missing)
  if len(set(tokens)) != len(tokens):
    raise AssertionError("learned vocab has duplicate tokens")
  return tokens


def write_vocab(tokens, path):
  """Writes one token per line, atomically (temp file + os.replace).

  A crash never leaves a truncated vocab behind, which would silently change
  every id downstream.

  Args:
    tokens: list of str; none may contain a newline.
    path: destination file.
  """
  for token in tokens:
    if "\n" in token:
      raise ValueError("vocab token contains a newline: %r" % token)
  directory = os.path.dirname(os.path.abspath(path))
  fd, temp_path = tempfile.mkstemp(prefix=".vocab-", suffix=".tmp",
                                   dir=directory)
  try:
    with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
      f.write("".join(token + "\n" for token in tokens))
      f.flush()
      os.fsync(f.fileno())
    os.chmod(temp_path, 0o644)  # mkstemp's 0600 would hide it from others.
    os.replace(temp_path, path)
  except BaseException:
    if os.path.exists(temp_path):
      os.unlink(temp_path)
    raise


@dataclasses.dataclass(frozen=True, kw_only=True)
class VocabConfig:
  """tools/build_vocab.py: the training shards -> vocab.txt (+ a manifest sidecar)."""
  input_dir: str  # shard_text output.
  output_file: str
  vocab_size: int = 30522
  num_unused: Optional[int] = None  # Default: min(994, vocab_size // 32).
  lower_case: bool = True
  overwrite: bool = False

  def __post_init__(self):
    if self.vocab_size < 200:
      raise ConfigError(f"--vocab_size={self.vocab_size} must be >= 200")


def _up_to_date(path, manifest_path, identity, overwrite):
  """True if `path` was made by this stage with `identity`; raises on conflicts."""
  if not os.path.exists(path):
    return False
  if not os.path.exists(manifest_path):
    if overwrite:
      return False
    raise InputError(path, "exists and was not made by build_vocab (your own vocab?); "
                     "use it directly or pass --overwrite")
  found = stage.read_json(manifest_path)
  same = ({k: found.get(k) for k in identity} == identity and
          found.get("sha256") == stage.file_sha256(path))
  if same or overwrite:
    return same
  raise InputError(path, "exists with a different config or input; pass --overwrite")


def run(config):
  """Learns the vocab of `config.input_dir`'s training shards; the sidecar
  `<output_file>.manifest.json` is written last (same config + input: no-op)."""
  _, manifest = kinds.read(config.input_dir, kinds.TEXT_SHARDS)
  files = [os.path.join(config.input_dir, f["name"]) for f in manifest["files"]
           if f["name"].startswith("train/") and f["name"].endswith(".txt")]
  identity = {"stage": "build_vocab",
              "config": {"vocab_size": config.vocab_size, "num_unused": config.num_unused,
                         "lower_case": config.lower_case},
              "input": {"manifest_sha256": manifest["_sha256"]}}
  manifest_path = config.output_file + ".manifest.json"
  if _up_to_date(config.output_file, manifest_path, identity, config.overwrite):
    print(f"build_vocab: {config.output_file} is up to date (nothing to do)")
    return
  if os.path.exists(manifest_path):
    os.remove(manifest_path)  # the vocab is about to change: un-complete it first
  os.makedirs(os.path.dirname(os.path.abspath(config.output_file)), exist_ok=True)
  tokens = learn_wordpiece_vocab(files, config.vocab_size, config.lower_case,
                                 num_unused=config.num_unused)
  write_vocab(tokens, config.output_file)
  record = dict(identity, sha256=stage.file_sha256(config.output_file), entries=len(tokens),
                code_version=stage.code_version())
  stage.atomic_write_text(manifest_path, stage.json_dumps(record))
  print(f"build_vocab: {len(tokens)} entries ({'uncased' if config.lower_case else 'cased'}) "
        f"learned from {len(files)} training shards -> {config.output_file}")
