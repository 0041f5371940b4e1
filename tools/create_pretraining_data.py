"""Stage 4: text shards -> BERT pretraining TFRecords (masked LM + next sentence).

One output file per input shard, train and eval apart, with google-research/bert's
features. Parallel over shards with processes, and across ranks under mpirun:

  python tools/create_pretraining_data.py --input_dir=out/shards \
      --output_dir=out/records --vocab_file=out/vocab.txt
  mpirun -np 4 python tools/create_pretraining_data.py ...   # same bytes
"""

import dataclasses
import multiprocessing
import os

import _bootstrap  # noqa: F401  pylint: disable=unused-import
from absl import flags

from pipeline.core import cli
from pipeline.core import world as world_lib
from pipeline.records import pretraining_stage
from pipeline.core import stage
from pipeline.records.instances import InstanceConfig
from pipeline.core.progress import Progress
from pipeline.text.tokenization import load_vocab

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


def _instance_config():
  try:
    return InstanceConfig(
        max_seq_length=FLAGS.max_seq_length,
        max_predictions_per_seq=FLAGS.max_predictions_per_seq,
        masked_lm_prob=FLAGS.masked_lm_prob, short_seq_prob=FLAGS.short_seq_prob,
        dupe_factor=FLAGS.dupe_factor, do_whole_word_mask=FLAGS.do_whole_word_mask,
        random_seed=FLAGS.random_seed)
  except ValueError as e:
    raise flags.ValidationError(str(e)) from None


def _run_shards(job, todo, progress):
  """Processes this rank's unfinished shards; returns the first logged examples."""
  examples = []
  if FLAGS.num_workers == 1 or len(todo) <= 1:
    results = map(job.run_shard, todo)
    pool = None
  else:
    pool = multiprocessing.get_context("spawn").Pool(
        min(FLAGS.num_workers, len(todo)), initializer=pretraining_stage.worker_init)
    results = pool.imap_unordered(job.run_shard, todo)
  try:
    for result in results:
      progress.update(result["text_bytes"])
      examples = examples or result["examples"]
  finally:
    if pool:
      pool.close()
      pool.join()
  return examples


def main(argv):
  del argv
  world = world_lib.job_world()
  cfg = _instance_config()
  manifest = stage.read_input(FLAGS.input_dir, "shard_text")
  vocab = load_vocab(FLAGS.vocab_file)
  job = pretraining_stage.RecordsJob(
      input_dir=FLAGS.input_dir, output_dir=FLAGS.output_dir,
      vocab_file=FLAGS.vocab_file, do_lower_case=FLAGS.do_lower_case,
      instance_config=cfg, log_examples=FLAGS.log_examples)
  config = dict(dataclasses.asdict(cfg), do_lower_case=FLAGS.do_lower_case,
                vocab_sha256=stage.file_sha256(FLAGS.vocab_file), vocab_size=len(vocab))
  config = pretraining_stage.reuse_config(config, FLAGS.reuse_dir)
  if "reuse_from" in config:
    job = dataclasses.replace(job, reuse_dir=FLAGS.reuse_dir)
  out = stage.StageOutput(FLAGS.output_dir, "create_pretraining_data", config,
                          manifest["_sha256"], FLAGS.overwrite, world.is_chief)
  complete = world_lib.run_collectively(world, out.prepare)
  if world.broadcast_object(complete):
    if world.is_chief:
      print(f"create_pretraining_data: {FLAGS.output_dir} is up to date (nothing to do)")
    return
  shards = pretraining_stage.input_shards(manifest)
  mine = [s for s in world.my_items(shards) if not out.done(pretraining_stage.output_name(s))]
  progress = Progress("create_pretraining_data", unit="B text", enabled=world.is_chief,
                      total=sum(pretraining_stage.text_bytes(manifest, s) for s in world.my_items(shards)))
  examples = world_lib.run_collectively(world, lambda: _run_shards(job, mine, progress))
  if world.is_chief:
    pretraining_stage.log_examples(examples, FLAGS.vocab_file, FLAGS.do_lower_case)
  world.barrier()
  if world.is_chief:
    summary = pretraining_stage.finalize(out, shards, cfg, progress.elapsed(), world.size,
                                     FLAGS.num_workers)
    print(summary)


if __name__ == "__main__":
  cli.run(main)
