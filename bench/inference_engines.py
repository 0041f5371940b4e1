"""bench/inference.py's engines: the exports (cached), their sessions, metric and timing.

Shape legend: B=batch, S=sequence length, C=number of labels, N=examples.

Formats of one classifier checkpoint, each exported once into the work dir
(reused while the checkpoint, records and vocab are unchanged, see `cached`):
  tf_fp32            raw-text SavedModel (tools/export.py); its `encoded`
                     signature (token ids in) is what is timed, and its
                     serving_default (text in) is what tools/serve.py serves
  onnx_fp32          model.onnx (ONNX Runtime's BERT fusions)
  onnx_int8_dynamic  model.int8.onnx, int8 weights, activations at run time
  onnx_int8_static   model.int8.onnx, QDQ int8 calibrated on the train split
A pruned checkpoint gets tf_fp32 and onnx_fp32 only.
"""

import glob
import hashlib
import json
import os
import time

import numpy as np

from modeling.evaluation import evaluation
from modeling.evaluation import export_run
from modeling.evaluation import task_evaluation as te
from pipeline.inputs import classification_dataset as cds
from pipeline.records import schema

FORMATS = ("tf_fp32", "onnx_fp32", "onnx_int8_dynamic", "onnx_int8_static")
PRUNED_FORMATS = ("tf_fp32", "onnx_fp32")
FORMAT_LABELS = {"tf_fp32": "TF fp32 (SavedModel)", "onnx_fp32": "ONNX fp32",
                 "onnx_int8_dynamic": "ONNX int8 dynamic",
                 "onnx_int8_static": "ONNX int8 static"}
# format -> (export subdirectory, quantize mode, graph file); tf_fp32 is the SavedModel.
_ONNX = {"onnx_fp32": ("onnx_dynamic", "dynamic", "model.onnx"),
         "onnx_int8_dynamic": ("onnx_dynamic", "dynamic", "model.int8.onnx"),
         "onnx_int8_static": ("onnx_static", "static", "model.int8.onnx")}
ORT_THREADS = 2
# ONNX Runtime's pool threads spin after each run by default; with a dozen sessions
# interleaved on 2 cores they would steal the next engine's CPU.
ORT_SPINNING = False
SOURCE_FILE = "bench_source.json"  # beside each cached export: what it was made from


# The modules that write each kind of export: an edit to them redoes the export.
_EXPORTERS = {"saved_model": ("task_export.py",),
              "onnx": ("onnx_export.py", "onnx_graph.py", "onnx_quantize.py")}


def _exporter_sha256(kind):
  digest = hashlib.sha256()
  for name in _EXPORTERS["saved_model" if kind == "saved_model" else "onnx"]:
    with open(os.path.join(os.path.dirname(evaluation.__file__), name), "rb") as f:
      digest.update(f.read())
  return digest.hexdigest()


def fingerprint(checkpoint, records_dir, vocab_file, kind):
  """What an export depends on: the checkpoint files (size, mtime), records, vocab
  and the exporter's code."""
  files = evaluation.checkpoint_files(checkpoint)
  manifest = os.path.join(records_dir, "manifest.json")
  parts = [(os.path.abspath(f), os.path.getsize(f), os.path.getmtime(f))
           for f in files + [manifest, vocab_file]]
  return {"kind": kind, "checkpoint": os.path.abspath(checkpoint),
          "files_sha256": hashlib.sha256(json.dumps(parts).encode()).hexdigest(),
          "exporter_sha256": _exporter_sha256(kind)}


def cached(target, source, make):
  """Runs make() unless `target` holds an export made from `source`; returns target.

  Exports are published by atomic rename, so a directory that exists is
  complete; SOURCE_FILE, written after it, says from what. A stale one is redone.
  """
  sidecar = target + "." + SOURCE_FILE
  if os.path.isdir(target) and os.path.isfile(sidecar):
    with open(sidecar, encoding="utf-8") as f:
      if json.load(f) == source:
        print(f"inference: up to date: {target}")
        return target
  make()
  with open(sidecar, "w", encoding="utf-8") as f:
    json.dump(source, f, indent=1, sort_keys=True)
  return target


def export_all(name, checkpoint, args, formats):
  """{format: exported path (SavedModel dir or .onnx file)} of one checkpoint."""
  base = os.path.join(args.work_dir, "exports", name)
  paths = {}

  def export(subdir, **settings):
    target = os.path.join(base, subdir)
    source = dict(fingerprint(checkpoint, args.records_dir, args.vocab_file, subdir),
                  **settings)
    config = export_run.ExportConfig(checkpoint=checkpoint, export_dir=target,
                                     input_dir=args.records_dir, vocab_file=args.vocab_file,
                                     **settings)
    return cached(target, source, lambda: export_run.export_model(config))

  paths["tf_fp32"] = export("saved_model")
  for fmt in formats:
    if fmt == "tf_fp32":
      continue
    subdir, mode, graph = _ONNX[fmt]
    if fmt == "onnx_fp32" and "onnx_int8_dynamic" not in formats:
      subdir, mode = "onnx_fp32", "none"
    settings = {"format": "onnx", "quantize": mode}
    if mode == "static":
      settings.update(calibration_dir=args.records_dir,
                      calibration_examples=args.calibration_examples)
    paths[fmt] = os.path.join(export(subdir, **settings), graph)
  return paths


