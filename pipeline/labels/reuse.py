"""Reusing an earlier label cache: unchanged records keep their distill records.

A distill record is a function of its source (pretraining) record's bytes and
of the teacher settings alone: top-k labels come from one forward pass over
the record, and sampled labels from uniforms seeded by the record's digest
(packed_labels.record_uniforms). So when an earlier cache was made with the
same settings (the same teacher fingerprint but for the records manifest), a
record whose exact bytes it holds gets its earlier distill record, copied byte
for byte, and only the others go through the teacher.

Records are matched by a 128-bit BLAKE2b digest of the source record, which
each output file keeps in a `<name>.sources.npy` sidecar (SOURCES_DTYPE, one
row per record, in record order) with the per-record counts its stats need.
Matching is per file name: a page's records stay in their shard from one
corpus version to the next (shards are chosen by page id).
"""

import dataclasses
import mmap
import os
import sys

import numpy as np

from pipeline.core import stage
from pipeline.labels import packed_labels
from pipeline.records import tfrecord
from pipeline.core.errors import InputError

# digest: BLAKE2b-128 of the source record; the counts are the distill
# record's (real masked positions n, its size in the list layout of the stats).
SOURCES_DTYPE = np.dtype([("digest", "V16"), ("masked_positions", "<i4"),
                          ("lists_layout_bytes", "<i4")])
# Config keys that do not decide a record's labels.
_NOT_LABELS = ("teacher_fingerprint", "reuse_from")


def sources_name(name):
  """"train/part-00000.tfrecord" -> "train/part-00000.sources.npy"."""
  return name[:-len(".tfrecord")] + ".sources.npy"


def source_rows(records, masked_positions, lists_layout_bytes):
  """SOURCES_DTYPE rows [M] of M source records (bytes) and their counts."""
  rows = np.zeros(len(records), SOURCES_DTYPE)
  rows["digest"] = digests(records)
  rows["masked_positions"] = masked_positions
  rows["lists_layout_bytes"] = lists_layout_bytes
  return rows


def digests(records):
  """[M] V16 digests of serialized records."""
  return np.array([packed_labels.record_digest(r) for r in records], "V16").reshape(-1)


def label_identity(config):
  """What decides each record's labels: the config but its records manifest."""
  return {k: v for k, v in config.items() if k not in _NOT_LABELS}


def reuse_config(config, reuse_dir, stage_name):
  """`config` with reuse_from set when `reuse_dir` is a completed cache made
  with the same label identity; else unchanged, with the reason printed."""
  if not reuse_dir:
    return config
  try:
    manifest = stage.read_input(reuse_dir, stage_name)
  except InputError as e:
    print(f"{stage_name}: not reusing {reuse_dir}: {e.cause}", file=sys.stderr)
    return config
  theirs, ours = label_identity(manifest["config"]), label_identity(config)
  if theirs != ours:
    differ = sorted(k for k in set(theirs) | set(ours) if theirs.get(k) != ours.get(k))
    print(f"{stage_name}: not reusing {reuse_dir}: another teacher fingerprint "
          f"(differs in: {', '.join(differ)})", file=sys.stderr)
    return config
  if not any(f["name"].endswith(".sources.npy") for f in manifest["files"]):
    print(f"{stage_name}: not reusing {reuse_dir}: it has no per-record digests "
          f"(.sources.npy; made by an older version)", file=sys.stderr)
    return config
  return dict(config, reuse_from=manifest["_sha256"])


class OldFile:
  """The records of an earlier distill file, by index (memory-mapped).

  Framing and both CRCs are checked once when the file is opened.
  """

  def __init__(self, path):
    self._map = b""
    if os.path.getsize(path):  # mmap refuses empty files
      with open(path, "rb") as f:
        self._map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    self._starts, self._lengths = _scan(path)

  def __len__(self):
    return len(self._starts)

  def close(self):
    if isinstance(self._map, mmap.mmap):
      self._map.close()

  def record(self, index):
    start = self._starts[index]
    return self._map[start:start + self._lengths[index]]


def _scan(path):
  """(payload offsets, lengths) of every record of a TFRecord file, CRCs checked."""
  starts, lengths = [], []
  for start, data in tfrecord.iter_framed(path):
    starts.append(start)
    lengths.append(len(data))
  return starts, lengths


@dataclasses.dataclass
class FilePlan:
  """Which records of one output file are copied, and from where.

  old_index: int64 [N] per record of the file, its index in the earlier
    distill file, or -1 when its labels must be computed.
  old_rows: the earlier file's SOURCES_DTYPE rows; old_path: the earlier file.
  """
  old_index: np.ndarray
  old_rows: np.ndarray
  old_path: str
  _old: OldFile = None

  @property
  def computed(self):
    """Record indices [C] whose labels are computed, in order."""
    return np.flatnonzero(self.old_index < 0)

  def old_record(self, index):
    if self._old is None:
      self._old = OldFile(self.old_path)
      if len(self._old) != len(self.old_rows):
        raise InputError(self.old_path, f"{len(self._old)} records for "
                         f"{len(self.old_rows)} rows in its sources sidecar")
    return self._old.record(index)

  def close(self):
    if self._old is not None:
      self._old.close()
      self._old = None


def plan_file(source_path, old_dir, name):
  """The FilePlan of output `name` from its source records file and the
  earlier cache `old_dir`; every record is computed when the earlier cache
  has no such file (or no sources sidecar)."""
  new = digests(tfrecord.iter_records(source_path))
  old_path, rows_path = (os.path.join(old_dir, n) for n in (name, sources_name(name)))
  if not (os.path.exists(old_path) and os.path.exists(rows_path)):
    return FilePlan(np.full(len(new), -1, np.int64), np.zeros(0, SOURCES_DTYPE), old_path)
  old_rows = np.load(rows_path, allow_pickle=False)
  if old_rows.dtype != SOURCES_DTYPE:
    raise InputError(rows_path, f"dtype {old_rows.dtype} is not {SOURCES_DTYPE}")
  return FilePlan(_match(new, old_rows["digest"]), old_rows, old_path)


def _match(new, old):
  """Index in `old` [M] of each of `new` [N] (V16 digests), or -1."""
  if not len(old):
    return np.full(len(new), -1, np.int64)
  order = np.argsort(old, kind="stable")
  at = np.minimum(np.searchsorted(old[order], new), len(old) - 1)
  return np.where(old[order][at] == new, order[at], -1).astype(np.int64)
