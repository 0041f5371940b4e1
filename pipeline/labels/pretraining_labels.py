"""Stage machinery of extract_teacher_labels: records in, distill records out.

Shape legend: B=batch, P=predictions, K=truncation factor, n=real masked
positions of a record.

One output file per input records file (same name, same record order), a
byte copy of its .index.npy, and a .sources.npy of per-record digests (see
pipeline/labels/reuse.py: with an earlier cache, records found there are
copied and only the others are computed). The main thread feeds the compiled
step from a prefetching tf.data pipeline; a writer thread packs each batch's
results and writes them, so encoding and I/O overlap the next forward pass.
A file is published (stats sidecar, index, sources, then the .tfrecord that
marks it done) only when complete, so a killed run resumes file by file.
"""

import contextlib
import dataclasses
import hashlib
import os
import queue
import shutil
import sys
import threading
import time

import numpy as np

from pipeline.labels import reuse
from pipeline.records import schema
from pipeline.core import stage
from pipeline.labels import inference
from pipeline.labels import packed_labels
from pipeline.records import tfrecord
from pipeline.core.errors import ConfigError, InputError

PRECISIONS = ("none", "bf16")


@dataclasses.dataclass(frozen=True)
class LabelSettings:
  """What decides the labels (with the teacher and the records)."""
  truncation_factor: int = 32
  temperature: float = 1.0
  label_method: str = "topk"
  batch_size: int = 64
  mixed_precision: str = "none"
  seed: int = 12345

  def __post_init__(self):
    problems = []
    for name in ("truncation_factor", "batch_size"):
      if getattr(self, name) < 1:
        problems.append(f"{name} must be >= 1")
    if not self.temperature > 0:
      problems.append("temperature must be > 0")
    if self.label_method not in packed_labels.METHODS:
      problems.append(f"label_method must be one of {packed_labels.METHODS}")
    if self.mixed_precision not in PRECISIONS:
      problems.append(f"mixed_precision must be one of {PRECISIONS}")
    if self.seed < 0:
      problems.append("seed must be >= 0")
    if problems:
      raise ConfigError("; ".join(problems))


def check_vocab(manifest, vocab_file, what="records"):
  """The vocab file's sha256; raises InputError unless `manifest`'s stage output
  (`what`: records, teacher labels, ...) was made with that vocab."""
  if not os.path.isfile(vocab_file):
    raise InputError(vocab_file, "vocab file does not exist")
  sha = stage.file_sha256(vocab_file)
  expected = manifest["config"].get("vocab_sha256")
  if sha != expected:
    raise InputError(vocab_file, f"vocab sha256 {sha[:12]}... differs from the one of "
                     f"{manifest['_dir']} ({str(expected)[:12]}...): the {what} "
                     f"were made with another vocab")
  return sha


def index_name(name):
  return name[:-len(".tfrecord")] + ".index.npy"


def weights_sha256(named_arrays):
  """sha256 over (name, shape, float32 bytes) of the weights, by name, so
  the same weights give the same hash whatever file format held them."""
  h = hashlib.sha256()
  for name, value in sorted(named_arrays, key=lambda item: item[0]):
    array = np.ascontiguousarray(value, dtype="<f4")
    h.update(f"{name}:{array.shape};".encode())
    h.update(array.tobytes())
  return h.hexdigest()


