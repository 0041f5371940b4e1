"""One pinned wheel fetched with pip, the machine's own package client.

Why pip rather than our own HTTP: pip already knows where this machine gets
packages (pip.conf, PIP_INDEX_URL, find-links, certificates, proxies), so the
repository names no registry host and works behind any mirror. pip resumes a
cut download within a run (--resume-retries); across runs, a verified copy in
the destination directory is reused and an unverified one is replaced.

Only `--index-url` is ever added, and only when the caller passes one (tests
serve an index on 127.0.0.1); the sha256 is checked here, as pip cannot know
the pin.
"""

import os
import re
import subprocess
import sys
import tempfile

from pipeline.core import stage
from pipeline.core.errors import InputError

# pip's debug log (always complete in --log, whatever the console verbosity):
# why an index page gave nothing, and which link a file came from.
_FETCH_FAILED = re.compile(r"Could not fetch URL (\S+): (.*?)(?: - skipping)?$")
_FOUND_LINK = re.compile(r"Found link (\S+) \(from ")
_CONNECTION = ("connection error", "proxy connection error", "timed out", "Max retries")


def requirement(package, version):
  return f"{package}=={version}"


def pip_download_command(package, version, dest_dir, index_url=None, log_file=None):
  """argv of `python -m pip download` for exactly one wheel, no dependencies."""
  cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
         "--disable-pip-version-check", "--no-input", "-d", dest_dir]
  if index_url:
    cmd += ["--index-url", index_url]
  if log_file:
    cmd += ["--log", log_file]
  return cmd + [requirement(package, version)]


def fetch_wheel(package, version, filename, sha256, dest_dir, index_url=None):
  """dest_dir/filename, downloaded by pip unless a verified copy is there.

  Args:
    filename: the wheel pip is expected to save (its name pins the build).
    sha256: the expected digest of that file.
    index_url: a PEP 503 index to use instead of the machine's configured one.
  Returns:
    (path, source): source says where the file came from (the index link when
    pip names it), None when a verified copy was already there.
  Raises:
    InputError: pip failed (unreachable index, no such package or version),
      saved another file, or the file's sha256 differs (the file is deleted).
  """
  dest = os.path.join(dest_dir, filename)
  if os.path.exists(dest):
    if stage.file_sha256(dest) == sha256:
      return dest, None
    os.remove(dest)  # a stale or foreign copy: pip would keep it as is
  os.makedirs(dest_dir, exist_ok=True)
  log = _run_pip(package, version, dest_dir, index_url)
  source = _link_of(log, filename) or _describe(package, version, index_url)
  if not os.path.exists(dest):
    raise InputError(source, f"pip did not save {filename}; saved "
                     f"{sorted(os.listdir(dest_dir)) or 'nothing'}")
  got = stage.file_sha256(dest)
  if got != sha256:
    os.remove(dest)
    raise InputError(source, f"{filename}: sha256 {got} differs from the expected "
                     f"{sha256}; the download was deleted")
  return dest, source


def _run_pip(package, version, dest_dir, index_url):
  """Runs pip; returns its debug log, or raises InputError with pip's reason."""
  with tempfile.TemporaryDirectory() as tmp:
    log_file = os.path.join(tmp, "pip.log")
    cmd = pip_download_command(package, version, dest_dir, index_url, log_file)
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    log = open(log_file, encoding="utf-8").read() if os.path.exists(log_file) else ""
  if proc.returncode != 0:
    raise InputError(_describe(package, version, index_url), _failure(proc.stderr, log))
  return log


def _failure(stderr, log):
  """One line: the index pages pip could not read, else pip's last error."""
  failed = [m.groups() for m in map(_FETCH_FAILED.search, log.splitlines()) if m]
  if failed:
    reasons = "; ".join(f"{url}: {reason}" for url, reason in failed)
    if any(c in reason for _, reason in failed for c in _CONNECTION):
      return f"cannot reach the package index: {reasons}"
    return f"pip could not fetch {reasons}"
  errors = [line for line in stderr.splitlines() if line.startswith("ERROR:")]
  last = errors[-1] if errors else (stderr.strip().splitlines() or ["no output"])[-1]
  return f"pip download failed: {last.removeprefix('ERROR:').strip()}"


def _link_of(log, filename):
  """The URL pip found `filename` at, from its debug log (None if not named)."""
  for match in map(_FOUND_LINK.search, log.splitlines()):
    if match and match.group(1).split("#")[0].rsplit("/", 1)[-1] == filename:
      return match.group(1).split("#")[0]
  return None


def _describe(package, version, index_url):
  where = index_url or "the configured package index"
  return f"{requirement(package, version)} ({where})"
