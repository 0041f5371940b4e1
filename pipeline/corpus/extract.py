"""Wikipedia dumps -> JSONL documents, in parallel and resumable.

Each input dump is cut into chunks of `pages_per_file` consecutive <page>s (counted
in dump order, kept or not), and chunk c of input i becomes
`docs/part-<i>-<c>.jsonl`. The boundaries depend only on the dump, so a killed run
re-parses the XML (cheap) but re-cleans only chunks that were not yet published,
and ends with the same bytes. Cleaning (wikiextractor, the slow part) runs in a
process pool while the main process parses the next chunk.
"""

import collections
import concurrent.futures
import dataclasses
import hashlib
import json
import multiprocessing
import os
import re
import sys
from typing import Optional

import numpy as np

from pipeline.core import kinds
from pipeline.core import stage
from pipeline.core.errors import ConfigError, InputError
from pipeline.core.progress import Progress
from pipeline.corpus import wiki

DOCS_DIR = "docs"
REASONS = wiki.DROP_REASONS


def dump_fingerprint(path, edge=1 << 20):
  """Cheap identity of a (multi-GB) dump: name, size and sha256 of its first and
  last MiB. Refresh downloads verify full checksums separately."""
  size = os.path.getsize(path)
  h = hashlib.sha256(f"{os.path.basename(path)}:{size}".encode())
  with open(path, "rb") as f:
    h.update(f.read(edge))
    f.seek(max(0, size - edge))
    h.update(f.read(edge))
  return h.hexdigest()


def chunk_name(input_index, chunk):
  return f"{DOCS_DIR}/part-{input_index:03d}-{chunk:05d}.jsonl"


def iter_chunks(path, pages_per_file, on_progress=None):
  """Yields (chunk number, [pages]) of a dump, `pages_per_file` pages each;
  on_progress gets the bytes of the dump file read so far."""
  pages, chunk = [], 0
  for page in wiki.iter_pages(path, on_progress):
    pages.append(page)
    if len(pages) == pages_per_file:
      yield chunk, pages
      pages, chunk = [], chunk + 1
  if pages:
    yield chunk, pages


def clean_pages(pages, min_chars):
  """[(doc, reason)] of wiki.clean_page for each page (one task of the pool)."""
  return [wiki.clean_page(page, min_chars) for page in pages]


def clean_chunk(pages, min_chars, pool, previous=None, chunksize=8):
  """Starts cleaning a chunk in the pool (a concurrent.futures executor); returns
  a callable that waits and gives [(doc, reason)] in page order.

  Pages that a previous extraction (`previous`, a PreviousDocs) kept at the same
  revision are not cleaned again: their JSON line is reused as it is, which is
  what cleaning would produce (same cleaner, same config). A worker's error is
  re-raised by the callable; a worker that died raises BrokenProcessPool.
  """
  reused = {}
  if previous is not None:
    for i, page in enumerate(pages):
      line = previous.get(page.id, page.revid)
      if line is not None:
        reused[i] = line
  todo = [p for i, p in enumerate(pages) if i not in reused]
  futures = [pool.submit(clean_pages, todo[k:k + chunksize], min_chars)
             for k in range(0, len(todo), chunksize)]

  def results():
    cleaned = iter([result for future in futures for result in future.result()])
    return [(reused[i], None) if i in reused else next(cleaned) for i in range(len(pages))]

  return results


def chunk_stats(results):
  """Counts kept pages (and how many were reused) and drops per reason."""
  reasons = collections.Counter(reason for _, reason in results if reason)
  stats = {"pages_read": len(results), "documents": len(results) - sum(reasons.values()),
           "reused": sum(1 for doc, _ in results if isinstance(doc, str))}
  stats.update({f"dropped_{r}": reasons.get(r, 0) for r in REASONS})
  return stats


