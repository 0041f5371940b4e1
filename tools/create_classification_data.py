"""GLUE-style TSV/CSV task files -> classification TFRecords for fine-tuning and
task-specific distillation (google-research/bert's run_classifier features).

  # single sentence (SST-2 layout, e.g. tools/fetch_task_data.py's output)
  python tools/create_classification_data.py --input_dir=out/task/rotten_tomatoes \
      --output_dir=out/task/records --vocab_file=vocab.txt --max_seq_length=128 \
      --text_a_column=sentence --label_column=label --labels=0,1
  # sentence pair (MRPC), headerless CoLA: --nohas_header --text_a_column=3 --label_column=1

Writes <split>/part-00000.tfrecord for each of train/dev/test found; malformed
rows are skipped and counted per reason with their first line numbers in
stats.json. The stage: pipeline/records/classification_stage.py.
"""

import _bootstrap  # noqa: F401  pylint: disable=unused-import
from absl import flags

from pipeline.core import cli
from pipeline.records import classification_data as cd
from pipeline.records import classification_stage

FLAGS = flags.FLAGS
flags.DEFINE_string("input_dir", None, "Directory with train/dev/test.<format>.")
for _split in cd.SPLITS:
  flags.DEFINE_string(f"{_split}_file", None, f"The {_split} file (instead of --input_dir).")
flags.DEFINE_string("output_dir", None, "Where the TFRecords go.", required=True)
flags.DEFINE_string("vocab_file", None, "WordPiece vocab.txt of the model.", required=True)
flags.DEFINE_bool("do_lower_case", True, "Lower-case (uncased vocab).")
flags.DEFINE_integer("max_seq_length", 128, "Tokens per record, [CLS]/[SEP] included.")
flags.DEFINE_enum("format", "tsv", cd.FORMATS, "tsv: tab-separated, no quoting (GLUE); "
                  "csv: comma-separated with quoting.")
flags.DEFINE_bool("has_header", True, "The first line of each file names the columns.")
flags.DEFINE_string("text_a_column", None, "Column of the (first) text: name or 0-based index.",
                    required=True)
flags.DEFINE_string("text_b_column", None, "Column of the second text of pair tasks.")
flags.DEFINE_string("label_column", None, "Column of the label: name or index.", required=True)
flags.DEFINE_list("labels", None, "The label values; list position = label id.", required=True)
flags.DEFINE_bool("test_labels", True, "The test file has labels (false: label_ids = "
                  "num_labels in its records, and its label column is not read).")
flags.DEFINE_integer("log_examples", 3, "Records per split to log decoded back to tokens.")
flags.DEFINE_bool("overwrite", False, "Replace an existing output made with other flags.")

_NAMES = ("output_dir", "vocab_file", "text_a_column", "label_column", "input_dir",
          "text_b_column", "do_lower_case", "max_seq_length", "format", "has_header",
          "test_labels", "log_examples", "overwrite")


def main(argv):
  del argv
  classification_stage.run(classification_stage.ClassificationRecordsConfig(
      labels=tuple(FLAGS.labels), split_files={s: FLAGS[f"{s}_file"].value for s in cd.SPLITS},
      **{name: FLAGS[name].value for name in _NAMES}))


if __name__ == "__main__":
  cli.run(main)
