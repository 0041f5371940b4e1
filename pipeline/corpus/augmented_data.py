"""The augmented-task-data stage: task splits + TinyBERT-style variants.

Input: a directory of GLUE-style `<split>.<format>` files (fetch_task_data's
output or any such directory). Output (kind augmented_task_data), the same
layout, so create_classification_data reads it like any task directory:

  <split>.<format>   an augmented split: every input row as it was, each one
                     followed by its variants; one more column, VARIANT_COLUMN
                     (named in the header, or the last index without one):
                     empty for originals, the original's line number for
                     variants, whose label field is empty (a variant carries
                     the teacher's distribution only, no gold label)
  <other splits>     byte copies (dev and test are never augmented)

Variants come from pipeline/text/augmentation.py given the candidates of a
`generate` callable (modeling/augmentation/candidates.py: a masked LM and
embedding neighbours), which this module never imports. An augmented split is
made in shards of `rows_per_shard` input rows, each published (with its stats
sidecar) as it is done, then concatenated; every row's randomness derives
from (seed, split, row) and the model is run shard by shard, so a killed run
resumes to the bytes of a straight one.

Rows whose text columns are missing (wrong column count) are copied and not
augmented (create_classification_data counts them as malformed); inputs with
no side of two words or more (empty, one word) are copied and counted as
skipped.
"""

import csv
import dataclasses
import hashlib
import io
import itertools
import os
import shutil
from typing import Optional

from pipeline.core import kinds
from pipeline.core import stage
from pipeline.core.errors import ConfigError, InputError
from pipeline.core.progress import Progress
from pipeline.records import classification_data as cd
from pipeline.text import augmentation

VARIANT_COLUMN = "variant_of"
SHARDS = "{split}.shards/part-{index:05d}.{ext}"


@dataclasses.dataclass(frozen=True, kw_only=True)
class AugmentSettings:
  """What to augment and how (everything that decides the output's bytes)."""
  text_a_column: str
  label_column: str
  text_b_column: Optional[str] = None  # Pair tasks: one side changes per variant.
  format: str = "tsv"
  has_header: bool = True
  splits: tuple = ("train",)
  num_variants: int = 20  # Draws per input (TinyBERT's N); duplicates are dropped.
  replace_prob: float = 0.4  # Per word (TinyBERT's p).
  top_k: int = 15  # Candidates per word (TinyBERT's K).
  seed: int = 0
  rows_per_shard: int = 256  # Input rows per published part (the resume unit).

  def __post_init__(self):
    if self.format not in cd.FORMATS:
      raise ConfigError(f"--format must be one of {cd.FORMATS}")
    if not self.splits or set(self.splits) - set(cd.SPLITS):
      raise ConfigError(f"--splits must be among {', '.join(cd.SPLITS)}")
    if self.num_variants < 1 or self.top_k < 1 or self.rows_per_shard < 1:
      raise ConfigError("--num_variants, --top_k and --rows_per_shard must be >= 1")
    if not 0 < self.replace_prob <= 1:
      raise ConfigError("--replace_prob must be in (0, 1]")

  def config(self):
    """The manifest's config entries (create_classification_data checks the columns)."""
    return {"format": self.format, "has_header": self.has_header,
            "columns": {"text_a": self.text_a_column, "text_b": self.text_b_column or None,
                        "label": self.label_column},
            "augmented_splits": sorted(self.splits), "num_variants": self.num_variants,
            "replace_prob": self.replace_prob, "top_k": self.top_k, "seed": self.seed,
            "rows_per_shard": self.rows_per_shard}


@dataclasses.dataclass(frozen=True)
class Layout:
  """Where an augmented split's fields are."""
  header: Optional[list]
  text: tuple  # column index of each side (text_a[, text_b])
  label: int
  variant: str  # VARIANT_COLUMN or, without a header, its index as a string


