"""Stage 1: MediaWiki XML dumps (.xml.bz2 / .xml) -> clean documents as JSONL.

  python tools/extract_wiki.py --input=enwiki-pages-articles1.xml.bz2,... \
      --output_dir=out/extract

The stage: pipeline/corpus/extract.py (cleaning: pipeline/corpus/wiki.py).
"""

import os

import _bootstrap  # noqa: F401  pylint: disable=unused-import
from absl import flags

from pipeline.core import cli
from pipeline.corpus import extract

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


def main(argv):
  del argv
  extract.run(extract.ExtractConfig(
      inputs=tuple(FLAGS.input), output_dir=FLAGS.output_dir,
      min_article_chars=FLAGS.min_article_chars, pages_per_file=FLAGS.pages_per_file,
      num_workers=FLAGS.num_workers, reuse_dir=FLAGS.reuse_dir, overwrite=FLAGS.overwrite))


if __name__ == "__main__":
  cli.run(main)
