"""BERT's instance algorithm on synthetic shards: invariants, masking, seeding."""

import random

import numpy as np
import pytest

from pipeline.records import instances as inst

CLS, SEP, MASK, V = 2, 3, 4, 500


def _special(cont_ids=()):
  is_cont = np.zeros(V, bool)
  is_cont[list(cont_ids)] = True
  return inst.SpecialIds(cls=CLS, sep=SEP, mask=MASK, vocab_size=V, is_continuation=is_cont)


def _shard(docs, seed=0):
  """docs: {page_id: [sentence lengths]} -> ShardTokens with random token ids >= 10."""
  rng = np.random.default_rng(seed)
  starts, doc_sents, page_ids, pieces = [0], [0], [], []
  for page_id, lengths in docs.items():
    for n in lengths:
      pieces.append(rng.integers(10, V, n).astype(np.int32))
      starts.append(starts[-1] + n)
    doc_sents.append(doc_sents[-1] + len(lengths))
    page_ids.append(page_id)
  return inst.ShardTokens(np.concatenate(pieces), starts, doc_sents, page_ids)


def _random_docs(n_docs, seed=1):
  rnd = random.Random(seed)
  return {1000 + d: [rnd.randint(1, 40) for _ in range(rnd.randint(1, 30))] for d in range(n_docs)}


def _all_plans(shard, cfg):
  ring = inst.PartnerRing(shard.page_ids, cfg.random_seed)
  rows, seeds, ords = [], [], []
  for dupe in range(cfg.dupe_factor):
    for d in range(shard.num_docs):
      seed, r = inst.plan_document(shard, d, dupe, cfg, ring)
      rows += r
      seeds += [seed] * len(r)
      ords += range(len(r))
  return np.asarray(rows, np.int64), seeds, ords


def _bert_truncation(la, lb, max_tokens):
  """BERT's truncate_seq_pair, one token at a time, counting removals."""
  ka = kb = 0
  while la + lb > max_tokens:
    if la > lb:
      la, ka = la - 1, ka + 1
    else:
      lb, kb = lb - 1, kb + 1
  return ka, kb


def test_truncation_counts_match_one_at_a_time_loop():
  rnd = random.Random(0)
  for _ in range(2000):
    la, lb, m = rnd.randint(1, 300), rnd.randint(1, 300), rnd.randint(2, 200)
    assert inst._truncated_lengths(la, lb, m) == _bert_truncation(la, lb, m)


def test_instances_have_bert_layout():
  cfg = inst.InstanceConfig(max_seq_length=64, max_predictions_per_seq=10, dupe_factor=2)
  shard = _shard(_random_docs(30))
  plans, seeds, ords = _all_plans(shard, cfg)
  feats = inst.make_features(shard, plans, seeds, ords, cfg, _special())
  ids, mask, seg = feats["input_ids"], feats["input_mask"], feats["segment_ids"]
  unmasked, _, _, _ = inst.build_inputs(shard.tokens, plans, cfg, _special())
  for i, (a_lo, a_hi, b_lo, b_hi, rand) in enumerate(plans):
    la, lb = a_hi - a_lo, b_hi - b_lo
    assert la >= 1 and lb >= 1 and la + lb <= cfg.max_seq_length - 3
    n = la + lb + 3
    assert mask[i].sum() == n and not ids[i, n:].any()
    assert ids[i, 0] == CLS and ids[i, la + 1] == SEP and ids[i, n - 1] == SEP
    np.testing.assert_array_equal(unmasked[i, 1:la + 1], shard.tokens[a_lo:a_hi])
    np.testing.assert_array_equal(unmasked[i, la + 2:n - 1], shard.tokens[b_lo:b_hi])
    assert seg[i, :la + 2].sum() == 0 and seg[i, la + 2:n].all() and not seg[i, n:].any()
    k = min(cfg.max_predictions_per_seq, max(1, round(n * cfg.masked_lm_prob)))
    pos = feats["masked_lm_positions"][i]
    w = feats["masked_lm_weights"][i]
    assert w.sum() == k and (np.diff(pos[:k]) > 0).all() and not pos[k:].any()
    assert not np.isin(pos[:k], [0, la + 1, n - 1]).any()
    np.testing.assert_array_equal(feats["masked_lm_ids"][i][:k], unmasked[i][pos[:k]])
    assert feats["next_sentence_labels"][i, 0] == rand


def test_next_sentence_segments():
  cfg = inst.InstanceConfig(max_seq_length=128, dupe_factor=3)
  shard = _shard(_random_docs(40))
  plans, _, _ = _all_plans(shard, cfg)
  doc_starts = np.asarray(shard.sent_starts)[np.asarray(shard.doc_sents)]
  doc_of = np.searchsorted(doc_starts, plans[:, [0, 2]], "right") - 1
  for (a_lo, a_hi, b_lo, b_hi, rand), (doc_a, doc_b) in zip(plans, doc_of):
    if rand:
      assert doc_b != doc_a  # B comes from another document
    else:
      assert b_lo >= a_hi and doc_b == doc_a  # B continues A (after truncation)
  assert 0.3 < plans[:, 4].mean() < 0.7