def read_inputs(input_dir, settings):
  """({split: path}, input hash): the files, checked against their manifest if
  the directory is a stage output. Raises InputError before anything is written."""
  manifest = None
  if cd.is_stage_output(input_dir):
    _, manifest = kinds.read(input_dir, kinds.TASK_DATA)
  files = cd.split_files(input_dir, settings.format, {})
  missing = [s for s in settings.splits if s not in files]
  if missing:
    raise InputError(input_dir, f"no {', '.join(f'{s}.{settings.format}' for s in missing)}"
                     " to augment")
  digests = {s: stage.file_sha256(p) for s, p in sorted(files.items())}
  listed = {f["name"]: f["sha256"] for f in (manifest or {}).get("files", [])}
  for split, path in files.items():
    name = os.path.basename(path)
    if name in listed and listed[name] != digests[split]:
      raise InputError(path, "content differs from the input manifest (sha256 mismatch)")
  text = stage.json_dumps(digests)
  return files, hashlib.sha256(text.encode()).hexdigest()


def layout(path, settings):
  """The split's Layout; raises InputError for a file without a data row."""
  rows = (fields for _, fields in cd.physical_rows(path, settings.format) if fields)
  header = next(rows, None) if settings.has_header else None
  first = next(rows, None)
  if first is None:
    raise InputError(path, "no data rows to augment")
  if header is not None and VARIANT_COLUMN in header:
    raise InputError(path, f"already has a {VARIANT_COLUMN!r} column (augmented twice?)")

  def column(spec, flag):
    return cd.resolve_column(spec, header, path, flag)
  sides = [settings.text_a_column] + ([settings.text_b_column] if settings.text_b_column else [])
  text = tuple(column(spec, f"text_{'ab'[i]}_column") for i, spec in enumerate(sides))
  variant = VARIANT_COLUMN if header is not None else str(len(first))
  return Layout(header, text, column(settings.label_column, "label_column"), variant)


class AugmentStats:
  """Counts of one shard or split; `add` merges shards."""
  KEYS = ("rows", "inputs", "variants", "duplicates_dropped", "replaced_words",
          "variant_words", "skipped_empty", "skipped_one_word", "skipped_no_candidates",
          "malformed_rows_copied", "mlm_words", "embedding_words", "words_without_candidates")

  def __init__(self, values=None):
    self.values = dict.fromkeys(self.KEYS, 0)
    self.values.update(values or {})

  def add(self, other):
    for k in self.KEYS:
      self.values[k] += other.values[k]

  def as_dict(self):
    v = dict(self.values)
    if v.get("seconds"):
      v["inputs_per_second"] = round(v["inputs"] / v["seconds"], 1)
    v["variants_per_input"] = round(v["variants"] / max(v["inputs"], 1), 4)
    v["replaced_word_share"] = round(v["replaced_words"] / max(v["variant_words"], 1), 4)
    return v


def _sides(fields, lay):
  return [fields[i] for i in lay.text]


def _plan_rows(rows, lay, tokenizer, stats):
  """{row position: [SidePlan]} of the rows that can be augmented."""
  plans = {}
  for pos, (_, fields) in enumerate(rows):
    if not fields:
      continue
    stats.values["rows"] += 1
    if len(fields) <= max(lay.text + (lay.label,)):
      stats.values["malformed_rows_copied"] += 1
      continue
    stats.values["inputs"] += 1
    sides = [augmentation.plan_side(t, tokenizer) for t in _sides(fields, lay)]
    if not any(s.words for s in sides):
      stats.values["skipped_empty"] += 1
    elif all(len(s.words) < 2 for s in sides):
      stats.values["skipped_one_word"] += 1
    else:
      plans[pos] = sides
  return plans


def _candidates(plans, generate, stats):
  """{row position: per side, per slot, candidate words} in one generate call,
  the replaced word itself removed."""
  flat = [side for sides in plans.values() for side in sides]
  found = iter(generate(flat)) if flat else iter(())
  out = {}
  for pos, sides in plans.items():
    per_side = []
    for side in sides:
      cands = next(found)
      per_side.append([[c for c in words if c != side.words[slot.word]]
                       for slot, words in zip(side.slots, cands)])
      for slot, words in zip(side.slots, per_side[-1]):
        key = "mlm_words" if slot.source == augmentation.MLM else "embedding_words"
        stats.values[key] += 1
        stats.values["words_without_candidates"] += not words
    out[pos] = per_side
  return out


def _variant_rows(fields, line, lay, variants):
  rows = []
  for v in variants:
    row = list(fields)
    row[lay.text[v.side]] = v.text
    row[lay.label] = ""
    rows.append(row + [str(line)])
  return rows


