"""GLUE-style TSV/CSV task files -> classification TFRecords for fine-tuning and
task-specific distillation (google-research/bert's run_classifier features).

  # single sentence (SST-2 layout, e.g. tools/fetch_task_data.py's output)
  python tools/create_classification_data.py --input_dir=out/task/rotten_tomatoes \
      --output_dir=out/task/records --vocab_file=vocab.txt --max_seq_length=128 \
      --text_a_column=sentence --label_column=label --labels=0,1
  # sentence pair (MRPC), headerless CoLA: --nohas_header --text_a_column=3 --label_column=1

Writes <split>/part-00000.tfrecord for each of train/dev/test found; malformed
rows are skipped and counted per reason with their first line numbers in
stats.json. See pipeline/records/classification_data.py.
"""

import dataclasses
import hashlib
import sys

import _bootstrap  # noqa: F401  pylint: disable=unused-import
from absl import app
from absl import flags

from pipeline.core import cli
from pipeline.records import classification_data as cd
from pipeline.records import schema
from pipeline.core import stage
from pipeline.corpus import task_data
from pipeline.core.progress import Progress
from pipeline.text.tokenization import BertTokenizer

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


def _task():
  try:
    return cd.TaskFormat(FLAGS.format, FLAGS.has_header, FLAGS.text_a_column,
                         FLAGS.text_b_column, FLAGS.label_column, tuple(FLAGS.labels),
                         FLAGS.max_seq_length)
  except ValueError as e:
    raise app.UsageError(str(e)) from None


def _inputs(task):
  """{split: path}, the input hash, and {split: labeled}, all checked."""
  if bool(FLAGS.input_dir) == any(FLAGS[f"{s}_file"].value for s in cd.SPLITS):
    raise app.UsageError("give either --input_dir or --train_file/--dev_file/--test_file")
  if FLAGS.input_dir and cd.is_stage_output(FLAGS.input_dir):
    stage.read_input(FLAGS.input_dir, task_data.STAGE)  # refuses an incomplete fetch
  files = cd.split_files(FLAGS.input_dir, FLAGS.format,
                         {s: FLAGS[f"{s}_file"].value for s in cd.SPLITS})
  labeled = {s: s != "test" or FLAGS.test_labels for s in files}
  for split, path in files.items():
    cd.preflight(path, task, labeled[split])
  digests = stage.json_dumps({s: stage.file_sha256(p) for s, p in sorted(files.items())})
  return files, hashlib.sha256(digests.encode()).hexdigest(), labeled


def _convert(out, split, path, task, tok, labeled):
  """One split's records and stats sidecar (kept from an earlier run if done)."""
  name = cd.output_name(split)
  if out.done(name):
    return out.read_part(name)
  progress = Progress(f"create_classification_data {split}", total=cd.count_lines(path),
                      unit="lines")
  with out.writing(name) as tmp:
    stats, examples = cd.convert_file(path, tmp, task, tok, labeled, progress,
                                      FLAGS.log_examples)
    part = dict(stats.as_dict(), file=path, labeled=labeled,
                seconds=round(progress.elapsed(), 2))
    out.write_part(name, part)  # before the rename that marks the split done
  for line in cd.format_malformed(split, path, stats):
    print(line, file=sys.stderr)
  cd.log_examples(split, examples, tok, task)
  return part


def main(argv):
  del argv
  task = _task()
  files, input_hash, labeled = _inputs(task)
  tok = BertTokenizer(FLAGS.vocab_file, do_lower_case=FLAGS.do_lower_case)
  config = dict(task.config(), do_lower_case=FLAGS.do_lower_case, vocab_size=tok.vocab_size,
                vocab_sha256=stage.file_sha256(FLAGS.vocab_file), splits=sorted(files),
                unlabeled_splits=sorted(s for s in files if not labeled[s]),
                unlabeled_label_id=task.unlabeled_id)
  out = stage.StageOutput(FLAGS.output_dir, cd.STAGE, config, input_hash, FLAGS.overwrite)
  if out.prepare():
    print(f"create_classification_data: {FLAGS.output_dir} is up to date (nothing to do)")
    return
  stats = {s: _convert(out, s, files[s], task, tok, labeled[s]) for s in cd.SPLITS if s in files}
  counts = {f"{s}_examples": v["examples"] for s, v in stats.items()}
  counts["malformed_rows"] = sum(v["malformed_rows"] for v in stats.values())
  features = [dataclasses.asdict(f) for f in schema.CLASSIFICATION_FEATURES]
  out.finalize([cd.output_name(s) for s in stats], counts, stats, extra={"features": features})
  print("create_classification_data: " + ", ".join(
      f"{s} {v['examples']} examples ({v['malformed_rows']} malformed rows skipped)"
      for s, v in stats.items()) + f" -> {FLAGS.output_dir}")


if __name__ == "__main__":
  cli.run(main)
