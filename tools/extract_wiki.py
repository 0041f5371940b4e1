"""Stage 1: MediaWiki XML dumps (.xml.bz2 / .xml) -> clean documents as JSONL.

  python tools/extract_wiki.py --input=enwiki-pages-articles1.xml.bz2,... \
      --output_dir=out/extract
"""

import hashlib
import json
import multiprocessing
import os
import sys

import _bootstrap  # noqa: F401  pylint: disable=unused-import
from absl import flags

from pipeline.core import cli
from pipeline.corpus import extract
from pipeline.core import stage
from pipeline.corpus import wiki
from pipeline.core.errors import InputError
from pipeline.core.progress import Progress

FLAGS = flags.FLAGS
flags.DEFINE_list("input", None, "Dump files (.xml.bz2 or .xml), comma-separated.",
                  required=True)
flags.DEFINE_string("output_dir", None, "Where the documents go.", required=True)
flags.DEFINE_integer("min_article_chars", 200,
                     "Drop articles whose clean text is shorter than this.", lower_bound=0)
flags.DEFINE_integer("pages_per_file", 5000, "Dump pages per output JSONL file.",
                     lower_bound=1)
flags.DEFINE_integer("num_workers", os.cpu_count(), "Cleaning processes.", lower_bound=1)
flags.DEFINE_string("reuse_dir", None,
                    "A previous extract_wiki output: pages kept there at the same revision "
                    "are copied instead of cleaned again (same bytes, much faster).")
flags.DEFINE_bool("overwrite", False, "Replace an existing output made with other flags.")

_SUFFIXES = (".xml", ".xml.bz2", ".bz2")


def _check_inputs(paths):
  for path in paths:
    if not os.path.isfile(path):
      raise InputError(path, "no such dump file")
    if not path.endswith(_SUFFIXES):
      raise InputError(path, "expected a MediaWiki dump ending in .xml or .xml.bz2")
  if len(set(map(os.path.basename, paths))) != len(paths):
    raise InputError(",".join(paths), "two inputs share a file name")


def _previous_docs(cfg):
  """The reusable documents of --reuse_dir, or None (with the reason printed)."""
  if not FLAGS.reuse_dir:
    return None
  manifest = stage.read_input(FLAGS.reuse_dir, "extract_wiki")
  same = (manifest.get("cleaner_version") == wiki.CLEANER_VERSION and
          manifest["config"].get("min_article_chars") == cfg["min_article_chars"])
  if not same:
    print(f"extract_wiki: not reusing {FLAGS.reuse_dir}: made with another cleaner or "
          "--min_article_chars", file=sys.stderr)
    return None
  return extract.PreviousDocs(FLAGS.reuse_dir, manifest)


def _extract_input(index, path, out, pool, progress, previous):
  """Cleans the unpublished chunks of one dump; returns its per-chunk stats."""
  per_chunk, pending, base = [], None, progress.done

  def finish(item):
    name, results = item
    per_chunk.append(extract.write_chunk(out, name, results()))

  def on_bytes(position):
    progress.update(base + position - progress.done)

  for chunk, pages in extract.iter_chunks(path, FLAGS.pages_per_file, on_bytes):
    name = extract.chunk_name(index, chunk)
    if out.done(name):
      per_chunk.append(out.read_part(name))
      continue
    started = (name, extract.clean_chunk(pages, FLAGS.min_article_chars, pool, previous))
    if pending:
      finish(pending)  # write chunk c-1 while chunk c is being cleaned
    pending = started
  if pending:
    finish(pending)
  if not per_chunk:
    raise InputError(path, "the dump contains no <page> elements")
  return per_chunk


def main(argv):
  del argv
  _check_inputs(FLAGS.input)
  prints = [extract.dump_fingerprint(p) for p in FLAGS.input]
  input_hash = hashlib.sha256(json.dumps(prints).encode()).hexdigest()
  cfg = {"inputs": [os.path.basename(p) for p in FLAGS.input],
         "min_article_chars": FLAGS.min_article_chars,
         "pages_per_file": FLAGS.pages_per_file}
  out = stage.StageOutput(FLAGS.output_dir, "extract_wiki", cfg, input_hash,
                          overwrite=FLAGS.overwrite)
  if out.prepare():
    print(f"extract_wiki: {FLAGS.output_dir} is up to date (nothing to do)")
    return
  progress = Progress("extract_wiki", unit="B of dump",
                      total=sum(os.path.getsize(p) for p in FLAGS.input))
  per_chunk, files = [], []
  previous = _previous_docs(cfg)
  with multiprocessing.get_context("spawn").Pool(FLAGS.num_workers) as pool:
    for i, path in enumerate(FLAGS.input):
      chunks = _extract_input(i, path, out, pool, progress, previous)
      per_chunk += chunks
      files += [extract.chunk_name(i, c) for c in range(len(chunks))]
  totals = extract.total_stats(per_chunk)
  if totals["documents"] == 0:
    raise InputError(",".join(FLAGS.input), "no article survived extraction "
                     f"(pages read: {totals['pages_read']})")
  stats = dict(totals, seconds=round(progress.elapsed(), 2),
               pages_per_second=round(totals["pages_read"] / max(progress.elapsed(), 1e-9), 1))
  out.finalize(files, {"documents": totals["documents"], "pages_read": totals["pages_read"]},
               stats, extra={"input": {"manifest_sha256": input_hash, "dumps": prints},
                             "cleaner_version": wiki.CLEANER_VERSION})
  dropped = ", ".join(f"{v} {k[8:]}" for k, v in totals.items() if k.startswith("dropped_") and v)
  reused = f", {totals['reused']} reused" if previous is not None else ""
  print(f"extract_wiki: {totals['pages_read']} pages read, {totals['documents']} documents "
        f"kept{reused} (dropped: {dropped or 'none'}) in {progress.elapsed():.1f}s -> {out.dir}")


if __name__ == "__main__":
  cli.run(main)
