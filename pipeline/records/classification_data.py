"""GLUE-style TSV/CSV files -> classification TFRecords (run_classifier's features).

Each split file (train, dev, test) becomes `<split>/part-00000.tfrecord` of
schema.CLASSIFICATION_FEATURES, in file order (the reader shuffles):

  input_ids    [S]  [CLS] a [SEP] (b [SEP]) then [PAD] (id 0) up to S = max_seq_length
  input_mask   [S]  1 on real tokens, 0 on padding
  segment_ids  [S]  0 on [CLS] a [SEP], 1 on b [SEP], 0 on padding
  label_ids    [1]  index of the label in the --labels list

Pairs are truncated as google-research/bert's _truncate_seq_pair does (drop
the last token of the longer side until a + b fit in S - 3); single sentences
keep their first S - 2 tokens.

Columns are names (looked up in the file's own header, so GLUE's test files,
whose columns differ from train's, work) or 0-based indices; an all-digit
value is an index. Without a header the first row sets the column count.

A row is malformed when its column count differs from the header's (or the
first row's), its label is not in the list, or a text column is empty after
stripping; malformed rows are skipped, counted per reason with their first
line numbers (1-based physical lines, the header is line 1) in stats.json and
logged. Blank lines are counted, not data. A file that cannot be read at all
(missing, not UTF-8, broken CSV quoting, no valid row) is an InputError.
CSV is read strictly: a quoting error stops the run at its line.

A split without labels (labeled=False, e.g. a GLUE test file) gets label_ids
= UNLABELED, which is num_labels: one past the last class, so it can never be
taken for one (the record encoder stores non-negative ints only, hence not -1);
the manifest lists such splits under `unlabeled_splits`. Rows of augmented
data (augment_task_data's variants, told by a non-empty `variant_column`) get
UNLABELED too: they carry the teacher's distribution only.
"""

import csv
import dataclasses
import os
import sys

import numpy as np

from pipeline.records import schema
from pipeline.core import stage
from pipeline.records import tfrecord
from pipeline.core.errors import ConfigError, InputError

SPLITS = ("train", "dev", "test")
FORMATS = ("tsv", "csv")
REASONS = ("wrong_column_count", "unknown_label", "empty_text_a", "empty_text_b")
FIRST_LINES = 5  # line numbers kept per malformed reason
BLOCK = 2048  # rows tokenized and encoded at once
DTYPES = {f.name: f.dtype for f in schema.CLASSIFICATION_FEATURES}


def output_name(split):
  return f"{split}/part-00000.tfrecord"


@dataclasses.dataclass(frozen=True)
class TaskFormat:
  """How to read a task's files and what to write; validated on construction."""
  file_format: str  # "tsv" (GLUE: tab-separated, no quoting) or "csv" (RFC 4180)
  has_header: bool
  text_a_column: str  # a header name or a 0-based index
  text_b_column: str  # None/"" for single-sentence tasks
  label_column: str
  labels: tuple  # label strings; position = label id
  max_seq_length: int

  def __post_init__(self):
    if self.file_format not in FORMATS:
      raise ConfigError(f"format must be one of {FORMATS}, got {self.file_format!r}")
    if not self.labels or len(set(self.labels)) != len(self.labels) or "" in self.labels:
      raise ConfigError(f"labels must be distinct and non-empty, got {list(self.labels)}")
    if self.max_seq_length < (4 if self.is_pair else 3):
      raise ConfigError(f"max_seq_length {self.max_seq_length} leaves no room for text")

  @property
  def is_pair(self):
    return bool(self.text_b_column)

  @property
  def unlabeled_id(self):
    return len(self.labels)

  def config(self):
    """The manifest config entries that downstream stages check."""
    return {"format": self.file_format, "has_header": self.has_header,
            "columns": {"text_a": self.text_a_column, "text_b": self.text_b_column or None,
                        "label": self.label_column},
            "labels": list(self.labels), "num_labels": len(self.labels),
            "max_seq_length": self.max_seq_length}


