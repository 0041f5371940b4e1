"""The teacher's compiled step: one batched forward pass + top-k or sampling.

Shape legend: B=batch (static: the last batch of a file is padded), S=seq,
P=predictions, K=truncation factor, V=vocab, R=B*P rows of the distribution,
NB=blocks of the vocab.

Everything from the records to the K (id, value) pairs runs in one
tf.function of fixed shape, so it is traced once; only [B,P,K] results leave
the graph. Over V=30,522 a plain tf.math.top_k costs ~20% of a small
teacher's forward pass on CPU, so both selections work in two levels over
blocks of the vocab: a max (or sum) per block with pooling, then an exact
selection inside the few blocks that can hold the answer.
"""


import numpy as np
import tensorflow as tf

from pipeline.records import schema

_MAX_BLOCK = 32


def block_size(vocab_size, k):
  """Largest power of two <= 32 leaving >= 4K blocks, or 0 (single level)."""
  size = _MAX_BLOCK
  while size >= 4 and vocab_size < 4 * k * size:
    size //= 2
  return size if size >= 4 else 0


def _block_reduce(x, block, pool):
  """x [R,V] -> [R,NB] max or sum per block of `block` ids (last one short)."""
  v = x.shape[1]
  full = v // block
  pooled = pool(x[:, :, tf.newaxis], block, block, "VALID")[:, :, 0]  # [R,V//block]
  if pool is tf.nn.avg_pool1d:
    pooled *= block
  if v % block:
    rest = x[:, full * block:]
    rest = tf.reduce_max(rest, -1, True) if pool is tf.nn.max_pool1d else (
        tf.reduce_sum(rest, -1, True))
    pooled = tf.concat([pooled, rest], -1)
  return pooled


def _block_members(blocks, block, v):
  """Block indices [R,C] -> their ids [R,C,block] and which are < V."""
  ids = blocks[:, :, tf.newaxis] * block + tf.range(block)
  return tf.minimum(ids, v - 1), ids < v


def block_topk(probs, k, block):
  """Exact top-k of probs [R,V] -> (values [R,k], ids [R,k] int32).

  Ties go to the lower id, as in tf.math.top_k. Every top-k element lies in
  one of the k blocks with the largest maxima (a block outside them is
  beaten by k blocks, each holding an element that beats all of its own),
  so the k*block members of those blocks are the only candidates.
  """
  if not block:
    values, ids = tf.math.top_k(probs, k)
    return values, ids
  r, v = probs.shape
  _, blocks = tf.math.top_k(_block_reduce(probs, block, tf.nn.max_pool1d), k)
  blocks = tf.sort(blocks, -1)  # ascending ids: top_k's tie order survives
  ids, valid = _block_members(blocks, block, v)  # [R,k,block]
  ids, valid = tf.reshape(ids, [r, -1]), tf.reshape(valid, [r, -1])
  candidates = tf.where(valid, tf.gather(probs, ids, batch_dims=1), -1.0)
  values, picked = tf.math.top_k(candidates, k)  # probabilities are >= 0
  return values, tf.gather(ids, picked, batch_dims=1)


def _below(x):
  # The largest float32 below x: a draw never lands on the end of a CDF.
  return tf.math.nextafter(x, tf.zeros_like(x))


def _invert(cdf, targets):
  """Index of the first cdf entry > target; cdf [R,N], targets [R,C]."""
  return tf.searchsorted(cdf, targets, side="right", out_type=tf.int32)


def sample_ids(probs, uniforms, block):
  """Inverse-CDF draws: probs [R,V], uniforms [R,K] in [0,1) -> ids [R,K].

  Draw j of row r is id i with probability probs[r,i] / sum(probs[r]).
  Two levels when `block`: one uniform picks the block by the CDF of block
  sums, then where it fell inside that block's mass (rescaled to [0,1))
  picks the id by the block's own CDF; exact, and ids of probability 0 are
  never drawn.
  """
  if not block:
    cdf = tf.math.cumsum(probs, -1)  # [R,V]
    return _invert(cdf, _below(cdf[:, -1:]) * uniforms)
  r, v = probs.shape
  sums = _block_reduce(probs, block, tf.nn.avg_pool1d)  # [R,NB]
  cdf = tf.math.cumsum(sums, -1)
  targets = tf.minimum(uniforms * cdf[:, -1:], _below(cdf[:, -1:]))  # [R,K]
  blocks = tf.minimum(_invert(cdf, targets), sums.shape[1] - 1)
  start = tf.gather(cdf, blocks, batch_dims=1) - tf.gather(sums, blocks, batch_dims=1)
  share = (targets - start) / tf.gather(sums, blocks, batch_dims=1)
  share = tf.clip_by_value(share, 0.0, _below(tf.ones_like(share)))  # [R,K]
  ids, valid = _block_members(blocks, block, v)  # [R,K,block]
  inner = tf.math.cumsum(tf.where(valid, tf.gather(probs, ids, batch_dims=1), 0.0), -1)
  inner = tf.reshape(inner, [-1, block])  # [R*K,block]
  offsets = _invert(inner, tf.reshape(share, [-1, 1]) * _below(inner[:, -1:]))
  return blocks * block + tf.reshape(offsets, [r, -1])


