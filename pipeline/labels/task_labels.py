"""extract_teacher_labels --task: classification records -> task distill records.

Shape legend: B=batch (static: a file's last batch is padded), S=max_seq_length,
C=number of labels, m=real records of a batch.

Runs the fine-tuned teacher classifier once over every record of the chosen
splits and writes each record unchanged plus schema.TASK_TEACHER_FEATURES
(teacher_logits [C] float32 at temperature 1: C floats are small, so there
is nothing to truncate; the student applies its own T). One output file per
input file, same name, same record order, under the same stage contract as
the pretraining labels (pipeline/labels/pretraining_labels.py): a file is
published when complete, so a killed run resumes file by file; the same
command again is a no-op; another teacher or setting on the output is an
error unless overwrite.

The manifest's config is the records' own config (max_seq_length,
num_labels, labels, vocab) plus the teacher's identity, so the output reads
like classification records with one more feature
(pipeline/inputs/classification_dataset.py); teacher_fingerprint hashes what
decides the logits: weights, architecture, C, precision, vocab and the
records manifest.
"""

import dataclasses
import hashlib
import os
import time

import tensorflow as tf

from pipeline.records import schema
from pipeline.core import stage
from pipeline.records import tfrecord
from pipeline.labels import packed_labels
from pipeline.labels import pretraining_labels as labels_stage
from pipeline.core.errors import ConfigError, InputError

PRECISIONS = labels_stage.PRECISIONS


@dataclasses.dataclass(frozen=True)
class TaskLabelSettings:
  """What, besides the teacher and the records, decides the output."""
  splits: tuple = ("train", "dev")
  batch_size: int = 64
  mixed_precision: str = "none"

  def __post_init__(self):
    problems = []
    if self.batch_size < 1:
      problems.append("batch_size must be >= 1")
    if not self.splits:
      problems.append("splits must name at least one split")
    if self.mixed_precision not in PRECISIONS:
      problems.append(f"mixed_precision must be one of {PRECISIONS}")
    if problems:
      raise ConfigError("; ".join(problems))


def run_vocab_sha256(checkpoint):
  """The vocab a fine-tuning run of this project trained with, or None.

  `checkpoint` is the run's output directory or its best/ directory; the
  run's manifest.json config keeps the vocab's sha256 when the tool
  recorded it. Other checkpoints (Google, HF) say nothing about their vocab.
  """
  path = os.path.abspath(checkpoint)
  candidates = [path]
  if os.path.basename(path) == "best":  # classification_training.BEST_DIR
    candidates.append(os.path.dirname(path))
  for directory in candidates:
    manifest = os.path.join(directory, stage.MANIFEST)
    if os.path.isfile(manifest):
      return stage.read_json(manifest).get("config", {}).get("vocab_sha256")
  return None


def check_model_fits(records_manifest, bert_config, path, trained_vocab_sha=None,
                     what="model"):
  """Raises InputError unless a fine-tuned task model fits the records: the
  vocab it was trained with (when its run recorded it; else only the vocab
  size is compared) and a position table long enough for the records."""
  config = records_manifest["config"]
  records_sha = config.get("vocab_sha256")
  if trained_vocab_sha and trained_vocab_sha != records_sha:
    raise InputError(path, f"the {what} was fine-tuned with vocab "
                     f"{trained_vocab_sha[:12]}... but the records in "
                     f"{records_manifest['_dir']} use {str(records_sha)[:12]}...")
  if bert_config.vocab_size != config["vocab_size"]:
    raise InputError(path, f"vocab_size {bert_config.vocab_size} differs "
                     f"from the records' vocab of {config['vocab_size']} ids")
  if config["max_seq_length"] > bert_config.max_position_embeddings:
    raise InputError(path, f"max_position_embeddings "
                     f"{bert_config.max_position_embeddings} < the records' "
                     f"max_seq_length {config['max_seq_length']}")


def check_classifier(records_manifest, bert_config, num_labels, path,
                     trained_vocab_sha=None):
  """check_model_fits, and the classifier predicts the records' number of labels.

  Args:
    bert_config: its BertConfig; num_labels: its C; path: for messages.
  """
  check_model_fits(records_manifest, bert_config, path, trained_vocab_sha, "classifier")
  if num_labels != records_manifest["config"]["num_labels"]:
    raise InputError(path, f"the classifier predicts {num_labels} labels, "
                     f"the records have {records_manifest['config']['num_labels']}")


def stage_config(records_manifest, settings, bert_config, num_labels, weights_sha):
  """The output's identity: the records' config + settings + the teacher."""
  config = dict(records_manifest["config"])
  config.update(
      splits=list(settings.splits), label_batch_size=settings.batch_size,
      mixed_precision=settings.mixed_precision, teacher_logits_temperature=1.0,
      bert_config=bert_config, teacher_num_labels=num_labels,
      teacher_weights_sha256=weights_sha)
  identity = {k: config[k] for k in ("bert_config", "teacher_num_labels",
                                     "teacher_weights_sha256", "mixed_precision")}
  identity.update(vocab_sha256=config.get("vocab_sha256"),
                  records_manifest_sha256=records_manifest["_sha256"])
  config["teacher_fingerprint"] = hashlib.sha256(
      stage.json_dumps(identity).encode()).hexdigest()
  return config


