"""Teacher labels in distill records: packing, reading back, and the estimators.

Shape legend: B=batch, P=max_predictions_per_seq, K=truncation factor (ids
kept per masked position), V=vocab size, n=real masked positions of a record
(= sum(masked_lm_weights); they come first, padding positions carry nothing).

A distill record is the pretraining record, unchanged, plus the
schema.TEACHER_FEATURES: packed little-endian bytes of [n, K] ids (uint16, or
int32 for vocabs over 65,536), [n, K] float16 values and [n] float16 tail
mass, and the two NSP logits. At K=32 that is 4 bytes per (position, k)
entry plus ~0.1 for the tail and the per-record overhead; the same labels as
Int64List ids + FloatList probabilities padded to [P, K] take ~7-8 bytes per
real entry, and a full float32 distribution 4V/K (~3,800 at V=30,522).

Label methods, both targets of a distillation loss sum_k w_k * f(id_k) that
stands in for the expectation E_{p_T}[f] under the teacher's distribution
p_T = softmax(logits / T):

* "topk": the K most probable ids and their p_T (ties: lower id first), and
  the tail mass 1 - sum of those K probabilities, computed in float32 from
  the full distribution before the values are rounded to float16. Biased:
  the tail's mass is dropped or has to be spread by the loss.
* "sampled": Sparse Logit Sampling (Anshumann et al., 2025, "Sparse Logit
  Sampling: Accelerating Knowledge Distillation in LLMs"). K ids are drawn
  i.i.d. from p_T itself; each distinct id is stored once with weight
  count / K (rows padded with id 0, weight 0), and the tail is 0. With the
  proposal q = p_T the paper's importance weights p_T/q are all 1, so the
  weights reduce to counts / K, and E[sum_k w_k f(id_k)] = (1/K) sum_j
  E[f(x_j)] = E_{p_T}[f] exactly: an unbiased estimate of any expectation,
  hence of the cross-entropy to the teacher and of its gradient. We chose
  this proposal because the weights need no stored teacher probabilities
  and are exact multiples of 1/K (exact in float16, summing to exactly 1
  when K is a power of two). A flatter proposal q covers more of the tail
  per draw but needs p_T/q per id, and normalising those weights to sum to
  1 makes the estimate biased. The draws use one uniform per draw from a
  generator seeded by (seed, digest of the record's bytes), so a record's
  labels depend on nothing else: not on batching, ranks, other records or
  where the record sits (which lets a refresh reuse them).
"""

import hashlib

import numpy as np

from pipeline.records import schema
from pipeline.records import tfrecord

METHODS = ("topk", "sampled")
VALUE_DTYPE = "float16"
_ID_DTYPES = {"uint16": "<u2", "int32": "<i4"}
_UINT16_VOCAB = 1 << 16


def id_dtype_for(vocab_size):
  """"uint16" when every id fits in 16 bits, else "int32"."""
  return "uint16" if vocab_size <= _UINT16_VOCAB else "int32"


def label_config(manifest):
  """(K, id dtype, P) of an extract_teacher_labels manifest, for readers."""
  config = manifest["config"]
  return (config["truncation_factor"], config["teacher_id_dtype"],
          config["max_predictions_per_seq"])


# ---------------------------------------------------------------- packing


def _bytes_column(rows, num_real, dtype):
  """rows [M, P, ...] -> (uint8 [M, W], lengths [M]) of the first n rows.

  Real positions are a prefix of P, so each record's bytes are a prefix of
  its row of the little-endian array.
  """
  arr = np.ascontiguousarray(rows, dtype=dtype)
  per_position = int(np.prod(arr.shape[2:], dtype=np.int64)) * arr.itemsize
  data = arr.view(np.uint8).reshape(arr.shape[0], -1)
  return data, np.asarray(num_real, np.int64) * per_position


