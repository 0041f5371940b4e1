"""Generated classification tasks with a learnable rule, as stage outputs.

Two tasks over a 40-token vocab (ids 5.. are words, MARKERS among them):

  single  3 labels: one sentence holding exactly one marker; the label is
          which marker (so a short fine-tune reaches high accuracy).
  pair    2 labels: two segments, MARKERS[0] in exactly one of them; the
          label is the segment (needs the segment embeddings).

write_task writes what tools/create_classification_data.py writes
(manifest with labels, num_labels, max_seq_length, vocab_size and
vocab_sha256; `<split>/part-00000.tfrecord`; COMPLETED), or, with
`teacher_logits`, what tools/extract_teacher_labels.py --task writes.
"""

import os

import numpy as np

from pipeline.records import schema
from pipeline.core import stage
from pipeline.records import tfrecord

SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
VOCAB_SIZE = 40
CLS, SEP = 2, 3
MARKERS = (5, 6, 7)
_FILLER = np.arange(8, VOCAB_SIZE)
LABELS = {"single": ("first", "second", "third"), "pair": ("in_a", "in_b")}


def write_vocab(path):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "w", encoding="utf-8") as f:
    for token in SPECIALS + tuple(f"w{i}" for i in range(VOCAB_SIZE - 5)):
      f.write(token + "\n")
  return str(path)


def _single(rng, seq_length):
  label = int(rng.integers(3))
  n = int(rng.integers(3, seq_length - 2))
  words = rng.choice(_FILLER, n)
  words[rng.integers(n)] = MARKERS[label]
  return [CLS, *words, SEP], [0] * (n + 2), label


def _pair(rng, seq_length):
  label = int(rng.integers(2))
  n_a = int(rng.integers(2, (seq_length - 3) // 2 + 1))
  n_b = int(rng.integers(2, (seq_length - 3) // 2 + 1))
  a, b = rng.choice(_FILLER, n_a), rng.choice(_FILLER, n_b)
  target = b if label else a
  target[rng.integers(len(target))] = MARKERS[0]
  ids = [CLS, *a, SEP, *b, SEP]
  return ids, [0] * (n_a + 2) + [1] * (n_b + 1), label


def make_examples(kind, n, seq_length=16, seed=0):
  """{input_ids, input_mask, segment_ids [n,S], label_ids [n,1]} (int64)."""
  rng = np.random.default_rng(seed)
  make = {"single": _single, "pair": _pair}[kind]
  columns = {k: np.zeros((n, seq_length), np.int64)
             for k in ("input_ids", "input_mask", "segment_ids")}
  columns["label_ids"] = np.zeros((n, 1), np.int64)
  for i in range(n):
    ids, segments, label = make(rng, seq_length)
    columns["input_ids"][i, :len(ids)] = ids
    columns["input_mask"][i, :len(ids)] = 1
    columns["segment_ids"][i, :len(ids)] = segments
    columns["label_ids"][i, 0] = label
  return columns


def rule_logits(label_ids, num_labels, margin=4.0, seed=0):
  """A confident "teacher": margin on the true label plus noise: [n,C]."""
  rng = np.random.default_rng(seed)
  labels = np.asarray(label_ids).reshape(-1)
  logits = rng.normal(0.0, 0.5, (len(labels), num_labels))
  logits[np.arange(len(labels)), labels] += margin
  return logits.astype(np.float32)


def _write_records(path, columns, features):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  dtypes = {f.name: f.dtype for f in features}
  with tfrecord.TFRecordWriter(path) as writer:
    writer.write_batch(*tfrecord.encode_examples(columns, dtypes))


def write_task(directory, vocab_file, kind, splits, seq_length=16, seed=0,
               teacher_logits=None):
  """Writes a completed task directory; returns it.

  Args:
    splits: {split name: example columns (make_examples)}.
    teacher_logits: None, or {split name: float32 [n,C]} for task distill
      records.
  """
  features = schema.CLASSIFICATION_FEATURES
  stage_name = "create_classification_data"
  if teacher_logits is not None:
    features, stage_name = schema.TASK_DISTILL_FEATURES, "extract_teacher_labels"
  files, counts = [], {}
  for split, columns in splits.items():
    columns = dict(columns)
    if teacher_logits is not None:
      columns["teacher_logits"] = teacher_logits[split]
    name = f"{split}/part-00000.tfrecord"
    _write_records(os.path.join(directory, name), columns, features)
    files.append({"name": name, "bytes": os.path.getsize(os.path.join(directory, name)),
                  "sha256": stage.file_sha256(os.path.join(directory, name))})
    counts[f"{split}_examples"] = len(columns["label_ids"])
  labels = LABELS[kind]
  config = {"task": kind, "labels": list(labels), "num_labels": len(labels),
            "max_seq_length": seq_length, "vocab_size": VOCAB_SIZE,
            "vocab_sha256": stage.file_sha256(vocab_file), "seed": seed}
  if teacher_logits is not None:
    config["temperature"] = 1.0
  manifest = {"stage": stage_name, "config": config, "counts": counts, "files": files}
  stage.atomic_write_text(os.path.join(directory, "manifest.json"), stage.json_dumps(manifest))
  open(os.path.join(directory, "COMPLETED"), "w").close()
  return str(directory)
