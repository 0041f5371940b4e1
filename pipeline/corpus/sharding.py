"""Documents (JSONL) -> sentence-per-line text shards with a held-out split.

Placement is a pure function of the page id: the split by one hash (eval when it
falls below `eval_fraction`), the shard by another, so a page stays in the same
shard when other pages are added or removed and a refresh can reuse work. With
many documents per shard, hashing balances shard sizes to within a few percent;
stats.json reports the max/mean ratio.

Work is done per input file: each writes one fragment per target shard under
.fragments/<input>/ and then a DONE marker, so a killed run redoes at most the
files in flight; shards are then the fragments concatenated in input order.
"""

import dataclasses
import functools
import json
import os
import shutil

import blingfire

from pipeline.core import kinds
from pipeline.core import stage
from pipeline.core import workers
from pipeline.core.errors import ConfigError, InputError
from pipeline.core.progress import Progress
from pipeline.records import instances

TRAIN, EVAL = "train", "eval"
FRAGMENTS = ".fragments"


def split_sentences(text):
  """Sentences of a document's text, paragraph by paragraph (blingfire's model).

  A paragraph break always ends a sentence; line breaks inside a sentence and
  other control whitespace become spaces so one line is one sentence.
  """
  out = []
  for paragraph in text.split("\n"):
    paragraph = paragraph.strip()
    if not paragraph:
      continue
    for sentence in blingfire.text_to_sentences(paragraph).split("\n"):
      sentence = " ".join(sentence.split())
      if sentence:
        out.append(sentence)
  return out


def placement(page_id, num_shards, num_eval_shards, eval_fraction):
  """(split, shard index) of a page: deterministic in its id only."""
  u = instances.stable_hash64("eval", page_id) / 2.0**64
  if u < eval_fraction:
    return EVAL, instances.stable_hash64("eval-shard", page_id) % num_eval_shards
  return TRAIN, instances.stable_hash64("shard", page_id) % num_shards


def shard_name(split, index):
  return f"{split}/part-{index:05d}"


def iter_jsonl_docs(path):
  """Yields document dicts from an extraction JSONL file, validating each line
  and (at the end) the file's sha256 against the extraction manifest."""
  with stage.verified_open(path, stage.input_sha256(path)) as f:
    for lineno, raw in enumerate(f, 1):
      try:
        doc = json.loads(raw.decode("utf-8"))
        yield int(doc["id"]), int(doc["revid"]), doc["text"]
      except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError,
              ValueError) as e:
        raise InputError(path, f"line {lineno}: not a document record "
                         f"({e.__class__.__name__})") from None


def fragment_dir(input_name):
  return os.path.join(FRAGMENTS, os.path.splitext(os.path.basename(input_name))[0])


def shard_one_input(input_path, out, cfg):
  """Writes the fragments of one input file; returns its stats.

  cfg: dict with num_shards, num_eval_shards, eval_fraction.
  """
  buckets = {}  # (split, shard) -> ([lines], [docs.tsv rows])
  stats = {"documents": 0, "sentences": 0, "empty_documents": 0}
  for page_id, revid, text in iter_jsonl_docs(input_path):
    sentences = split_sentences(text)
    if not sentences:
      stats["empty_documents"] += 1
      continue
    key = placement(page_id, cfg["num_shards"], cfg["num_eval_shards"], cfg["eval_fraction"])
    lines, rows = buckets.setdefault(key, ([], []))
    lines.append("\n".join(sentences) + "\n\n")
    rows.append(f"{page_id}\t{revid}\t{len(sentences)}\n")
    stats["documents"] += 1
    stats["sentences"] += len(sentences)
  frag = fragment_dir(input_path)
  for (split, index), (lines, rows) in sorted(buckets.items()):
    _publish_text(out, os.path.join(frag, f"{split}-{index:05d}.txt"), "".join(lines))
    _publish_text(out, os.path.join(frag, f"{split}-{index:05d}.docs.tsv"), "".join(rows))
  _publish_text(out, os.path.join(frag, "DONE"), json.dumps(stats))
  return stats


def _publish_text(out, name, text):
  with out.writing(name) as tmp:
    with open(tmp, "w", encoding="utf-8", newline="\n") as f:
      f.write(text)


def fragment_done(out, input_path):
  return out.done(os.path.join(fragment_dir(input_path), "DONE"))


def fragment_stats(out, input_path):
  with open(out.path(os.path.join(fragment_dir(input_path), "DONE")), encoding="utf-8") as f:
    return json.load(f)


