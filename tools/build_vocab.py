"""Stage 3: learn a WordPiece vocab.txt (BERT layout) from the training shards.

  python tools/build_vocab.py --input_dir=out/shards --vocab_size=30522 \
      --output_file=out/vocab/vocab.txt --lower_case

Only needed when you have no vocab: a vocab.txt of your own (e.g. Google's
30,522-entry uncased one) is used unchanged by the later stages. The output has a
sidecar `<output_file>.manifest.json` written last; the same config and inputs
again is a no-op.
"""

import os

import _bootstrap  # noqa: F401  pylint: disable=unused-import
from absl import flags

from pipeline.core import cli
from pipeline.core import stage
from pipeline.text import vocab
from pipeline.core.errors import InputError

FLAGS = flags.FLAGS
flags.DEFINE_string("input_dir", None, "Output directory of shard_text.", required=True)
flags.DEFINE_string("output_file", None, "Where vocab.txt goes.", required=True)
flags.DEFINE_integer("vocab_size", 30522, "Entries in the vocab, specials included.",
                     lower_bound=200)
flags.DEFINE_integer("num_unused", None, "[unusedN] entries (994 in Google's vocab; "
                     "default min(994, vocab_size // 32)).", lower_bound=0)
flags.DEFINE_bool("lower_case", True, "Learn an uncased vocab.")
flags.DEFINE_bool("overwrite", False, "Replace an existing vocab made with other flags.")


def _up_to_date(path, manifest_path, identity):
  """True if `path` was made by this stage with `identity`; raises on conflicts."""
  if not os.path.exists(path):
    return False
  if not os.path.exists(manifest_path):
    if FLAGS.overwrite:
      return False
    raise InputError(path, "exists and was not made by build_vocab (your own vocab?); "
                     "use it directly or pass --overwrite")
  found = stage.read_json(manifest_path)
  same = ({k: found.get(k) for k in identity} == identity and
          found.get("sha256") == stage.file_sha256(path))
  if same or FLAGS.overwrite:
    return same
  raise InputError(path, "exists with a different config or input; pass --overwrite")


def main(argv):
  del argv
  manifest = stage.read_input(FLAGS.input_dir, "shard_text")
  files = [os.path.join(FLAGS.input_dir, f["name"]) for f in manifest["files"]
           if f["name"].startswith("train/") and f["name"].endswith(".txt")]
  identity = {"stage": "build_vocab",
              "config": {"vocab_size": FLAGS.vocab_size, "num_unused": FLAGS.num_unused,
                         "lower_case": FLAGS.lower_case},
              "input": {"manifest_sha256": manifest["_sha256"]}}
  manifest_path = FLAGS.output_file + ".manifest.json"
  if _up_to_date(FLAGS.output_file, manifest_path, identity):
    print(f"build_vocab: {FLAGS.output_file} is up to date (nothing to do)")
    return
  if os.path.exists(manifest_path):
    os.remove(manifest_path)  # the vocab is about to change: un-complete it first
  os.makedirs(os.path.dirname(os.path.abspath(FLAGS.output_file)), exist_ok=True)
  tokens = vocab.learn_wordpiece_vocab(files, FLAGS.vocab_size, FLAGS.lower_case,
                                       num_unused=FLAGS.num_unused)
  vocab.write_vocab(tokens, FLAGS.output_file)
  record = dict(identity, sha256=stage.file_sha256(FLAGS.output_file), entries=len(tokens),
                code_version=stage.code_version())
  stage.atomic_write_text(manifest_path, stage.json_dumps(record))
  print(f"build_vocab: {len(tokens)} entries ({'uncased' if FLAGS.lower_case else 'cased'}) "
        f"learned from {len(files)} training shards -> {FLAGS.output_file}")


if __name__ == "__main__":
  cli.run(main)
