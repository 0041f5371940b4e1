"""Benchmark of issue 5: full rebuild vs incremental refresh on the real sample,
teacher labels included.

  .venv/bin/python bench/refresh.py [--work_dir /tmp/bench_refresh] [--reps 2]
      [--no_teacher]

Makes a local mirror with two dump dates: the sample dump as is, and the same
dump with the text of a seeded random 10% of its articles edited (new revision
ids). Every refresh runs the whole version build as cron would
(tools/refresh_corpus.py: extract -> shards -> records -> teacher labels) with
a teacher of 4 layers, hidden 256, random weights saved as a Google TF1
checkpoint by this script (only time matters here, not what it predicts).
- incremental: a root refreshed to date 1 once (untimed), copied, and the copy
  refreshed to date 2 (timed: reuses date 1's extraction, records and labels);
- full: a fresh root refreshed straight to date 2 (timed).
The two alternate --reps times in one run, since other jobs share the CPU;
wall and CPU seconds (all processes of the refresh) are reported, and the
ratio incremental / full of their medians. Writes bench/results/refresh.json.
"""

import argparse
import bz2
import hashlib
import json
import os
import random
import re
import resource
import shutil
import subprocess
import sys
import time
from xml.sax import saxutils

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from pipeline.core import stage  # noqa: E402  pylint: disable=wrong-import-position
from pipeline.corpus import wiki

SAMPLE = os.path.join(ROOT, "..", "shared", "data", "enwiki-sample-pages-articles.xml.bz2")
WIKI = "enwiki"


def _page_xml(page):
  redirect = (f'<redirect title="{saxutils.escape(page.title)}" />' if page.redirect else "")
  return (f"<page><title>{saxutils.escape(page.title)}</title><ns>{page.ns}</ns>"
          f"<id>{page.id}</id>{redirect}<revision><id>{page.revid}</id>"
          f'<text xml:space="preserve">{saxutils.escape(page.text)}</text></revision></page>\n')


def write_edited_dump(src, dest, fraction, seed):
  """A copy of dump `src` with exactly `fraction` of its articles (the pages the
  extraction keeps), chosen with a seeded RNG, edited; returns how many."""
  pages = list(wiki.iter_pages(src))
  articles = [p.id for p in pages if wiki.clean_page(p, 200)[1] is None]
  chosen = set(random.Random(seed).sample(articles, round(fraction * len(articles))))
  parts = []
  for page in pages:
    if page.id in chosen:
      page = page._replace(revid=page.revid + 10**9, text=page.text.replace(
          ". ", ". This sentence was added in a later revision. ", 3))
    parts.append(_page_xml(page))
  xml = ('<mediawiki xmlns="http://www.mediawiki.org/xml/export-0.10/" version="0.10" '
         'xml:lang="en">\n' + "".join(parts) + "</mediawiki>\n")
  with bz2.open(dest, "wt", encoding="utf-8") as f:
    f.write(xml)
  return len(chosen)


def add_to_mirror(mirror, date, dump):
  d = os.path.join(mirror, WIKI, date)
  os.makedirs(d, exist_ok=True)
  name = f"{WIKI}-{date}-pages-articles1.xml-p1p30302.bz2"
  shutil.copy(dump, os.path.join(d, name))
  data = open(os.path.join(d, name), "rb").read()
  files = {name: {"size": len(data), "sha1": hashlib.sha1(data).hexdigest()}}
  with open(os.path.join(d, "dumpstatus.json"), "w") as f:
    json.dump({"jobs": {"articlesdump": {"status": "done", "files": files}}}, f)