def stage_config(records_manifest, settings, bert_config, weights_sha, vocab_sha):
  """The output's identity: records' shapes, settings and the teacher.

  teacher_fingerprint hashes everything that decides the labels: weights,
  architecture, vocab, T, K, method, precision (and the sampling seed), and
  the records manifest.
  """
  records = records_manifest["config"]
  config = dataclasses.asdict(settings)
  if settings.label_method == "topk":
    config["seed"] = None  # no randomness: any seed gives the same labels
  config.update(
      max_seq_length=records["max_seq_length"],
      max_predictions_per_seq=records["max_predictions_per_seq"],
      vocab_size=records["vocab_size"], vocab_sha256=vocab_sha,
      do_lower_case=records.get("do_lower_case"),
      teacher_id_dtype=packed_labels.id_dtype_for(records["vocab_size"]),
      teacher_value_dtype=packed_labels.VALUE_DTYPE,
      bert_config=bert_config, teacher_weights_sha256=weights_sha)
  identity = {k: config[k] for k in ("truncation_factor", "temperature", "label_method",
                                     "mixed_precision", "seed", "vocab_sha256",
                                     "bert_config", "teacher_weights_sha256")}
  identity["records_manifest_sha256"] = records_manifest["_sha256"]
  config["teacher_fingerprint"] = hashlib.sha256(
      stage.json_dumps(identity).encode()).hexdigest()
  return config


class _FileStats:
  """Counts of one output file, kept by the writer thread."""

  def __init__(self):
    self.rows = []  # reuse.SOURCES_DTYPE rows, in record order
    self.reused = self.computed = 0
    self.write_seconds = 0.0

  def as_dict(self, k):
    rows = np.concatenate(self.rows) if self.rows else np.zeros(0, reuse.SOURCES_DTYPE)
    positions = int(rows["masked_positions"].sum())
    return {"records": len(rows), "masked_positions": positions, "entries": positions * k,
            "lists_layout_bytes": int(rows["lists_layout_bytes"].sum()),
            "reused_records": self.reused, "computed_records": self.computed,
            "write_seconds": round(self.write_seconds, 3)}


