"""HTTP(S) download with resume, bounded retries and checksum verification.

The partial file lives at `<dest>.part`; an interrupted download resumes from its
size with a Range request, and the finished file is renamed into place only after
its size and sha1 (when known) check out. A mismatch deletes the partial file.
"""

import hashlib
import http.client
import os
import time
import urllib.error
import urllib.request

from pipeline.core.errors import InputError

CHUNK = 1 << 20


class _CutShort(Exception):
  """The server closed the connection before sending Content-Length bytes."""

  def __init__(self, message, fetched):
    super().__init__(message)
    self.fetched = fetched

  def __reduce__(self):  # every error of the package pickles (see core.errors)
    return self.__class__, (self.args[0], self.fetched)


_RETRYABLE = (urllib.error.URLError, http.client.HTTPException, OSError, TimeoutError,
              _CutShort)


def _fetch(url, part, timeout):
  """Appends the rest of `url` to `part`; returns bytes fetched this attempt."""
  offset = os.path.getsize(part) if os.path.exists(part) else 0
  request = urllib.request.Request(url, headers={"Range": f"bytes={offset}-"} if offset else {})
  fetched = 0
  with urllib.request.urlopen(request, timeout=timeout) as response:
    if offset and response.status != 206:  # server ignored Range: start over
      offset = 0
    expected = response.headers.get("Content-Length")
    with open(part, "ab" if offset else "wb") as f:
      try:
        while block := response.read(CHUNK):
          f.write(block)
          fetched += len(block)
      except http.client.IncompleteRead as e:
        f.write(e.partial)  # keep what arrived: the next attempt resumes after it
        fetched += len(e.partial)
  if expected is not None and fetched < int(expected):
    raise _CutShort(f"connection closed after {fetched} of {expected} bytes", fetched)
  return fetched


def sha1_of(path):
  h = hashlib.sha1()
  with open(path, "rb") as f:
    while block := f.read(CHUNK):
      h.update(block)
  return h.hexdigest()


def _verify(url, part, size, sha1):
  if size is not None and os.path.getsize(part) != size:
    got = os.path.getsize(part)
    if got > size:
      os.remove(part)
    raise InputError(url, f"downloaded {got} bytes, expected {size}")
  if sha1 is not None and sha1_of(part) != sha1:
    os.remove(part)
    raise InputError(url, f"sha1 mismatch (expected {sha1}); the partial file was deleted")


def download(url, dest, size=None, sha1=None, retries=4, backoff=1.0, timeout=60.0):
  """Downloads url to dest (resuming dest.part); returns bytes fetched.

  Raises InputError after `retries` failed attempts or on a checksum mismatch.
  """
  if os.path.exists(dest) and (sha1 is None or sha1_of(dest) == sha1):
    return 0
  part, fetched = dest + ".part", 0
  for attempt in range(retries + 1):
    try:
      fetched += _fetch(url, part, timeout)
      break
    except _RETRYABLE as e:
      if isinstance(e, _CutShort):
        fetched += e.fetched
      if isinstance(e, urllib.error.HTTPError) and e.code == 416 and size is not None:
        break  # the partial file is already complete
      if isinstance(e, urllib.error.HTTPError) and 400 <= e.code < 500 and e.code not in (408, 429):
        raise InputError(url, f"HTTP {e.code} {e.reason}") from None  # retrying won't help
      if attempt == retries:
        raise InputError(url, f"download failed after {retries + 1} attempts: {e}") from None
      time.sleep(backoff * 2**attempt)
  _verify(url, part, size, sha1)
  os.replace(part, dest)
  return fetched
