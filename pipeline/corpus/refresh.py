"""Corpus versions on disk, for unattended refreshes from new dumps.

  <root>/versions/<date>/{dump,extract,shards,records,distill}  one per dump date
  <root>/current -> versions/<date>                          switched atomically
  <root>/state.json                                          last date processed
  <root>/logs/refresh-<UTC time>.log                         one per run
  <root>/.lock                                               flock'ed while running

A version is built beside the current one (reusing its work for pages that did
not change) and becomes current by renaming a new symlink over `current`, so a
reader of the old version is never disturbed and a killed refresh leaves the old
version current; the next run resumes the half-built version (every stage is
resumable). Older versions beyond `keep` are deleted only after the switch.
"""

import contextlib
import dataclasses
import fcntl
import os
import shutil
import subprocess
import sys
import time

from pipeline.core import stage

_TOOLS = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "tools")

CURRENT = "current"
VERSIONS = "versions"


class AlreadyRunning(Exception):
  pass


@contextlib.contextmanager
def exclusive(root):
  """Holds an exclusive flock on <root>/.lock; the kernel releases it when the
  process dies, so a crash can never leave it stuck."""
  os.makedirs(root, exist_ok=True)
  fd = os.open(os.path.join(root, ".lock"), os.O_RDWR | os.O_CREAT, 0o644)
  try:
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      raise AlreadyRunning(root) from None
    yield
  finally:
    os.close(fd)


def read_state(root):
  path = os.path.join(root, "state.json")
  return stage.read_json(path) if os.path.exists(path) else {"history": []}


def write_state(root, state):
  stage.atomic_write_text(os.path.join(root, "state.json"), stage.json_dumps(state))


def version_dir(root, date):
  return os.path.join(root, VERSIONS, date)


def current_dir(root):
  """The current version's directory, or None before the first refresh."""
  link = os.path.join(root, CURRENT)
  return os.path.realpath(link) if os.path.islink(link) else None


def switch(root, date):
  """Points <root>/current at versions/<date> with one atomic rename."""
  link, tmp = os.path.join(root, CURRENT), os.path.join(root, f".{CURRENT}.tmp")
  if os.path.lexists(tmp):
    os.remove(tmp)
  os.symlink(os.path.join(VERSIONS, date), tmp)
  os.replace(tmp, link)


def prune(root, keep):
  """Deletes all but the newest `keep` versions (never the current one)."""
  current = current_dir(root)
  dates = sorted(os.listdir(os.path.join(root, VERSIONS)))
  removed = []
  for date in dates[:-keep] if keep > 0 else dates:
    path = version_dir(root, date)
    if os.path.realpath(path) != current:
      shutil.rmtree(path)
      removed.append(date)
  return removed


def document_changes(previous, current):
  """new / changed / deleted / unchanged counts from two {page id: revid} maps."""
  if previous is None:
    return {"new": len(current), "changed": 0, "deleted": 0, "unchanged": 0}
  same = sum(1 for p, r in current.items() if previous.get(p) == r)
  new = sum(1 for p in current if p not in previous)
  return {"new": new, "changed": len(current) - same - new,
          "deleted": sum(1 for p in previous if p not in current), "unchanged": same}


@dataclasses.dataclass(frozen=True)
class TeacherSettings:
  """The teacher-label stage of a version (extract_teacher_labels flags)."""
  config: str  # bert_config.json or a bundled config name
  checkpoint: str
  truncation_factor: int = 32
  temperature: float = 1.0
  label_method: str = "topk"
  batch_size: int = 64


@dataclasses.dataclass(frozen=True)
class BuildSettings:
  """How every version is built (the stage tools' flags)."""
  vocab_file: str
  num_shards: int = 16
  eval_fraction: float = 0.01
  min_article_chars: int = 200
  max_seq_length: int = 128
  max_predictions_per_seq: int = 20
  dupe_factor: int = 5
  random_seed: int = 12345
  do_lower_case: bool = True
  num_workers: int = 1
  teacher: TeacherSettings = None  # no labels stage without a teacher


def stage_commands(vdir, prev, dumps, s):
  """(tool, args) of each stage building version dir `vdir` from `dumps`,
  with --reuse_dir on the completed outputs of the previous version `prev`."""
  out = lambda sub: os.path.join(vdir, sub)  # noqa: E731
  reuse = (lambda sub: [f"--reuse_dir={os.path.join(prev, sub)}"]  # noqa: E731
           if prev and os.path.exists(os.path.join(prev, sub, stage.COMPLETED)) else [])
  workers = f"--num_workers={s.num_workers}"
  commands = [
      ("extract_wiki", [f"--input={','.join(dumps)}", f"--output_dir={out('extract')}",
                        f"--min_article_chars={s.min_article_chars}", workers]
       + reuse("extract")),
      ("shard_text", [f"--input_dir={out('extract')}", f"--output_dir={out('shards')}",
                      f"--num_shards={s.num_shards}", workers,
                      f"--eval_fraction={s.eval_fraction}"]),
      ("create_pretraining_data", [
          f"--input_dir={out('shards')}", f"--output_dir={out('records')}",
          f"--vocab_file={s.vocab_file}", f"--max_seq_length={s.max_seq_length}",
          f"--max_predictions_per_seq={s.max_predictions_per_seq}",
          f"--dupe_factor={s.dupe_factor}", f"--random_seed={s.random_seed}",
          f"--do_lower_case={s.do_lower_case}", workers] + reuse("records")),
  ]
  t = s.teacher
  if t:
    commands.append(("extract_teacher_labels", [
        f"--bert_config_file={t.config}", f"--init_checkpoint={t.checkpoint}",
        f"--vocab_file={s.vocab_file}", f"--input_dir={out('records')}",
        f"--output_dir={out('distill')}", f"--truncation_factor={t.truncation_factor}",
        f"--temperature={t.temperature}", f"--label_method={t.label_method}",
        f"--batch_size={t.batch_size}"] + reuse("distill")))
  return commands


def labels_summary(vdir):
  """"labels reused R, computed C" of a version's label stage, or ""."""
  path = os.path.join(vdir, "distill", stage.STATS)
  if not os.path.exists(path):
    return ""
  stats = stage.read_json(path)
  return (f"labels reused {stats.get('reused_records', 0)}, "
          f"computed {stats.get('computed_records', stats.get('instances'))}; ")


class StageFailed(Exception):
  """A stage tool exited non-zero; its last output lines are in the message."""


class RunLog:
  """One log file per run (<root>/logs/refresh-<UTC time>.log), echoed to stdout."""

  def __init__(self, root):
    os.makedirs(os.path.join(root, "logs"), exist_ok=True)
    name = time.strftime("refresh-%Y%m%dT%H%M%SZ.log", time.gmtime())
    self.path = os.path.join(root, "logs", name)
    self._f = open(self.path, "a", encoding="utf-8")

  def __call__(self, line):
    print(line, flush=True)
    self._f.write(time.strftime("%H:%M:%S ", time.gmtime()) + line + "\n")
    self._f.flush()

  def run_stage(self, tool, args):
    """Runs tools/<tool>.py with args; its output goes to the log. Returns seconds."""
    cmd = [sys.executable, os.path.join(_TOOLS, tool + ".py"), *args]
    self(f"$ {' '.join(cmd[1:])}")
    start = time.monotonic()
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    self._f.write(proc.stdout)
    self._f.flush()
    if proc.returncode != 0:
      tail = proc.stdout.strip().splitlines()[-1:] or ["(no output)"]
      raise StageFailed(f"{tool} exited with status {proc.returncode}: {tail[0]}")
    return time.monotonic() - start
