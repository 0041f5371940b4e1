"""Stage machinery of create_pretraining_data: one job per text shard.

A job is picklable (a dataclass of paths and settings) so it runs in spawned
workers and on any mpirun rank; each worker loads the tokenizer once.
"""

import dataclasses
import os
import sys
import time
from typing import Optional

from pipeline.records import instances
from pipeline.records import pretraining_data
from pipeline.records import schema
from pipeline.core import kinds
from pipeline.core import stage
from pipeline.core import workers
from pipeline.core import world as world_lib
from pipeline.core.errors import ConfigError
from pipeline.core.progress import Progress
from pipeline.text.tokenization import BertTokenizer, load_vocab

_TOKENIZERS = {}


def worker_init():
  # One core per worker: the Rust tokenizer's own thread pool would oversubscribe.
  os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _tokenizer(vocab_file, do_lower_case):
  key = (vocab_file, do_lower_case)
  if key not in _TOKENIZERS:
    _TOKENIZERS[key] = BertTokenizer(vocab_file, do_lower_case=do_lower_case)
  return _TOKENIZERS[key]


def special_ids(tok):
  return instances.SpecialIds(cls=tok.cls_id, sep=tok.sep_id, mask=tok.mask_id,
                              vocab_size=tok.vocab_size, is_continuation=tok.is_continuation)


def input_shards(manifest):
  """Text shard names ("train/part-00000") listed by the shard_text manifest."""
  return sorted(f["name"][:-len(".txt")] for f in manifest["files"]
                if f["name"].endswith(".txt"))


def output_name(shard):
  return shard + ".tfrecord"


def index_name(shard):
  """(page id, revid) of each record of the shard, int64 [N, 2] .npy."""
  return shard + ".index.npy"


def text_bytes(manifest, shard):
  return next(f["bytes"] for f in manifest["files"] if f["name"] == shard + ".txt")


@dataclasses.dataclass(frozen=True)
class RecordsJob:
  input_dir: str
  output_dir: str
  vocab_file: str
  do_lower_case: bool
  instance_config: instances.InstanceConfig
  log_examples: int = 0
  reuse_dir: str = None  # an earlier version's records (same config) to copy from

  def run_shard(self, shard):
    """Tokenizes one text shard and publishes its records and stats sidecar."""
    start = time.monotonic()
    tok = _tokenizer(self.vocab_file, self.do_lower_case)
    text = os.path.join(self.input_dir, shard + ".txt")
    docs = os.path.join(self.input_dir, shard + ".docs.tsv")
    tokens = pretraining_data.tokenize_shard(text, docs, tok)
    tokenized = time.monotonic()
    out = stage.StageOutput(self.output_dir, kinds.PRETRAINING_RECORDS.stage, None, None)
    # Publication order: stats sidecar, index, then the .tfrecord, whose presence
    # marks the shard done; a kill between any two leaves it not done.
    with out.writing(output_name(shard)) as tmp, out.writing(index_name(shard)) as tmp_index:
      stats, examples = pretraining_data.write_shard_records(
          tokens, tmp, tmp_index, self.instance_config, special_ids(tok),
          num_examples=self.log_examples, previous=self._previous(shard))
      stats.update(documents=tokens.num_docs, text_bytes=os.path.getsize(text),
                   seconds=round(time.monotonic() - start, 3),
                   tokenize_seconds=round(tokenized - start, 3))
      out.write_part(output_name(shard), stats)
    return dict(stats, examples=examples)


  def _previous(self, shard):
    if not self.reuse_dir:
      return None
    paths = (os.path.join(self.reuse_dir, output_name(shard)),
             os.path.join(self.reuse_dir, index_name(shard)))
    return paths if all(os.path.exists(p) for p in paths) else None


def reuse_config(config, reuse_dir):
  """The config with `reuse_from` set when reuse_dir's records were made with
  the same settings (else unchanged, with the reason printed)."""
  if not reuse_dir:
    return config
  _, manifest = kinds.read(reuse_dir, kinds.PRETRAINING_RECORDS)
  theirs = {k: v for k, v in manifest["config"].items() if k != "reuse_from"}
  if theirs != config:
    print(f"create_pretraining_data: not reusing {reuse_dir}: made with other settings", file=sys.stderr)
    return config
  return dict(config, reuse_from=manifest["_sha256"])


def log_examples(examples, vocab_file, do_lower_case, stream=None):
  """Prints instances decoded back to tokens, as BERT's tool does."""
  stream = stream or sys.stderr
  tok = _tokenizer(vocab_file, do_lower_case)
  for ex in examples:
    n = sum(ex["input_mask"])
    print("*** Example ***", file=stream)
    print("tokens: " + " ".join(tok.convert_ids_to_tokens(ex["input_ids"][:n])), file=stream)
    print(f"segment_ids: {' '.join(map(str, ex['segment_ids'][:n]))}", file=stream)
    print(f"is_random_next: {bool(ex['next_sentence_labels'][0])}", file=stream)
    k = int(sum(ex["masked_lm_weights"]))
    print(f"masked_lm_positions: {' '.join(map(str, ex['masked_lm_positions'][:k]))}", file=stream)
    print("masked_lm_labels: " + " ".join(tok.convert_ids_to_tokens(ex["masked_lm_ids"][:k])),
          file=stream)


