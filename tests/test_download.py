"""Downloads from a real local HTTP server: resume with Range, checksums, retries."""

import hashlib
import os

import pytest

from pipeline.corpus import download
from pipeline.core.errors import InputError
from tests.conftest import run_tool
from tests.http_fixtures import serve


@pytest.fixture
def mirror(tmp_path):
  root = tmp_path / "mirror"
  root.mkdir()
  payload = os.urandom(300_000)
  (root / "dump.xml.bz2").write_bytes(payload)
  with serve(root) as server:
    yield server, payload


def test_download_and_verify(mirror, tmp_path):
  server, payload = mirror
  dest = str(tmp_path / "dump.xml.bz2")
  sha1 = hashlib.sha1(payload).hexdigest()
  assert download.download(f"{server.url}/dump.xml.bz2", dest, size=len(payload), sha1=sha1) == len(payload)
  assert open(dest, "rb").read() == payload
  assert not os.path.exists(dest + ".part")


def test_interrupted_download_resumes_from_the_partial_file(mirror, tmp_path):
  server, payload = mirror
  dest = str(tmp_path / "dump.xml.bz2")
  server.cut_after["dump.xml.bz2"] = 100_000
  with pytest.raises(InputError):
    download.download(f"{server.url}/dump.xml.bz2", dest, size=len(payload), retries=0)
  assert os.path.getsize(dest + ".part") == 100_000
  sent_before = server.bytes_sent
  fetched = download.download(f"{server.url}/dump.xml.bz2", dest, size=len(payload),
                              sha1=hashlib.sha1(payload).hexdigest())
  assert fetched == len(payload) - 100_000 == server.bytes_sent - sent_before
  assert open(dest, "rb").read() == payload


def test_a_cut_connection_is_retried_and_resumed_in_one_call(mirror, tmp_path):
  server, payload = mirror
  dest = str(tmp_path / "dump.xml.bz2")
  server.cut_after["dump.xml.bz2"] = 120_000
  fetched = download.download(f"{server.url}/dump.xml.bz2", dest, size=len(payload),
                              sha1=hashlib.sha1(payload).hexdigest(), retries=2, backoff=0.01)
  assert fetched == len(payload) == server.bytes_sent  # nothing fetched twice
  assert open(dest, "rb").read() == payload


def test_checksum_mismatch_deletes_the_partial_file(mirror, tmp_path):
  server, _ = mirror
  dest = str(tmp_path / "dump.xml.bz2")
  with pytest.raises(InputError, match="sha1 mismatch"):
    download.download(f"{server.url}/dump.xml.bz2", dest, sha1="0" * 40)
  assert not os.path.exists(dest) and not os.path.exists(dest + ".part")


def test_missing_file_fails_at_once(mirror, tmp_path):
  server, _ = mirror
  with pytest.raises(InputError, match="HTTP 404"):
    download.download(f"{server.url}/nope.bz2", str(tmp_path / "x"), retries=2, backoff=0.01)


def test_unreachable_server_fails_after_bounded_retries(tmp_path):
  with pytest.raises(InputError, match="after 3 attempts"):
    download.download("http://127.0.0.1:9/x.bz2", str(tmp_path / "x"), retries=2, backoff=0.01)


def test_download_tool_prints_the_local_path(mirror, tmp_path):
  server, payload = mirror
  proc = run_tool("download_dump", f"--url={server.url}/dump.xml.bz2",
                  f"--output_dir={tmp_path / 'dl'}")
  path = proc.stdout.strip().splitlines()[-1]
  assert open(path, "rb").read() == payload
