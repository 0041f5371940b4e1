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
import sys
import time
import traceback
from typing import Callable, Optional

from pipeline.core import kinds
from pipeline.core import stage
from pipeline.core.errors import ConfigError, InputError
from pipeline.corpus import download
from pipeline.corpus import extract
from pipeline.corpus import mirror as mirror_lib
from pipeline.corpus import sharding
from pipeline.records import instances
from pipeline.records import pretraining_stage

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
class LabelStageArgs:
  """What the teacher-label stage of a version gets (the stage itself needs the
  teacher model, so it lives in modeling/ and the caller passes it in)."""
  records_dir: str
  output_dir: str
  vocab_file: str
  teacher: TeacherSettings
  reuse_dir: Optional[str] = None


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


def _reuse(prev, sub):
  """The previous version's completed `sub` stage output, or None."""
  if prev and os.path.exists(os.path.join(prev, sub, stage.COMPLETED)):
    return os.path.join(prev, sub)
  return None


def stage_runs(vdir, prev, dumps, s, label_stage=None):
  """[(name, run function, its config)] building version dir `vdir` from `dumps`,
  each reusing the completed output of the previous version `prev`."""
  out = lambda sub: os.path.join(vdir, sub)  # noqa: E731
  runs = [
      ("extract_wiki", extract.run, extract.ExtractConfig(
          inputs=tuple(dumps), output_dir=out("extract"),
          min_article_chars=s.min_article_chars, num_workers=s.num_workers,
          reuse_dir=_reuse(prev, "extract"))),
      ("shard_text", sharding.run, sharding.ShardConfig(
          input_dir=out("extract"), output_dir=out("shards"), num_shards=s.num_shards,
          eval_fraction=s.eval_fraction, num_workers=s.num_workers)),
      ("create_pretraining_data", pretraining_stage.run, pretraining_stage.RecordsConfig(
          input_dir=out("shards"), output_dir=out("records"), vocab_file=s.vocab_file,
          instance_config=instances.InstanceConfig(
              max_seq_length=s.max_seq_length,
              max_predictions_per_seq=s.max_predictions_per_seq,
              dupe_factor=s.dupe_factor, random_seed=s.random_seed),
          do_lower_case=s.do_lower_case, num_workers=s.num_workers,
          reuse_dir=_reuse(prev, "records"))),
  ]
  if s.teacher:
    runs.append(("extract_teacher_labels", label_stage, LabelStageArgs(
        records_dir=out("records"), output_dir=out("distill"), vocab_file=s.vocab_file,
        teacher=s.teacher, reuse_dir=_reuse(prev, "distill"))))
  return runs


def labels_summary(vdir):
  """"labels reused R, computed C" of a version's label stage, or ""."""
  path = os.path.join(vdir, "distill", stage.STATS)
  if not os.path.exists(path):
    return ""
  stats = stage.read_json(path)
  return (f"labels reused {stats.get('reused_records', 0)}, "
          f"computed {stats.get('computed_records', stats.get('instances'))}; ")


class StageFailed(Exception):
  """A stage raised; its one-line cause is in the message."""


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

  def run_stage(self, name, fn, config):
    """Runs fn(config) with its output teed to the log; returns seconds.

    Raises:
      StageFailed: the stage raised; its one-line cause is in the message and
        the traceback in the log.
    """
    self(f"{name}: {config}")
    start = time.monotonic()
    tee_out, tee_err = _Tee(sys.stdout, self._f), _Tee(sys.stderr, self._f)
    try:
      with contextlib.redirect_stdout(tee_out), contextlib.redirect_stderr(tee_err):
        fn(config)
    except Exception as e:  # pylint: disable=broad-except
      self._f.write(traceback.format_exc())
      self._f.flush()
      raise StageFailed(f"{name} failed: {e}") from None
    return time.monotonic() - start


class _Tee:
  """A text stream writing to a console stream and the run's log file."""

  def __init__(self, console, log):
    self._console, self._log = console, log

  def write(self, text):
    self._console.write(text)
    self._log.write(text)
    return len(text)

  def flush(self):
    self._console.flush()
    self._log.flush()

  def isatty(self):
    return False


EXIT_DOWNLOAD, EXIT_STAGE = 3, 4


