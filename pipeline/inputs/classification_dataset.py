"""tf.data input for classification and task-distill records.

Shape legend: B=batch (per rank, per micro-step), S=max_seq_length, C=number
of labels.

Inputs are the output of tools/create_classification_data.py
(schema.CLASSIFICATION_FEATURES: input_ids, input_mask, segment_ids [S],
label_ids [1]) or of tools/extract_teacher_labels.py --task, which adds the
fine-tuned teacher's logits (schema.TASK_TEACHER_FEATURES: teacher_logits
[C] float32, temperature 1). A directory holds `<split>/*.tfrecord` for
splits such as train, dev and test, and a manifest.json whose config gives
max_seq_length, num_labels, labels and the vocab (vocab_size, vocab_sha256).

Batches are dicts of int32 [B,S] inputs, label_ids int32 [B,1] and, for
task-distill records, teacher_logits float32 [B,C].

Sharding is by RECORD for training and evaluation alike: rank r of N keeps
records r, r+N, ... of the split's files read in sorted order. Task data
sets are small and often a single file, so every rank reads the files and
keeps its share; the N ranks' micro-batches of B together are exactly the
records one process would batch in N*B when shuffling is off (the mpirun
tests rely on it), and an eval row's global index is r + N*i (used to put
the ranks' predictions back in record order).
"""

import dataclasses
import os

import tensorflow as tf

from pipeline.core import kinds
from pipeline.core.errors import InputError
from pipeline.inputs import parsing
from pipeline.inputs import split_records
from pipeline.records import schema

TRAIN, DEV, TEST = "train", "dev", "test"


@dataclasses.dataclass(frozen=True)
class TaskSpec:
  """What a reader and a model need to know about a task's records."""
  max_seq_length: int
  num_labels: int
  labels: tuple  # Label names; index = label id.
  vocab_size: int
  has_teacher_logits: bool

  @classmethod
  def from_manifest(cls, manifest):
    config = manifest["config"]
    missing = [k for k in ("max_seq_length", "num_labels", "vocab_size")
               if k not in config]
    if missing:
      raise InputError(manifest["_dir"], f"manifest config lacks {missing}: "
                       "not classification records")
    labels = tuple(config.get("labels") or
                   [str(i) for i in range(config["num_labels"])])
    return cls(int(config["max_seq_length"]), int(config["num_labels"]),
               labels, int(config["vocab_size"]),
               kinds.from_manifest(manifest) == kinds.TASK_DISTILL_RECORDS)

  @property
  def features(self):
    if self.has_teacher_logits:
      return schema.TASK_DISTILL_FEATURES
    return schema.CLASSIFICATION_FEATURES

  def parse_fn(self):
    """serialized records [B] -> {name: [B, length]} (see the module doc)."""
    return parsing.parse_fn(self.features, self.max_seq_length,
                            num_labels=self.num_labels)


def read_task_input(data_dir, vocab_file, teacher_logits=False):
  """(manifest, TaskSpec) of completed records made with `vocab_file`.

  Args:
    data_dir: classification records, or (teacher_logits=True) task distill
      records (classification records with the teacher's logits).
    vocab_file: the vocab the model was trained with.
  Raises:
    InputError: incomplete input, another kind of data, or another vocab.
  """
  kind = kinds.TASK_DISTILL_RECORDS if teacher_logits else kinds.CLASSIFICATION_RECORDS
  _, manifest = kinds.read(data_dir, kind)
  spec = TaskSpec.from_manifest(manifest)
  kinds.check_vocab(manifest, vocab_file)
  return manifest, spec


def check_labeled(manifest, split):
  """Raises InputError for a split without labels (e.g. GLUE's test)."""
  if split in manifest["config"].get("unlabeled_splits", []):
    raise InputError(os.path.join(manifest["_dir"], split), "this split has no labels "
                     "(unlabeled_splits in the manifest): it cannot be trained or "
                     "evaluated on")


def split_size(manifest, split):
  """Examples in a split: the manifest's count, else the records counted."""
  count = (manifest.get("counts") or {}).get(f"{split}_examples")
  if isinstance(count, int):
    return count
  files = schema.record_paths(manifest["_dir"], split)
  return int(tf.data.TFRecordDataset(files).reduce(
      tf.constant(0, tf.int64), lambda n, _: n + 1).numpy())


def train_dataset(data_dir, spec, batch_size, seed, rank=0, world_size=1,
                  shuffle_buffer_size=1000, split=TRAIN):
  """Endless shuffled training batches of this rank's share (drop remainder)."""
  records = split_records.rank_records(data_dir, split, rank, world_size)
  return split_records.train_batches(records, spec.parse_fn(), batch_size, seed, rank,
                                     shuffle_buffer_size)


def eval_dataset(data_dir, spec, batch_size, split=DEV, rank=0,
                 world_size=1):
  """One pass over this rank's share of a split (last batch may be short)."""
  records = split_records.rank_records(data_dir, split, rank, world_size)
  return split_records.eval_batches(records, spec.parse_fn(), batch_size)
