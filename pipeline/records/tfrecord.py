"""TFRecord files of tf.train.Example protos, written without TensorFlow.

The data stages run in many worker processes; importing TensorFlow in each costs
seconds and hundreds of MB, and building protos one by one in Python costs more
than making the instances. So a batch of examples is encoded at once with numpy:
every feature is a fixed-length row, so the protobuf wire format of the whole
batch is a few vectorised varint encodings and one masked gather. Map entries are
emitted in sorted key order, which is what `SerializeToString(deterministic=True)`
produces, so the bytes are canonical and tests can compare them with protobuf's.
"""

import struct

import google_crc32c
import numpy as np

from pipeline.core import stage
from pipeline.core.errors import CorruptRecordError
from pipeline.records.schema import BYTES, FLOAT

_MASK_DELTA = 0xA282EAD8


def masked_crc32c(data):
  crc = google_crc32c.value(data)
  return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


# A "piece" is (bytes [N, W] uint8, valid [N, W] bool): row i contributes
# bytes[i][valid[i]]. Concatenating pieces along axis 1 concatenates records.


def _const(n, data):
  arr = np.frombuffer(bytes(data), np.uint8)
  return np.broadcast_to(arr, (n, arr.size)), np.ones((n, arr.size), bool)


def _varints(values):
  """Protobuf varints of non-negative ints [N, L] -> piece [N, L*maxb], lengths [N]."""
  v = np.asarray(values)
  if v.size and v.min() < 0:
    raise ValueError("negative values are not supported by this encoder")
  # uint32 arithmetic is much cheaper than uint64 and covers every id we store.
  v = v.astype(np.uint32 if (not v.size or v.max() < 2**32) else np.uint64)
  nb = np.ones(v.shape, np.uint8)
  for k in range(1, 10):
    more = v >= (1 << (7 * k))
    if not more.any():
      break
    nb += more
  maxb = k
  n = v.shape[0]
  if maxb == 1:  # masks, segment ids, positions < 128: one byte each, all valid
    data = v.astype(np.uint8).reshape(n, -1)
    return (data, np.ones(data.shape, bool)), np.full(n, data.shape[1], np.int64)
  out = np.empty(v.shape + (maxb,), np.uint8)  # [N, L, maxb]
  for j in range(maxb):
    out[..., j] = ((v >> (7 * j)) & 0x7F) | ((nb > j + 1) << 7)
  valid = np.arange(maxb, dtype=np.uint8) < nb[..., None]
  return (out.reshape(n, -1), valid.reshape(n, -1)), nb.reshape(n, -1).sum(1, dtype=np.int64)


def _floats(values):
  v = np.ascontiguousarray(values, dtype="<f4")
  n = v.shape[0]
  data = v.view(np.uint8).reshape(n, -1)
  return (data, np.ones(data.shape, bool)), np.full(n, data.shape[1], np.int64)


def _packed_bytes(values):
  """One bytes value per row: (data [N, W] uint8, lengths [N]) -> BytesList
  payload piece (tag, varint length, data) and its lengths [N]."""
  data, lengths = values
  data = np.ascontiguousarray(data, dtype=np.uint8)
  lengths = np.asarray(lengths, np.int64)
  valid = np.arange(data.shape[1])[None, :] < lengths[:, None]
  return _length_prefixed(0x0A, [(data, valid)], lengths)


def _length_prefixed(tag, pieces, length):
  """tag byte, varint(length), then the pieces; returns (pieces, total length)."""
  n = length.shape[0]
  len_piece, len_bytes = _varints(length[:, None])
  return [_const(n, [tag]), len_piece] + pieces, 1 + len_bytes + length


def _feature_pieces(name, dtype, values):
  """One map entry `name -> Feature` of the Features message."""
  if dtype == BYTES:
    n = values[0].shape[0]
    lst, llen = _packed_bytes(values)  # BytesList.value (a single element)
  else:
    n = values.shape[0]
    payload, plen = (_floats if dtype == FLOAT else _varints)(values)
    lst, llen = _length_prefixed(0x0A, [payload], plen)  # Int64List/FloatList.value
  kind_tag = {BYTES: 0x0A, FLOAT: 0x12}.get(dtype, 0x1A)  # Feature.bytes/float/int64_list
  feat, flen = _length_prefixed(kind_tag, lst, llen)
  key = name.encode()
  assert len(key) < 128, "feature names are one-byte length-prefixed"
  entry_key = _const(n, [0x0A, len(key)] + list(key))  # MapEntry.key
  entry_value, vlen = _length_prefixed(0x12, feat, flen)  # MapEntry.value
  return _length_prefixed(0x0A, [entry_key] + entry_value, 2 + len(key) + vlen)


