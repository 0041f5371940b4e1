"""A second corpus version reuses the work of the first for unchanged pages."""

import collections
import json
import os

import numpy as np
import pytest

from pipeline.records import tfrecord
from tests import wiki_fixtures
from tests.conftest import records_flags, run_tool, synthetic_pages


def _records_by_page(records_dir):
  """{page id: sorted list of record bytes} over every shard of a records dir."""
  out = collections.defaultdict(list)
  manifest = json.load(open(os.path.join(records_dir, "manifest.json")))
  for f in manifest["files"]:
    if f["name"].endswith(".tfrecord"):
      base = os.path.join(records_dir, f["name"][:-len(".tfrecord")])
      index = np.load(base + ".index.npy", allow_pickle=False)
      for (page, _), rec in zip(index.tolist(), tfrecord.iter_records(base + ".tfrecord")):
        out[page].append(rec)
  return {p: sorted(v) for p, v in out.items()}


def _second_version(pages):
  """10% of pages edited (new revision), 4 deleted, 5 added."""
  v2 = []
  for i, page in enumerate(pages[:-4]):
    page = dict(page)
    if i % 10 == 3:
      page["text"] = page["text"].replace("north", "north and east")
      page["revid"] = 10**6 + page.get("id", i)
    v2.append(page)
  return v2 + synthetic_pages(5, seed=9, first_id=5000)


@pytest.fixture(scope="module")
def versions(tmp_path_factory, corpus):
  base = tmp_path_factory.mktemp("v2")
  pages = wiki_fixtures.sample_pages() + synthetic_pages(120)
  dump = str(base / "dump2.xml.bz2")
  wiki_fixtures.write_dump(dump, _second_version(pages))
  d = {k: str(base / k) for k in ("extract", "shards", "records")}
  proc = run_tool("extract_wiki", f"--input={dump}", f"--output_dir={d['extract']}",
                  "--min_article_chars=50", "--pages_per_file=40",
                  f"--reuse_dir={corpus['extract']}")
  run_tool("shard_text", f"--input_dir={d['extract']}", f"--output_dir={d['shards']}",
           "--num_shards=4", "--eval_fraction=0.05")
  run_tool("create_pretraining_data", *records_flags(dict(corpus, shards=d["shards"]),
                                                      d["records"], f"--reuse_dir={corpus['records']}"))
  return d, proc


def test_extraction_reuses_unchanged_documents(versions):
  d, proc = versions
  stats = json.load(open(os.path.join(d["extract"], "stats.json")))
  pages = wiki_fixtures.sample_pages() + synthetic_pages(120)
  edited = [p for i, p in enumerate(pages[:-4]) if i % 10 == 3 and p.get("expect") is None]
  # 125 kept documents before; 4 deleted, the edited kept ones re-cleaned, 5 new.
  assert stats["documents"] == 125 - 4 + 5
  assert stats["reused"] == stats["documents"] - len(edited) - 5
  assert "reused" in proc.stdout


def test_unchanged_documents_keep_byte_identical_records(versions, corpus):
  d, _ = versions
  old, new = _records_by_page(corpus["records"]), _records_by_page(d["records"])
  revisions_old = {int(l.split("\t")[0]): l.split("\t")[1] for sub in ("train", "eval")
                   for f in os.listdir(os.path.join(corpus["shards"], sub)) if f.endswith(".tsv")
                   for l in open(os.path.join(corpus["shards"], sub, f))}
  revisions_new = {int(l.split("\t")[0]): l.split("\t")[1] for sub in ("train", "eval")
                   for f in os.listdir(os.path.join(d["shards"], sub)) if f.endswith(".tsv")
                   for l in open(os.path.join(d["shards"], sub, f))}
  unchanged = [p for p in revisions_new if revisions_old.get(p) == revisions_new[p]]
  changed = [p for p in revisions_new if p in revisions_old and p not in unchanged]
  added = [p for p in revisions_new if p not in revisions_old]
  assert len(unchanged) > 90 and changed and len(added) == 5
  assert all(new[p] == old[p] for p in unchanged)
  assert all(p in new and new[p] != old[p] for p in changed)
  assert all(p in new for p in added)
  stats = json.load(open(os.path.join(d["records"], "stats.json")))
  assert stats["reused_documents"] == len(unchanged)
  manifest = json.load(open(os.path.join(d["records"], "manifest.json")))
  assert "reuse_from" in manifest["config"]