@dataclasses.dataclass(frozen=True)
class Columns:
  a: int
  b: int  # None for single-sentence tasks
  label: int  # None for an unlabeled split
  count: int  # expected fields per row; None: set by the first row
  variant: int = None  # augmented input: the column naming a variant's original


def resolve_column(spec, header, path, flag):
  if spec.isdigit():
    index = int(spec)
    if header is not None and index >= len(header):
      raise InputError(path, f"--{flag}={spec} but the header has {len(header)} columns")
    return index
  if header is None:
    raise InputError(path, f"--{flag}={spec!r} is a column name but the file has no "
                     "header (pass --has_header or a 0-based column index)")
  if spec not in header:
    raise InputError(path, f"--{flag}: no column {spec!r} in the header "
                     f"({', '.join(header)})")
  return header.index(spec)


def resolve_columns(task, header, path, labeled, variant_column=None):
  """Column indices; variant_column: an augmented split's marker column
  (augment_task_data), whose non-empty rows are unlabeled variants."""
  def column(spec, flag):
    return resolve_column(spec, header, path, flag)
  return Columns(
      a=column(task.text_a_column, "text_a_column"),
      b=column(task.text_b_column, "text_b_column") if task.is_pair else None,
      label=column(task.label_column, "label_column") if labeled else None,
      count=len(header) if header is not None else None,
      variant=column(variant_column, "variant_column") if variant_column else None)


def physical_rows(path, file_format):
  """Yields (first line number, fields) of every row; blank lines give []."""
  csv.field_size_limit(max(csv.field_size_limit(), 1 << 24))  # long documents
  # GLUE's TSVs are read without quoting: a '"' is text (SST-2 has many).
  # CSV is strict: a runaway quote would silently swallow the following rows.
  quoting = ({"delimiter": "\t", "quoting": csv.QUOTE_NONE} if file_format == "tsv"
             else {"strict": True})
  try:
    f = open(path, encoding="utf-8-sig", newline="")
  except FileNotFoundError:
    raise InputError(path, "no such file") from None
  except OSError as e:
    raise InputError(path, f"cannot read: {e.strerror or e}") from None
  with f:
    reader = csv.reader(f, **quoting)
    line = 1
    try:
      for fields in reader:
        yield line, fields
        line = reader.line_num + 1
    except UnicodeDecodeError:
      raise InputError(path, f"not valid UTF-8 (line {reader.line_num + 1})") from None
    except csv.Error as e:
      raise InputError(path, f"line {line}: malformed {file_format.upper()} ({e})") from None


class SplitStats:
  """Rows read and skipped per reason (with first line numbers), label counts."""

  def __init__(self, labels):
    self.rows = self.blank_lines = self.examples = self.truncated = 0
    self.tokens = 0  # tokens written, [CLS]/[SEP] included
    self.variants = 0  # augmented variants: written unlabeled
    self.malformed = {r: {"count": 0, "first_lines": []} for r in REASONS}
    self.label_counts = {label: 0 for label in labels}

  def skip(self, reason, line):
    entry = self.malformed[reason]
    entry["count"] += 1
    if len(entry["first_lines"]) < FIRST_LINES:
      entry["first_lines"].append(line)

  @property
  def malformed_rows(self):
    return sum(e["count"] for e in self.malformed.values())

  def as_dict(self):
    return {"rows": self.rows, "blank_lines": self.blank_lines, "examples": self.examples,
            "malformed_rows": self.malformed_rows,
            "malformed": {k: v for k, v in self.malformed.items() if v["count"]},
            "truncated_examples": self.truncated, "tokens": self.tokens,
            "labels": self.label_counts,
            **({"unlabeled_variants": self.variants} if self.variants else {})}


