"""Stage 3: learn a WordPiece vocab.txt (BERT layout) from the training shards.

  python tools/build_vocab.py --input_dir=out/shards --vocab_size=30522 \
      --output_file=out/vocab/vocab.txt --lower_case

Only needed when you have no vocab: a vocab.txt of your own (e.g. Google's
30,522-entry uncased one) is used unchanged by the later stages. The output has a
sidecar `<output_file>.manifest.json` written last; the same config and inputs
again is a no-op. The stage: pipeline/text/vocab.py.
"""

import _bootstrap  # noqa: F401  pylint: disable=unused-import
from absl import flags

from pipeline.core import cli
from pipeline.text import vocab

FLAGS = flags.FLAGS
flags.DEFINE_string("input_dir", None, "Output directory of shard_text.", required=True)
flags.DEFINE_string("output_file", None, "Where vocab.txt goes.", required=True)
flags.DEFINE_integer("vocab_size", 30522, "Entries in the vocab, specials included.",
                     lower_bound=200)
flags.DEFINE_integer("num_unused", None, "[unusedN] entries (994 in Google's vocab; "
                     "default min(994, vocab_size // 32)).", lower_bound=0)
flags.DEFINE_bool("lower_case", True, "Learn an uncased vocab.")
flags.DEFINE_bool("overwrite", False, "Replace an existing vocab made with other flags.")


def main(argv):
  del argv
  vocab.run(vocab.VocabConfig(
      input_dir=FLAGS.input_dir, output_file=FLAGS.output_file, vocab_size=FLAGS.vocab_size,
      num_unused=FLAGS.num_unused, lower_case=FLAGS.lower_case, overwrite=FLAGS.overwrite))


if __name__ == "__main__":
  cli.run(main)
