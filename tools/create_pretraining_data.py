"""Stage 4: text shards -> BERT pretraining TFRecords (masked LM + next sentence).

One output file per input shard, train and eval apart, with google-research/bert's
features. Parallel over shards with processes, and across ranks under mpirun:

  python tools/create_pretraining_data.py --input_dir=out/shards \
      --output_dir=out/records --vocab_file=out/vocab.txt
  mpirun -np 4 python tools/create_pretraining_data.py ...   # same bytes

The stage: pipeline/records/pretraining_stage.py (instances: instances.py).
"""

import os

import _bootstrap  # noqa: F401  pylint: disable=unused-import
from absl import flags

from pipeline.core import cli
from pipeline.records import pretraining_stage
from pipeline.records.instances import InstanceConfig

FLAGS = flags.FLAGS
flags.DEFINE_string("input_dir", None, "Output directory of shard_text.", required=True)
flags.DEFINE_string("output_dir", None, "Where the TFRecords go.", required=True)
flags.DEFINE_string("vocab_file", None, "WordPiece vocab.txt (BERT layout).", required=True)
flags.DEFINE_integer("max_seq_length", 128, "Maximum sequence length.")
flags.DEFINE_integer("max_predictions_per_seq", 20, "Maximum masked LM predictions.")
flags.DEFINE_float("masked_lm_prob", 0.15, "Masked LM probability.")
flags.DEFINE_float("short_seq_prob", 0.1, "Probability of a shorter target length.")
flags.DEFINE_integer("dupe_factor", 10, "Passes over the data with different masks.")
flags.DEFINE_bool("do_whole_word_mask", False, "Mask whole words, not WordPieces.")
flags.DEFINE_bool("do_lower_case", True, "Lower-case (uncased vocab).")
flags.DEFINE_integer("random_seed", 12345, "Seed; combined with each page id.")
flags.DEFINE_integer("num_workers", os.cpu_count(), "Processes per rank.", lower_bound=1)
flags.DEFINE_integer("log_examples", 3, "Instances to log decoded back to tokens.")
flags.DEFINE_string("reuse_dir", None,
                    "Records of an earlier corpus version made with the same settings: "
                    "unchanged documents (same page id and revision) keep their records.")
flags.DEFINE_bool("overwrite", False, "Replace an existing output made with other flags.")


def main(argv):
  del argv
  pretraining_stage.run(pretraining_stage.RecordsConfig(
      input_dir=FLAGS.input_dir, output_dir=FLAGS.output_dir, vocab_file=FLAGS.vocab_file,
      instance_config=InstanceConfig(
          max_seq_length=FLAGS.max_seq_length,
          max_predictions_per_seq=FLAGS.max_predictions_per_seq,
          masked_lm_prob=FLAGS.masked_lm_prob, short_seq_prob=FLAGS.short_seq_prob,
          dupe_factor=FLAGS.dupe_factor, do_whole_word_mask=FLAGS.do_whole_word_mask,
          random_seed=FLAGS.random_seed),
      do_lower_case=FLAGS.do_lower_case,
      num_workers=FLAGS.num_workers, log_examples=FLAGS.log_examples,
      reuse_dir=FLAGS.reuse_dir, overwrite=FLAGS.overwrite))


if __name__ == "__main__":
  cli.run(main)