def parse_rows(path, task, labeled, stats, progress=None, variant_column=None):
  """Yields (line, text_a, text_b, label id) of the valid rows of one file.

  variant_column: see resolve_columns; variants get label id UNLABELED.
  """
  rows = physical_rows(path, task.file_format)
  header = None
  if task.has_header:
    header = next((fields for _, fields in rows if fields), None)
    if header is None:
      raise InputError(path, "empty file (no header)")
  cols = resolve_columns(task, header, path, labeled, variant_column)
  label_ids = {label: i for i, label in enumerate(task.labels)}
  for line, fields in rows:
    if progress is not None:
      progress.update()
    if not fields:
      stats.blank_lines += 1
      continue
    stats.rows += 1
    if cols.count is None:
      cols = dataclasses.replace(cols, count=len(fields))
    row = _check_row(fields, cols, label_ids, task.unlabeled_id)
    if isinstance(row, str):
      stats.skip(row, line)
    else:
      stats.variants += _is_variant(fields, cols)
      yield (line, *row)


def _is_variant(fields, cols):
  return cols.variant is not None and bool(fields[cols.variant].strip())


def _check_row(fields, cols, label_ids, unlabeled_id):
  """(text_a, text_b, label id) of a valid row, else the reason it is malformed."""
  used = [c for c in (cols.a, cols.b, cols.label, cols.variant) if c is not None]
  if len(fields) != cols.count or max(used) >= len(fields):
    return "wrong_column_count"
  # An augmented variant carries the teacher's distribution only: no gold label.
  unlabeled = cols.label is None or _is_variant(fields, cols)
  label = unlabeled_id if unlabeled else label_ids.get(fields[cols.label].strip())
  text_a = fields[cols.a].strip()
  text_b = fields[cols.b].strip() if cols.b is not None else None
  if label is None:
    return "unknown_label"
  if not text_a:
    return "empty_text_a"
  if text_b is not None and not text_b:
    return "empty_text_b"
  return text_a, text_b, label


def truncated_lengths(len_a, len_b, budget):
  """Lengths kept by BERT's _truncate_seq_pair, in closed form.

  The reference pops from the longer side (from b on ties) until the total
  fits: the shorter side survives whole if the longer can absorb the cut,
  otherwise both end at half the budget, a getting the odd token.
  """
  if len_a + len_b <= budget:
    return len_a, len_b
  short = min(len_a, len_b)
  if 2 * short <= budget:
    return (budget - short, short) if len_a > len_b else (short, budget - short)
  return (budget + 1) // 2, budget // 2


def encode_block(ids_a, ids_b, label_ids, max_seq_length, cls_id, sep_id):
  """Features {name: int64 [N, S] or [N, 1]} and the count of truncated rows.

  ids_a, ids_b: lists of N int32 id vectors (ids_b None for single sentences).
  """
  n, seq = len(ids_a), max_seq_length
  input_ids = np.zeros((n, seq), np.int64)
  segment_ids = np.zeros((n, seq), np.int64)
  lengths = np.zeros(n, np.int64)
  truncated = 0
  for i, a in enumerate(ids_a):
    if ids_b is None:
      la, lb = min(len(a), seq - 2), 0
      row = [cls_id, *a[:la], sep_id]
    else:
      b = ids_b[i]
      la, lb = truncated_lengths(len(a), len(b), seq - 3)
      row = [cls_id, *a[:la], sep_id, *b[:lb], sep_id]
      segment_ids[i, la + 2:len(row)] = 1
      truncated += lb < len(b)
    truncated += la < len(a)
    input_ids[i, :len(row)] = row
    lengths[i] = len(row)
  input_mask = (np.arange(seq)[None, :] < lengths[:, None]).astype(np.int64)
  features = {"input_ids": input_ids, "input_mask": input_mask, "segment_ids": segment_ids,
              "label_ids": np.asarray(label_ids, np.int64).reshape(n, 1)}
  return features, truncated


def convert_file(path, out_path, task, tokenizer, labeled, progress=None, num_examples=0,
                 variant_column=None):
  """Writes one split's records; returns (SplitStats, first decoded examples).

  Streams the file in blocks of BLOCK rows, so memory does not grow with it.
  variant_column: see resolve_columns.
  Raises InputError when the file has no valid row.
  """
  stats = SplitStats(task.labels)
  examples = []
  with tfrecord.TFRecordWriter(out_path) as writer:
    block = []
    for row in parse_rows(path, task, labeled, stats, progress, variant_column):
      block.append(row)
      if len(block) == BLOCK:
        examples += _write_block(block, writer, task, tokenizer, stats, num_examples)
        block = []
    if block:
      examples += _write_block(block, writer, task, tokenizer, stats, num_examples)
  if not stats.examples:
    _raise_no_rows(path, stats)
  return stats, examples[:num_examples]