def encode_examples(columns, dtypes):
  """Serialises N tf.train.Examples at once.

  Args:
    columns: {feature name: array [N, L]} (all the same N); a BYTES feature is
      (uint8 data [N, W], lengths [N]): row i's value is data[i, :lengths[i]].
    dtypes: {feature name: INT64, FLOAT or BYTES}.
  Returns:
    (flat uint8 array of all records back to back, int64 array [N] of lengths).
  """
  names = sorted(columns)  # deterministic serialisation orders map keys
  first = columns[names[0]]
  n = (first[0] if dtypes[names[0]] == BYTES else first).shape[0]
  pieces, total = [], np.zeros(n, np.int64)
  for name in names:
    values = columns[name] if dtypes[name] == BYTES else np.asarray(columns[name])
    p, plen = _feature_pieces(name, dtypes[name], values)
    pieces += p
    total += plen
  pieces, _ = _length_prefixed(0x0A, pieces, total)  # Example.features
  data = np.concatenate([p[0] for p in pieces], axis=1)
  valid = np.concatenate([p[1] for p in pieces], axis=1)
  return data[valid], valid.sum(1)


class TFRecordWriter:
  """Appends records with TFRecord framing (length, masked CRC32C of both)."""

  def __init__(self, path):
    self._f = open(path, "wb")
    self.count = 0

  def write_batch(self, flat, lengths):
    buf = flat.tobytes()
    parts, off = [], 0
    for n in lengths.tolist():
      header = struct.pack("<Q", n)
      parts += [header, struct.pack("<I", masked_crc32c(header)),
                buf[off:off + n], struct.pack("<I", masked_crc32c(buf[off:off + n]))]
      off += n
    self._f.write(b"".join(parts))
    self.count += len(lengths)

  def write_raw(self, record):
    """Appends one already-serialized record (e.g. copied from another file)."""
    header = struct.pack("<Q", len(record))
    self._f.write(b"".join([header, struct.pack("<I", masked_crc32c(header)), record,
                            struct.pack("<I", masked_crc32c(record))]))
    self.count += 1

  def close(self):
    self._f.close()

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()


def iter_framed(path, sha256=None):
  """Yields (payload offset, payload) of each record of a TFRecord file, checking
  both CRCs of each record: the one framing reader of the project.

  sha256: the file's hash from its stage manifest, checked in the same pass
  (InputError at the end of the file on a mismatch), or None.
  Raises:
    CorruptRecordError: a CRC mismatch or a truncated record; byte N is where
      the record's 12-byte header starts (TensorFlow's DataLossError counts from
      its payload, 12 bytes later).
  """
  with stage.verified_open(path, sha256) as f:
    offset = 0
    while header := f.read(8):
      crc = f.read(4)
      if len(header) < 8 or len(crc) < 4:
        raise CorruptRecordError(path, offset, "truncated record header")
      if struct.unpack("<I", crc)[0] != masked_crc32c(header):
        raise CorruptRecordError(path, offset)
      (n,) = struct.unpack("<Q", header)
      data, crc = f.read(n), f.read(4)
      if len(data) < n or len(crc) < 4:
        raise CorruptRecordError(path, offset, "truncated record")
      if struct.unpack("<I", crc)[0] != masked_crc32c(data):
        raise CorruptRecordError(path, offset)
      yield offset + 12, data
      offset += 16 + n


def iter_records(path, sha256=None):
  """Yields the payloads of a TFRecord file (see iter_framed)."""
  for _, data in iter_framed(path, sha256):
    yield data


def check_file(path, sha256=None):
  """Reads a whole TFRecord file once, checking every CRC (and its sha256);
  returns the number of records."""
  return sum(1 for _ in iter_records(path, sha256))
