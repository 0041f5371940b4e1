"""The stage contract every pipeline stage follows.

A stage's output directory holds:
  <files>          the data, each file published by an atomic rename from .staging/
  .staging/        files being written (same filesystem, so os.replace is atomic)
  .parts/          small JSON sidecars (per-unit stats) published beside data files
  .run.json        config + input hash of the run that owns the directory, written
                   first, so a resumed run knows the published files are its own
  manifest.json    files (bytes, sha256), counts, config, input manifest hash, code version
  stats.json       counts and timings for people
  COMPLETED        written last: "files exist" is not "done" (as seqio does it)

Same config + inputs on a completed directory is a no-op; a killed run resumes by
skipping published files (atomic, so never half-written) and redoing the rest; a
different config is an error unless `overwrite`.
"""

import contextlib
import hashlib
import json
import os
import shutil
import subprocess

from pipeline.core.errors import InputError

MANIFEST = "manifest.json"
COMPLETED = "COMPLETED"
STATS = "stats.json"
RUN = ".run.json"
STAGING = ".staging"
PARTS = ".parts"
_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def code_version():
  """Git commit of this checkout (with -dirty), or 'unknown' outside git."""
  try:
    out = subprocess.run(
        ["git", "-C", _REPO_ROOT, "describe", "--always", "--dirty", "--abbrev=12"],
        capture_output=True, text=True, timeout=10, check=True)
    return out.stdout.strip() or "unknown"
  except (OSError, subprocess.SubprocessError):
    return "unknown"


def file_sha256(path, chunk=1 << 20):
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(chunk), b""):
      h.update(block)
  return h.hexdigest()


def json_dumps(obj):
  """Canonical JSON (sorted keys, fixed layout) so equal content is equal bytes."""
  return json.dumps(obj, sort_keys=True, indent=1, ensure_ascii=False) + "\n"


def atomic_write_text(path, text):
  tmp = f"{path}.tmp.{os.getpid()}"
  with open(tmp, "w", encoding="utf-8") as f:
    f.write(text)
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, path)


def read_json(path):
  try:
    with open(path, encoding="utf-8") as f:
      return json.load(f)
  except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
    raise InputError(path, f"unreadable JSON ({e.__class__.__name__}: {e})") from None


def read_input(input_dir, stages):
  """Returns the manifest of a completed upstream stage, checked against disk.

  Args:
    input_dir: the upstream stage's output directory.
    stages: acceptable values of manifest["stage"] (a str or a tuple of them).
  Raises:
    InputError: missing directory or COMPLETED marker, another stage's output, or
      files that are missing or changed size since the manifest was written.
  """
  stages = (stages,) if isinstance(stages, str) else tuple(stages)
  if not os.path.isdir(input_dir):
    raise InputError(input_dir, "input directory does not exist")
  if not os.path.exists(os.path.join(input_dir, COMPLETED)):
    raise InputError(input_dir, "input is incomplete (no COMPLETED marker): "
                     "run the previous stage to completion first")
  manifest = read_json(os.path.join(input_dir, MANIFEST))
  if manifest.get("stage") not in stages:
    raise InputError(input_dir, f"expected the output of {'/'.join(stages)}, "
                     f"found stage {manifest.get('stage')!r}")
  for entry in manifest.get("files", []):
    path = os.path.join(input_dir, entry["name"])
    if not os.path.exists(path):
      raise InputError(path, "listed in the input manifest but missing")
    if os.path.getsize(path) != entry["bytes"]:
      raise InputError(path, "size differs from the input manifest (modified after "
                       "the stage completed?)")
  manifest["_sha256"] = file_sha256(os.path.join(input_dir, MANIFEST))
  manifest["_dir"] = os.path.abspath(input_dir)
  return manifest


def _config_diff(a, b):
  keys = sorted(set(a) | set(b))
  return [k for k in keys if a.get(k) != b.get(k)]


