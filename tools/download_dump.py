"""Downloads a dump file (HTTP with resume, optional sha1 check).

  python tools/download_dump.py --url=https://.../enwiki-...-pages-articles1.xml.bz2 \
      --output_dir=out/downloads
Prints the local path on stdout.
"""

import os
import sys
import urllib.parse

import _bootstrap  # noqa: F401  pylint: disable=unused-import
from absl import flags

from pipeline.core import cli
from pipeline.corpus import download

FLAGS = flags.FLAGS
flags.DEFINE_string("url", None, "URL of the file.", required=True)
flags.DEFINE_string("output_dir", None, "Directory to download into.", required=True)
flags.DEFINE_string("sha1", None, "Expected sha1 (hex); verified when given.")
flags.DEFINE_integer("retries", 4, "Retries after a failed attempt (with backoff).")


def main(argv):
  del argv
  name = os.path.basename(urllib.parse.urlparse(FLAGS.url).path) or "download"
  os.makedirs(FLAGS.output_dir, exist_ok=True)
  dest = os.path.join(FLAGS.output_dir, name)
  fetched = download.download(FLAGS.url, dest, sha1=FLAGS.sha1, retries=FLAGS.retries)
  print(dest)
  print(f"download_dump: {fetched} bytes fetched -> {dest}", file=sys.stderr)


if __name__ == "__main__":
  cli.run(main)
