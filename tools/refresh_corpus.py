"""Refreshes the corpus from the newest finished Wikipedia dump, incrementally.

  python tools/refresh_corpus.py --root=/data/corpus --mirror_url=https://MIRROR \
      --wiki=enwiki --vocab_file=/data/vocab.txt

Builds <root>/versions/<date>/ (extract -> shards -> records [-> teacher labels
with --teacher_config/--teacher_checkpoint], reusing the current version's work
for pages whose revision did not change), then switches
<root>/current to it atomically. Safe under cron: a second run while one is
going exits 0 with "already running"; a killed run leaves the old version
current and the next run resumes. Exit status: 0 done / nothing new / already
running, 2 bad input or flags, 3 download or checksum failure, 4 a stage failed.
The run: pipeline/corpus/refresh.py.
"""

import os
import sys

import _bootstrap  # noqa: F401  pylint: disable=unused-import
from absl import flags

from pipeline.core import cli
from pipeline.core.errors import ConfigError
from pipeline.corpus import refresh

FLAGS = flags.FLAGS
flags.DEFINE_string("root", None, "Corpus root (versions/, current, state.json, logs/).",
                    required=True)
flags.DEFINE_string("mirror_url", None, "Dump mirror base URL or local directory.",
                    required=True)
flags.DEFINE_string("wiki", "enwiki", "Wiki name, e.g. enwiki.")
flags.DEFINE_string("vocab_file", None, "The vocab.txt every version uses.", required=True)
flags.DEFINE_integer("keep_versions", 2, "Versions kept after a switch.", lower_bound=1)
flags.DEFINE_integer("num_shards", 16, "Training text shards.")
flags.DEFINE_float("eval_fraction", 0.01, "Held-out fraction (by page-id hash).")
flags.DEFINE_integer("min_article_chars", 200, "Drop shorter articles.")
flags.DEFINE_integer("max_seq_length", 128, "Records: maximum sequence length.")
flags.DEFINE_integer("max_predictions_per_seq", 20, "Records: masked LM predictions.")
flags.DEFINE_integer("dupe_factor", 5, "Records: passes with different masks.")
flags.DEFINE_integer("random_seed", 12345, "Records: seed.")
flags.DEFINE_bool("do_lower_case", True, "Records: lower-case (uncased vocab).")
flags.DEFINE_integer("num_workers", os.cpu_count(), "Processes per stage.")
flags.DEFINE_string("teacher_config", None, "Teacher labels too (stage 5): the teacher's "
                    "bert_config.json or a bundled config name; with --teacher_checkpoint.")
flags.DEFINE_string("teacher_checkpoint", None, "The teacher's weights.")
flags.DEFINE_integer("truncation_factor", 16, "Labels: K ids per masked position.")
flags.DEFINE_float("temperature", 1.0, "Labels: softmax temperature T.")
flags.DEFINE_enum("label_method", "topk", ["topk", "sampled"], "Labels: top-K or sampled.")
flags.DEFINE_integer("label_batch_size", 64, "Labels: records per teacher forward pass.")

_BUILD = ("vocab_file", "num_shards", "eval_fraction", "min_article_chars", "max_seq_length",
          "max_predictions_per_seq", "dupe_factor", "random_seed", "do_lower_case",
          "num_workers")


def _teacher():
  if bool(FLAGS.teacher_config) != bool(FLAGS.teacher_checkpoint):
    raise ConfigError("--teacher_config/--teacher_checkpoint: give both or neither")
  if not FLAGS.teacher_config:
    return None
  return refresh.TeacherSettings(
      FLAGS.teacher_config, os.path.abspath(FLAGS.teacher_checkpoint),
      FLAGS.truncation_factor, FLAGS.temperature, FLAGS.label_method, FLAGS.label_batch_size)


def _label_stage(args):
  # The teacher model loads TensorFlow: imported only by refreshes that label.
  from modeling.labeling import teacher_labels  # pylint: disable=import-outside-toplevel
  teacher_labels.refresh_label_stage(args)


def main(argv):
  del argv
  build = refresh.BuildSettings(**{name: FLAGS[name].value for name in _BUILD},
                                teacher=_teacher())
  sys.exit(refresh.run(refresh.RefreshConfig(
      root=FLAGS.root, mirror_url=FLAGS.mirror_url, build=build, wiki=FLAGS.wiki,
      keep_versions=FLAGS.keep_versions), label_stage=_label_stage))


if __name__ == "__main__":
  cli.run(main)