class StageOutput:
  """One stage run's output directory, following the contract above.

  Under MPI every rank makes one; only the chief (rank 0) prepares the directory
  and writes the manifest, after a barrier the caller places.
  """

  def __init__(self, output_dir, stage, config, input_hash, overwrite=False,
               is_chief=True):
    self.dir = output_dir
    self.stage = stage
    self.config = config
    self.input_hash = input_hash
    self.overwrite = overwrite
    self.is_chief = is_chief

  def path(self, name):
    return os.path.join(self.dir, name)

  def _identity(self):
    return {"stage": self.stage, "config": self.config, "input_hash": self.input_hash}

  def _check_owner(self, found, what):
    """Raises unless `found` (an earlier run's identity) equals ours."""
    ours = self._identity()
    if found == ours:
      return True
    if self.overwrite:
      return False
    diff = _config_diff(found.get("config", {}), ours["config"])
    if found.get("input_hash") != ours["input_hash"]:
      diff.append("input")
    if found.get("stage") != ours["stage"]:
      diff.append("stage")
    raise InputError(self.dir, f"{what} was made with a different config (differs in: "
                     f"{', '.join(diff)}); pass --overwrite to replace it")

  def is_complete(self):
    """True when a completed output with our exact config and inputs exists."""
    if not os.path.exists(self.path(COMPLETED)):
      return False
    manifest = read_json(self.path(MANIFEST))
    found = {k: manifest.get(k) for k in ("stage", "config")}
    found["input_hash"] = manifest.get("input", {}).get("manifest_sha256")
    return self._check_owner(found, "existing completed output")

  def prepare(self):
    """Claims the directory for this run; returns True if it is already complete."""
    if self.is_complete():
      return True
    if not self.is_chief:
      return False
    os.makedirs(self.dir, exist_ok=True)
    run_file = self.path(RUN)
    if os.path.exists(run_file):
      if not self._check_owner(read_json(run_file), "partial output"):
        self._wipe()
    elif os.path.exists(self.path(COMPLETED)):
      self._wipe()  # completed with another config and --overwrite given
    elif os.listdir(self.dir):
      raise InputError(self.dir, "output directory is not empty and was not made by "
                       "this tool; refusing to write into it")
    self._claim()
    return False

  def _wipe(self):
    for name in os.listdir(self.dir):
      p = self.path(name)
      shutil.rmtree(p) if os.path.isdir(p) and not os.path.islink(p) else os.remove(p)

  def _claim(self):
    shutil.rmtree(self.path(STAGING), ignore_errors=True)  # leftovers of a killed run
    os.makedirs(self.path(STAGING))
    os.makedirs(self.path(PARTS), exist_ok=True)
    atomic_write_text(self.path(RUN), json_dumps(self._identity()))

  def done(self, name):
    return os.path.exists(self.path(name))

  @contextlib.contextmanager
  def writing(self, name):
    """Yields a temp path; on success the file is fsynced and renamed to `name`."""
    final = self.path(name)
    os.makedirs(os.path.dirname(final), exist_ok=True)
    tmp = os.path.join(self.path(STAGING), name.replace(os.sep, "__") + f".{os.getpid()}")
    try:
      yield tmp
      with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
      os.replace(tmp, final)
    finally:
      if os.path.exists(tmp):
        os.remove(tmp)

  def write_part(self, name, obj):
    """Publishes a per-unit sidecar (e.g. a shard's stats) under .parts/."""
    atomic_write_text(os.path.join(self.path(PARTS), name.replace(os.sep, "__") + ".json"),
                      json_dumps(obj))

  def read_part(self, name):
    return read_json(os.path.join(self.path(PARTS), name.replace(os.sep, "__") + ".json"))

  def finalize(self, files, counts, stats, extra=None):
    """Writes manifest.json and stats.json, then COMPLETED last."""
    entries = []
    for name in sorted(files):
      p = self.path(name)
      entries.append({"name": name, "bytes": os.path.getsize(p), "sha256": file_sha256(p)})
    manifest = {"stage": self.stage, "config": self.config, "counts": counts,
                "files": entries, "code_version": code_version(),
                "input": {"manifest_sha256": self.input_hash}}
    manifest.update(extra or {})
    atomic_write_text(self.path(MANIFEST), json_dumps(manifest))
    atomic_write_text(self.path(STATS), json_dumps(stats))
    shutil.rmtree(self.path(STAGING), ignore_errors=True)
    atomic_write_text(self.path(COMPLETED), "")
    # Bookkeeping of the run is not part of the output; the manifest says it all.
    shutil.rmtree(self.path(PARTS), ignore_errors=True)
    if os.path.exists(self.path(RUN)):
      os.remove(self.path(RUN))
    return manifest