def write_chunk(out, name, results):
  """Publishes one chunk's kept documents as JSONL and its stats sidecar."""
  stats = chunk_stats(results)
  out.write_part(name, stats)  # sidecar first: a published chunk always has one
  with out.writing(name) as tmp, open(tmp, "w", encoding="utf-8", newline="\n") as f:
    for doc, reason in results:
      if isinstance(doc, str):  # a reused line, newline included
        f.write(doc)
      elif reason is None:
        f.write(json.dumps(doc, ensure_ascii=False) + "\n")
  return stats


def total_stats(per_chunk):
  totals = collections.Counter()
  for s in per_chunk:
    totals.update(s)
  return {k: totals.get(k, 0) for k in ["pages_read", "documents", "reused"] +
          [f"dropped_{r}" for r in REASONS]}


_KEY_RE = re.compile(r'^\{"id": "(\d+)", "revid": "(\d+)"')


class PreviousDocs:
  """The documents of an earlier extraction, looked up by (page id, revid).

  Holds sorted numpy arrays of (id, revid, file, offset), 32 bytes a document
  (~200 MB for all of English Wikipedia), and reads a line only when reused.
  """

  def __init__(self, extract_dir, manifest):
    self._files = [os.path.join(extract_dir, f["name"]) for f in manifest["files"]
                   if f["name"].endswith(".jsonl")]
    rows = []
    for k, path in enumerate(self._files):
      offset = 0
      with open(path, "rb") as f:
        for raw in f:
          match = _KEY_RE.match(raw[:80].decode("utf-8", "replace"))
          if match:
            rows.append((int(match.group(1)), int(match.group(2)), k, offset))
          offset += len(raw)
    rows.sort()
    table = np.asarray(rows, np.int64).reshape(-1, 4)
    self._ids, self._revids, self._file, self._offset = table.T.copy()
    self._handles = {}

  def __len__(self):
    return len(self._ids)

  def revisions(self):
    """{page id: revid} of every previous document."""
    return dict(zip(self._ids.tolist(), self._revids.tolist()))

  def get(self, page_id, revid):
    """The previous JSON line (with newline) if the page was kept at `revid`."""
    i = int(np.searchsorted(self._ids, page_id))
    if i == len(self._ids) or self._ids[i] != page_id or self._revids[i] != revid:
      return None
    k, offset = int(self._file[i]), int(self._offset[i])
    if k not in self._handles:
      self._handles[k] = open(self._files[k], "rb")
    f = self._handles[k]
    f.seek(offset)
    return f.readline().decode("utf-8")


_SUFFIXES = (".xml", ".xml.bz2", ".bz2")


@dataclasses.dataclass(frozen=True, kw_only=True)
class ExtractConfig:
  """tools/extract_wiki.py: dumps -> documents."""
  inputs: tuple  # Dump files (.xml.bz2 or .xml).
  output_dir: str
  min_article_chars: int = 200
  pages_per_file: int = 5000
  num_workers: int = 1
  reuse_dir: Optional[str] = None  # An earlier extraction: unchanged pages are copied.
  overwrite: bool = False

  def __post_init__(self):
    if self.min_article_chars < 0 or self.pages_per_file < 1 or self.num_workers < 1:
      raise ConfigError("--min_article_chars must be >= 0, --pages_per_file and "
                        "--num_workers >= 1")


def check_inputs(paths):
  """One-line errors for missing, misnamed or same-named dump files."""
  for path in paths:
    if not os.path.isfile(path):
      raise InputError(path, "no such dump file")
    if not path.endswith(_SUFFIXES):
      raise InputError(path, "expected a MediaWiki dump ending in .xml or .xml.bz2")
  if len(set(map(os.path.basename, paths))) != len(paths):
    raise InputError(",".join(paths), "two inputs share a file name")