class _Writer:
  """Writer thread: packs step results and writes one distill file at a time.

  Messages: ("begin", name), ("batch", arrays), ("end", step_seconds), None.
  With a reuse.FilePlan for the file, batches hold only the records
  to compute (in order) and the writer copies the others from the earlier
  file in between. An error in the thread is re-raised in the caller at its
  next call; an unfinished file is never published.
  """

  def __init__(self, out, input_dir, settings, progress, examples, vocab, plans=None):
    self._out, self._input_dir, self._settings = out, input_dir, settings
    self._id_dtype = out.config["teacher_id_dtype"]
    self._progress, self._examples, self._vocab = progress, examples, vocab
    self._plans = plans or {}
    self._queue = queue.Queue(maxsize=4)
    self._error = None
    self._file = None
    self._thread = threading.Thread(target=self._loop, name="label-writer", daemon=True)
    self._thread.start()

  def send(self, message):
    while True:
      if self._error is not None:
        raise self._error
      try:
        self._queue.put(message, timeout=0.5)
        return
      except queue.Full:
        continue

  def close(self):
    """Waits for the queue to drain; re-raises the thread's error."""
    if self._thread.is_alive():
      with contextlib.suppress(BaseException):
        self.send(None)
      self._thread.join()
    if self._error is not None:
      raise self._error

  def _loop(self):
    try:
      for message in iter(self._queue.get, None):
        getattr(self, "_" + message[0])(*message[1:])
    except BaseException as e:  # pylint: disable=broad-except
      self._error = e
      if self._file:  # removes the unfinished file's temps, publishes nothing
        with contextlib.suppress(BaseException):
          self._file["stack"].__exit__(type(e), e, e.__traceback__)
      with contextlib.suppress(queue.Empty):
        while True:
          self._queue.get_nowait()  # unblock the sender

  def _begin(self, name):
    stack = contextlib.ExitStack()
    # Exit order publishes the sidecars before the .tfrecord (the done marker).
    tmp = stack.enter_context(self._out.writing(name))
    tmp_index = stack.enter_context(self._out.writing(index_name(name)))
    tmp_sources = stack.enter_context(self._out.writing(reuse.sources_name(name)))
    writer = stack.enter_context(tfrecord.TFRecordWriter(tmp))
    plan = self._plans.get(name)
    self._file = {"name": name, "stack": stack, "tmp": tmp, "tmp_index": tmp_index,
                  "tmp_sources": tmp_sources, "writer": writer, "stats": _FileStats(),
                  "start": time.monotonic(), "plan": plan, "next": 0,
                  "targets": plan.computed if plan else None}

  def _batch(self, arrays):
    start = time.monotonic()
    k = self._settings.truncation_factor
    n = (arrays["weights"] > 0).sum(1)  # [m] real masked positions
    ids, values, tail = self._targets(arrays)
    columns, dtypes = packed_labels.teacher_columns(ids, values, tail, arrays["nsp"], n,
                                                     self._id_dtype)
    extra, extra_lengths = tfrecord.encode_examples(columns, dtypes)
    flat, lengths = packed_labels.append_features(arrays["records"], extra, extra_lengths)
    lists = packed_labels.list_layout_lengths(ids, values, tail, arrays["nsp"], n)
    sizes = np.fromiter(map(len, arrays["records"]), np.int64, len(n))
    rows = reuse.source_rows(arrays["records"], n,
                                   packed_labels.merged_record_bytes(sizes, lists))
    self._put(flat, lengths, rows)
    self._file["stats"].computed += len(n)
    self._file["stats"].write_seconds += time.monotonic() - start
    if self._examples:
      self._examples -= log_example(ids, values, n, k, self._vocab)
    self._progress.update(len(n))

  def _put(self, flat, lengths, rows):
    """Writes computed records; with a plan, after the reused ones before them."""
    f = self._file
    if f["plan"] is None:
      f["writer"].write_batch(flat, lengths)
      f["stats"].rows.append(rows)
      return
    done = f["stats"].computed
    targets = f["targets"][done:done + len(lengths)]  # their record indices
    ends = np.concatenate([[0], np.cumsum(lengths)])
    breaks = np.flatnonzero(np.diff(targets) != 1) + 1
    for lo, hi in zip([0, *breaks.tolist()], [*breaks.tolist(), len(targets)]):
      self._copy_reused(int(targets[lo]))  # runs of consecutive computed records
      f["writer"].write_batch(flat[ends[lo]:ends[hi]], lengths[lo:hi])
      f["stats"].rows.append(rows[lo:hi])
      f["next"] = int(targets[hi - 1]) + 1

  def _copy_reused(self, stop):
    """Copies the earlier distill records of records next..stop-1 (all reused)."""
    f = self._file
    plan, old = f["plan"], f["plan"].old_index[f["next"]:stop]
    for j in old.tolist():
      f["writer"].write_raw(plan.old_record(j))
    f["stats"].rows.append(plan.old_rows[old])
    f["stats"].reused += len(old)
    f["next"] = stop
    self._progress.update(len(old))

  def _targets(self, arrays):
    """(ids [m,P,K], values [m,P,K], tail [m,P]) of either method."""
    if self._settings.label_method == "topk":
      return arrays["ids"], arrays["values"], arrays["tail"]
    m, p, k = arrays["draws"].shape
    ids, weights = packed_labels.unique_with_weights(arrays["draws"].reshape(m * p, k))
    return ids.reshape(m, p, k), weights.reshape(m, p, k), np.zeros((m, p), np.float32)

  def _end(self, step_seconds):
    f = self._file
    if f["plan"] is not None:
      self._copy_reused(len(f["plan"].old_index))
      f["plan"].close()
    f["writer"].close()
    name, stats = f["name"], f["stats"]
    part = stats.as_dict(self._settings.truncation_factor)
    source = os.path.join(self._input_dir, name)
    index = os.path.join(self._input_dir, index_name(name))
    rows = np.load(index, mmap_mode="r", allow_pickle=False).shape[0]
    if rows != part["records"]:
      raise InputError(index, f"{rows} index rows for {part['records']} records")
    shutil.copyfile(index, f["tmp_index"])
    with open(f["tmp_sources"], "wb") as g:
      np.save(g, np.concatenate(stats.rows) if stats.rows else
              np.zeros(0, reuse.SOURCES_DTYPE), allow_pickle=False)
    part.update(source_bytes=os.path.getsize(source), distill_bytes=os.path.getsize(f["tmp"]),
                seconds=round(time.monotonic() - f["start"], 3),
                step_seconds=round(step_seconds, 3))
    self._out.write_part(name, part)
    self._file = None
    f["stack"].close()  # publishes the sidecars, then the .tfrecord


