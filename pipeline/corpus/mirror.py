"""A Wikimedia dump mirror (HTTP or a local directory) in the dumps' layout.

  <base>/<wiki>/<YYYYMMDD>/dumpstatus.json
  <base>/<wiki>/<YYYYMMDD>/<wiki>-<date>-sha1sums.txt
  <base>/<wiki>/<YYYYMMDD>/<wiki>-<date>-pages-articles[N.xml-pA-pB].xml*.bz2

A dump is usable once its `articlesdump` job says "done"; its files, sizes and
sha1s come from dumpstatus.json, cross-checked with the sha1sums file.
"""

import dataclasses
import json
import os
import re
import time
import urllib.error
import urllib.parse
import urllib.request

from pipeline.core.errors import InputError

_DATE_RE = re.compile(r"^\d{8}$")
_HREF_RE = re.compile(r'href="(?:[^"]*/)?(\d{8})/?"')


@dataclasses.dataclass(frozen=True)
class DumpFile:
  name: str
  size: int
  sha1: str
  url: str


class Mirror:
  """Reads listings and metadata from `base` (http(s)://, file:// or a path)."""

  def __init__(self, base, wiki, retries=3, backoff=1.0, timeout=60.0):
    self.base, self.wiki = base.rstrip("/"), wiki
    self.retries, self.backoff, self.timeout = retries, backoff, timeout
    self.is_http = urllib.parse.urlparse(self.base).scheme in ("http", "https")
    if self.base.startswith("file://"):
      self.base = urllib.parse.urlparse(self.base).path

  def location(self, *parts):
    return "/".join([self.base, self.wiki, *parts]) if self.is_http else \
        os.path.join(self.base, self.wiki, *parts)

  def _read(self, *parts):
    where = self.location(*parts)
    if not self.is_http:
      try:
        with open(where, "rb") as f:
          return f.read()
      except OSError as e:
        raise InputError(where, f"cannot read: {e.strerror or e}") from None
    return self._get(where)

  def _get(self, url):
    for attempt in range(self.retries + 1):
      try:
        with urllib.request.urlopen(url, timeout=self.timeout) as response:
          return response.read()
      except urllib.error.HTTPError as e:
        if e.code < 500 or attempt == self.retries:
          raise InputError(url, f"HTTP {e.code} {e.reason}") from None
      except (urllib.error.URLError, OSError) as e:
        if attempt == self.retries:
          raise InputError(url, f"unreachable after {attempt + 1} attempts: {e}") from None
      time.sleep(self.backoff * 2**attempt)
    raise AssertionError("unreachable")

  def dates(self):
    """Dump dates present on the mirror, oldest first."""
    if self.is_http:
      listing = self._read("").decode("utf-8", "replace")
      found = set(_HREF_RE.findall(listing))
    else:
      root = self.location()
      if not os.path.isdir(root):
        raise InputError(root, "no such mirror directory")
      found = {d for d in os.listdir(root) if _DATE_RE.match(d)}
    return sorted(found)

  def status(self, date):
    raw = self._read(date, "dumpstatus.json")
    try:
      return json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
      raise InputError(self.location(date, "dumpstatus.json"), f"not JSON ({e})") from None

  def is_done(self, date):
    try:
      job = self.status(date)["jobs"]["articlesdump"]
    except InputError:
      return False  # a dump still being written may lack its status file
    except (KeyError, TypeError):
      return False
    return job.get("status") == "done"

  def newest_new(self, after=None):
    """The newest date with a finished articles dump that is newer than `after`."""
    for date in reversed(self.dates()):
      if after is not None and date <= after:
        return None
      if self.is_done(date):
        return date
    return None

  def _sha1sums(self, date):
    name = f"{self.wiki}-{date}-sha1sums.txt"
    try:
      text = self._read(date, name).decode("utf-8")
    except InputError:
      return {}
    return {parts[1].lstrip("*"): parts[0] for parts in
            (line.split() for line in text.splitlines()) if len(parts) == 2}

  def article_files(self, date):
    """The pages-articles files of a dump, with sizes and checked sha1s."""
    where = self.location(date, "dumpstatus.json")
    try:
      files = self.status(date)["jobs"]["articlesdump"]["files"]
    except (KeyError, TypeError):
      raise InputError(where, "no articlesdump job with files") from None
    sums, out = self._sha1sums(date), []
    prefix = f"{self.wiki}-{date}-pages-articles"
    for name in sorted(files):
      if not name.startswith(prefix) or "multistream" in name or not name.endswith(".bz2"):
        continue
      sha1 = files[name].get("sha1") or sums.get(name)
      if sha1 is None or (name in sums and sums[name] != sha1):
        raise InputError(where, f"{name}: no sha1, or dumpstatus.json and the "
                         "sha1sums file disagree")
      out.append(DumpFile(name, int(files[name]["size"]), sha1, self.location(date, name)))
    if not out:
      raise InputError(where, f"no {prefix}*.bz2 files listed")
    return out