def previous_docs(reuse_dir, min_article_chars):
  """The reusable documents of `reuse_dir`, or None (with the reason printed)."""
  if not reuse_dir:
    return None
  _, manifest = kinds.read(reuse_dir, kinds.DOCUMENTS)
  same = (manifest.get("cleaner_version") == wiki.CLEANER_VERSION and
          manifest["config"].get("min_article_chars") == min_article_chars)
  if not same:
    print(f"extract_wiki: not reusing {reuse_dir}: made with another cleaner or "
          "--min_article_chars", file=sys.stderr)
    return None
  return PreviousDocs(reuse_dir, manifest)


def _extract_input(index, path, out, config, pool, progress, previous):
  """Cleans the unpublished chunks of one dump; returns its per-chunk stats."""
  per_chunk, pending, base = [], None, progress.done

  def finish(item):
    name, results = item
    per_chunk.append(write_chunk(out, name, results()))

  def on_bytes(position):
    progress.update(base + position - progress.done)

  for chunk, pages in iter_chunks(path, config.pages_per_file, on_bytes):
    name = chunk_name(index, chunk)
    if out.done(name):
      per_chunk.append(out.read_part(name))
      continue
    started = (name, clean_chunk(pages, config.min_article_chars, pool, previous))
    if pending:
      finish(pending)  # write chunk c-1 while chunk c is being cleaned
    pending = started
  if pending:
    finish(pending)
  if not per_chunk:
    raise InputError(path, "the dump contains no <page> elements")
  return per_chunk


def _clean_all(config, out, progress, previous):
  """(per-chunk stats, files) of every input, cleaned in a process pool."""
  per_chunk, files = [], []
  pool = concurrent.futures.ProcessPoolExecutor(
      config.num_workers, mp_context=multiprocessing.get_context("spawn"))
  try:
    for i, path in enumerate(config.inputs):
      chunks = _extract_input(i, path, out, config, pool, progress, previous)
      per_chunk += chunks
      files += [chunk_name(i, c) for c in range(len(chunks))]
  finally:
    pool.shutdown(wait=True, cancel_futures=True)  # On an error: no queued work runs.
  return per_chunk, files


def run(config):
  """Extracts the documents of `config.inputs` into `config.output_dir` (stage contract)."""
  check_inputs(config.inputs)
  prints = [dump_fingerprint(p) for p in config.inputs]
  input_hash = hashlib.sha256(json.dumps(prints).encode()).hexdigest()
  cfg = {"inputs": [os.path.basename(p) for p in config.inputs],
         "min_article_chars": config.min_article_chars,
         "pages_per_file": config.pages_per_file}
  out = stage.StageOutput(config.output_dir, kinds.DOCUMENTS.stage, cfg, input_hash,
                          overwrite=config.overwrite)
  if out.prepare():
    print(f"extract_wiki: {config.output_dir} is up to date (nothing to do)")
    return
  progress = Progress("extract_wiki", unit="B of dump",
                      total=sum(os.path.getsize(p) for p in config.inputs))
  previous = previous_docs(config.reuse_dir, config.min_article_chars)
  per_chunk, files = _clean_all(config, out, progress, previous)
  totals = total_stats(per_chunk)
  if totals["documents"] == 0:
    raise InputError(",".join(config.inputs), "no article survived extraction "
                     f"(pages read: {totals['pages_read']})")
  seconds = progress.elapsed()
  stats = dict(totals, seconds=round(seconds, 2),
               pages_per_second=round(totals["pages_read"] / max(seconds, 1e-9), 1))
  out.finalize(files, {"documents": totals["documents"], "pages_read": totals["pages_read"]},
               stats, extra={"input": {"manifest_sha256": input_hash, "dumps": prints},
                             "cleaner_version": wiki.CLEANER_VERSION})
  dropped = ", ".join(f"{v} {k[8:]}" for k, v in totals.items() if k.startswith("dropped_") and v)
  reused = f", {totals['reused']} reused" if previous is not None else ""
  print(f"extract_wiki: {totals['pages_read']} pages read, {totals['documents']} documents "
        f"kept{reused} (dropped: {dropped or 'none'}) in {seconds:.1f}s -> {out.dir}")
