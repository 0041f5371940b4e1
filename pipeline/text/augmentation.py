"""TinyBERT-style word replacement, the text half (no model here).

TinyBERT (Jiao et al., 2020, "data augmentation" of task distillation) makes N
variants of each training text: it splits the text into BasicTokenizer words
and, with probability p, replaces each word by one of K candidates picked
uniformly; candidates of a word that is a single WordPiece come from a masked
LM's predictions at that (masked) position, those of other words from the
word's nearest neighbours in a word-embedding space. A variant is the words
joined by single spaces; variants equal to the original or to an earlier
variant are dropped.

This module plans which words can be replaced (plan_side), tells which vocab
entries can stand in for a word (word_vocab_mask), and samples the variants
from given candidates (sample_variants). Where the candidates come from (a
model) is modeling/augmentation/candidates.py's business.

Which words are replaceable: words with a letter or digit (punctuation is
kept) that WordPiece does not turn into [UNK]. A single-piece word gets the
masked LM's candidates ("mlm"), a multi-piece word the embedding neighbours
of the mean of its pieces' embeddings ("embedding").
"""

import dataclasses
import hashlib
import random

import numpy as np

from pipeline.text.tokenization import CONTINUATION_PREFIX, SPECIAL_TOKENS

MLM = "mlm"
EMBEDDING = "embedding"


def is_replaceable(word):
  """A word worth replacing: it has a letter or a digit (not punctuation)."""
  return any(c.isalnum() for c in word)


def word_vocab_mask(tokenizer):
  """bool [V]: vocab entries that can replace a word.

  An entry qualifies when it is a whole word the tokenizer keeps as it is
  (BasicTokenizer gives back exactly that one word, so a variant re-splits
  into as many words as the original), with a letter or digit, and is not a
  special token, an `[unusedN]` slot or a `##` continuation.
  """
  specials = set(SPECIAL_TOKENS)
  mask = np.zeros(tokenizer.vocab_size, bool)
  for i, entry in enumerate(tokenizer.vocab):
    if entry in specials or entry.startswith(CONTINUATION_PREFIX) or (
        entry.startswith("[") and entry.endswith("]")):
      continue
    mask[i] = is_replaceable(entry) and tokenizer.basic_tokenize(entry) == [entry]
  return mask


@dataclasses.dataclass(frozen=True)
class Slot:
  """A replaceable word of a side."""
  word: int  # index among the side's words
  start: int  # index of its first piece among the side's pieces
  pieces: tuple  # its piece ids
  source: str  # MLM (one piece) or EMBEDDING (several)


@dataclasses.dataclass(frozen=True)
class SidePlan:
  """One text (side) of an input, split for augmentation."""
  words: tuple  # BasicTokenizer words
  piece_ids: np.ndarray  # int32 [P]: the side's WordPiece ids, words in order
  slots: tuple  # Slot of each replaceable word


def plan_side(text, tokenizer):
  """Splits a text into words and pieces and finds its replaceable words."""
  words = tuple(tokenizer.basic_tokenize(text))
  per_word = tokenizer.encode_batch(list(words)) if words else []
  slots, start = [], 0
  for index, (word, pieces) in enumerate(zip(words, per_word)):
    unknown = len(pieces) == 1 and pieces[0] == tokenizer.unk_id
    if is_replaceable(word) and len(pieces) and not unknown:
      source = MLM if len(pieces) == 1 else EMBEDDING
      slots.append(Slot(index, start, tuple(int(p) for p in pieces), source))
    start += len(pieces)
  piece_ids = (np.concatenate(per_word).astype(np.int32) if words
               else np.zeros(0, np.int32))
  return SidePlan(words, piece_ids, tuple(slots))


def input_rng(seed, split, row):
  """The RNG of one input row: derived from (seed, split, row) alone, so a
  resumed run (or one shard redone) draws exactly what a straight run drew."""
  digest = hashlib.sha256(f"{seed}\0{split}\0{row}".encode()).digest()
  return random.Random(int.from_bytes(digest[:8], "big"))


@dataclasses.dataclass(frozen=True)
class Variant:
  side: int  # which side changed (0 = text_a, 1 = text_b)
  text: str  # the new text of that side: words joined by single spaces
  replaced: int  # words replaced
  words: int  # words of that side


def eligible_sides(plans, candidates):
  """Sides with two words or more and at least one word with candidates."""
  return [s for s, (plan, cands) in enumerate(zip(plans, candidates))
          if len(plan.words) >= 2 and any(cands)]


def sample_variants(plans, candidates, num_variants, replace_prob, rng):
  """TinyBERT's sampling: `num_variants` draws, duplicates dropped.

  Each draw changes one side (pair tasks: picked uniformly among the eligible
  sides) and replaces each of its slots, with probability replace_prob, by a
  candidate picked uniformly. A draw equal to the original or to an earlier
  variant is dropped.

  Args:
    plans: a SidePlan per side.
    candidates: per side, per slot, a list of candidate words (may be empty).
    rng: random.Random (input_rng).
  Returns:
    ([Variant], number of draws dropped as duplicates).
  """
  sides = eligible_sides(plans, candidates)
  if not sides:
    return [], 0
  seen, variants, dropped = set(), [], 0
  for _ in range(num_variants):
    side = sides[rng.randrange(len(sides))] if len(sides) > 1 else sides[0]
    words, replaced = list(plans[side].words), 0
    for slot, cands in zip(plans[side].slots, candidates[side]):
      if cands and rng.random() < replace_prob:
        words[slot.word] = cands[rng.randrange(len(cands))]
        replaced += 1
    key = (side, " ".join(words))
    if not replaced or key in seen:
      dropped += 1
      continue
    seen.add(key)
    variants.append(Variant(side, key[1], replaced, len(words)))
  return variants, dropped