def input_signature(batch_size, seq_length, max_predictions):
  lengths = {"masked_lm_positions": max_predictions}
  return {name: tf.TensorSpec([batch_size, lengths.get(name, seq_length)], tf.int32,
                              name=name) for name in schema.PRETRAINING_MODEL_INPUTS}


def _distribution(model, features, temperature):
  """p_T rows [B*P,V] float32 and NSP logits [B,2] of one forward pass."""
  outputs = model(features, training=False)
  logits = outputs["mlm_logits"]  # [B,P,V] float32
  if temperature != 1.0:
    logits = logits / temperature
  probs = tf.nn.softmax(logits)
  return tf.reshape(probs, [-1, probs.shape[-1]]), outputs["nsp_logits"]


def make_step(model, method, k, temperature, shapes):
  """The compiled step of a label method.

  Args:
    model: a BertPretrainer (mlm_logits float32 [B,P,V]).
    method: "topk" or "sampled"; k: K; temperature: T.
    shapes: (B, S, P), static.
  Returns:
    tf.function: topk: step(features) -> {ids [B,P,K] int32, values
    [B,P,K] float32, tail [B,P], nsp [B,2]}; sampled: step(features,
    uniforms [B,P,K]) -> {draws [B,P,K] int32, nsp [B,2]}.
  """
  b, _, p = shapes
  signature = input_signature(*shapes)
  blk = block_size(model.config.vocab_size, k)
  if method == "topk":
    @tf.function(input_signature=[signature])
    def topk_step(features):
      probs, nsp = _distribution(model, features, temperature)
      values, ids = block_topk(probs, k, blk)  # [B*P,K]
      tail = tf.maximum(1.0 - tf.reduce_sum(values, -1), 0.0)  # float32, pre-rounding
      return {"ids": tf.reshape(ids, [b, p, k]), "values": tf.reshape(values, [b, p, k]),
              "tail": tf.reshape(tail, [b, p]), "nsp": nsp}
    return topk_step

  @tf.function(input_signature=[signature, tf.TensorSpec([b, p, k], tf.float32)])
  def sampled_step(features, uniforms):
    probs, nsp = _distribution(model, features, temperature)
    draws = sample_ids(probs, tf.reshape(uniforms, [b * p, k]), blk)
    return {"draws": tf.reshape(draws, [b, p, k]), "nsp": nsp}
  return sampled_step


def make_forward(model, shapes):
  """The bare compiled forward pass (the benchmark's baseline)."""
  @tf.function(input_signature=[input_signature(*shapes)])
  def forward(features):
    outputs = model(features, training=False)
    return outputs["mlm_logits"], outputs["nsp_logits"]
  return forward


def _pad_rows(x, rows):
  pad = [[0, rows - tf.shape(x)[0]]] + [[0, 0]] * (len(x.shape) - 1)
  return tf.ensure_shape(tf.pad(x, pad), [rows] + x.shape[1:])


def records_batches(paths, shapes, k=None, uniforms_fn=None, prefetch=2, keep=None):
  """Batches of several records files in order, padded to B rows, read ahead.

  One pipeline for all files, so reading runs ahead across file boundaries;
  a batch never mixes files.

  Args:
    paths: records files (pretraining or distill records).
    shapes: (B, S, P).
    k: K, with uniforms_fn: for sampling, f(serialized records [m]) ->
      float32 [m,P,K] (run on the host inside tf.data).
    keep: optional bool array [N_f] per path: only the records marked True
      are batched (in order); the others are skipped.
  Returns:
    tf.data.Dataset of {"file": index in paths, "records": [m] serialized,
    "count": m, "features": model inputs [B,...] int32, "weights":
    masked_lm_weights [B,P], and "uniforms" [B,P,K] with uniforms_fn}.
  """
  b, s, p = shapes
  spec = schema.tf_feature_spec(schema.PRETRAINING_FEATURES, s, p)

  def prepare(file_index, records):
    parsed = tf.io.parse_example(records, spec)
    out = {"file": file_index, "records": records, "count": tf.shape(records)[0],
           "features": {n: _pad_rows(tf.cast(parsed[n], tf.int32), b)
                        for n in schema.PRETRAINING_MODEL_INPUTS},
           "weights": _pad_rows(parsed["masked_lm_weights"], b)}
    if uniforms_fn is not None:
      uniforms = tf.numpy_function(uniforms_fn, [records], tf.float32, stateful=False)
      out["uniforms"] = _pad_rows(tf.reshape(uniforms, [-1, p, k]), b)
    return out

  kept = _kept_records(keep)

  def file_dataset(file_index, path):
    records = tf.data.TFRecordDataset(path)
    if kept is not None:
      records = kept(file_index, records)
    return records.batch(b).map(lambda batch: prepare(file_index, batch))

  files = tf.data.Dataset.from_tensor_slices((tf.range(len(paths)), list(paths)))
  return files.flat_map(file_dataset).prefetch(prefetch)


def _kept_records(keep):
  """f(file index, records dataset) -> the kept records, or None for all."""
  if keep is None:
    return None
  flags = tf.constant(np.concatenate([np.asarray(x, bool) for x in keep] + [[False]]))
  starts = tf.constant(np.cumsum([0] + [len(x) for x in keep]), tf.int64)

  def kept(file_index, records):
    start = starts[file_index]
    return records.enumerate().filter(lambda i, _: flags[start + i]).map(lambda _, r: r)
  return kept