def _write_block(block, writer, task, tokenizer, stats, num_examples):
  ids_a = tokenizer.encode_batch([r[1] for r in block])
  ids_b = tokenizer.encode_batch([r[2] for r in block]) if task.is_pair else None
  labels = [r[3] for r in block]
  features, truncated = encode_block(ids_a, ids_b, labels, task.max_seq_length,
                                     tokenizer.cls_id, tokenizer.sep_id)
  writer.write_batch(*tfrecord.encode_examples(features, DTYPES))
  stats.examples += len(block)
  stats.truncated += truncated
  stats.tokens += int(features["input_mask"].sum())
  for label in labels:
    if label < len(task.labels):
      stats.label_counts[task.labels[label]] += 1
  wanted = max(0, num_examples - (stats.examples - len(block)))
  return [dict({k: v[i].tolist() for k, v in features.items()}, line=block[i][0])
          for i in range(min(wanted, len(block)))]


def preflight(path, task, labeled, variant_column=None):
  """Reads up to the first valid row, so that a file that cannot be used at all
  fails before the output directory is claimed."""
  stats = SplitStats(task.labels)
  if next(parse_rows(path, task, labeled, stats, variant_column=variant_column), None) is None:
    _raise_no_rows(path, stats)


def _raise_no_rows(path, stats):
  if not stats.rows:
    raise InputError(path, "no data rows")
  reasons = ", ".join(f"{k} {v['count']} (first lines {v['first_lines']})"
                      for k, v in stats.malformed.items() if v["count"])
  raise InputError(path, f"no valid rows: all {stats.rows} are malformed ({reasons}); "
                   "check --format, --has_header, the columns and --labels")


def count_lines(path, chunk=1 << 20):
  """Physical lines of a file (a progress total; a missing file gives None)."""
  try:
    with open(path, "rb") as f:
      return sum(block.count(b"\n") for block in iter(lambda: f.read(chunk), b""))
  except OSError:
    return None


def format_malformed(split, path, stats):
  """Log lines naming each malformed reason with its first line numbers."""
  return [f"{split}: {path}: skipped {v['count']} {reason} rows (first lines "
          f"{', '.join(map(str, v['first_lines']))})"
          for reason, v in stats.malformed.items() if v["count"]]


def log_examples(split, examples, tokenizer, task, stream=None):
  """Prints records decoded back to tokens, as BERT's run_classifier does."""
  stream = stream or sys.stderr
  for ex in examples:
    n = sum(ex["input_mask"])
    label = ex["label_ids"][0]
    name = task.labels[label] if label < len(task.labels) else "(unlabeled)"
    print(f"*** Example ({split}, line {ex['line']}) ***", file=stream)
    print("tokens: " + " ".join(tokenizer.convert_ids_to_tokens(ex["input_ids"][:n])),
          file=stream)
    print(f"segment_ids: {' '.join(map(str, ex['segment_ids'][:n]))}", file=stream)
    print(f"label: {name} (id = {label})", file=stream)


def is_stage_output(directory):
  """True for a directory a stage wrote (or is writing): then it must be complete."""
  return any(os.path.exists(os.path.join(directory, n))
             for n in (stage.MANIFEST, stage.COMPLETED, stage.RUN))


def split_files(input_dir, file_format, explicit):
  """{split: path} from explicit files, or <split>.<format> found in input_dir."""
  if explicit and any(explicit.values()):
    for path in filter(None, explicit.values()):
      if not os.path.isfile(path):
        raise InputError(path, "no such file")
    return {s: p for s, p in explicit.items() if p}
  found = {s: os.path.join(input_dir, f"{s}.{file_format}") for s in SPLITS}
  found = {s: p for s, p in found.items() if os.path.isfile(p)}
  if not found:
    raise InputError(input_dir, f"none of {', '.join(s + '.' + file_format for s in SPLITS)} "
                     "found")
  return found
