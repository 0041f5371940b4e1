"""Text shard -> BERT pretraining TFRecords, streaming in bounded memory.

Memory holds one shard's token ids (int32, ~4 bytes per token) plus one block of
instances; records are written block by block, never accumulated, so memory is
set by the shard size, not the corpus size.
"""

import numpy as np

from pipeline.core import stage
from pipeline.records import instances as inst
from pipeline.records import schema
from pipeline.records import tfrecord
from pipeline.core.errors import InputError

TOKENIZE_BATCH = 8192  # sentences per call into the Rust tokenizer


def _decode_line(raw, path, lineno):
  try:
    return raw.decode("utf-8")
  except UnicodeDecodeError as e:
    raise InputError(path, f"line {lineno}: invalid UTF-8 ({e.reason} at byte "
                     f"{e.start} of the line)") from None


def read_docs_index(docs_path):
  """[(page_id, revid, num_sentences)] from a shard's .docs.tsv sidecar."""
  rows = []
  with stage.verified_open(docs_path, stage.input_sha256(docs_path)) as f:
    for lineno, raw in enumerate(f, 1):
      parts = _decode_line(raw, docs_path, lineno).rstrip("\n").split("\t")
      try:
        rows.append((int(parts[0]), int(parts[1]), int(parts[2])))
      except (IndexError, ValueError):
        raise InputError(docs_path, f"line {lineno}: expected 'page_id<TAB>revid<TAB>"
                         f"num_sentences'") from None
  return rows


def iter_documents(text_path, docs_path):
  """Yields (page_id, revid, [sentence, ...]) from a text shard in BERT's format
  (one sentence per line, a blank line after each document)."""
  index = read_docs_index(docs_path)
  # Hashed as read: an edit that kept the size fails here, before any record.
  with stage.verified_open(text_path, stage.input_sha256(text_path)) as f:
    lineno = 0
    for page_id, revid, n in index:
      sentences = []
      for _ in range(n):
        lineno += 1
        sentences.append(_decode_line(f.readline(), text_path, lineno).rstrip("\n"))
      lineno += 1
      if f.readline() not in (b"\n", b"\r\n"):
        raise InputError(text_path, f"line {lineno}: expected the blank line ending "
                         f"document {page_id} (shard and its .docs.tsv disagree)")
      yield page_id, revid, sentences
    if f.readline():
      raise InputError(text_path, f"line {lineno + 1}: text after the last document "
                       "listed in the .docs.tsv sidecar")


def tokenize_shard(text_path, docs_path, tokenizer):
  """Tokenizes a shard into flat arrays (ShardTokens); drops sentences that
  tokenize to nothing and documents left empty, as BERT does.

  Sentences go to the Rust tokenizer TOKENIZE_BATCH at a time, so memory holds
  the shard's ids (int32) and one batch of text, never the shard's text.
  """
  pieces, sent_starts, doc_of_sentence, pages, revids = [], [0], [], [], []
  batch, owners = [], []

  def flush():
    for doc, ids in zip(owners, tokenizer.encode_batch(batch)):
      if len(ids):
        pieces.append(ids)
        sent_starts.append(sent_starts[-1] + len(ids))
        doc_of_sentence.append(doc)
    batch.clear()
    owners.clear()

  for page_id, revid, sentences in iter_documents(text_path, docs_path):
    pages.append(page_id)
    revids.append(revid)
    batch.extend(sentences)
    owners.extend([len(pages) - 1] * len(sentences))
    if len(batch) >= TOKENIZE_BATCH:
      flush()
  flush()
  counts = np.bincount(np.asarray(doc_of_sentence, np.int64), minlength=len(pages))
  kept = np.flatnonzero(counts)  # documents with at least one sentence left
  doc_sents = [0] + np.cumsum(counts[kept]).tolist()
  tokens = np.concatenate(pieces) if pieces else np.zeros(0, np.int32)
  return inst.ShardTokens(tokens.astype(np.int32), sent_starts, doc_sents,
                          [pages[d] for d in kept], [revids[d] for d in kept])


def plan_shard(shard, cfg, ring, skip=frozenset()):
  """Yields (doc, rows, seed) per document pass: rows of (a_lo, a_hi, b_lo,
  b_hi, is_random_next), dupe passes outermost as in BERT. Documents in `skip`
  (indices) get no instances; they may still be random-next partners."""
  for dupe in range(cfg.dupe_factor):
    for doc in range(shard.num_docs):
      if doc in skip:
        continue
      seed, rows = inst.plan_document(shard, doc, dupe, cfg, ring)
      if rows:
        yield doc, rows, seed


