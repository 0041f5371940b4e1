"""The classification-records stage: GLUE-style TSV/CSV splits -> TFRecords.

Each split file (train, dev, test) becomes `<split>/part-00000.tfrecord`
(pipeline/records/classification_data.py reads, checks and encodes the rows);
malformed rows are skipped and counted per reason, with their first line
numbers, in stats.json and on stderr. A split is published with its stats
sidecar, so a killed run resumes split by split.

The input may be augment_task_data's output (kind augmented_task_data): its
augmented splits hold originals and teacher-only variants, told apart by the
manifest's `variant_column`; variants get label id UNLABELED (the same id as an
unlabeled test split's rows), so the teacher labels them and the hard-label
loss skips them. The columns and format must be the ones it was augmented with.
"""

import dataclasses
import hashlib
import sys
from typing import Optional

from pipeline.core import kinds
from pipeline.core import stage
from pipeline.core.errors import ConfigError
from pipeline.core.progress import Progress
from pipeline.records import classification_data as cd
from pipeline.records import schema
from pipeline.text.tokenization import BertTokenizer


@dataclasses.dataclass(frozen=True, kw_only=True)
class ClassificationRecordsConfig:
  """tools/create_classification_data.py's settings."""
  output_dir: str
  vocab_file: str
  text_a_column: str  # Name or 0-based index.
  label_column: str
  labels: tuple  # Label values; position = label id.
  input_dir: Optional[str] = None  # train/dev/test.<format> (e.g. fetch_task_data output),
  split_files: dict = dataclasses.field(default_factory=dict)  # or {split: path}.
  text_b_column: Optional[str] = None  # Pair tasks.
  do_lower_case: bool = True
  max_seq_length: int = 128
  format: str = "tsv"
  has_header: bool = True
  test_labels: bool = True  # False: test records get label_ids = num_labels.
  log_examples: int = 3
  overwrite: bool = False

  def __post_init__(self):
    if bool(self.input_dir) == any(self.split_files.values()):
      raise ConfigError("give either --input_dir or --train_file/--dev_file/--test_file")

  def task_format(self):
    return cd.TaskFormat(self.format, self.has_header, self.text_a_column,
                         self.text_b_column, self.label_column, tuple(self.labels),
                         self.max_seq_length)


def _variant_columns(config, task):
  """{split: variant column} of an augmented input ({} for any other)."""
  if not (config.input_dir and cd.is_stage_output(config.input_dir)):
    return {}
  # Refuses an incomplete input; augmented data is read like fetched data.
  kind, manifest = kinds.read(config.input_dir, kinds.TASK_DATA, kinds.AUGMENTED_TASK_DATA)
  if kind != kinds.AUGMENTED_TASK_DATA:
    return {}
  made = manifest["config"]
  ours = {"format": task.file_format, "has_header": task.has_header,
          "columns": task.config()["columns"]}
  differ = [k for k, v in ours.items() if made.get(k) != v]
  if differ:
    raise ConfigError(f"{config.input_dir} was augmented with other {', '.join(differ)} "
                      f"({', '.join(f'{k}={made.get(k)}' for k in differ)}): read it with those")
  return {s: made["variant_column"] for s in made["augmented_splits"]}


def _inputs(config, task):
  """{split: path}, the input hash, {split: labeled} and {split: variant column},
  all checked."""
  variants = _variant_columns(config, task)
  files = cd.split_files(config.input_dir, config.format, config.split_files)
  labeled = {s: s != "test" or config.test_labels for s in files}
  for split, path in files.items():
    cd.preflight(path, task, labeled[split], variants.get(split))
  digests = stage.json_dumps({s: stage.file_sha256(p) for s, p in sorted(files.items())})
  return files, hashlib.sha256(digests.encode()).hexdigest(), labeled, variants


def _convert(out, split, path, task, tok, labeled, log_examples, variant_column=None):
  """One split's records and stats sidecar (kept from an earlier run if done)."""
  name = cd.output_name(split)
  if out.done(name):
    return out.read_part(name)
  progress = Progress(f"create_classification_data {split}", total=cd.count_lines(path),
                      unit="lines")
  with out.writing(name) as tmp:
    stats, examples = cd.convert_file(path, tmp, task, tok, labeled, progress, log_examples,
                                      variant_column)
    part = dict(stats.as_dict(), file=path, labeled=labeled,
                seconds=round(progress.elapsed(), 2))
    out.write_part(name, part)  # before the rename that marks the split done
  for line in cd.format_malformed(split, path, stats):
    print(line, file=sys.stderr)
  cd.log_examples(split, examples, tok, task)
  return part


def run(config):
  """Writes the classification records of `config`'s split files (stage contract)."""
  task = config.task_format()
  files, input_hash, labeled, variants = _inputs(config, task)
  tok = BertTokenizer(config.vocab_file, do_lower_case=config.do_lower_case)
  stage_config = dict(task.config(), do_lower_case=config.do_lower_case,
                      vocab_size=tok.vocab_size, vocab_sha256=stage.file_sha256(config.vocab_file),
                      splits=sorted(files),
                      unlabeled_splits=sorted(s for s in files if not labeled[s]),
                      unlabeled_label_id=task.unlabeled_id)
  if variants:  # only then: the config of other outputs stays as it was
    stage_config["variant_splits"] = sorted(variants)
  out = stage.StageOutput(config.output_dir, kinds.CLASSIFICATION_RECORDS.stage, stage_config,
                          input_hash, config.overwrite)
  if out.prepare():
    print(f"create_classification_data: {config.output_dir} is up to date (nothing to do)")
    return
  stats = {s: _convert(out, s, files[s], task, tok, labeled[s], config.log_examples,
                      variants.get(s))
           for s in cd.SPLITS if s in files}
  counts = {f"{s}_examples": v["examples"] for s, v in stats.items()}
  counts["malformed_rows"] = sum(v["malformed_rows"] for v in stats.values())
  features = [dataclasses.asdict(f) for f in schema.CLASSIFICATION_FEATURES]
  out.finalize([cd.output_name(s) for s in stats], counts, stats, extra={"features": features})
  print("create_classification_data: " + ", ".join(
      f"{s} {v['examples']} examples ({v['malformed_rows']} malformed rows skipped)"
      for s, v in stats.items()) + f" -> {config.output_dir}")
