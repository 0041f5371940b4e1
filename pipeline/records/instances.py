"""BERT pretraining instances (masked LM + next sentence), fast and reproducible.

The algorithm is google-research/bert's `create_pretraining_data`: per document and
dupe pass, sentences are packed into chunks filling a target length (shorter with
probability `short_seq_prob`), split into segment A and B, B replaced by text of
another document with probability 0.5, the pair truncated from a random end of the
longer side, then 15% of tokens masked (80% [MASK], 10% random, 10% kept), words
masked whole with `do_whole_word_mask`.

What differs is how it is computed:
- Every segment, even after truncation, is a contiguous range of one shard's flat
  token array, so an instance is four integers; building the id matrix and the
  masking are vectorised over thousands of instances with numpy.
- Randomness is derived, never shared: the plan of a document comes from a
  counter-based generator seeded by (random_seed, page id, dupe), masking from a counter-
  based hash of (that seed, instance number, position). Output bytes therefore do
  not depend on process count or on other documents' order.
- The random-next partner is found by consistent hashing of page ids on a ring, so
  it changes only when the chosen partner itself changes or a new page lands right
  before it on the ring (what makes incremental refreshes cheap).
"""

import bisect
import dataclasses
import hashlib

import numpy as np
from pipeline.core.errors import ConfigError

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


@dataclasses.dataclass(frozen=True)
class InstanceConfig:
  max_seq_length: int = 128
  max_predictions_per_seq: int = 20
  masked_lm_prob: float = 0.15
  short_seq_prob: float = 0.1
  dupe_factor: int = 10
  do_whole_word_mask: bool = False
  random_seed: int = 12345

  def __post_init__(self):
    if self.max_seq_length < 5:
      raise ConfigError(f"max_seq_length must be >= 5, got {self.max_seq_length}")
    if not 0 < self.max_predictions_per_seq <= self.max_seq_length:
      raise ConfigError("max_predictions_per_seq must be in [1, max_seq_length]")
    if not 0.0 < self.masked_lm_prob < 1.0:
      raise ConfigError(f"masked_lm_prob must be in (0, 1), got {self.masked_lm_prob}")
    if not 0.0 <= self.short_seq_prob <= 1.0:
      raise ConfigError(f"short_seq_prob must be in [0, 1], got {self.short_seq_prob}")
    if self.dupe_factor < 1:
      raise ConfigError(f"dupe_factor must be >= 1, got {self.dupe_factor}")


@dataclasses.dataclass
class SpecialIds:
  """Token ids the builder needs, and the vocab's continuation ("##") mask."""
  cls: int
  sep: int
  mask: int
  vocab_size: int
  is_continuation: np.ndarray  # bool [V]


@dataclasses.dataclass
class ShardTokens:
  """A tokenized text shard as flat arrays (T tokens, M sentences, D documents).

  tokens:      int32 [T], all sentences back to back
  sent_starts: list of M+1 ints, sentence s is tokens[sent_starts[s]:sent_starts[s+1]]
  doc_sents:   list of D+1 ints, document d is sentences doc_sents[d]:doc_sents[d+1]
  page_ids:    D ints
  revids:      D ints (revision of each page: what a refresh compares)
  """
  tokens: np.ndarray
  sent_starts: list
  doc_sents: list
  page_ids: list
  revids: list = None

  @property
  def num_docs(self):
    return len(self.page_ids)


def stable_hash64(*parts):
  """64-bit hash of the parts' text: stable across processes and Python runs."""
  digest = hashlib.blake2b(":".join(map(str, parts)).encode(), digest_size=8).digest()
  return int.from_bytes(digest, "little")


def stable_mix(seed, n):
  """A 64-bit seed for sub-stream n of `seed` (one splitmix64 step)."""
  return HashRandom(seed ^ ((n * 0xD1B54A32D192ED03) & _M64)).bits64()


