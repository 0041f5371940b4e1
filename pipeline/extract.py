"""Wikipedia dumps -> JSONL documents, in parallel and resumable.

Each input dump is cut into chunks of `pages_per_file` consecutive <page>s (counted
in dump order, kept or not), and chunk c of input i becomes
`docs/part-<i>-<c>.jsonl`. The boundaries depend only on the dump, so a killed run
re-parses the XML (cheap) but re-cleans only chunks that were not yet published,
and ends with the same bytes. Cleaning (wikiextractor, the slow part) runs in a
process pool while the main process parses the next chunk.
"""

import collections
import hashlib
import json
import os

from pipeline import wiki

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


def clean_chunk(pages, min_chars, pool, chunksize=8):
  """Starts cleaning a chunk in the pool; returns an AsyncResult of results."""
  return pool.starmap_async(wiki.clean_page, [(p, min_chars) for p in pages],
                            chunksize=chunksize)


def chunk_stats(results):
  """Counts kept pages and drops per reason."""
  reasons = collections.Counter(reason for _, reason in results if reason)
  stats = {"pages_read": len(results), "documents": len(results) - sum(reasons.values())}
  stats.update({f"dropped_{r}": reasons.get(r, 0) for r in REASONS})
  return stats


def write_chunk(out, name, results):
  """Publishes one chunk's kept documents as JSONL and its stats sidecar."""
  stats = chunk_stats(results)
  out.write_part(name, stats)  # sidecar first: a published chunk always has one
  with out.writing(name) as tmp, open(tmp, "w", encoding="utf-8", newline="\n") as f:
    for doc, reason in results:
      if reason is None:
        f.write(json.dumps(doc, ensure_ascii=False) + "\n")
  return stats


def total_stats(per_chunk):
  totals = collections.Counter()
  for s in per_chunk:
    totals.update(s)
  return {k: totals.get(k, 0) for k in ["pages_read", "documents"] +
          [f"dropped_{r}" for r in REASONS]}
