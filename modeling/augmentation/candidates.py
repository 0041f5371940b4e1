"""Replacement candidates of words, from a model (TinyBERT's two sources).

  single-piece word  the masked LM's top-K predictions with the word masked
                     (MlmCandidates): one compiled forward over a batch of
                     masked copies, the word itself and every entry that is not
                     a whole word (word_vocab_mask) excluded in the graph;
  multi-piece word   the K nearest whole-word vocab entries, by cosine, to the
                     mean of its pieces' input embeddings (EmbeddingNeighbours).
                     TinyBERT used GloVe vectors; this machine has no GloVe,
                     so a BERT's own word-embedding table stands in.

The masked LM sees the side alone: `[CLS] pieces [SEP]` with the word's piece
replaced by [MASK] (TinyBERT also appends the unmasked sentence as segment B;
that doubles the cost and is left out), at most `max_seq_length` tokens, a
window centred on the word for longer texts.

Shape legend: B = batch, L = sequence length, V = vocab size, H = hidden size,
K = candidates per word, W = whole-word vocab entries, Q = queries.
"""

import numpy as np
import tensorflow as tf

from pipeline.text import augmentation

_EXCLUDED = -1e9  # added to the logits of entries that may not be candidates


def _bucket(length, step=16):
  """Pads batches to a multiple of `step`: few shapes, little padding."""
  return -(-length // step) * step


class MlmCandidates:
  """Top-K masked-LM predictions for single-piece words, batched."""

  def __init__(self, model, word_mask, top_k, max_seq_length, batch_size, special_ids):
    """special_ids: (cls, sep, mask) ids of the vocab."""
    self.model, self.top_k = model, top_k
    self.max_seq_length, self.batch_size = max_seq_length, batch_size
    self.cls_id, self.sep_id, self.mask_id = special_ids
    self.bias = tf.constant(np.where(word_mask, 0.0, _EXCLUDED).astype(np.float32))  # [V]
    spec = tf.TensorSpec([None, None], tf.int32)
    self.step = tf.function(self._top_k, input_signature=[
        spec, spec, tf.TensorSpec([None, 1], tf.int32), tf.TensorSpec([None], tf.int32)])

  def _top_k(self, input_ids, input_mask, positions, exclude):
    """ids [B,L], mask [B,L], masked positions [B,1], word ids [B] -> ids and
    logits of the top K allowed entries, [B,K] each."""
    inputs = {"input_ids": input_ids, "input_mask": input_mask,
              "segment_ids": tf.zeros_like(input_ids), "masked_lm_positions": positions}
    logits = self.model(inputs, training=False)["mlm_logits"][:, 0, :]  # [B,V]
    vocab_size = tf.shape(logits)[-1]
    logits += self.bias + _EXCLUDED * tf.one_hot(exclude, vocab_size)
    top = tf.math.top_k(logits, k=self.top_k)
    return top.indices, top.values

  def _window(self, piece_ids, position):
    """[CLS] window [SEP] with the piece at `position` masked, and the index of
    the mask: the whole side if it fits, else a window centred on the word."""
    room = self.max_seq_length - 2
    start = min(max(0, position - room // 2), max(0, len(piece_ids) - room))
    ids = [self.cls_id, *piece_ids[start:start + room].tolist(), self.sep_id]
    ids[position - start + 1] = self.mask_id
    return ids, position - start + 1

  def __call__(self, requests):
    """requests: [(side piece ids int32 [P], piece position)] -> [[vocab id]] of
    at most K allowed candidates each, best first."""
    found = []
    for i in range(0, len(requests), self.batch_size):
      found += self._batch(requests[i:i + self.batch_size])
    return found

  def _batch(self, requests):
    windows = [self._window(ids, pos) for ids, pos in requests]
    length = _bucket(max(len(w) for w, _ in windows))
    input_ids = np.zeros((len(windows), length), np.int32)
    input_mask = np.zeros_like(input_ids)
    for row, (ids, _) in enumerate(windows):
      input_ids[row, :len(ids)], input_mask[row, :len(ids)] = ids, 1
    positions = np.array([[pos] for _, pos in windows], np.int32)
    exclude = np.array([ids[pos] for ids, pos in requests], np.int32)
    indices, values = self.step(input_ids, input_mask, positions, exclude)
    keep = values.numpy() > _EXCLUDED / 2  # fewer than K allowed entries: drop the rest
    return [row[ok].tolist() for row, ok in zip(indices.numpy(), keep)]


class EmbeddingNeighbours:
  """The K whole-word vocab entries nearest (cosine) to a word's mean piece
  embedding."""

  def __init__(self, table, word_mask, top_k):
    """table: float [V,H] input word embeddings; word_mask: bool [V]."""
    self.table = np.asarray(table, np.float32)
    self.word_ids = np.flatnonzero(word_mask)  # [W]
    words = self.table[self.word_ids]
    self.unit = words / np.maximum(np.linalg.norm(words, axis=1, keepdims=True), 1e-12)
    self.top_k = min(top_k, len(self.word_ids))

  def __call__(self, piece_lists):
    """piece_lists: [[piece id]] -> [[vocab id]] (K each, nearest first; ties
    by id, so the order never depends on the sort)."""
    if not piece_lists or not self.top_k:
      return [[] for _ in piece_lists]
    queries = np.stack([self.table[list(p)].mean(axis=0) for p in piece_lists])  # [Q,H]
    queries /= np.maximum(np.linalg.norm(queries, axis=1, keepdims=True), 1e-12)
    scores = queries @ self.unit.T  # [Q,W]
    k = self.top_k
    near = np.argpartition(-scores, k - 1, axis=1)[:, :k]  # [Q,K], unordered
    found = []
    for row, cols in zip(scores, near):
      order = np.lexsort((cols, -row[cols]))  # best score first, then lower id
      found.append(self.word_ids[cols[order]].tolist())
    return found


class CandidateGenerator:
  """The `generate` callable of pipeline/corpus/augmented_data.py: per side
  plan, per replaceable word, its candidate words."""

  def __init__(self, vocab, mlm, neighbours):
    self.vocab, self.mlm, self.neighbours = vocab, mlm, neighbours

  def __call__(self, plans):
    slots = [(p, s) for p, plan in enumerate(plans) for s, slot in enumerate(plan.slots)]
    by_mlm = [(p, s) for p, s in slots if plans[p].slots[s].source == augmentation.MLM]
    by_embedding = [(p, s) for p, s in slots
                    if plans[p].slots[s].source == augmentation.EMBEDDING]
    ids = {}
    mlm_found = self.mlm([(plans[p].piece_ids, plans[p].slots[s].start) for p, s in by_mlm])
    ids.update(zip(by_mlm, mlm_found))
    near = self.neighbours([plans[p].slots[s].pieces for p, s in by_embedding])
    ids.update(zip(by_embedding, near))
    return [[[self.vocab[i] for i in ids[(p, s)]] for s in range(len(plan.slots))]
            for p, plan in enumerate(plans)]
