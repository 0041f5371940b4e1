"""Stage 2: extracted documents -> sentence-per-line text shards (train + eval).

  python tools/shard_text.py --input_dir=out/extract --output_dir=out/shards \
      --num_shards=16 --eval_fraction=0.01
"""

import functools
import multiprocessing
import os
import shutil

import _bootstrap  # noqa: F401  pylint: disable=unused-import
from absl import flags

from pipeline.core import cli
from pipeline.corpus import sharding
from pipeline.core import stage
from pipeline.core.errors import InputError
from pipeline.core.progress import Progress

FLAGS = flags.FLAGS
flags.DEFINE_string("input_dir", None, "Output directory of extract_wiki.", required=True)
flags.DEFINE_string("output_dir", None, "Where the text shards go.", required=True)
flags.DEFINE_integer("num_shards", 16, "Number of training shards.", lower_bound=1)
flags.DEFINE_integer("num_eval_shards", 1, "Number of held-out shards.", lower_bound=1)
flags.DEFINE_float("eval_fraction", 0.01, "Fraction of pages held out (by page-id hash).",
                   lower_bound=0.0, upper_bound=1.0)
flags.DEFINE_integer("num_workers", os.cpu_count(), "Worker processes.", lower_bound=1)
flags.DEFINE_bool("overwrite", False, "Replace an existing output made with other flags.")


def _shard_names(cfg):
  return ([(sharding.TRAIN, i) for i in range(cfg["num_shards"])] +
          [(sharding.EVAL, i) for i in range(cfg["num_eval_shards"])])


def main(argv):
  del argv
  manifest = stage.read_input(FLAGS.input_dir, "extract_wiki")
  inputs = [os.path.join(FLAGS.input_dir, f["name"]) for f in manifest["files"]
            if f["name"].endswith(".jsonl")]
  if not manifest["counts"].get("documents"):
    raise InputError(FLAGS.input_dir, "no documents to shard (the extraction kept none)")
  cfg = {"num_shards": FLAGS.num_shards, "num_eval_shards": FLAGS.num_eval_shards,
         "eval_fraction": FLAGS.eval_fraction}
  out = stage.StageOutput(FLAGS.output_dir, "shard_text", cfg, manifest["_sha256"],
                          overwrite=FLAGS.overwrite)
  if out.prepare():
    print(f"shard_text: {FLAGS.output_dir} is up to date (nothing to do)")
    return
  progress = Progress("shard_text", total=manifest["counts"]["documents"], unit="docs")
  todo = [p for p in inputs if not sharding.fragment_done(out, p)]
  work = functools.partial(sharding.shard_one_input, out=out, cfg=cfg)
  with multiprocessing.get_context("spawn").Pool(min(FLAGS.num_workers, max(1, len(todo)))) as pool:
    for s in pool.imap_unordered(work, todo):
      progress.update(s["documents"] + s["empty_documents"])
  _finish(out, inputs, cfg, progress)


def _finish(out, inputs, cfg, progress):
  totals = {"documents": 0, "sentences": 0, "empty_documents": 0}
  for path in inputs:
    for k, v in sharding.fragment_stats(out, path).items():
      totals[k] += v
  per_shard, files = {}, []
  for split, index in _shard_names(cfg):
    docs, size = sharding.merge_shard(out, inputs, split, index)
    name = sharding.shard_name(split, index)
    per_shard[name] = {"documents": docs, "bytes": size}
    files += [name + ".txt", name + ".docs.tsv"]
  counts = {split: sum(v["documents"] for k, v in per_shard.items() if k.startswith(split))
            for split in (sharding.TRAIN, sharding.EVAL)}
  if counts[sharding.TRAIN] == 0:
    raise InputError(out.dir, "every document fell in the eval split; lower --eval_fraction")
  train_sizes = [v["bytes"] for k, v in per_shard.items() if k.startswith(sharding.TRAIN)]
  balance = max(train_sizes) / (sum(train_sizes) / len(train_sizes))
  stats = dict(totals, shards=per_shard, train_max_over_mean_bytes=round(balance, 3),
               seconds=round(progress.elapsed(), 2))
  out.finalize(files, dict(counts, sentences=totals["sentences"]), stats)
  shutil.rmtree(out.path(sharding.FRAGMENTS), ignore_errors=True)
  print(f"shard_text: {counts['train']} train docs in {cfg['num_shards']} shards "
        f"(max/mean size {balance:.2f}), {counts['eval']} eval docs, "
        f"{totals['sentences']} sentences in {progress.elapsed():.1f}s -> {out.dir}")


if __name__ == "__main__":
  cli.run(main)