def augment_rows(rows, split, start, lay, settings, tokenizer, generate):
  """(output rows, AugmentStats) of one shard: rows [(line, fields)], the first
  being data row number `start` of the split."""
  stats = AugmentStats()
  plans = _plan_rows(rows, lay, tokenizer, stats)
  candidates = _candidates(plans, generate, stats)
  out = []
  for pos, (line, fields) in enumerate(rows):
    out.append(fields + [""] if fields else [])
    if pos not in plans:
      continue
    rng = augmentation.input_rng(settings.seed, split, start + pos)
    variants, dropped = augmentation.sample_variants(
        plans[pos], candidates[pos], settings.num_variants, settings.replace_prob, rng)
    if not variants and not dropped:
      stats.values["skipped_no_candidates"] += 1
    stats.values["duplicates_dropped"] += dropped
    stats.values["variants"] += len(variants)
    stats.values["replaced_words"] += sum(v.replaced for v in variants)
    stats.values["variant_words"] += sum(v.words for v in variants)
    out.extend(_variant_rows(fields, line, lay, variants))
  return out, stats


def write_rows(path, rows, file_format):
  """TSV as GLUE writes it (no quoting: the texts hold no tab or newline), or
  CSV with minimal quoting. A blank input line stays blank."""
  with open(path, "w", encoding="utf-8", newline="") as f:
    if file_format == "tsv":
      f.writelines("\t".join(fields) + "\n" for fields in rows)
      return
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    for fields in rows:
      if fields:
        writer.writerow(fields)
      else:
        buffer.write("\n")
    f.write(buffer.getvalue())


def _data_rows(path, settings):
  """(line, fields) of the data rows (the header skipped); blank lines kept."""
  rows = cd.physical_rows(path, settings.format)
  if settings.has_header:
    for _, fields in rows:
      if fields:
        break
  return rows


def augment_split(out, split, path, settings, tokenizer, generate):
  """Publishes the split's shards (skipping those a killed run published);
  returns (shard names, merged AugmentStats)."""
  lay = layout(path, settings)
  ext = settings.format
  progress = Progress(f"augment_task_data {split}", total=cd.count_lines(path), unit="lines")
  rows, names, total, start = _data_rows(path, settings), [], AugmentStats(), 0
  for index in itertools.count():
    shard = list(itertools.islice(rows, settings.rows_per_shard))
    if not shard:
      break
    name = SHARDS.format(split=split, index=index, ext=ext)
    if not out.done(name):
      with out.writing(name) as tmp:
        written, stats = augment_rows(shard, split, start, lay, settings, tokenizer, generate)
        write_rows(tmp, written, ext)
        out.write_part(name, stats.values)  # before the rename that marks it done
    total.add(AugmentStats(out.read_part(name)))
    names.append(name)
    start += len(shard)
    progress.update(len(shard))
  total.values["seconds"] = round(progress.elapsed(), 2)  # this run's (a resumed one: less)
  return lay, names, total


def assemble(out, split, lay, names, settings):
  """Concatenates the shards into `<split>.<format>` (header + VARIANT_COLUMN
  first), then removes them."""
  final = f"{split}.{settings.format}"
  if not out.done(final):
    with out.writing(final) as tmp:
      if lay.header is not None:
        write_rows(tmp, [lay.header + [VARIANT_COLUMN]], settings.format)
      with open(tmp, "ab") as f:
        for name in names:
          with open(out.path(name), "rb") as part:
            shutil.copyfileobj(part, f)
  shutil.rmtree(out.path(f"{split}.shards"), ignore_errors=True)
  return final


def copy_split(out, path):
  name = os.path.basename(path)
  if not out.done(name):
    with out.writing(name) as tmp:
      shutil.copyfile(path, tmp)
  return name


def run_stage(out, files, settings, tokenizer, generate):
  """Writes every split of `files` into the claimed StageOutput `out` and
  finalizes it; returns {split: stats dict}."""
  published, stats = [], {}
  for split in cd.SPLITS:
    if split not in files:
      continue
    if split not in settings.splits:
      published.append(copy_split(out, files[split]))
      continue
    lay, names, split_stats = augment_split(out, split, files[split], settings, tokenizer,
                                            generate)
    published.append(assemble(out, split, lay, names, settings))
    stats[split] = split_stats.as_dict()
  counts = {f"{s}_{k}": v[k] for s, v in stats.items() for k in ("inputs", "variants")}
  out.finalize(published, counts, stats)
  return stats