def teacher_columns(ids, values, tail, nsp_logits, num_real, id_dtype):
  """Encoder columns of the TEACHER_FEATURES for M records.

  Args:
    ids: int [M, P, K] teacher ids; values: float [M, P, K]; tail: [M, P];
      nsp_logits: [M, 2]; num_real: int [M] real masked positions n.
    id_dtype: "uint16" or "int32" (see id_dtype_for).
  Returns:
    (columns, dtypes) for tfrecord.encode_examples.
  """
  columns = {
      "teacher_ids": _bytes_column(ids, num_real, _ID_DTYPES[id_dtype]),
      "teacher_values": _bytes_column(values, num_real, "<f2"),
      "teacher_tail_mass": _bytes_column(tail, num_real, "<f2"),
      "teacher_nsp_logits": np.asarray(nsp_logits, np.float32),
  }
  return columns, {f.name: f.dtype for f in schema.TEACHER_FEATURES}


def _varint(n):
  out = bytearray()
  while True:
    byte, n = n & 0x7F, n >> 7
    out.append(byte | (0x80 if n else 0))
    if not n:
      return bytes(out)


def _example_entries(record):
  """The Features map entries inside a serialized tf.train.Example.

  An Example is one field (tag 0x0A, length) holding the Features message,
  whose bytes are its map entries back to back; appending entries there
  adds features without touching the others.
  """
  if not record or record[0] != 0x0A:
    raise ValueError("not a serialized tf.train.Example with features")
  length, shift, pos = 0, 0, 1
  while True:
    byte = record[pos]
    length |= (byte & 0x7F) << shift
    pos, shift = pos + 1, shift + 7
    if not byte & 0x80:
      break
  if pos + length != len(record):
    raise ValueError("tf.train.Example has fields besides its features")
  return record[pos:]


def append_features(records, extra_flat, extra_lengths):
  """Adds each extra Example's features to the matching record, bytes kept.

  The original features keep their exact bytes; with protobuf's map keys
  sorted ("teacher_*" after every pretraining feature) the result is also
  the canonical serialization of the merged Example.

  Args:
    records: M serialized Examples (bytes).
    extra_flat, extra_lengths: M Examples from tfrecord.encode_examples.
  Returns:
    (flat uint8 array, int64 lengths [M]) for TFRecordWriter.write_batch.
  """
  merged, offset = [], 0
  buf = extra_flat.tobytes()
  for record, n in zip(records, extra_lengths.tolist()):
    entries = _example_entries(record) + _example_entries(buf[offset:offset + n])
    offset += n
    merged.append(b"\x0a" + _varint(len(entries)) + entries)
  lengths = np.fromiter(map(len, merged), np.int64, len(merged))
  return np.frombuffer(b"".join(merged), np.uint8), lengths


def _varint_sizes(values):
  v = np.asarray(values, np.int64)
  return 1 + sum((v >= (1 << (7 * k))).astype(np.int64) for k in range(1, 10))


def _entries_sizes(example_lengths):
  """Bytes of the map entries inside Examples of the given serialized sizes
  (an Example is tag, varint(F), then F bytes of entries)."""
  lengths = np.asarray(example_lengths, np.int64)
  entries = np.zeros_like(lengths)
  for header_varint in range(1, 6):
    guess = lengths - 1 - header_varint
    entries = np.where(_varint_sizes(np.maximum(guess, 0)) == header_varint, guess, entries)
  return entries


def merged_record_bytes(record_lengths, extra_lengths):
  """On-disk bytes (TFRecord framing included) of records merged with
  append_features, from the two Examples' serialized lengths [M]."""
  entries = _entries_sizes(record_lengths) + _entries_sizes(extra_lengths)
  return 16 + 1 + _varint_sizes(entries) + entries


def list_layout_lengths(ids, values, tail, nsp_logits, num_real):
  """Serialized lengths [M] of the same labels as fixed-length BERT lists.

  The layout a first version of such a cache takes (Int64List ids and
  FloatList values padded to [P*K], FloatList tail [P]), for comparison in
  the stage's stats; padding positions are zeros.
  """
  m, p, k = ids.shape
  real = (np.arange(p)[None, :] < np.asarray(num_real)[:, None])  # [M,P]
  columns = {
      "teacher_ids": np.where(real[..., None], ids, 0).reshape(m, p * k),
      "teacher_values": np.where(real[..., None], values, 0).reshape(m, p * k),
      "teacher_tail_mass": np.where(real, tail, 0),
      "teacher_nsp_logits": nsp_logits,
  }
  dtypes = {"teacher_ids": schema.INT64, "teacher_values": schema.FLOAT,
            "teacher_tail_mass": schema.FLOAT, "teacher_nsp_logits": schema.FLOAT}
  return tfrecord.encode_examples(columns, dtypes)[1]


