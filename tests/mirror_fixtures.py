"""A Wikimedia-layout dump mirror on disk, built from generated pages."""

import hashlib
import json
import os

from tests import wiki_fixtures


def add_dump(mirror_root, wiki, date, pages, status="done", corrupt=False):
  """Writes <mirror>/<wiki>/<date>/ with one pages-articles file, its
  dumpstatus.json and sha1sums; `corrupt` flips bytes after the checksums."""
  d = os.path.join(mirror_root, wiki, date)
  os.makedirs(d, exist_ok=True)
  name = f"{wiki}-{date}-pages-articles1.xml-p1p99999.bz2"
  path = wiki_fixtures.write_dump(os.path.join(d, name), pages)
  data = open(path, "rb").read()
  sha1 = hashlib.sha1(data).hexdigest()
  files = {name: {"size": len(data), "sha1": sha1, "url": f"/{wiki}/{date}/{name}"}}
  status_doc = {"jobs": {"articlesdump": {"status": status, "files": files}},
                "version": "0.8"}
  with open(os.path.join(d, "dumpstatus.json"), "w") as f:
    json.dump(status_doc, f)
  with open(os.path.join(d, f"{wiki}-{date}-sha1sums.txt"), "w") as f:
    f.write(f"{sha1}  {name}\n")
  if corrupt:
    bad = bytearray(data)
    bad[len(bad) // 2] ^= 0xFF
    open(path, "wb").write(bytes(bad))
  return name