def disk_mb(path):
  """MB (10^6 bytes) of a graph file, or of a SavedModel's graph and variables."""
  if os.path.isfile(path):
    return os.path.getsize(path) / 1e6
  files = [os.path.join(path, "saved_model.pb")] + glob.glob(
      os.path.join(path, "variables", "*"))
  return sum(os.path.getsize(f) for f in files) / 1e6


def bert_config(saved_model_dir):
  with open(os.path.join(saved_model_dir, "bert_config.json"), encoding="utf-8") as f:
    return json.load(f)


# ---------------------------------------------------------------- engines


class OnnxEngine:
  """An ONNX Runtime session (ORT_THREADS intra-op threads, ORT_SPINNING): ids -> logits."""

  def __init__(self, path):
    import onnxruntime as ort  # pylint: disable=import-outside-toplevel
    options = ort.SessionOptions()
    options.intra_op_num_threads = ORT_THREADS
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.add_session_config_entry("session.intra_op.allow_spinning",
                                     "1" if ORT_SPINNING else "0")
    self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])

  def __call__(self, feed):
    return self.session.run(["logits"], feed)[0]


class SavedModelEngine:
  """The SavedModel's `encoded` signature: ids -> logits [B,C] (fixed-shape calls)."""

  def __init__(self, path):
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    import tensorflow_text  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import
    self.tf = tf
    self.loaded = tf.saved_model.load(path)
    self.signature = self.loaded.signatures["encoded"]

  def parameters(self):
    """Float parameters of the exported model (the tokenizer's tables excluded)."""
    return int(sum(v.shape.num_elements() for v in self.loaded.variables
                   if v.dtype.is_floating))

  def __call__(self, feed):
    tensors = {k: self.tf.constant(v) for k, v in feed.items()}
    return self.signature(**tensors)["logits"].numpy()


def open_engine(fmt, path):
  return SavedModelEngine(path) if fmt == "tf_fp32" else OnnxEngine(path)


# ---------------------------------------------------------------- metric


def split_batches(records_dir, split, batch_size=32):
  """[(feed {input: int32 [B,S]}, label_ids int64 [B])] of a split, in order."""
  inp = te.read_task_eval_input(records_dir, split)
  batches = []
  for batch in cds.eval_dataset(inp.dir, inp.spec, batch_size, split):
    feed = {n: np.asarray(batch[n], np.int32) for n in schema.CLASSIFICATION_MODEL_INPUTS}
    batches.append((feed, np.asarray(batch["label_ids"]).reshape(-1).astype(np.int64)))
  return batches, inp.spec.labels


def record_labels(records_dir, split):
  """The label names of a split's records."""
  return te.read_task_eval_input(records_dir, split).spec.labels


def task_metrics(engine, batches, labels):
  """(metrics of te.task_metrics, predicted class ids [N]) from the engine's own logits."""
  logits = np.concatenate([engine(feed) for feed, _ in batches]).astype(np.float64)
  label_ids = np.concatenate([y for _, y in batches])
  metrics, _, counts = te.task_metrics({"logits": logits, "label_ids": label_ids}, labels)
  return dict(metrics, examples=counts["examples"]), logits.argmax(-1)


# ---------------------------------------------------------------- timing


def timing_feed(batch, seq_length, vocab_size, seed=0):
  """Random ids, every position real (mask all ones): int32 [B,S] each."""
  rng = np.random.default_rng(seed)
  ids = rng.integers(1, vocab_size, (batch, seq_length), dtype=np.int32)
  return {"input_ids": ids, "input_mask": np.ones_like(ids),
          "segment_ids": np.zeros_like(ids)}


def percentiles(seconds, batch):
  ms = 1e3 * np.asarray(seconds, np.float64)
  return {"p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)),
          "mean_ms": float(ms.mean()), "seq_per_s": float(batch * len(ms) / ms.sum() * 1e3),
          "calls": int(len(ms))}


def time_cases(cases, calls, warmup, max_case_seconds=0.0, min_calls=10):
  """{key: percentiles} of cases {key: (fn, feed, batch)}, interleaved.

  Each repeat calls every case once, in an order rotated by one case per
  repeat, so the machine's slow phases hit all of them. With max_case_seconds,
  a case whose calls so far add up to more stops after min_calls (the table
  reports each case's count).
  """
  keys = list(cases)
  first = {}
  for key in keys:
    fn, feed, _ = cases[key]
    for _ in range(warmup):
      fn(feed)
    start = time.perf_counter()
    fn(feed)
    first[key] = time.perf_counter() - start
  estimate = calls * sum(first.values())
  print(f"inference: timing {len(keys)} cases x {calls} calls, about {estimate:.0f} s")
  seconds = {key: [] for key in keys}
  for r in range(calls):
    order = keys[r % len(keys):] + keys[:r % len(keys)]
    for key in order:
      if (max_case_seconds and len(seconds[key]) >= min_calls
          and sum(seconds[key]) > max_case_seconds):
        continue
      fn, feed, _ = cases[key]
      start = time.perf_counter()
      fn(feed)
      seconds[key].append(time.perf_counter() - start)
  return {key: percentiles(seconds[key], cases[key][2]) for key in keys}
