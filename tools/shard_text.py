"""Stage 2: extracted documents -> sentence-per-line text shards (train + eval).

  python tools/shard_text.py --input_dir=out/extract --output_dir=out/shards \
      --num_shards=16 --eval_fraction=0.01

The stage: pipeline/corpus/sharding.py.
"""

import os

import _bootstrap  # noqa: F401  pylint: disable=unused-import
from absl import flags

from pipeline.core import cli
from pipeline.corpus import sharding

FLAGS = flags.FLAGS
flags.DEFINE_string("input_dir", None, "Output directory of extract_wiki.", required=True)
flags.DEFINE_string("output_dir", None, "Where the text shards go.", required=True)
flags.DEFINE_integer("num_shards", 16, "Number of training shards.", lower_bound=1)
flags.DEFINE_integer("num_eval_shards", 1, "Number of held-out shards.", lower_bound=1)
flags.DEFINE_float("eval_fraction", 0.01, "Fraction of pages held out (by page-id hash).",
                   lower_bound=0.0, upper_bound=1.0)
flags.DEFINE_integer("num_workers", os.cpu_count(), "Worker processes.", lower_bound=1)
flags.DEFINE_bool("overwrite", False, "Replace an existing output made with other flags.")


def main(argv):
  del argv
  sharding.run(sharding.ShardConfig(
      input_dir=FLAGS.input_dir, output_dir=FLAGS.output_dir, num_shards=FLAGS.num_shards,
      num_eval_shards=FLAGS.num_eval_shards, eval_fraction=FLAGS.eval_fraction,
      num_workers=FLAGS.num_workers, overwrite=FLAGS.overwrite))


if __name__ == "__main__":
  cli.run(main)
