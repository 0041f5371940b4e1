"""Teacher and students side by side: size, latency, throughput, held-out metrics.

  python tools/benchmark.py --input_dir=out/distill --output_dir=out/benchmark \
      --models=teacher=out/teacher/bert_config.json:out/teacher,student=:out/student
  python tools/benchmark.py --input_dir=out/task/records --vocab_file=out/vocab/vocab.txt \
      --split=test --output_dir=out/task/benchmark \
      --models=teacher=:out/task/teacher/best,distilled=:out/task/student/best

--models: name=config:checkpoint, comma-separated, the reference (teacher) first;
an empty config means the one beside the checkpoint. All models are measured in
one run with their repeats interleaved. What is measured follows --input_dir's
kind (pretraining models on pretraining or distill records, classifiers on
classification records). Writes benchmark.md (the table), benchmark.json (every
number and sample, the load average, settings) and benchmark.png (metric vs
latency). The run: modeling/evaluation/runs.py.
"""

import sys

import _bootstrap  # noqa: F401  pylint: disable=unused-import
from absl import flags

from modeling.evaluation import runs
from pipeline.core import cli

FLAGS = flags.FLAGS
flags.DEFINE_list("models", None, "name=config:checkpoint,... (first = reference).",
                  required=True)
flags.DEFINE_string("input_dir", None, "Records for the held-out metrics (any kind "
                    "evaluate.py reads).", required=True)
flags.DEFINE_string("output_dir", None, "Where benchmark.md/.json/.png go.", required=True)
flags.DEFINE_enum("split", None, ("train", "eval", "dev", "test"), "Records split "
                  "for the metrics (default: eval; dev for classification records).")
flags.DEFINE_string("vocab_file", None, "Classifiers: refuse records made with "
                    "another vocab.")
flags.DEFINE_integer("eval_batch_size", 32, "Batch of the metrics pass.", lower_bound=1)
flags.DEFINE_integer("max_eval_batches", None, "Metrics on this many batches only.",
                     lower_bound=1)
flags.DEFINE_integer("seq_length", None, "Sequence length of the timed inputs "
                     "(default: 128; the records' for classifiers).")
flags.DEFINE_integer("num_predictions", 20, "Masked positions per timed sequence.")
flags.DEFINE_integer("latency_batch", 1, "Batch of the latency calls.")
flags.DEFINE_integer("throughput_batch", 128, "Batch of the throughput calls.")
flags.DEFINE_integer("repeats", 10, "Timed calls per model and kind.")
flags.DEFINE_integer("warmup", 2, "Untimed calls first (after tracing).")
flags.DEFINE_bool("task", False, "No longer needed (--input_dir's kind says it); accepted "
                  "for one release.")

_NAMES = ("input_dir", "output_dir", "split", "vocab_file", "eval_batch_size",
          "max_eval_batches", "seq_length", "num_predictions", "latency_batch",
          "throughput_batch", "repeats", "warmup")


def main(argv):
  del argv
  if FLAGS.task:
    print("benchmark: --task is no longer needed: --input_dir's manifest says what it is",
          file=sys.stderr)
  runs.benchmark(runs.BenchmarkConfig(
      models=runs.parse_models(FLAGS.models), given=cli.given_flags(),
      **{name: FLAGS[name].value for name in _NAMES}))


if __name__ == "__main__":
  cli.run(main)
