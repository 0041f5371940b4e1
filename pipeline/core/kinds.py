"""What a stage's output directory holds: the one registry of stage names and kinds.

Every stage writes `manifest.json` with its stage name; this module maps that
name to a *kind* of data, so commands follow their input instead of a mode
flag (`evaluate --input_dir=X` evaluates a classifier when X holds
classification records), and a new kind of records (say, extractive QA) is one
more entry here, not a new flag on five tools.

  kind                    stage (manifest["stage"])     holds
  documents               extract_wiki                  clean article text, JSONL
  text_shards             shard_text                    one sentence per line
  task_data               fetch_task_data               GLUE-style TSV splits
  augmented_task_data     augment_task_data             task splits + TinyBERT-style
                                                        variants (teacher-labelled later)
  pretraining_records     create_pretraining_data       masked LM + NSP TFRecords
  classification_records  create_classification_data    one example per record
  qa_records              create_qa_data                SQuAD windows (extractive QA) +
                                                        the dev split's offsets sidecar
  distill_records         extract_teacher_labels        pretraining records + the
                                                        teacher's top-K / sampled targets
  task_distill_records    extract_task_labels           classification records + the
                                                        teacher's logits
  qa_distill_records      extract_qa_labels             QA records + the teacher's start /
                                                        end logits per window (float16)
  pretraining_run         pretrain, distill             a BertPretrainer's checkpoints
  classifier_run          finetune, distill_task        a BertClassifier's checkpoints
  qa_run                  finetune_qa, distill_qa       a BertSpanLabeler's checkpoints
"""

import dataclasses
import os

from pipeline.core import stage
from pipeline.core.errors import ConfigError, InputError


@dataclasses.dataclass(frozen=True)
class Kind:
  name: str  # The kind of data, e.g. "pretraining_records".
  stages: tuple  # Stage names whose output is of this kind (the first writes new ones).
  what: str  # For messages: "pretraining records".

  @property
  def stage(self):
    """The stage name new outputs of this kind are written under."""
    return self.stages[0]


DOCUMENTS = Kind("documents", ("extract_wiki",), "extracted documents")
TEXT_SHARDS = Kind("text_shards", ("shard_text",), "sentence shards")
TASK_DATA = Kind("task_data", ("fetch_task_data",), "task TSV files")
AUGMENTED_TASK_DATA = Kind("augmented_task_data", ("augment_task_data",),
                           "augmented task files")
PRETRAINING_RECORDS = Kind("pretraining_records", ("create_pretraining_data",),
                           "pretraining records")
CLASSIFICATION_RECORDS = Kind("classification_records", ("create_classification_data",),
                              "classification records")
QA_RECORDS = Kind("qa_records", ("create_qa_data",), "extractive QA records")
DISTILL_RECORDS = Kind("distill_records", ("extract_teacher_labels",),
                       "pretraining records with cached teacher labels")
TASK_DISTILL_RECORDS = Kind("task_distill_records", ("extract_task_labels",),
                            "classification records with cached teacher logits")
QA_DISTILL_RECORDS = Kind("qa_distill_records", ("extract_qa_labels",),
                          "extractive QA records with cached teacher start/end logits")
PRETRAINING_RUN = Kind("pretraining_run", ("pretrain", "distill"), "a pretraining run")
CLASSIFIER_RUN = Kind("classifier_run", ("finetune", "distill_task"), "a classifier run")
QA_RUN = Kind("qa_run", ("finetune_qa", "distill_qa"), "an extractive QA run")

ALL = (DOCUMENTS, TEXT_SHARDS, TASK_DATA, PRETRAINING_RECORDS, CLASSIFICATION_RECORDS,
       DISTILL_RECORDS, TASK_DISTILL_RECORDS, PRETRAINING_RUN, CLASSIFIER_RUN, QA_RECORDS,
       QA_DISTILL_RECORDS, QA_RUN, AUGMENTED_TASK_DATA)
_BY_STAGE = {name: kind for kind in ALL for name in kind.stages}
# Caches written before the task-label cache had a stage of its own: same
# stage name as the pretraining labels, told apart by `num_labels`.
_LEGACY_TASK_LABELS = "extract_teacher_labels"


def from_manifest(manifest):
  """The Kind of a stage output from its manifest (None for an unknown stage)."""
  name = manifest.get("stage")
  if name == _LEGACY_TASK_LABELS and "num_labels" in manifest.get("config", {}):
    return TASK_DISTILL_RECORDS
  return _BY_STAGE.get(name)


def read(input_dir, *accepted):
  """(Kind, manifest) of a completed stage output of one of the `accepted` kinds.

  Raises:
    InputError: missing or incomplete directory, changed files (see
      stage.read_input), or data of another kind, named in the message.
  """
  stages = tuple({name for kind in accepted for name in kind.stages} |
                 ({_LEGACY_TASK_LABELS} if TASK_DISTILL_RECORDS in accepted else set()))
  try:
    manifest = stage.read_input(input_dir, stages)
  except InputError:
    found = _kind_of_dir(input_dir)
    if found is None or found in accepted:
      raise
    raise InputError(input_dir, f"holds {found.what}, expected {_either(accepted)}") from None
  kind = from_manifest(manifest)
  if kind not in accepted:
    raise InputError(input_dir, f"holds {kind.what}, expected {_either(accepted)}")
  return kind, manifest


def _kind_of_dir(input_dir):
  """The kind a completed directory says it holds, or None (for messages only)."""
  try:
    return from_manifest(stage.read_json(f"{input_dir}/{stage.MANIFEST}"))
  except InputError:
    return None


def _either(kinds):
  return " or ".join(k.what for k in kinds)


def check_flags(kind, given, applies):
  """One-line error for flags that do not apply to an input of `kind`.

  Args:
    kind: the input's Kind.
    given: names of the flags the user gave.
    applies: {flag name: kinds it applies to}.
  """
  wrong = [f"--{name}" for name in given if name in applies and kind not in applies[name]]
  if wrong:
    raise ConfigError(f"{', '.join(wrong)} {'does' if len(wrong) == 1 else 'do'} not "
                      f"apply to {kind.what}")


def check_vocab(manifest, vocab_file):
  """The vocab file's sha256; raises InputError unless the stage output of
  `manifest` (records, label caches) was made with that vocab."""
  if not os.path.isfile(vocab_file):
    raise InputError(vocab_file, "vocab file does not exist")
  sha = stage.file_sha256(vocab_file)
  expected = manifest["config"].get("vocab_sha256")
  if sha != expected:
    kind = from_manifest(manifest)
    what = kind.what if kind else "records"
    raise InputError(vocab_file, f"vocab sha256 {sha[:12]}... differs from the one of "
                     f"{manifest['_dir']} ({str(expected)[:12]}...): the {what} "
                     f"were made with another vocab")
  return sha
