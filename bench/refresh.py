"""Benchmark of issue 5: full rebuild vs incremental refresh on the real sample.

  .venv/bin/python bench/refresh.py [--work_dir /tmp/bench_refresh] [--teacher_config ...]

Makes a local mirror with two dump dates: the sample dump as is, and the same
dump with the text of a seeded random 10% of its articles edited (new revision
ids). Then, in one run:
- incremental: refresh to date 1, then to date 2 (timed: the second refresh);
- full: a fresh root refreshed straight to date 2 (timed).
With a teacher (--teacher_config/--teacher_checkpoint), both include the teacher
labels. Writes bench/results/refresh.json.
"""

import argparse
import bz2
import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
import time
from xml.sax import saxutils

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from pipeline import stage, wiki  # noqa: E402  pylint: disable=wrong-import-position

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
  cmd = [sys.executable, os.path.join(ROOT, "tools", "refresh_corpus.py"), f"--root={root}",
         f"--mirror_url={mirror}", f"--wiki={WIKI}", *extra]
  start = time.monotonic()
  proc = subprocess.run(cmd, capture_output=True, text=True,
                        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
  if proc.returncode != 0:
    raise RuntimeError(proc.stdout[-3000:] + proc.stderr[-3000:])
  return time.monotonic() - start, proc.stdout.strip().splitlines()[-1]


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


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--work_dir", default="/tmp/bench_refresh")
  parser.add_argument("--output", default=os.path.join(ROOT, "bench", "results", "refresh.json"))
  parser.add_argument("--extra", default="", help="More refresh_corpus.py flags "
                      "(e.g. the teacher's), space-separated.")
  args = parser.parse_args()
  if not os.path.exists(SAMPLE):
    sys.exit(f"error: {SAMPLE}: sample dump not found")
  shutil.rmtree(args.work_dir, ignore_errors=True)
  mirror = os.path.join(args.work_dir, "mirror")
  add_to_mirror(mirror, "20260101", SAMPLE)
  edited_dump = os.path.join(args.work_dir, "edited.xml.bz2")
  edited = write_edited_dump(SAMPLE, edited_dump, 0.10, seed=2026)
  vocab = make_vocab(args.work_dir)
  extra = [f"--vocab_file={vocab}", "--num_shards=8", "--dupe_factor=5"] + args.extra.split()
  inc_root, full_root = (os.path.join(args.work_dir, r) for r in ("incremental", "full"))
  first, _ = refresh(inc_root, mirror, extra)
  add_to_mirror(mirror, "20260201", edited_dump)
  incremental, inc_summary = refresh(inc_root, mirror, extra)
  shutil.rmtree(os.path.join(mirror, WIKI, "20260101"))
  full, full_summary = refresh(full_root, mirror, extra)
  result = {"articles_edited": edited, "flags": extra[1:],
            "first_build_seconds": round(first, 2),
            "incremental_refresh_seconds": round(incremental, 2),
            "full_rebuild_seconds": round(full, 2),
            "incremental_over_full": round(incremental / full, 3),
            "incremental_summary": inc_summary, "full_summary": full_summary}
  os.makedirs(os.path.dirname(args.output), exist_ok=True)
  stage.atomic_write_text(args.output, json.dumps(result, indent=1) + "\n")
  print(json.dumps(result, indent=1))


if __name__ == "__main__":
  main()