def finalize(out, shards, cfg, seconds, ranks, workers):
  """Aggregates the shards' sidecars, writes manifest/stats/COMPLETED; returns
  the one-line summary."""
  per_shard = {s: out.read_part(output_name(s)) for s in shards}
  counts = {}
  for split in ("train", "eval"):
    counts[f"{split}_instances"] = sum(v["instances"] for k, v in per_shard.items()
                                       if k.startswith(split + "/"))
  totals = {k: sum(v.get(k, 0) for v in per_shard.values())
            for k in ("instances", "documents", "tokens", "masked_tokens", "random_next",
                      "text_bytes", "reused_instances", "reused_documents")}
  busy = {k: round(sum(v[k] for v in per_shard.values()), 3)
          for k in ("seconds", "tokenize_seconds")}
  stats = dict(totals, shards=per_shard, seconds=round(seconds, 2), ranks=ranks,
               worker_seconds=busy["seconds"], worker_tokenize_seconds=busy["tokenize_seconds"],
               workers_per_rank=workers,
               instances_per_second=round(totals["instances"] / max(seconds, 1e-9), 1))
  features = [dataclasses.asdict(f) for f in schema.PRETRAINING_FEATURES]
  files = [output_name(s) for s in shards] + [index_name(s) for s in shards]
  out.finalize(files, counts, stats, extra={"features": features})
  reused = (f" ({totals['reused_instances']} reused from {totals['reused_documents']} "
            f"unchanged documents)" if totals["reused_documents"] else "")
  return (f"create_pretraining_data: {counts['train_instances']} train + "
          f"{counts['eval_instances']} eval instances{reused} from {totals['documents']} documents "
          f"({totals['text_bytes'] / 1e6:.1f} MB text) in {seconds:.1f}s "
          f"({stats['instances_per_second']:.0f} instances/s) -> {out.dir}")


@dataclasses.dataclass(frozen=True, kw_only=True)
class RecordsConfig:
  """tools/create_pretraining_data.py: text shards -> pretraining records."""
  input_dir: str  # shard_text output.
  output_dir: str
  vocab_file: str
  instance_config: instances.InstanceConfig
  do_lower_case: bool = True
  num_workers: int = 1  # Processes per rank.
  log_examples: int = 3
  reuse_dir: Optional[str] = None  # An earlier version's records (same settings).
  overwrite: bool = False

  def __post_init__(self):
    if self.num_workers < 1:
      raise ConfigError("--num_workers must be >= 1")


def _run_shards(job, todo, num_workers, progress):
  """Processes this rank's unfinished shards; returns the first logged examples."""
  examples = []
  for result in workers.imap_unordered(job.run_shard, todo, num_workers,
                                       initializer=worker_init):
    progress.update(result["text_bytes"])
    examples = examples or result["examples"]
  return examples


def run(config):
  """Writes the records of `config.input_dir`'s shards; under mpirun the ranks
  split the shards and rank 0 publishes the manifest (same bytes as one process)."""
  world = world_lib.job_world()
  _, manifest = kinds.read(config.input_dir, kinds.TEXT_SHARDS)
  vocab = load_vocab(config.vocab_file)
  cfg = config.instance_config
  stage_config = dict(dataclasses.asdict(cfg), do_lower_case=config.do_lower_case,
                      vocab_sha256=stage.file_sha256(config.vocab_file), vocab_size=len(vocab))
  stage_config = reuse_config(stage_config, config.reuse_dir)
  job = RecordsJob(input_dir=config.input_dir, output_dir=config.output_dir,
                   vocab_file=config.vocab_file, do_lower_case=config.do_lower_case,
                   instance_config=cfg, log_examples=config.log_examples,
                   reuse_dir=config.reuse_dir if "reuse_from" in stage_config else None)
  out = stage.StageOutput(config.output_dir, kinds.PRETRAINING_RECORDS.stage, stage_config,
                          manifest["_sha256"], config.overwrite, world.is_chief)
  if world.broadcast_object(world_lib.run_collectively(world, out.prepare)):
    if world.is_chief:
      print(f"create_pretraining_data: {config.output_dir} is up to date (nothing to do)")
    return
  shards = input_shards(manifest)
  mine = world.my_items(shards)
  progress = Progress("create_pretraining_data", unit="B text", enabled=world.is_chief,
                      total=sum(text_bytes(manifest, s) for s in mine))
  todo = [s for s in mine if not out.done(output_name(s))]
  examples = world_lib.run_collectively(
      world, lambda: _run_shards(job, todo, config.num_workers, progress))
  if world.is_chief:
    log_examples(examples, config.vocab_file, config.do_lower_case)
  world.barrier()
  if world.is_chief:
    print(finalize(out, shards, cfg, progress.elapsed(), world.size, config.num_workers))