# ---------------------------------------------------------------- sampling


def record_digest(record):
  """The 16-byte BLAKE2b digest of a serialized record: the key a refresh
  matches records by (pipeline/labels/reuse.py) and the sampling seed."""
  return hashlib.blake2b(record, digest_size=16).digest()


def record_uniforms(seed, records, shape):
  """Uniforms in [0, 1), float32 [M, *shape]: record i's come from a
  generator seeded by (seed, the digest of records[i]) alone."""
  out = np.empty((len(records),) + tuple(shape), np.float32)
  for row, record in enumerate(records):
    digest = record_digest(record)
    key = [int.from_bytes(digest[i:i + 8], "little") for i in (0, 8)]
    rng = np.random.default_rng([seed, *key])
    out[row] = rng.random(shape, dtype=np.float32)
  return out


def unique_with_weights(draws):
  """K draws per row -> distinct ids with weights count / K.

  Args:
    draws: int [R, K] sampled ids.
  Returns:
    (ids [R, K], weights float32 [R, K]): each row's distinct ids in
    ascending order, then (0, 0) padding.
  """
  r, k = draws.shape
  ordered = np.sort(draws, axis=1)
  first = np.ones((r, k), bool)
  first[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
  slot = np.cumsum(first, axis=1) - 1  # [R,K] index of each draw's id
  flat_slot = (np.arange(r)[:, None] * k + slot).ravel()
  counts = np.bincount(flat_slot, minlength=r * k).reshape(r, k)
  ids = np.zeros((r, k), draws.dtype)
  rows = np.broadcast_to(np.arange(r)[:, None], (r, k))
  ids[rows[first], slot[first]] = ordered[first]
  return ids, (counts / np.float32(k)).astype(np.float32)


# ---------------------------------------------------------------- reading


def decode_record_targets(features, k, id_dtype):
  """NumPy decoder of one record's teacher features (for tests and tools).

  Args:
    features: {name: bytes} for teacher_ids, teacher_values and
      teacher_tail_mass (each the single BytesList value).
  Returns:
    (ids int32 [n, K], values float32 [n, K], tail float32 [n]).
  """
  ids = np.frombuffer(features["teacher_ids"], _ID_DTYPES[id_dtype])
  values = np.frombuffer(features["teacher_values"], "<f2")
  tail = np.frombuffer(features["teacher_tail_mass"], "<f2")
  return (ids.astype(np.int32).reshape(-1, k),
          values.astype(np.float32).reshape(-1, k), tail.astype(np.float32))


def decode_teacher_targets(parsed_batch, k, id_dtype, max_predictions):
  """TF decoder of a parsed batch of distill records (TF ops, tf.data-safe).

  Args:
    parsed_batch: tf.io.parse_example output with schema.DISTILL_FEATURES
      (see schema.tf_feature_spec): teacher_* bytes are [B] strings.
    k: the truncation factor K; id_dtype: "uint16" or "int32";
    max_predictions: P (see label_config for all three).
  Returns:
    {"teacher_ids": int32 [B,P,K], "teacher_values": float32 [B,P,K],
     "teacher_tail_mass": float32 [B,P]}; rows past each record's n are 0.
  """
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  width = np.dtype(_ID_DTYPES[id_dtype]).itemsize
  ids = tf.io.decode_raw(parsed_batch["teacher_ids"], tf.as_dtype(id_dtype),
                         little_endian=True, fixed_length=max_predictions * k * width)

  def halves(name, count):  # float16 isn't a padded decode type: via uint16
    raw = tf.io.decode_raw(parsed_batch[name], tf.uint16, little_endian=True,
                           fixed_length=count * 2)
    return tf.cast(tf.bitcast(raw, tf.float16), tf.float32)

  return {
      "teacher_ids": tf.reshape(tf.cast(ids, tf.int32), [-1, max_predictions, k]),
      "teacher_values": tf.reshape(halves("teacher_values", max_predictions * k),
                                   [-1, max_predictions, k]),
      "teacher_tail_mass": halves("teacher_tail_mass", max_predictions),
  }