def log_example(ids, values, n, k, vocab=None, stream=None):
  """Prints the teacher's heaviest ids at the first record's first masked
  positions, as tokens when `vocab` (list of tokens) is given; returns 1."""
  stream = stream or sys.stderr
  shown = min(int(n[0]), 3)
  print("*** Teacher labels (first record) ***", file=stream)
  for j in range(shown):
    order = np.argsort(-values[0, j], kind="stable")[:min(k, 5)]
    pairs = " ".join(f"{_token(vocab, ids[0, j, o])}:{values[0, j, o]:.3f}" for o in order)
    print(f"position {j}: {pairs}", file=stream)
  return 1


def _token(vocab, token_id):
  return vocab[token_id] if vocab and 0 <= token_id < len(vocab) else str(int(token_id))


def _uniforms_fn(settings, p):
  """For sampling: serialized records [m] -> uniforms [m,P,K], seeded by
  each record's bytes (packed_labels.record_uniforms)."""
  if settings.label_method != "sampled":
    return None

  def uniforms(records):
    return packed_labels.record_uniforms(settings.seed, records,
                                          (p, settings.truncation_factor))
  return uniforms


class _Files:
  """Begins and ends files on the writer as the batches move through them."""

  def __init__(self, writer, names):
    self._writer, self._names = writer, names
    self.current, self.step_seconds = -1, 0.0

  def advance_to(self, index):
    """Ends the current file and begins the next ones up to `index` (files
    without records are begun and ended: they make empty outputs)."""
    while self.current < index:
      if self.current >= 0:
        self._writer.send(("end", self.step_seconds))
      self.current, self.step_seconds = self.current + 1, 0.0
      if self.current < len(self._names):
        self._writer.send(("begin", self._names[self.current]))


def _run_batches(step, writer, batches, files):
  for batch in batches:
    files.advance_to(int(batch["file"]))
    start = time.monotonic()
    args = (batch["features"], batch["uniforms"]) if "uniforms" in batch else (
        batch["features"],)
    m = int(batch["count"])
    arrays = {key: value.numpy()[:m] for key, value in step(*args).items()}
    files.step_seconds += time.monotonic() - start
    arrays.update(records=batch["records"].numpy(), weights=batch["weights"].numpy()[:m])
    writer.send(("batch", arrays))


def check_records(input_dir, names):
  """Reads each input records file once, checking every CRC and the sha256 its
  manifest lists, before any label file is begun.

  tf.data would stop mid-run with a DataLossError (after earlier files were
  published) and never notices a file edited since its stage completed. The
  pass is sequential I/O plus CRC32C and sha256 (~1 GB/s), small next to the
  teacher's forward passes over the same records.
  """
  manifest = stage.read_json(os.path.join(input_dir, stage.MANIFEST))
  sha256 = {f["name"]: f.get("sha256") for f in manifest.get("files", [])}
  for name in names:
    tfrecord.check_file(os.path.join(input_dir, name), sha256.get(name))


def label_files(out, input_dir, names, step, settings, shapes, progress, examples=0,
                vocab=None, reuse_dir=None):
  """Writes the distill file of each of `names` (this rank's unfinished ones).

  Args:
    out: the stage.StageOutput; input_dir: the records directory.
    step: () -> inference.make_step's function for (settings,
      shapes); called only if some record needs the teacher.
    settings: LabelSettings; shapes: (B, S, P).
    progress: a progress.Progress counting instances.
    examples, vocab: how many records to log (stderr), with which tokens.
    reuse_dir: an earlier cache with the same label identity (see
      reuse.reuse_config): records found there are copied from it.
  """
  if not names:
    return
  check_records(input_dir, names)
  paths = [os.path.join(input_dir, name) for name in names]
  plans = {n: reuse.plan_file(p, reuse_dir, n)
           for n, p in zip(names, paths)} if reuse_dir else {}
  keep = [plans[n].old_index < 0 for n in names] if plans else None
  writer = _Writer(out, input_dir, settings, progress, examples, vocab, plans)
  try:
    files = _Files(writer, names)
    if keep is None or any(k.any() for k in keep):
      batches = inference.records_batches(
          paths, shapes, settings.truncation_factor, _uniforms_fn(settings, shapes[2]),
          keep=keep)
      _run_batches(step(), writer, batches, files)
    files.advance_to(len(names))
  finally:
    writer.close()


