"""The stage contract every pipeline stage follows.

A stage's output directory holds:
  <files>          the data, each file published by an atomic rename from .staging/
  .staging/        files being written (same filesystem, so os.replace is atomic)
  .parts/          small JSON sidecars (per-unit stats) published beside data files
  .run.json        config + input hash of the run that owns the directory, written
                   first, so a resumed run knows the published files are its own
  .lock            flock'ed by the one run writing the directory (its pid inside);
                   the kernel releases it when that process dies, so it never sticks
  manifest.json    files (bytes, sha256), counts, config, input manifest hash, code version
  stats.json       counts and timings for people
  COMPLETED        written last: "files exist" is not "done" (as seqio does it)

Same config + inputs on a completed directory is a no-op; a killed run resumes by
skipping published files (atomic, so never half-written) and redoing the rest; a
different config is an error unless `overwrite`. Only one run writes a directory
at a time: a second one stops before touching anything (OutputBusyError), since
two writers (one with --overwrite) could otherwise mix their files under one
COMPLETED. An OSError on the output (read-only, not a directory, disk full) is an
OutputError naming the path, so tools print one line instead of a traceback.
"""

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import shutil
import subprocess

from pipeline.core.errors import InputError, OutputBusyError, OutputError

MANIFEST = "manifest.json"
COMPLETED = "COMPLETED"
STATS = "stats.json"
RUN = ".run.json"
STAGING = ".staging"
PARTS = ".parts"
LOCK = ".lock"
# Failures of a write that free space (not a fix to the command) cures.
_NO_SPACE = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
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


def replace_directory(tmp, target, old=None):
  """Renames the complete directory `tmp` to `target`: an existing `target` is moved
  to `old` (default `<target>.old.<pid>`) first and removed after, so `target` is
  always either the previous complete directory or the new one."""
  old = old or f"{target}.old.{os.getpid()}"
  shutil.rmtree(old, ignore_errors=True)
  if os.path.exists(target):
    os.replace(target, old)
  os.replace(tmp, target)
  shutil.rmtree(old, ignore_errors=True)


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


class _HashingReader:
  """A binary file that hashes what is read through it (read, readline, lines)."""

  def __init__(self, f):
    self._f, self.hash = f, hashlib.sha256()

  def read(self, n=-1):
    data = self._f.read(n)
    self.hash.update(data)
    return data

  def readline(self, limit=-1):
    line = self._f.readline(limit)
    self.hash.update(line)
    return line

  def __iter__(self):
    return iter(self.readline, b"")


def _mismatch(path):
  return InputError(path, "content differs from the input manifest (sha256 mismatch: "
                    "modified after the stage completed?)")


@contextlib.contextmanager
def verified_open(path, sha256):
  """Opens `path` for binary reading and checks its sha256 as it is read.

  The caller reads as usual (one pass, no extra I/O); on leaving the block the
  unread rest is hashed too and a mismatch raises InputError, so a caller that
  publishes after the block never publishes anything made from a changed file.
  sha256 None (a manifest without hashes) opens the file unchecked.
  """
  with open(path, "rb") as f:
    if sha256 is None:
      yield f
      return
    reader = _HashingReader(f)
    yield reader
    while reader.read(1 << 20):
      pass
    if reader.hash.hexdigest() != sha256:
      raise _mismatch(path)


def input_sha256(path):
  """The sha256 listed for `path` by the stage directory holding it (the nearest
  enclosing directory with COMPLETED and a manifest), or None if unlisted.

  Lets a reader deep in a worker verify its input without another argument.
  """
  path = os.path.abspath(path)
  d = os.path.dirname(path)
  while d != os.path.dirname(d):
    if os.path.exists(os.path.join(d, COMPLETED)) and os.path.exists(os.path.join(d, MANIFEST)):
      name = os.path.relpath(path, d)
      files = read_json(os.path.join(d, MANIFEST)).get("files", [])
      return next((f.get("sha256") for f in files if f["name"] == name), None)
    d = os.path.dirname(d)
  return None


def verify_input_files(manifest, names=None):
  """Streams the sha256 of input files and compares it with their manifest.

  For readers that cannot hash as they read (tf.data): one sequential read per
  file, at disk speed. Call it before the first step so a changed or corrupt
  file is a one-line error, not a DataLossError after hours of training.

  Args:
    manifest: read_input's result for the input directory.
    names: the file names (as listed in the manifest) to check; None for all.
  Raises:
    InputError: a file unlisted in the manifest, or whose content differs.
  """
  entries = {f["name"]: f for f in manifest.get("files", [])}
  for name in entries if names is None else names:
    path = os.path.join(manifest["_dir"], name)
    if name not in entries:
      raise InputError(path, "not listed in the input manifest")
    if file_sha256(path) != entries[name]["sha256"]:
      raise _mismatch(path)


def _config_diff(a, b):
  keys = sorted(set(a) | set(b))
  return [k for k in keys if a.get(k) != b.get(k)]