def write_shard_records(shard, out_path, index_path, cfg, special, block_size=8192,
                        num_examples=0, previous=None):
  """Writes all instances of a tokenized shard; returns (stats, examples).

  Instances are produced in blocks of about `block_size`, shuffled within the
  block (deterministically), encoded and written, so memory stays bounded.
  `index_path` gets an int64 [N, 2] .npy of each record's (page id, revid):
  which document a record came from, for refreshes that reuse records.

  previous: optional (records path, index path) of the same shard in an earlier
  version: the records of documents present there at the same revision are
  copied first (in their old order) and those documents get no new instances.
  """
  ring = inst.PartnerRing(shard.page_ids, cfg.random_seed)
  dtypes = {f.name: f.dtype for f in schema.PRETRAINING_FEATURES}
  stats = {"instances": 0, "random_next": 0, "masked_tokens": 0, "tokens": 0,
           "reused_instances": 0, "reused_documents": 0}
  examples, owners, block = [], [], _Block()
  with tfrecord.TFRecordWriter(out_path) as writer:
    skip = _copy_previous(shard, previous, writer, owners, stats) if previous else frozenset()
    for doc, rows, seed in plan_shard(shard, cfg, ring, skip):
      block.add(doc, rows, seed)
      if len(block.rows) >= block_size:
        _emit(block, shard, cfg, special, writer, dtypes, stats, examples, owners, num_examples)
    if block.rows:
      _emit(block, shard, cfg, special, writer, dtypes, stats, examples, owners, num_examples)
  index = np.concatenate(owners) if owners else np.zeros((0, 2), np.int64)
  with open(index_path, "wb") as f:
    np.save(f, index, allow_pickle=False)
  return stats, examples


def _copy_previous(shard, previous, writer, owners, stats):
  """Copies the previous records of unchanged documents; returns their indices."""
  records_path, index_path = previous
  old = np.load(index_path, allow_pickle=False)
  current = {(p, r): d for d, (p, r) in enumerate(zip(shard.page_ids, shard.revids))}
  keep = np.array([(int(p), int(r)) in current for p, r in old.tolist()], bool)
  for record, kept in zip(tfrecord.iter_records(records_path), keep):
    if kept:
      writer.write_raw(record)
  owners.append(old[keep])
  unchanged = {current[(int(p), int(r))] for p, r in old[keep].tolist()}
  stats.update(reused_instances=int(keep.sum()), reused_documents=len(unchanged))
  stats["instances"] += int(keep.sum())
  return frozenset(unchanged)


class _Block:
  """Plans of the instances of the block being built."""

  def __init__(self):
    self.rows, self.seeds, self.ordinals, self.docs, self.number = [], [], [], [], 0

  def add(self, doc, rows, seed):
    self.rows.extend(rows)
    self.seeds.extend([seed] * len(rows))
    self.ordinals.extend(range(len(rows)))
    self.docs.extend([doc] * len(rows))

  def clear(self):
    self.rows, self.seeds, self.ordinals, self.docs = [], [], [], []
    self.number += 1


def _emit(block, shard, cfg, special, writer, dtypes, stats, examples, owners, num_examples):
  """Builds, shuffles (within the block), encodes and writes one block."""
  plans = np.asarray(block.rows, np.int64)
  feats = inst.make_features(shard, plans, block.seeds, block.ordinals, cfg, special)
  order = np.random.default_rng(
      inst.stable_hash64(cfg.random_seed, "shuffle", shard.page_ids[0], block.number)
  ).permutation(len(plans))
  feats = {k: v[order] for k, v in feats.items()}
  writer.write_batch(*tfrecord.encode_examples(feats, dtypes))
  docs = np.asarray(block.docs)[order]
  owners.append(np.stack([np.asarray(shard.page_ids, np.int64)[docs],
                          np.asarray(shard.revids, np.int64)[docs]], axis=1))
  _accumulate(stats, feats)
  examples.extend(_first_rows(feats, num_examples - len(examples)))
  block.clear()


def _accumulate(stats, feats):
  stats["instances"] += int(feats["input_ids"].shape[0])
  stats["random_next"] += int(feats["next_sentence_labels"].sum())
  stats["masked_tokens"] += int(feats["masked_lm_weights"].sum())
  stats["tokens"] += int(feats["input_mask"].sum())


def _first_rows(feats, n):
  if n <= 0:
    return []
  return [{k: v[i].tolist() for k, v in feats.items()}
          for i in range(min(n, feats["input_ids"].shape[0]))]