def _sizes(counts, parts, k, vocab_size):
  """Bytes per cached entry and per instance, ours and two other layouts."""
  entries, instances = max(counts["cache_entries"], 1), max(counts["instances"], 1)
  source = sum(p["source_bytes"] for p in parts)
  distill = sum(p["distill_bytes"] for p in parts)
  lists = sum(p["lists_layout_bytes"] for p in parts)
  full = source + counts["masked_positions"] * 4 * vocab_size
  return {"source_bytes": source, "distill_bytes": distill,
          "cache_bytes_per_entry": round((distill - source) / entries, 4),
          "distill_bytes_per_instance": round(distill / instances, 1),
          "lists_layout_cache_bytes_per_entry": round((lists - source) / entries, 4),
          "lists_layout_bytes_per_instance": round(lists / instances, 1),
          "full_f32_cache_bytes_per_entry": round(4 * vocab_size / k, 4),
          "full_f32_bytes_per_instance": round(full / instances, 1)}


def finalize(out, names, seconds, ranks, teacher=None, setup_seconds=None):
  """Aggregates the sidecars, writes manifest/stats/COMPLETED; returns the
  one-line summary. `teacher`: where the weights came from (provenance);
  setup_seconds: the part of `seconds` before labelling (model, hashing)."""
  config = out.config
  k = config["truncation_factor"]
  parts = {name: out.read_part(name) for name in names}
  counts = {f"{split}_instances": sum(p["records"] for n, p in parts.items()
                                      if n.startswith(split + "/"))
            for split in ("train", "eval")}
  counts["instances"] = sum(p["records"] for p in parts.values())
  counts["masked_positions"] = sum(p["masked_positions"] for p in parts.values())
  counts["cache_entries"] = counts["masked_positions"] * k
  for key in ("reused_records", "computed_records"):
    counts[key] = sum(p[key] for p in parts.values())
  counts.update(_sizes(counts, list(parts.values()), k, config["vocab_size"]))
  busy = {key: round(sum(p[key] for p in parts.values()), 3)
          for key in ("seconds", "step_seconds", "write_seconds")}
  stats = dict(counts, files=parts, seconds=round(seconds, 2), ranks=ranks,
               setup_seconds=setup_seconds and round(setup_seconds, 2),
               instances_per_second=round(counts["instances"] / max(seconds, 1e-9), 1),
               **{f"file_{key}": value for key, value in busy.items()},
               notes={"lists_layout": "Int64List ids + FloatList values padded to "
                                      "[P*K] and FloatList tail [P]",
                      "full_f32": "a float32 distribution over the vocab per real "
                                  "masked position (analytic)"})
  files = [f(n) for n in names for f in (str, index_name, reuse.sources_name)]
  features = [dataclasses.asdict(f) for f in schema.DISTILL_FEATURES]
  out.finalize(files, counts, stats, extra={"features": features, "teacher": teacher})
  reused = (f" ({counts['reused_records']} reused from {config['reuse_from'][:12]}..., "
            f"{counts['computed_records']} computed)" if "reuse_from" in config else "")
  return (f"extract_teacher_labels: {counts['train_instances']} train + "
          f"{counts['eval_instances']} eval instances{reused}, {counts['cache_entries']} "
          f"cached entries ({counts['cache_bytes_per_entry']} B/entry) in "
          f"{seconds:.1f}s ({stats['instances_per_second']:.0f} instances/s) -> {out.dir}")
