"""Stage 5: pretraining records -> distill records with the teacher's labels.

Runs the teacher once over every record (train and eval) and writes the
records unchanged plus schema.TEACHER_FEATURES: the top-K probabilities at
temperature T ("topk") or K ids sampled from them with unbiased weights
("sampled"; see pipeline/labels/packed_labels.py). One output file per input file:

  python tools/extract_teacher_labels.py --bert_config_file=out/teacher/bert_config.json \
      --init_checkpoint=out/teacher --vocab_file=out/vocab/vocab.txt \
      --input_dir=out/records --output_dir=out/distill
  mpirun -np 4 python tools/extract_teacher_labels.py ...   # same bytes

With --reuse_dir=<the previous corpus version's labels>, records whose bytes
that cache holds are copied from it (same teacher fingerprint but for the
records: see pipeline/labels/reuse.py), and only the others are computed.

With --task, classification records and a fine-tuned classifier instead: each
record gets the teacher's full logits (tools/_task_labels.py).
"""

import os
import time

import _bootstrap  # noqa: F401  pylint: disable=unused-import
import _task_labels
from absl import flags

from modeling.checkpoints import checkpoints
from modeling.models import heads
from modeling.training import optimization
from modeling.training import pretraining
from pipeline.core import cli
from pipeline.core import distributed
from pipeline.labels import reuse
from pipeline.core import stage
from pipeline.labels import inference
from pipeline.labels import pretraining_labels as labels_stage
from pipeline.core.errors import InputError
from pipeline.core.progress import Progress
from pipeline.text.tokenization import load_vocab

FLAGS = flags.FLAGS
flags.DEFINE_string("bert_config_file", None, "The teacher's bert_config.json (or a "
                    "bundled config name); with --task, default: the one beside it.")
flags.DEFINE_string("init_checkpoint", None, "Teacher weights: Google TF1, HF "
                    "safetensors or one of our training runs.", required=True)
flags.DEFINE_string("vocab_file", None, "The records' vocab.txt.", required=True)
flags.DEFINE_string("input_dir", None, "create_pretraining_data output "
                    "(create_classification_data output with --task).", required=True)
flags.DEFINE_string("output_dir", None, "Where the distill records go.", required=True)
flags.DEFINE_bool("task", False, "Classification records and a fine-tuned classifier: "
                  "cache its full logits (see tools/_task_labels.py).")
flags.DEFINE_list("splits", ["train", "dev"], "With --task: the splits to label.")
flags.DEFINE_integer("truncation_factor", 16, "K: ids kept per masked position "
                     "(16: best accuracy per byte in docs/distillation_results.md).")
flags.DEFINE_float("temperature", 1.0, "T of p_T = softmax(logits / T).")
flags.DEFINE_enum("label_method", "topk", ["topk", "sampled"], "Top-K, or K draws "
                  "from p_T with unbiased weights.")
flags.DEFINE_integer("batch_size", 64, "Records per forward pass (per rank).")
flags.DEFINE_enum("mixed_precision", "none", ["none", "bf16"], "Teacher compute dtype.")
flags.DEFINE_integer("seed", 12345, "Sampling seed (combined with each record's digest).")
flags.DEFINE_integer("log_examples", 1, "Records whose labels are logged as tokens.")
flags.DEFINE_string("reuse_dir", None, "The labels of an earlier corpus version: "
                    "records whose bytes it holds are copied from it when it was made "
                    "with the same teacher fingerprint (all but the records).")
flags.DEFINE_bool("overwrite", False, "Replace an output made with other settings.")


def _settings():
  try:
    return labels_stage.LabelSettings(
        truncation_factor=FLAGS.truncation_factor, temperature=FLAGS.temperature,
        label_method=FLAGS.label_method, batch_size=FLAGS.batch_size,
        mixed_precision=FLAGS.mixed_precision, seed=FLAGS.seed)
  except ValueError as e:
    raise InputError("flags", str(e)) from None


