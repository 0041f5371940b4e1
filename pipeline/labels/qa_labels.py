"""extract_teacher_labels on QA records -> QA distill records (teacher start/end logits).

Shape legend: B=batch (static: a file's last batch is padded), S=max_seq_length,
m=real records of a batch.

The fine-tuned teacher span model runs once over every window of the chosen
splits; each record is written unchanged plus schema.QA_TEACHER_FEATURES
(teacher_start_logits, teacher_end_logits: float16 [S] each, at temperature 1;
the student applies its own T). float16 keeps a logit to ~3 significant digits,
far below what changes the softmax the student matches, at half of float32's
bytes for a feature as long as the window. One output file per input
file, same names and record order, under the stage contract of the classifier
label cache (pipeline/labels/task_labels.py, whose file loop this reuses): a
file is published when complete, so a killed run resumes file by file; the same
command is a no-op; another teacher is an error unless overwrite. The dev
split's sidecars (examples.jsonl, dataset.json) are copied, so the output
evaluates like the QA records it came from.
"""

import hashlib
import os
import shutil

import numpy as np

from pipeline.core import stage
from pipeline.core.errors import InputError
from pipeline.labels import task_labels
from pipeline.records import qa_data
from pipeline.records import schema

OUTPUTS = ("start_logits", "end_logits")


def encode_span_logits(outputs):
  """(start [m,S], end [m,S]) float32 -> the two float16 byte features' columns."""
  columns, dtypes = {}, {}
  for feature, values in zip(schema.QA_TEACHER_FEATURES, outputs):
    halves = np.ascontiguousarray(values, dtype="<f2")  # [m,S]
    data = halves.view(np.uint8).reshape(len(halves), -1)  # [m, 2S]
    columns[feature.name] = (data, np.full(len(halves), data.shape[1], np.int64))
    dtypes[feature.name] = schema.BYTES
  return columns, dtypes


CACHE_FORMAT = task_labels.CacheFormat(schema.QA_MODEL_INPUTS, encode_span_logits)


def stage_config(records_manifest, settings, bert_config, weights_sha):
  """The output's identity: the records' config + settings + the teacher."""
  config = dict(records_manifest["config"])
  config.update(splits=list(settings.splits), label_batch_size=settings.batch_size,
                mixed_precision=settings.mixed_precision, teacher_logits_temperature=1.0,
                teacher_logits_dtype="float16", bert_config=bert_config,
                teacher_weights_sha256=weights_sha)
  identity = {k: config[k] for k in ("bert_config", "teacher_weights_sha256",
                                     "mixed_precision")}
  identity.update(vocab_sha256=config.get("vocab_sha256"),
                  records_manifest_sha256=records_manifest["_sha256"])
  config["teacher_fingerprint"] = hashlib.sha256(
      stage.json_dumps(identity).encode()).hexdigest()
  return config


def sidecar_files(input_dir, splits):
  """The sidecars of the labelled splits that exist in the QA records."""
  names = []
  for split in splits:
    for name in (qa_data.sidecar_name(split), qa_data.dataset_name(split)):
      if os.path.isfile(os.path.join(input_dir, name)):
        names.append(name)
  return names


def copy_sidecars(out, input_dir, names):
  """Copies the sidecars (verified against the input manifest) into the output."""
  manifest = stage.read_json(os.path.join(input_dir, stage.MANIFEST))
  sha256 = {f["name"]: f.get("sha256") for f in manifest.get("files", [])}
  for name in names:
    if out.done(name):
      continue
    source = os.path.join(input_dir, name)
    if sha256.get(name) and stage.file_sha256(source) != sha256[name]:
      raise InputError(source, "changed since its stage completed (sha256 differs from "
                       "the manifest)")
    with out.writing(name) as tmp:
      shutil.copyfile(source, tmp)


def label_files(out, input_dir, names, step, shapes, progress=None):
  """Writes the QA distill file of each of `names` not yet published (task_labels' loop)."""
  task_labels.label_files(out, input_dir, names, step, shapes, progress, CACHE_FORMAT)


def finalize(out, names, sidecars, seconds, teacher=None):
  """manifest/stats/COMPLETED (the sidecars listed with the record files)."""
  return task_labels.finalize(out, names, seconds, teacher,
                              schema.QA_FEATURES + schema.QA_TEACHER_FEATURES,
                              extra_files=sidecars, command="extract_teacher_labels (QA)")