def _output_error(root, e):
  """An OSError of an output operation as a one-line OutputError."""
  path = e.filename or root
  if isinstance(e, FileExistsError):
    cause = "exists and is not a directory"
  elif isinstance(e, NotADirectoryError):
    cause = "cannot create it: a component of the path is a file, not a directory"
  else:
    cause = f"cannot write: {e.strerror or e}"
  inside = os.path.relpath(path, root).split(os.sep)
  if e.filename is None or any(part.startswith(".") for part in inside):
    path = root  # name the output, not its bookkeeping (.lock, .staging/...)
  return OutputError(path, cause, no_space=e.errno in _NO_SPACE)


def _is_user_cause(e, root):
  """True for an OSError that the output's location or capacity causes (not a
  bug): on a path in `root`, or a write without a path, where only space runs
  out (an error on an input file is not ours to reword)."""
  if e.filename is None:
    return e.errno in _NO_SPACE
  root = os.path.abspath(root)
  return os.path.commonpath([root, os.path.abspath(e.filename)]) == root


class StageOutput:
  """One stage run's output directory, following the contract above.

  Under MPI every rank makes one; only the chief (rank 0) takes the directory's
  lock, prepares it and writes the manifest, after a barrier the caller places.
  """

  def __init__(self, output_dir, stage, config, input_hash, overwrite=False,
               is_chief=True):
    self.dir = output_dir
    self.stage = stage
    self.config = config
    self.input_hash = input_hash
    self.overwrite = overwrite
    self.is_chief = is_chief
    self._lock_fd = None

  def path(self, name):
    return os.path.join(self.dir, name)

  @contextlib.contextmanager
  def _output_errors(self):
    """Turns a user-caused OSError on the output into an OutputError."""
    try:
      yield
    except OSError as e:
      if not _is_user_cause(e, self.dir):
        raise
      raise _output_error(self.dir, e) from None

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
    """Claims the directory for this run; returns True if it is already complete.

    The chief locks the directory first, so nothing (not even --overwrite's
    wipe) happens while another run writes it.
    """
    if not self.is_chief:
      return self.is_complete()
    try:
      self.lock()
    except OutputError:
      if self.is_complete():  # e.g. a finished output on a read-only filesystem
        return True
      raise
    if self.is_complete():
      return True
    with self._output_errors():
      run_file = self.path(RUN)
      if os.path.exists(run_file):
        if not self._check_owner(read_json(run_file), "partial output"):
          self._wipe()
      elif os.path.exists(self.path(COMPLETED)):
        self._wipe()  # completed with another config and --overwrite given
      elif set(os.listdir(self.dir)) - {LOCK}:
        raise InputError(self.dir, "output directory is not empty and was not made by "
                         "this tool; refusing to write into it")
      self._claim()
    return False

  def lock(self):
    """Takes the directory's exclusive lock until finalize (or until this object or
    its process dies). Raises OutputBusyError if another live run holds it."""
    if self._lock_fd is not None:
      return
    with self._output_errors():
      os.makedirs(self.dir, exist_ok=True)
      fd = os.open(self.path(LOCK), os.O_RDWR | os.O_CREAT, 0o644)
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      holder = os.read(fd, 32).decode("ascii", "replace").strip() or "unknown"
      os.close(fd)
      raise OutputBusyError(self.dir, holder) from None
    # The pid is for the message of a second run only; the flock is the lock.
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    self._lock_fd = fd

  def __getstate__(self):
    # Workers get a copy to publish files with; the lock stays with this process
    # (its fd number means nothing, or another file, in a worker).
    return dict(self.__dict__, _lock_fd=None)

  def __del__(self):
    self.unlock()

  def unlock(self):
    # The lock file stays: unlinking it would let a third run lock a new inode
    # while a second one still holds the old.
    if self._lock_fd is not None:
      os.close(self._lock_fd)
      self._lock_fd = None

  def _wipe(self):
    for name in os.listdir(self.dir):
      if name == LOCK:
        continue
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
    tmp = os.path.join(self.path(STAGING), name.replace(os.sep, "__") + f".{os.getpid()}")
    try:
      with self._output_errors():
        os.makedirs(os.path.dirname(final), exist_ok=True)
        yield tmp
        with open(tmp, "rb+") as f:
          os.fsync(f.fileno())
        os.replace(tmp, final)
    finally:
      if os.path.exists(tmp):
        os.remove(tmp)

  def write_part(self, name, obj):
    """Publishes a per-unit sidecar (e.g. a shard's stats) under .parts/."""
    with self._output_errors():
      atomic_write_text(os.path.join(self.path(PARTS), name.replace(os.sep, "__") + ".json"),
                        json_dumps(obj))

  def read_part(self, name):
    return read_json(os.path.join(self.path(PARTS), name.replace(os.sep, "__") + ".json"))

  def finalize(self, files, counts, stats, extra=None):
    """Writes manifest.json and stats.json, then COMPLETED last; then unlocks."""
    with self._output_errors():
      manifest = self._finalize(files, counts, stats, extra)
    self.unlock()
    return manifest

  def _finalize(self, files, counts, stats, extra):
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
