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


def check_classifier(records_manifest, bert_config, num_labels, path,
                     trained_vocab_sha=None):
  """Raises InputError unless a classifier fits the records.

  Args:
    bert_config: its BertConfig; num_labels: its C; path: for messages.
    trained_vocab_sha: the vocab it was fine-tuned with, when its run
      recorded it (run_vocab_sha256; else only the vocab size is compared).
  """
  config = records_manifest["config"]
  records_sha = config.get("vocab_sha256")
  if trained_vocab_sha and trained_vocab_sha != records_sha:
    raise InputError(path, f"the classifier was fine-tuned with vocab "
                     f"{trained_vocab_sha[:12]}... but the records in "
                     f"{records_manifest['_dir']} use {str(records_sha)[:12]}...")
  if bert_config.vocab_size != config["vocab_size"]:
    raise InputError(path, f"vocab_size {bert_config.vocab_size} differs "
                     f"from the records' vocab of {config['vocab_size']} ids")
  if num_labels != config["num_labels"]:
    raise InputError(path, f"the classifier predicts {num_labels} labels, "
                     f"the records have {config['num_labels']}")
  if config["max_seq_length"] > bert_config.max_position_embeddings:
    raise InputError(path, f"max_position_embeddings "
                     f"{bert_config.max_position_embeddings} < the records' "
                     f"max_seq_length {config['max_seq_length']}")


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


def make_step(model, batch_size, seq_length):
  """The compiled forward pass: {name: int32 [B,S]} -> logits float32 [B,C]."""
  signature = {name: tf.TensorSpec([batch_size, seq_length], tf.int32, name=name)
               for name in schema.CLASSIFICATION_MODEL_INPUTS}

  @tf.function(input_signature=[signature])
  def step(features):
    return tf.cast(model(features, training=False)["logits"], tf.float32)

  return step


def _pad_rows(x, rows):
  pad = [[0, rows - tf.shape(x)[0]]] + [[0, 0]] * (len(x.shape) - 1)
  return tf.ensure_shape(tf.pad(x, pad), [rows] + x.shape[1:])


def file_batches(path, batch_size, seq_length, num_labels):
  """{records [m], count m, features {name: int32 [B,S]}} of one file, read ahead."""
  spec = schema.tf_feature_spec(schema.CLASSIFICATION_FEATURES, seq_length, 0,
                                num_labels)

  def prepare(records):
    parsed = tf.io.parse_example(records, spec)
    return {"records": records, "count": tf.shape(records)[0],
            "features": {n: _pad_rows(tf.cast(parsed[n], tf.int32), batch_size)
                         for n in schema.CLASSIFICATION_MODEL_INPUTS}}

  return tf.data.TFRecordDataset(path).batch(batch_size).map(prepare).prefetch(2)


def _write_file(tmp, path, step, shapes, progress):
  """Labels the records of `path` into `tmp`; (records, step seconds)."""
  b, s, c = shapes
  records, step_seconds = 0, 0.0
  with tfrecord.TFRecordWriter(tmp) as writer:
    for batch in file_batches(path, b, s, c):
      m = int(batch["count"])
      tick = time.monotonic()
      logits = step(batch["features"]).numpy()[:m]  # [m,C]
      step_seconds += time.monotonic() - tick
      extra = tfrecord.encode_examples({"teacher_logits": logits},
                                       {"teacher_logits": schema.FLOAT})
      writer.write_batch(*packed_labels.append_features(
          batch["records"].numpy(), *extra))
      records += m
      if progress is not None:
        progress.update(m)
  return records, step_seconds


def label_files(out, input_dir, names, step, shapes, progress=None):
  """Writes the task distill file of each of `names` not yet published.

  Args:
    out: the stage.StageOutput; input_dir: the classification records.
    step: make_step's function; shapes: (B, S, C).
    progress: optional pipeline.core.progress.Progress counting records.
  """
  todo = [name for name in names if not out.done(name)]
  labels_stage.check_records(input_dir, todo)  # before the first file is published
  for name in todo:
    start = time.monotonic()
    with out.writing(name) as tmp:
      records, step_seconds = _write_file(tmp, os.path.join(input_dir, name), step,
                                          shapes, progress)
      # The sidecar before the file: a published file always has its counts.
      out.write_part(name, {"records": records, "step_seconds": round(step_seconds, 3),
                            "seconds": round(time.monotonic() - start, 3)})


def finalize(out, names, seconds, teacher=None):
  """manifest/stats/COMPLETED from the sidecars; returns the summary line."""
  parts = {name: out.read_part(name) for name in names}
  counts = {}
  for name, part in parts.items():
    key = name.split("/", 1)[0] + "_examples"
    counts[key] = counts.get(key, 0) + part["records"]
  counts["examples"] = sum(p["records"] for p in parts.values())
  step_seconds = sum(p["step_seconds"] for p in parts.values())
  stats = dict(counts, files=parts, seconds=round(seconds, 2),
               step_seconds=round(step_seconds, 3),
               examples_per_second=round(counts["examples"] / max(seconds, 1e-9), 1))
  features = [dataclasses.asdict(f) for f in schema.TASK_DISTILL_FEATURES]
  out.finalize(names, counts, stats, extra={"features": features, "teacher": teacher})
  shown = ", ".join(f"{v} {k[:-len('_examples')]}" for k, v in sorted(counts.items())
                    if k != "examples")
  return (f"extract_teacher_labels --task: {shown} examples labelled in "
          f"{seconds:.1f}s -> {out.dir}")

