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
import re

import numpy as np

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


def clean_chunk(pages, min_chars, pool, previous=None, chunksize=8):
  """Starts cleaning a chunk in the pool; returns a callable that waits and
  gives [(doc, reason)] in page order.

  Pages that a previous extraction (`previous`, a PreviousDocs) kept at the same
  revision are not cleaned again: their JSON line is reused as it is, which is
  what cleaning would produce (same cleaner, same config).
  """
  reused = {}
  if previous is not None:
    for i, page in enumerate(pages):
      line = previous.get(page.id, page.revid)
      if line is not None:
        reused[i] = line
  todo = [(p, min_chars) for i, p in enumerate(pages) if i not in reused]
  pending = pool.starmap_async(wiki.clean_page, todo, chunksize=chunksize)

  def results():
    cleaned = iter(pending.get())
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
