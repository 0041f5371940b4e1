"""tf.data input for extractive QA records (create_qa_data output).

Shape legend: B=batch (per rank, per micro-step), S=max_seq_length.

Batches are {input_ids, input_mask, segment_ids [B,S], start_positions,
end_positions, is_impossible, unique_id [B,1]} int32, plus example_index and
doc_span_index [B,1] for evaluation windows (schema.QA_EVAL_FEATURES): a
prediction for window `unique_id` goes back to its question through the
split's examples.jsonl sidecar (pipeline/records/qa_data.py). QA distill
records (extract_teacher_labels on QA records) add teacher_start_logits and
teacher_end_logits float32 [B,S] (stored float16) on the labelled splits.
"""

import dataclasses

from pipeline.core import kinds
from pipeline.inputs import parsing
from pipeline.inputs import split_records
from pipeline.records import schema

TRAIN, DEV = "train", "dev"


@dataclasses.dataclass(frozen=True)
class QaSpec:
  """What a reader and a span model need to know about QA records."""
  max_seq_length: int
  vocab_size: int
  version: str  # "v1.1", or "v2.0" (questions may have no answer).
  eval_splits: tuple  # Splits written with the evaluation features.
  teacher_splits: tuple = ()  # Splits with cached teacher start/end logits.

  @classmethod
  def from_manifest(cls, manifest):
    config = manifest["config"]
    teacher = tuple(config.get("splits", ())) if "teacher_fingerprint" in config else ()
    return cls(int(config["max_seq_length"]), int(config["vocab_size"]), config["version"],
               tuple(config.get("eval_splits", ())), teacher)

  @property
  def has_teacher_logits(self):
    return bool(self.teacher_splits)

  def features(self, split):
    features = schema.QA_EVAL_FEATURES if split in self.eval_splits else schema.QA_FEATURES
    if split in self.teacher_splits:
      features += schema.QA_TEACHER_FEATURES
    return features

  def parse_fn(self, split):
    """serialized records [B] -> {name: [B, length]} (see the module doc)."""
    return parsing.parse_fn(self.features(split), self.max_seq_length)


def read_qa_input(data_dir, vocab_file):
  """(manifest, QaSpec) of completed QA records (or QA distill records) made
  with `vocab_file`.

  Raises:
    InputError: incomplete input, another kind of data, or another vocab.
  """
  _, manifest = kinds.read(data_dir, kinds.QA_RECORDS, kinds.QA_DISTILL_RECORDS)
  kinds.check_vocab(manifest, vocab_file)
  return manifest, QaSpec.from_manifest(manifest)


def train_dataset(data_dir, spec, batch_size, seed, rank=0, world_size=1,
                  shuffle_buffer_size=1000, split=TRAIN):
  """Endless shuffled training batches of this rank's share (drop remainder)."""
  records = split_records.rank_records(data_dir, split, rank, world_size)
  return split_records.train_batches(records, spec.parse_fn(split), batch_size, seed, rank,
                                     shuffle_buffer_size)


def eval_dataset(data_dir, spec, batch_size, split=DEV, rank=0, world_size=1):
  """One pass over this rank's share of a split, in record order (last batch short)."""
  records = split_records.rank_records(data_dir, split, rank, world_size)
  return split_records.eval_batches(records, spec.parse_fn(split), batch_size)
