"""Refreshes the corpus from the newest finished Wikipedia dump, incrementally.

  python tools/refresh_corpus.py --root=/data/corpus --mirror_url=https://MIRROR \
      --wiki=enwiki --vocab_file=/data/vocab.txt

Builds <root>/versions/<date>/ (extract -> shards -> records [-> teacher labels
with --teacher_config/--teacher_checkpoint], reusing the current version's work
for pages whose revision did not change), then switches
<root>/current to it atomically. Safe under cron: a second run while one is
going exits 0 with "already running"; a killed run leaves the old version
current and the next run resumes. Exit status: 0 done / nothing new / already
running, 2 bad input or flags, 3 download or checksum failure, 4 a stage failed.
"""

import os

import _bootstrap  # noqa: F401  pylint: disable=unused-import
from absl import flags

from pipeline.core import cli
from pipeline.corpus import download
from pipeline.corpus import extract
from pipeline.corpus import mirror
from pipeline.corpus import refresh
from pipeline.core import stage
from pipeline.core.errors import InputError

FLAGS = flags.FLAGS
flags.DEFINE_string("root", None, "Corpus root (versions/, current, state.json, logs/).",
                    required=True)
flags.DEFINE_string("mirror_url", None, "Dump mirror base URL or local directory.",
                    required=True)
flags.DEFINE_string("wiki", "enwiki", "Wiki name, e.g. enwiki.")
flags.DEFINE_string("vocab_file", None, "The vocab.txt every version uses.", required=True)
flags.DEFINE_integer("keep_versions", 2, "Versions kept after a switch.", lower_bound=1)
flags.DEFINE_integer("num_shards", 16, "Training text shards.")
flags.DEFINE_float("eval_fraction", 0.01, "Held-out fraction (by page-id hash).")
flags.DEFINE_integer("min_article_chars", 200, "Drop shorter articles.")
flags.DEFINE_integer("max_seq_length", 128, "Records: maximum sequence length.")
flags.DEFINE_integer("max_predictions_per_seq", 20, "Records: masked LM predictions.")
flags.DEFINE_integer("dupe_factor", 5, "Records: passes with different masks.")
flags.DEFINE_integer("random_seed", 12345, "Records: seed.")
flags.DEFINE_bool("do_lower_case", True, "Records: lower-case (uncased vocab).")
flags.DEFINE_integer("num_workers", os.cpu_count(), "Processes per stage.")
flags.DEFINE_string("teacher_config", None, "Teacher labels too (stage 5): the teacher's "
                    "bert_config.json or a bundled config name; with --teacher_checkpoint.")
flags.DEFINE_string("teacher_checkpoint", None, "The teacher's weights.")
flags.DEFINE_integer("truncation_factor", 16, "Labels: K ids per masked position.")
flags.DEFINE_float("temperature", 1.0, "Labels: softmax temperature T.")
flags.DEFINE_enum("label_method", "topk", ["topk", "sampled"], "Labels: top-K or sampled.")
flags.DEFINE_integer("label_batch_size", 64, "Labels: records per teacher forward pass.")

EXIT_DOWNLOAD, EXIT_STAGE = 3, 4


def _fetch(mirror_, date, vdir, log):
  """Verified local paths of the dump's article files; returns (paths, bytes)."""
  paths, fetched = [], 0
  for f in mirror_.article_files(date):
    if mirror_.is_http:
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


def _settings():
  """The BuildSettings of the flags."""
  teacher = None
  if bool(FLAGS.teacher_config) != bool(FLAGS.teacher_checkpoint):
    raise InputError("--teacher_config/--teacher_checkpoint", "give both or neither")
  if FLAGS.teacher_config:
    teacher = refresh.TeacherSettings(
        FLAGS.teacher_config, os.path.abspath(FLAGS.teacher_checkpoint),
        FLAGS.truncation_factor, FLAGS.temperature, FLAGS.label_method,
        FLAGS.label_batch_size)
  return refresh.BuildSettings(
      FLAGS.vocab_file, FLAGS.num_shards, FLAGS.eval_fraction, FLAGS.min_article_chars,
      FLAGS.max_seq_length, FLAGS.max_predictions_per_seq, FLAGS.dupe_factor,
      FLAGS.random_seed, FLAGS.do_lower_case, FLAGS.num_workers, teacher)


def _revisions(extract_dir):
  if not extract_dir or not os.path.exists(os.path.join(extract_dir, stage.COMPLETED)):
    return None
  return extract.PreviousDocs(extract_dir, stage.read_input(extract_dir, "extract_wiki")).revisions()


def _refresh():
  settings = _settings()
  state = refresh.read_state(FLAGS.root)
  source = mirror.Mirror(FLAGS.mirror_url, FLAGS.wiki)
  date = source.newest_new(after=state.get("last_date"))
  if date is None:
    print(f"refresh_corpus: no new dump (last processed: {state.get('last_date')})")
    return 0
  log, vdir, prev = refresh.RunLog(FLAGS.root), refresh.version_dir(FLAGS.root, date), \
      refresh.current_dir(FLAGS.root)
  log(f"refresh_corpus: {FLAGS.wiki} dump {date}; current version: {prev or 'none'}")
  try:
    dumps, fetched = _fetch(source, date, vdir, log)
  except InputError as e:
    log(f"error: {e} (current version kept)")
    return EXIT_DOWNLOAD
  try:
    times = {tool: log.run_stage(tool, args)
             for tool, args in refresh.stage_commands(vdir, prev, dumps, settings)}
  except refresh.StageFailed as e:
    log(f"error: {e} (current version kept; rerun to resume)")
    return EXIT_STAGE
  changes = refresh.document_changes(_revisions(prev and os.path.join(prev, "extract")),
                                     _revisions(os.path.join(vdir, "extract")))
  refresh.switch(FLAGS.root, date)
  state["last_date"] = date
  state["history"] = state.get("history", []) + [dict(date=date, changes=changes)]
  refresh.write_state(FLAGS.root, state)
  removed = refresh.prune(FLAGS.root, FLAGS.keep_versions)
  timing = ", ".join(f"{k} {v:.1f}s" for k, v in times.items())
  log(f"refresh_corpus: dump {date} is current; documents new {changes['new']}, changed "
      f"{changes['changed']}, deleted {changes['deleted']}, reused {changes['unchanged']}; "
      f"{refresh.labels_summary(vdir)}{timing}; downloaded {fetched} bytes; removed "
      f"versions {removed or 'none'}; log {log.path}")
  return 0


def main(argv):
  del argv
  try:
    with refresh.exclusive(FLAGS.root):
      return _refresh()
  except refresh.AlreadyRunning:
    print("refresh_corpus: already running (another refresh holds the lock); nothing done")
    return 0


if __name__ == "__main__":
  cli.run(main)