def make_step(model, batch_size, seq_length, outputs=("logits",),
              model_inputs=schema.CLASSIFICATION_MODEL_INPUTS):
  """The compiled forward pass: {name: int32 [B,S]} -> the model's `outputs`, float32.

  A classifier's ("logits",) -> [B,C]; a span model's ("start_logits",
  "end_logits") -> [B,S] each (pipeline/labels/qa_labels.py).
  """
  signature = {name: tf.TensorSpec([batch_size, seq_length], tf.int32, name=name)
               for name in model_inputs}

  @tf.function(input_signature=[signature])
  def step(features):
    result = model(features, training=False)
    return tuple(tf.cast(result[name], tf.float32) for name in outputs)

  return step


def _pad_rows(x, rows):
  pad = [[0, rows - tf.shape(x)[0]]] + [[0, 0]] * (len(x.shape) - 1)
  return tf.ensure_shape(tf.pad(x, pad), [rows] + x.shape[1:])


def file_batches(path, batch_size, seq_length, model_inputs=schema.CLASSIFICATION_MODEL_INPUTS):
  """{records [m], count m, features {name: int32 [B,S]}} of one file, read ahead.

  Only the model inputs are parsed (a record's other features, whatever its
  kind, ride along in its bytes).
  """
  spec = {name: tf.io.FixedLenFeature([seq_length], tf.int64) for name in model_inputs}

  def prepare(records):
    parsed = tf.io.parse_example(records, spec)
    return {"records": records, "count": tf.shape(records)[0],
            "features": {n: _pad_rows(tf.cast(parsed[n], tf.int32), batch_size)
                         for n in model_inputs}}

  return tf.data.TFRecordDataset(path).batch(batch_size).map(prepare).prefetch(2)


def encode_logits(outputs):
  """A classifier's (logits [m,C],) -> the teacher_logits feature columns."""
  return {"teacher_logits": outputs[0]}, {"teacher_logits": schema.FLOAT}


@dataclasses.dataclass(frozen=True)
class CacheFormat:
  """What a label run reads of each record and what it appends.

  encode: (outputs as numpy [m, ...] each) -> (columns, dtypes) for
  tfrecord.encode_examples.
  """
  model_inputs: tuple = schema.CLASSIFICATION_MODEL_INPUTS
  encode: object = encode_logits


def _write_file(tmp, path, step, shapes, progress, cache_format):
  """Labels the records of `path` into `tmp`; (records, step seconds)."""
  b, s = shapes[:2]
  records, step_seconds = 0, 0.0
  with tfrecord.TFRecordWriter(tmp) as writer:
    for batch in file_batches(path, b, s, cache_format.model_inputs):
      m = int(batch["count"])
      tick = time.monotonic()
      outputs = [value.numpy()[:m] for value in step(batch["features"])]
      step_seconds += time.monotonic() - tick
      extra = tfrecord.encode_examples(*cache_format.encode(outputs))
      writer.write_batch(*packed_labels.append_features(
          batch["records"].numpy(), *extra))
      records += m
      if progress is not None:
        progress.update(m)
  return records, step_seconds


def label_files(out, input_dir, names, step, shapes, progress=None, cache_format=CacheFormat()):
  """Writes the labelled file of each of `names` not yet published.

  Args:
    out: the stage.StageOutput; input_dir: the task records.
    step: make_step's function; shapes: (B, S, ...).
    progress: optional pipeline.core.progress.Progress counting records.
    cache_format: what is read and appended (default: a classifier's logits).
  """
  todo = [name for name in names if not out.done(name)]
  labels_stage.check_records(input_dir, todo)  # before the first file is published
  for name in todo:
    start = time.monotonic()
    with out.writing(name) as tmp:
      records, step_seconds = _write_file(tmp, os.path.join(input_dir, name), step,
                                          shapes, progress, cache_format)
      # The sidecar before the file: a published file always has its counts.
      out.write_part(name, {"records": records, "step_seconds": round(step_seconds, 3),
                            "seconds": round(time.monotonic() - start, 3)})


def finalize(out, names, seconds, teacher=None, features=schema.TASK_DISTILL_FEATURES,
             extra_files=(), command="extract_teacher_labels --task"):
  """manifest/stats/COMPLETED from the sidecars; returns the summary line.

  extra_files: names of other files the output holds (copied sidecars).
  """
  parts = {name: out.read_part(name) for name in names if name.endswith(".tfrecord")}
  counts = {}
  for name, part in parts.items():
    key = name.split("/", 1)[0] + "_examples"
    counts[key] = counts.get(key, 0) + part["records"]
  counts["examples"] = sum(p["records"] for p in parts.values())
  step_seconds = sum(p["step_seconds"] for p in parts.values())
  stats = dict(counts, files=parts, seconds=round(seconds, 2),
               step_seconds=round(step_seconds, 3),
               examples_per_second=round(counts["examples"] / max(seconds, 1e-9), 1))
  features = [dataclasses.asdict(f) for f in features]
  out.finalize(list(names) + list(extra_files), counts, stats,
               extra={"features": features, "teacher": teacher})
  shown = ", ".join(f"{v} {k[:-len('_examples')]}" for k, v in sorted(counts.items())
                    if k != "examples")
  return (f"{command}: {shown} examples labelled in "
          f"{seconds:.1f}s -> {out.dir}")