def _splitmix64(x):
  """Counter-based mixing of uint64 arrays (wrapping arithmetic is intended)."""
  with np.errstate(over="ignore"):
    z = x + _GOLDEN
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def uniforms(keys, stream, width):
  """Uniform [0, 1) floats [N, width] from instance keys [N] and a stream id."""
  with np.errstate(over="ignore"):
    salt = np.uint64((stream * 0x632BE59BD9B4E019) & 0xFFFFFFFFFFFFFFFF)
    base = _splitmix64(keys.astype(np.uint64) ^ salt)
    ctr = base[:, None] + np.arange(width, dtype=np.uint64) * _GOLDEN
  return (_splitmix64(ctr) >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


_M64 = (1 << 64) - 1


class HashRandom:
  """A tiny counter-based generator (splitmix64 over a 64-bit state).

  Seeding is free, unlike random.Random whose seeding costs microseconds; the
  planner seeds one per document pass and one per instance.
  """

  __slots__ = ("_state",)

  def __init__(self, seed):
    self._state = seed & _M64

  def bits64(self):
    self._state = z = (self._state + 0x9E3779B97F4A7C15) & _M64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _M64
    return z ^ (z >> 31)

  def random(self):
    return (self.bits64() >> 11) * (1.0 / (1 << 53))

  def randint(self, lo, hi):
    """Uniform integer in [lo, hi] (modulo bias below 2**-40 for our ranges)."""
    return lo + self.bits64() % (hi - lo + 1)

  def coin_flips(self, k):
    """How many of k fair coin flips come up heads."""
    heads = 0
    while k > 0:
      take = min(k, 64)
      heads += (self.bits64() >> (64 - take)).bit_count()
      k -= take
    return heads


class PartnerRing:
  """Consistent-hashing ring over a shard's documents for random-next picks."""

  def __init__(self, page_ids, seed):
    points = [(stable_hash64("ring", seed, pid), d) for d, pid in enumerate(page_ids)]
    points.sort()
    self._keys = [p[0] for p in points]
    self._docs = [p[1] for p in points]

  def pick(self, rnd, self_doc):
    """A document other than self_doc (itself only when it is alone)."""
    n = len(self._docs)
    i = bisect.bisect_left(self._keys, rnd.bits64()) % n
    if self._docs[i] == self_doc and n > 1:
      i = (i + 1) % n
    return self._docs[i]


def _truncated_lengths(la, lb, max_tokens):
  """How many tokens BERT's truncate_seq_pair removes from A and from B.

  It removes one token at a time from the longer side (B on ties), so the
  longer side shrinks to the shorter, then the two alternate starting with B.
  """
  ka = kb = 0
  d = la + lb - max_tokens
  while d > 0:
    if la > lb:
      s = min(d, la - lb)
      la, ka = la - s, ka + s
    elif lb > la:
      s = min(d, lb - la)
      lb, kb = lb - s, kb + s
    else:
      s = d
      la, lb, ka, kb = la - d // 2, lb - (d + 1) // 2, ka + d // 2, kb + (d + 1) // 2
    d -= s
  return ka, kb


def _trim(lo, hi, k, rnd):
  """Removes k tokens, each from the front or the back with probability 1/2."""
  if k == 0:
    return lo, hi
  front = rnd.coin_flips(k)
  return lo + front, hi - (k - front)


def plan_document(shard, doc, dupe, cfg, ring):
  """Instance plans of one document for one dupe pass.

  Returns (seed, rows) where each row is (a_lo, a_hi, b_lo, b_hi, is_random_next)
  as token ranges into shard.tokens.

  Two kinds of randomness are kept apart so a changed partner document cannot
  perturb the rest of this document: the chunking and the next/random coin come
  from the document's stream; the partner, its start and the truncation (which
  depend on the partner's length) from a stream of the instance's own.
  """
  seed = stable_hash64(cfg.random_seed, shard.page_ids[doc], dupe)
  rnd = HashRandom(seed)
  starts, rows = shard.sent_starts, []
  max_tokens = cfg.max_seq_length - 3  # [CLS] A [SEP] B [SEP]
  target = max_tokens
  if rnd.random() < cfg.short_seq_prob:
    target = rnd.randint(2, max_tokens)
  lo_sent, hi_sent = shard.doc_sents[doc], shard.doc_sents[doc + 1]
  chunk_start, i = lo_sent, lo_sent
  while i < hi_sent:
    if i == hi_sent - 1 or starts[i + 1] - starts[chunk_start] >= target:
      n_chunk = i - chunk_start + 1
      a_end = chunk_start + (rnd.randint(1, n_chunk - 1) if n_chunk >= 2 else 1)
      a_lo, a_hi = starts[chunk_start], starts[a_end]
      own = HashRandom(stable_mix(seed, len(rows) + 1))
      if n_chunk == 1 or rnd.random() < 0.5:
        b_lo, b_hi = _random_next(shard, doc, target - (a_hi - a_lo), own, ring)
        i -= n_chunk - (a_end - chunk_start)  # unused sentences start the next chunk
        is_random = 1
      else:
        b_lo, b_hi, is_random = a_hi, starts[i + 1], 0
      ka, kb = _truncated_lengths(a_hi - a_lo, b_hi - b_lo, max_tokens)
      rows.append(_trim(a_lo, a_hi, ka, own) + _trim(b_lo, b_hi, kb, own) + (is_random,))
      chunk_start = i + 1
    i += 1
  return seed, rows


def _random_next(shard, doc, target_b, rnd, ring):
  """Segment B from another document: whole sentences from a random start until
  at least target_b tokens (or the document ends)."""
  other = ring.pick(rnd, doc)
  lo, hi = shard.doc_sents[other], shard.doc_sents[other + 1]
  start = rnd.randint(lo, hi - 1)
  starts = shard.sent_starts
  end = bisect.bisect_left(starts, starts[start] + target_b, start + 1, hi)
  return starts[start], starts[min(end, hi)]


def build_inputs(tokens, plans, cfg, special):
  """input_ids / input_mask / segment_ids [N, S] int32 from plans [N, 5], and the
  masking candidates (bool [N, S]: every A or B token, never [CLS]/[SEP]/pad)."""
  a_lo, a_hi, b_lo, b_hi = (plans[:, k:k + 1] for k in range(4))
  la, lb = a_hi - a_lo, b_hi - b_lo
  n_tok = la + lb + 3
  col = np.arange(cfg.max_seq_length)[None, :]
  # Position c holds A's token c-1, or after A's [SEP] B's token c-la-2.
  src = np.where(col <= la, a_lo - 1, b_lo - la - 2) + col
  ids = tokens.take(src, mode="clip")
  ids[:, 0] = special.cls
  np.put_along_axis(ids, la + 1, special.sep, axis=1)
  np.put_along_axis(ids, n_tok - 1, special.sep, axis=1)
  mask = col < n_tok
  ids[~mask] = 0
  candidates = mask & (col != 0) & (col != la + 1) & (col != n_tok - 1)
  segment = (col >= la + 2) & mask
  return ids, mask.astype(np.int32), segment.astype(np.int32), candidates


def _num_to_predict(lengths, cfg):
  """BERT's min(max_predictions, max(1, round(len(tokens) * masked_lm_prob)))."""
  k = np.rint(lengths * cfg.masked_lm_prob).astype(np.int64)
  return np.minimum(cfg.max_predictions_per_seq, np.maximum(1, k))


def _choose_positions(keys, candidates, k, p):
  """Per row, the min(k, #candidates) candidate positions with the smallest keys,
  ascending, padded with S: int [N, p]. argpartition keeps it O(N*S)."""
  n, s = keys.shape
  keyed = np.where(candidates, keys, 2.0)  # keys are in [0, 1)
  part = np.argpartition(keyed, p - 1, axis=1)[:, :p]  # p smallest, unordered
  part_keys = np.take_along_axis(keyed, part, axis=1)
  order = np.argsort(part_keys, axis=1)
  top = np.take_along_axis(part, order, axis=1)
  keep = (np.arange(p)[None, :] < k[:, None]) & (np.take_along_axis(part_keys, order, 1) < 2.0)
  return np.sort(np.where(keep, top, s), axis=1)


def _choose_words(keys, candidates, ids, k, special):
  """Whole-word masking: words (a start plus its "##" pieces) in key order, each
  taken only if it still fits in k, as BERT does. bool [N, S]."""
  cont = special.is_continuation[ids] & candidates
  prev_cand = np.zeros_like(candidates)
  prev_cand[:, 1:] = candidates[:, :-1]
  starts = candidates & ~(cont & prev_cand)
  col = np.arange(ids.shape[1])
  owner = np.maximum.accumulate(np.where(starts, col[None, :], 0), axis=1)
  chosen = np.zeros_like(candidates)
  for r in range(ids.shape[0]):
    word_starts = np.flatnonzero(starts[r])
    sizes = np.bincount(owner[r][candidates[r]], minlength=ids.shape[1])[word_starts]
    taken = 0
    for w in np.argsort(keys[r, word_starts], kind="stable"):
      if taken + sizes[w] <= k[r]:
        taken += sizes[w]
        chosen[r] |= candidates[r] & (owner[r] == word_starts[w])
      if taken >= k[r]:
        break
  return chosen


def mask_inputs(ids, input_mask, candidates, keys, cfg, special):
  """Applies 80/10/10 masking; returns (masked ids [N, S], positions, labels,
  weights [N, P]) with positions ascending and zero-padded as BERT writes them."""
  n, s = ids.shape
  p = cfg.max_predictions_per_seq
  k = _num_to_predict(input_mask.sum(1), cfg)
  pick_keys = uniforms(keys, 1, s)
  if cfg.do_whole_word_mask:
    chosen = _choose_words(pick_keys, candidates, ids, k, special)
    pos = np.sort(np.where(chosen, np.arange(s)[None, :], s), axis=1)[:, :p]
  else:
    pos = _choose_positions(pick_keys, candidates, k, p)
  valid = pos < s
  pos = np.where(valid, pos, 0)
  labels = np.where(valid, np.take_along_axis(ids, pos, axis=1), 0)
  # One draw per prediction slot: which replacement, and the random token.
  u_kind, u_tok = uniforms(keys, 2, p), uniforms(keys, 3, p)
  random_ids = np.minimum((u_tok * special.vocab_size).astype(np.int32), special.vocab_size - 1)
  replaced = np.where(u_kind < 0.8, special.mask, np.where(u_kind < 0.9, labels, random_ids))
  masked = ids.copy()
  # Padding slots point at position 0 ([CLS]) and write it back unchanged.
  np.put_along_axis(masked, pos, np.where(valid, replaced, ids[:, :1]), axis=1)
  return masked, pos, labels, valid.astype(np.float32)


def instance_keys(seeds, ordinals):
  """Per-instance uint64 keys from the document-pass seed and the ordinal in it."""
  with np.errstate(over="ignore"):
    return _splitmix64(np.asarray(seeds, np.uint64) + np.asarray(ordinals, np.uint64) * _GOLDEN)


def make_features(shard, plans, seeds, ordinals, cfg, special):
  """All record features of N planned instances as {name: array [N, L]}."""
  ids, input_mask, segment_ids, candidates = build_inputs(shard.tokens, plans, cfg, special)
  keys = instance_keys(seeds, ordinals)
  masked, pos, labels, weights = mask_inputs(ids, input_mask, candidates, keys, cfg, special)
  return {
      "input_ids": masked, "input_mask": input_mask, "segment_ids": segment_ids,
      "masked_lm_positions": pos, "masked_lm_ids": labels, "masked_lm_weights": weights,
      "next_sentence_labels": plans[:, 4:5].astype(np.int32),
  }