def merge_shard(out, input_paths, split, index):
  """Concatenates one shard's fragments in input order; returns (docs, bytes)."""
  name = shard_name(split, index)
  if out.done(name + ".txt") and out.done(name + ".docs.tsv"):
    return _count_docs(out.path(name + ".docs.tsv")), os.path.getsize(out.path(name + ".txt"))
  for ext in (".docs.tsv", ".txt"):  # the .txt last: it marks the shard done
    with out.writing(name + ext) as tmp, open(tmp, "wb") as dst:
      for path in input_paths:
        frag = out.path(os.path.join(fragment_dir(path), f"{split}-{index:05d}{ext}"))
        if os.path.exists(frag):
          with open(frag, "rb") as src:
            while block := src.read(1 << 20):
              dst.write(block)
  return _count_docs(out.path(name + ".docs.tsv")), os.path.getsize(out.path(name + ".txt"))


def _count_docs(path):
  with open(path, "rb") as f:
    return sum(1 for _ in f)


@dataclasses.dataclass(frozen=True, kw_only=True)
class ShardConfig:
  """tools/shard_text.py: documents -> sentence shards."""
  input_dir: str  # extract_wiki output.
  output_dir: str
  num_shards: int = 16
  num_eval_shards: int = 1
  eval_fraction: float = 0.01  # Pages held out, by page-id hash.
  num_workers: int = 1
  overwrite: bool = False

  def __post_init__(self):
    if min(self.num_shards, self.num_eval_shards, self.num_workers) < 1:
      raise ConfigError("--num_shards, --num_eval_shards and --num_workers must be >= 1")
    if not 0 <= self.eval_fraction <= 1:
      raise ConfigError(f"--eval_fraction={self.eval_fraction} must be in [0, 1]")

  def stage_config(self):
    """What decides the output (the manifest's config)."""
    return {"num_shards": self.num_shards, "num_eval_shards": self.num_eval_shards,
            "eval_fraction": self.eval_fraction}


def _shard_names(cfg):
  return ([(TRAIN, i) for i in range(cfg["num_shards"])] +
          [(EVAL, i) for i in range(cfg["num_eval_shards"])])


def run(config):
  """Shards the documents of `config.input_dir` (stage contract)."""
  _, manifest = kinds.read(config.input_dir, kinds.DOCUMENTS)
  inputs = [os.path.join(config.input_dir, f["name"]) for f in manifest["files"]
            if f["name"].endswith(".jsonl")]
  if not manifest["counts"].get("documents"):
    raise InputError(config.input_dir, "no documents to shard (the extraction kept none)")
  cfg = config.stage_config()
  out = stage.StageOutput(config.output_dir, kinds.TEXT_SHARDS.stage, cfg, manifest["_sha256"],
                          overwrite=config.overwrite)
  if out.prepare():
    print(f"shard_text: {config.output_dir} is up to date (nothing to do)")
    return
  progress = Progress("shard_text", total=manifest["counts"]["documents"], unit="docs")
  todo = [p for p in inputs if not fragment_done(out, p)]
  work = functools.partial(shard_one_input, out=out, cfg=cfg)
  for s in workers.imap_unordered(work, todo, config.num_workers):
    progress.update(s["documents"] + s["empty_documents"])
  _finish(out, inputs, cfg, progress)


def _finish(out, inputs, cfg, progress):
  totals = {"documents": 0, "sentences": 0, "empty_documents": 0}
  for path in inputs:
    for k, v in fragment_stats(out, path).items():
      totals[k] += v
  per_shard, files = {}, []
  for split, index in _shard_names(cfg):
    docs, size = merge_shard(out, inputs, split, index)
    name = shard_name(split, index)
    per_shard[name] = {"documents": docs, "bytes": size}
    files += [name + ".txt", name + ".docs.tsv"]
  counts = {split: sum(v["documents"] for k, v in per_shard.items() if k.startswith(split))
            for split in (TRAIN, EVAL)}
  if counts[TRAIN] == 0:
    raise InputError(out.dir, "every document fell in the eval split; lower --eval_fraction")
  train_sizes = [v["bytes"] for k, v in per_shard.items() if k.startswith(TRAIN)]
  balance = max(train_sizes) / (sum(train_sizes) / len(train_sizes))
  stats = dict(totals, shards=per_shard, train_max_over_mean_bytes=round(balance, 3),
               seconds=round(progress.elapsed(), 2))
  out.finalize(files, dict(counts, sentences=totals["sentences"]), stats)
  shutil.rmtree(out.path(FRAGMENTS), ignore_errors=True)
  print(f"shard_text: {counts['train']} train docs in {cfg['num_shards']} shards "
        f"(max/mean size {balance:.2f}), {counts['eval']} eval docs, "
        f"{totals['sentences']} sentences in {progress.elapsed():.1f}s -> {out.dir}")