def refresh(root, mirror, extra):
  """One refresh_corpus.py run: (wall s, CPU s of it and its stages, summary)."""
  cmd = [sys.executable, os.path.join(ROOT, "tools", "refresh_corpus.py"), f"--root={root}",
         f"--mirror_url={mirror}", f"--wiki={WIKI}", *extra]
  before = resource.getrusage(resource.RUSAGE_CHILDREN)
  start = time.monotonic()
  proc = subprocess.run(cmd, capture_output=True, text=True,
                        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
  wall = time.monotonic() - start
  after = resource.getrusage(resource.RUSAGE_CHILDREN)
  if proc.returncode != 0:
    raise RuntimeError(proc.stdout[-3000:] + proc.stderr[-3000:])
  cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
  return wall, cpu, proc.stdout.strip().splitlines()[-1]


def stage_seconds(summary):
  """{tool: seconds} from a refresh summary line ("extract_wiki 2.2s, ...")."""
  return {m.group(1): float(m.group(2)) for m in re.finditer(
      r"\b(extract_wiki|shard_text|create_pretraining_data|extract_teacher_labels) "
      r"([\d.]+)s", summary)}


def version_stats(root, date):
  """What each stage of a version did (counts and the stage's own timings)."""
  vdir = os.path.join(root, "versions", date)
  out = {}
  keys = {"extract": ("documents", "reused"),
          "records": ("instances", "reused_instances", "reused_documents", "seconds"),
          "distill": ("instances", "reused_records", "computed_records", "seconds",
                      "setup_seconds", "file_step_seconds")}
  for sub, names in keys.items():
    path = os.path.join(vdir, sub, "stats.json")
    if os.path.exists(path):
      stats = json.load(open(path))
      out[sub] = {k: stats.get(k) for k in names}
  return out


def make_vocab(work):
  """A 30,522-entry vocab learned from the sample (through the real stages)."""
  tools = os.path.join(ROOT, "tools")
  vocab = os.path.join(work, "vocab", "vocab.txt")
  for args in (["extract_wiki.py", f"--input={SAMPLE}", f"--output_dir={work}/v_extract"],
               ["shard_text.py", f"--input_dir={work}/v_extract", f"--output_dir={work}/v_shards"],
               ["build_vocab.py", f"--input_dir={work}/v_shards", f"--output_file={vocab}",
                "--vocab_size=30522"]):
    subprocess.run([sys.executable, os.path.join(tools, args[0]), *args[1:]], check=True,
                   capture_output=True)
  return vocab


def make_teacher(work, vocab):
  """A random 4-layer, hidden-256 teacher for the vocab (TF1 checkpoint)."""
  from bench import teacher_labels  # pylint: disable=import-outside-toplevel
  prefix = teacher_labels.save_teacher(os.path.join(work, "teacher"), vocab,
                                       **teacher_labels.SMALL)
  return [f"--teacher_config={os.path.join(work, 'teacher', 'bert_config.json')}",
          f"--teacher_checkpoint={prefix}"]


def _median(values):
  return sorted(values)[len(values) // 2] if len(values) % 2 else sum(
      sorted(values)[len(values) // 2 - 1:len(values) // 2 + 1]) / 2


def measure(work, mirrors, extra, reps):
  """Alternates incremental and full refreshes to date 2; returns the runs."""
  base = os.path.join(work, "base")
  first = refresh(base, mirrors["v1"], extra)
  runs = {"incremental": [], "full": []}
  for rep in range(reps):
    for kind in ("incremental", "full"):
      root = os.path.join(work, f"{kind}{rep}")
      shutil.rmtree(root, ignore_errors=True)
      if kind == "incremental":
        shutil.copytree(base, root, symlinks=True)
      wall, cpu, summary = refresh(root, mirrors[kind], extra)
      runs[kind].append({"wall_seconds": round(wall, 2), "cpu_seconds": round(cpu, 2),
                         "stage_seconds": stage_seconds(summary),
                         "stages": version_stats(root, "20260201"), "summary": summary})
      print(f"{kind} {rep}: {wall:.1f}s wall, {cpu:.1f}s CPU", flush=True)
      if rep < reps - 1:
        shutil.rmtree(root)
  return first, runs


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--work_dir", default="/tmp/bench_refresh")
  parser.add_argument("--output", default=os.path.join(ROOT, "bench", "results", "refresh.json"))
  parser.add_argument("--reps", type=int, default=2)
  parser.add_argument("--no_teacher", action="store_true", help="Corpus stages only.")
  args = parser.parse_args()
  if not os.path.exists(SAMPLE):
    sys.exit(f"error: {SAMPLE}: sample dump not found")
  shutil.rmtree(args.work_dir, ignore_errors=True)
  os.makedirs(args.work_dir)
  mirrors = {k: os.path.join(args.work_dir, "mirror_" + k) for k in ("v1", "incremental", "full")}
  edited_dump = os.path.join(args.work_dir, "edited.xml.bz2")
  edited = write_edited_dump(SAMPLE, edited_dump, 0.10, seed=2026)
  add_to_mirror(mirrors["v1"], "20260101", SAMPLE)
  add_to_mirror(mirrors["incremental"], "20260101", SAMPLE)
  add_to_mirror(mirrors["incremental"], "20260201", edited_dump)
  add_to_mirror(mirrors["full"], "20260201", edited_dump)
  vocab = make_vocab(args.work_dir)
  extra = [f"--vocab_file={vocab}", "--num_shards=8", "--dupe_factor=5"]
  if not args.no_teacher:
    extra += make_teacher(args.work_dir, vocab) + ["--truncation_factor=32"]
  load_start = os.getloadavg()
  first, runs = measure(args.work_dir, mirrors, extra, args.reps)
  medians = {kind: {key: _median([r[key] for r in rs]) for key in ("wall_seconds", "cpu_seconds")}
             for kind, rs in runs.items()}
  per_stage = {kind: {tool: _median([r["stage_seconds"][tool] for r in rs])
                      for tool in rs[0]["stage_seconds"]} for kind, rs in runs.items()}
  result = {
      "articles_edited": edited, "flags": [f for f in extra if "vocab_file" not in f],
      "teacher": None if args.no_teacher else (
          "4 layers, hidden 256, 4 heads, intermediate 1024, vocab 30,522; random weights "
          "saved by this script (only time matters); top-k K=32, fp32, batch 64"),
      "records": "--max_seq_length 128 --max_predictions_per_seq 20 --dupe_factor 5, 8 shards",
      "cpu_count": os.cpu_count(), "load_average_at_start": load_start,
      "load_average_at_end": os.getloadavg(), "reps": args.reps,
      "first_build": {"wall_seconds": round(first[0], 2), "cpu_seconds": round(first[1], 2)},
      "median_seconds": medians, "median_stage_seconds": per_stage,
      "incremental_over_full_wall": round(medians["incremental"]["wall_seconds"] /
                                          medians["full"]["wall_seconds"], 3),
      "incremental_over_full_cpu": round(medians["incremental"]["cpu_seconds"] /
                                         medians["full"]["cpu_seconds"], 3),
      "goal": "incremental / full <= 0.20 with teacher labels",
      "runs": runs}
  os.makedirs(os.path.dirname(args.output), exist_ok=True)
  stage.atomic_write_text(args.output, json.dumps(result, indent=1) + "\n")
  print(json.dumps({k: v for k, v in result.items() if k != "runs"}, indent=1))


if __name__ == "__main__":
  main()