def test_mask_replacement_is_80_10_10():
  cfg = inst.InstanceConfig(max_seq_length=128, max_predictions_per_seq=20, dupe_factor=10)
  shard = _shard(_random_docs(60))
  plans, seeds, ords = _all_plans(shard, cfg)
  feats = inst.make_features(shard, plans, seeds, ords, cfg, _special())
  unmasked, _, _, _ = inst.build_inputs(shard.tokens, plans, cfg, _special())
  w = feats["masked_lm_weights"].astype(bool)
  pos = feats["masked_lm_positions"]
  after = np.take_along_axis(feats["input_ids"], pos, 1)[w]
  before = np.take_along_axis(unmasked, pos, 1)[w]
  assert after.size > 5000
  assert abs((after == MASK).mean() - 0.8) < 0.02
  assert abs(((after == before) & (after != MASK)).mean() - 0.1) < 0.02
  # Outside the chosen positions nothing changes.
  chosen = np.zeros_like(unmasked, bool)
  np.put_along_axis(chosen, pos, w, 1)
  np.testing.assert_array_equal(feats["input_ids"][~chosen], unmasked[~chosen])


def test_whole_word_masking_masks_whole_words():
  cont = list(range(10, 200))  # ids 10..199 are "##" pieces
  cfg = inst.InstanceConfig(max_seq_length=64, max_predictions_per_seq=12, dupe_factor=3,
                            do_whole_word_mask=True)
  shard = _shard(_random_docs(20))
  plans, seeds, ords = _all_plans(shard, cfg)
  special = _special(cont)
  feats = inst.make_features(shard, plans, seeds, ords, cfg, special)
  unmasked, mask, _, cand = inst.build_inputs(shard.tokens, plans, cfg, special)
  for i in range(len(plans)):
    k = int(feats["masked_lm_weights"][i].sum())
    chosen = np.zeros(cfg.max_seq_length, bool)
    chosen[feats["masked_lm_positions"][i][:k]] = True
    is_cont = special.is_continuation[unmasked[i]] & cand[i]
    prev_cand = np.concatenate([[False], cand[i][:-1]])
    joined = is_cont & prev_cand  # token belongs to the word before it
    for p in np.flatnonzero(joined):
      assert chosen[p] == chosen[p - 1], (i, p)
    assert 1 <= k <= cfg.max_predictions_per_seq


def test_document_output_does_not_depend_on_other_documents():
  cfg = inst.InstanceConfig(max_seq_length=64, dupe_factor=2)
  docs = _random_docs(30)
  base = _shard(docs)
  # Reordered, one document removed and two added: same tokens for kept pages.
  pages = list(docs)[::-1][1:]
  other_docs = {p: docs[p] for p in pages}
  other_docs.update({5: [7, 8], 6: [30]})
  # Same token ids per page: rebuild each page's tokens from `base`.
  other = _shard_like(base, other_docs)
  page = pages[3]
  d_base, d_other = base.page_ids.index(page), other.page_ids.index(page)
  ring_a = inst.PartnerRing(base.page_ids, cfg.random_seed)
  ring_b = inst.PartnerRing(other.page_ids, cfg.random_seed)
  for dupe in range(cfg.dupe_factor):
    seed_a, rows_a = inst.plan_document(base, d_base, dupe, cfg, ring_a)
    seed_b, rows_b = inst.plan_document(other, d_other, dupe, cfg, ring_b)
    assert seed_a == seed_b and len(rows_a) == len(rows_b)
    off_a = base.sent_starts[base.doc_sents[d_base]]
    off_b = other.sent_starts[other.doc_sents[d_other]]
    for ra, rb in zip(rows_a, rows_b):
      assert ra[4] == rb[4]
      if not ra[4]:  # a random B may come from a changed partner; the rest is equal
        assert [x - off_a for x in ra[:4]] == [x - off_b for x in rb[:4]]


def _shard_like(base, docs):
  pieces, starts, doc_sents, page_ids = [], [0], [0], []
  for page_id, lengths in docs.items():
    if page_id in base.page_ids:
      d = base.page_ids.index(page_id)
      sents = range(base.doc_sents[d], base.doc_sents[d + 1])
      toks = [base.tokens[base.sent_starts[s]:base.sent_starts[s + 1]] for s in sents]
    else:
      toks = [np.full(n, 11, np.int32) for n in lengths]
    for t in toks:
      pieces.append(t)
      starts.append(starts[-1] + len(t))
    doc_sents.append(doc_sents[-1] + len(toks))
    page_ids.append(page_id)
  return inst.ShardTokens(np.concatenate(pieces), starts, doc_sents, page_ids)


def test_partner_ring_is_stable_when_other_pages_change():
  pages = list(range(1000))
  ring_a = inst.PartnerRing(pages, 7)
  ring_b = inst.PartnerRing(pages[:500] + pages[550:] + list(range(5000, 5050)), 7)
  idx_b = pages[:500] + pages[550:] + list(range(5000, 5050))
  same = 0
  for trial in range(2000):
    pa = pages[ring_a.pick(inst.HashRandom(trial), 0)]
    pb = idx_b[ring_b.pick(inst.HashRandom(trial), 0)]
    same += pa == pb
  assert same / 2000 > 0.85  # ~10% of pages changed -> ~90% of partners kept


@pytest.mark.parametrize("bad", [dict(max_seq_length=4), dict(masked_lm_prob=0.0),
                                 dict(dupe_factor=0), dict(max_predictions_per_seq=0)])
def test_config_validation(bad):
  with pytest.raises(ValueError):
    inst.InstanceConfig(**bad)
