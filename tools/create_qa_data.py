"""Official SQuAD JSON (v1.1 or v2.0) -> extractive QA TFRecords of windows, as
google-research/bert's run_squad.py makes them.

  # the official files
  python tools/create_qa_data.py --train_file=train-v1.1.json --dev_file=dev-v1.1.json \
      --output_dir=out/squad/records --vocab_file=vocab.txt
  # one file split by article: the last 1 article is dev
  python tools/create_qa_data.py --input_file=../shared/data/squad-v2.0-dev-5articles.json \
      --dev_articles=1 --output_dir=out/squad/records --vocab_file=vocab.txt

Writes train/part-00000.tfrecord and dev/part-00000.tfrecord, plus
dev/examples.jsonl (the offsets that map a predicted span back to the context
text) and dev/dataset.json (the dev articles, for the official evaluate
scripts). Training questions whose answer the reference cannot find are skipped
and counted in stats.json. The stage: pipeline/records/qa_stage.py.
"""

import _bootstrap  # noqa: F401  pylint: disable=unused-import
from absl import flags

from pipeline.core import cli
from pipeline.records import qa_stage

FLAGS = flags.FLAGS
flags.DEFINE_string("train_file", None, "SQuAD JSON of the training split.")
flags.DEFINE_string("dev_file", None, "SQuAD JSON of the dev (evaluation) split.")
flags.DEFINE_string("input_file", None, "One SQuAD JSON split by article (with "
                    "--dev_articles) instead of --train_file/--dev_file.")
flags.DEFINE_integer("dev_articles", 0, "With --input_file: its last N articles are dev.")
flags.DEFINE_string("output_dir", None, "Where the TFRecords go.", required=True)
flags.DEFINE_string("vocab_file", None, "WordPiece vocab.txt of the model.", required=True)
flags.DEFINE_bool("do_lower_case", True, "Lower-case (uncased vocab).")
flags.DEFINE_integer("max_seq_length", 384, "Tokens per window, [CLS]/[SEP] included.")
flags.DEFINE_integer("doc_stride", 128, "Context tokens between window starts.")
flags.DEFINE_integer("max_query_length", 64, "Question tokens kept (the first ones).")
flags.DEFINE_bool("log_examples", True, "Log the first windows decoded back to tokens.")
flags.DEFINE_bool("overwrite", False, "Replace an existing output made with other flags.")

_NAMES = ("train_file", "dev_file", "input_file", "dev_articles", "output_dir", "vocab_file",
          "do_lower_case", "max_seq_length", "doc_stride", "max_query_length",
          "log_examples", "overwrite")


def main(argv):
  del argv
  qa_stage.run(qa_stage.QaRecordsConfig(**{name: FLAGS[name].value for name in _NAMES}))


if __name__ == "__main__":
  cli.run(main)