def _local_rank(world):
  """(rank, size) among the ranks on this machine."""
  if world.comm is None:
    return 0, 1
  from mpi4py import MPI  # pylint: disable=import-outside-toplevel
  local = world.comm.Split_type(MPI.COMM_TYPE_SHARED)
  return local.Get_rank(), local.Get_size()


def _teacher(manifest, settings):
  """The teacher with its weights loaded: (model, config dict, weights sha256)."""
  config = pretraining.model_config(
      FLAGS.bert_config_file, manifest,
      pretraining.gelu_convention_for(FLAGS.init_checkpoint))
  if settings.truncation_factor > config.vocab_size:
    raise InputError("--truncation_factor", f"{settings.truncation_factor} exceeds the "
                     f"vocab size {config.vocab_size}")
  model = heads.BertPretrainer(
      config, dtype=optimization.PRECISION_POLICIES[settings.mixed_precision])
  model.build(None)
  try:
    checkpoints.load_checkpoint(model, FLAGS.init_checkpoint)
  except ValueError as e:
    raise InputError(FLAGS.init_checkpoint, str(e)) from None
  weights = labels_stage.weights_sha256(
      (p.tf1_name, p.variable.numpy()) for p in checkpoints.model_params(model))
  return model, config.to_dict(), weights


def _run(world, out, model, settings, manifest):
  names = labels_stage.record_files(manifest)
  mine = [n for n in world.my_items(names) if not out.done(n)]
  shapes = (settings.batch_size, out.config["max_seq_length"],
            out.config["max_predictions_per_seq"])
  step = lambda: inference.make_step(  # noqa: E731
      model, settings.label_method, settings.truncation_factor, settings.temperature, shapes)
  progress = Progress("extract_teacher_labels", unit="instances", enabled=world.is_chief)
  vocab = load_vocab(FLAGS.vocab_file) if world.is_chief else None
  reuse_dir = FLAGS.reuse_dir if "reuse_from" in out.config else None
  distributed.run_collectively(world, lambda: labels_stage.label_files(
      out, FLAGS.input_dir, mine, step, settings, shapes, progress,
      FLAGS.log_examples if world.is_chief else 0, vocab, reuse_dir))
  return names


def main(argv):
  del argv
  if FLAGS.task:
    return _task_labels.main()
  if not FLAGS.bert_config_file:
    raise InputError("--bert_config_file", "required (the teacher's bert_config.json)")
  start = time.monotonic()
  world = distributed.World()
  inference.configure_devices(*_local_rank(world))
  settings = _settings()
  manifest = stage.read_input(FLAGS.input_dir, labels_stage.INPUT_STAGE)
  vocab_sha = labels_stage.check_vocab(manifest, FLAGS.vocab_file)
  model, bert_config, weights = _teacher(manifest, settings)
  config = labels_stage.stage_config(manifest, settings, bert_config, weights, vocab_sha)
  config = reuse.reuse_config(config, FLAGS.reuse_dir, labels_stage.STAGE)
  out = stage.StageOutput(FLAGS.output_dir, labels_stage.STAGE, config,
                          manifest["_sha256"], FLAGS.overwrite, world.is_chief)
  complete = distributed.run_collectively(world, out.prepare)
  if world.bcast(complete):
    if world.is_chief:
      print(f"extract_teacher_labels: {FLAGS.output_dir} is up to date (nothing to do)")
    return
  setup = time.monotonic() - start
  names = _run(world, out, model, settings, manifest)
  world.barrier()
  if world.is_chief:
    teacher = {"init_checkpoint": os.path.abspath(FLAGS.init_checkpoint),
               "bert_config_file": FLAGS.bert_config_file}
    print(labels_stage.finalize(out, names, time.monotonic() - start, world.size, teacher,
                                setup))


if __name__ == "__main__":
  cli.run(main)