@dataclasses.dataclass(frozen=True, kw_only=True)
class RefreshConfig:
  """tools/refresh_corpus.py: one refresh of `root` from a dump mirror."""
  root: str  # versions/, current, state.json, logs/.
  mirror_url: str  # Base URL or local directory in Wikimedia's layout.
  build: BuildSettings
  wiki: str = "enwiki"
  keep_versions: int = 2

  def __post_init__(self):
    if self.keep_versions < 1:
      raise ConfigError("--keep_versions must be >= 1")


def fetch_dump(source, date, vdir, log):
  """Verified local paths of the dump's article files; returns (paths, bytes)."""
  paths, fetched = [], 0
  for f in source.article_files(date):
    if source.is_http:
      dest = os.path.join(vdir, "dump", f.name)
      os.makedirs(os.path.dirname(dest), exist_ok=True)
      fetched += download.download(f.url, dest, size=f.size, sha1=f.sha1)
    else:
      dest = f.url
      if os.path.getsize(dest) != f.size or download.sha1_of(dest) != f.sha1:
        raise InputError(dest, "size or sha1 differs from the published checksums")
    log(f"verified {f.name} ({f.size} bytes)")
    paths.append(dest)
  return paths, fetched


def _revisions(extract_dir):
  if not extract_dir or not os.path.exists(os.path.join(extract_dir, stage.COMPLETED)):
    return None
  _, manifest = kinds.read(extract_dir, kinds.DOCUMENTS)
  return extract.PreviousDocs(extract_dir, manifest).revisions()


def _build(config, date, label_stage):
  """Fetches and builds one version; returns (exit status, summary line)."""
  log, vdir = RunLog(config.root), version_dir(config.root, date)
  prev = current_dir(config.root)
  log(f"refresh_corpus: {config.wiki} dump {date}; current version: {prev or 'none'}")
  try:
    dumps, fetched = fetch_dump(mirror_lib.Mirror(config.mirror_url, config.wiki), date,
                                vdir, log)
  except InputError as e:
    log(f"error: {e} (current version kept)")
    return EXIT_DOWNLOAD
  try:
    times = {name: log.run_stage(name, fn, stage_config) for name, fn, stage_config
             in stage_runs(vdir, prev, dumps, config.build, label_stage)}
  except StageFailed as e:
    log(f"error: {e} (current version kept; rerun to resume)")
    return EXIT_STAGE
  changes = document_changes(_revisions(prev and os.path.join(prev, "extract")),
                             _revisions(os.path.join(vdir, "extract")))
  _publish(config, date, changes)
  removed = prune(config.root, config.keep_versions)
  timing = ", ".join(f"{k} {v:.1f}s" for k, v in times.items())
  log(f"refresh_corpus: dump {date} is current; documents new {changes['new']}, changed "
      f"{changes['changed']}, deleted {changes['deleted']}, reused {changes['unchanged']}; "
      f"{labels_summary(vdir)}{timing}; downloaded {fetched} bytes; removed "
      f"versions {removed or 'none'}; log {log.path}")
  return 0


def _publish(config, date, changes):
  """Makes version `date` current and records it in state.json."""
  switch(config.root, date)
  state = read_state(config.root)
  state["last_date"] = date
  state["history"] = state.get("history", []) + [dict(date=date, changes=changes)]
  write_state(config.root, state)


def run(config, label_stage: Optional[Callable] = None):
  """One refresh; returns the exit status (0 done / nothing new / already running,
  3 download or checksum failure, 4 a stage failed).

  Args:
    config: RefreshConfig.
    label_stage: label_stage(LabelStageArgs), the teacher-label stage; required
      when config.build.teacher is set (it needs the model, so modeling/ has it).
  """
  if config.build.teacher and label_stage is None:
    raise ConfigError("a teacher was given but no label stage")
  try:
    with exclusive(config.root):
      state = read_state(config.root)
      date = mirror_lib.Mirror(config.mirror_url, config.wiki).newest_new(
          after=state.get("last_date"))
      if date is None:
        print(f"refresh_corpus: no new dump (last processed: {state.get('last_date')})")
        return 0
      return _build(config, date, label_stage)
  except AlreadyRunning:
    print("refresh_corpus: already running (another refresh holds the lock); nothing done")
    return 0
