"""The QA-records stage: official SQuAD JSON (v1.1 or v2.0) -> windows as TFRecords.

Splits come from `train_file` and/or `dev_file`, or from one `input_file` whose
last `dev_articles` articles are the dev split (a whole article is on one side,
never both). Output (pipeline/records/qa_data.py makes the windows):

  train/part-00000.tfrecord   schema.QA_FEATURES, questions whose answer the
                              reference cannot find skipped (counted)
  dev/part-00000.tfrecord     schema.QA_EVAL_FEATURES, every question
  dev/examples.jsonl          per question: words, char offsets, answers, and
                              its windows (unique_id, spans, max_context)
  dev/dataset.json            the dev articles in the official format, so the
                              official evaluate-v1.1/v2.0 scripts can be run

Records are in file order (readers shuffle, as run_squad's input_fn does). A
split is published file by file, its records last with their stats sidecar, so
a killed run resumes split by split.
"""

import dataclasses
import hashlib
from typing import Optional

from pipeline.core import kinds
from pipeline.core import stage
from pipeline.core.errors import ConfigError, InputError
from pipeline.records import qa_data
from pipeline.records import schema
from pipeline.text.tokenization import BertTokenizer

SPLITS = ("train", "dev")
EVAL_SPLITS = ("dev",)


@dataclasses.dataclass(frozen=True, kw_only=True)
class QaRecordsConfig:
  """tools/create_qa_data.py's settings."""
  output_dir: str
  vocab_file: str
  train_file: Optional[str] = None
  dev_file: Optional[str] = None
  input_file: Optional[str] = None  # with dev_articles: split one file by article
  dev_articles: int = 0
  do_lower_case: bool = True
  max_seq_length: int = 384
  doc_stride: int = 128
  max_query_length: int = 64
  log_examples: bool = True
  overwrite: bool = False

  def __post_init__(self):
    if bool(self.input_file) == bool(self.train_file or self.dev_file):
      raise ConfigError("give either --train_file and/or --dev_file, or --input_file "
                        "with --dev_articles")
    if self.input_file and self.dev_articles < 1:
      raise ConfigError("--input_file needs --dev_articles >= 1 (the last N articles "
                        "are the dev split)")
    if not self.input_file and self.dev_articles:
      raise ConfigError("--dev_articles applies to --input_file only")
    self.windows()  # raises ConfigError on bad window settings

  def windows(self):
    return qa_data.WindowConfig(self.max_seq_length, self.doc_stride, self.max_query_length)


def _split_articles(config):
  """{split: (path, version, articles)} of the configured inputs."""
  if config.input_file:
    version, articles = qa_data.load_squad(config.input_file)
    if config.dev_articles >= len(articles):
      raise InputError(config.input_file, f"has {len(articles)} articles: "
                       f"--dev_articles={config.dev_articles} leaves none to train on")
    cut = len(articles) - config.dev_articles
    return {"train": (config.input_file, version, articles[:cut]),
            "dev": (config.input_file, version, articles[cut:])}
  files = {"train": config.train_file, "dev": config.dev_file}
  return {s: (p, *qa_data.load_squad(p)) for s, p in files.items() if p}


def _inputs(config):
  """{split: Examples}, the SQuAD version and the input hash, all checked."""
  splits = _split_articles(config)
  versions = {v for _, v, _ in splits.values()}
  if len(versions) > 1:
    path = splits["dev"][0]
    raise InputError(path, f"is SQuAD {splits['dev'][1]} but the train file is "
                     f"{splits['train'][1]}: use files of one version")
  examples = {s: qa_data.read_examples(p, a, v) for s, (p, v, a) in splits.items()}
  _check_disjoint(splits, examples)
  paths = sorted({p for p, _, _ in splits.values()})
  digests = stage.json_dumps({p: stage.file_sha256(p) for p in paths})
  return splits, examples, versions.pop(), hashlib.sha256(digests.encode()).hexdigest()


def _check_disjoint(splits, examples):
  """Refuses train and dev files that share questions (an article on both sides)."""
  if len(examples) < 2:
    return
  shared = {e.qas_id for e in examples["train"]} & {e.qas_id for e in examples["dev"]}
  if shared:
    raise InputError(splits["dev"][0], f"shares {len(shared)} questions with the train "
                     f"file (e.g. {min(shared)}): an article must be on one side only")


def _write_dataset(out, split, version, articles):
  with out.writing(qa_data.dataset_name(split)) as tmp:
    with open(tmp, "w", encoding="utf-8") as f:
      f.write(stage.json_dumps({"version": version, "data": articles}))


def _convert(out, split, examples, tok, config, source):
  """One split's files and stats sidecar (kept from an earlier run if done)."""
  name, training = qa_data.output_name(split), split not in EVAL_SPLITS
  if out.done(name):
    return out.read_part(name)
  path, version, articles = source
  if not training:
    _write_dataset(out, split, version, articles)
  with out.writing(name) as tmp:
    if training:
      stats, first = qa_data.write_split(examples, tok, config.windows(), (tmp, None), True)
    else:
      with out.writing(qa_data.sidecar_name(split)) as sidecar:
        stats, first = qa_data.write_split(examples, tok, config.windows(), (tmp, sidecar),
                                           False)
    part = dict(stats.as_dict(), file=path, articles=len(articles), training=training)
    out.write_part(name, part)  # before the rename that marks the split done
  if config.log_examples:
    qa_data.log_windows(split, first, tok)
  return part


def _files(splits):
  names = []
  for split in splits:
    names.append(qa_data.output_name(split))
    if split in EVAL_SPLITS:
      names += [qa_data.sidecar_name(split), qa_data.dataset_name(split)]
  return names


def _stage_config(config, tok, version, splits):
  return {"vocab_sha256": stage.file_sha256(config.vocab_file), "vocab_size": tok.vocab_size,
          "do_lower_case": config.do_lower_case, "max_seq_length": config.max_seq_length,
          "doc_stride": config.doc_stride, "max_query_length": config.max_query_length,
          "version": version, "splits": sorted(splits), "eval_splits":
          sorted(s for s in splits if s in EVAL_SPLITS), "dev_articles": config.dev_articles}


def run(config):
  """Writes the QA records of `config`'s SQuAD files (stage contract)."""
  splits, examples, version, input_hash = _inputs(config)
  tok = BertTokenizer(config.vocab_file, do_lower_case=config.do_lower_case)
  out = stage.StageOutput(config.output_dir, kinds.QA_RECORDS.stage,
                          _stage_config(config, tok, version, splits), input_hash,
                          config.overwrite)
  if out.prepare():
    print(f"create_qa_data: {config.output_dir} is up to date (nothing to do)")
    return
  stats = {s: _convert(out, s, examples[s], tok, config, splits[s])
           for s in SPLITS if s in splits}
  counts = {}
  for s, v in stats.items():
    counts.update({f"{s}_questions": v["questions"], f"{s}_windows": v["windows"],
                   f"{s}_articles": v["articles"],
                   f"{s}_answer_not_found": v["answer_not_found"]["count"]})
  features = {s: [dataclasses.asdict(f) for f in (schema.QA_EVAL_FEATURES if s in
                                                   EVAL_SPLITS else schema.QA_FEATURES)]
              for s in stats}
  out.finalize(_files(stats), counts, stats, extra={"features": features})
  print("create_qa_data: " + ", ".join(
      f"{s} {v['questions']} questions -> {v['windows']} windows "
      f"({v['skipped_questions']} skipped)" for s, v in stats.items())
      + f" -> {config.output_dir}")
