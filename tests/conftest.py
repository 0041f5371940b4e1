"""Shared helpers: run tools as a user would, and build small corpora."""

import os
import random
import subprocess
import sys

import pytest

from tests import wiki_fixtures

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLE_DUMP = os.path.join(ROOT, "..", "shared", "data", "enwiki-sample-pages-articles.xml.bz2")
MPIRUN = ["mpirun", "--allow-run-as-root", "--oversubscribe", "-bind-to", "none",
          "-map-by", "slot"]

_WORDS = ("river valley town people history music science north south city church "
          "station bridge language school market winter summer mountain forest "
          "island century government trade railway festival library museum").split()


def tool_env():
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONWARNINGS="ignore")
  env.pop("PYTHONPATH", None)  # tools must find the package on their own
  return env


def run_tool(name, *args, check=True, timeout=300):
  """Runs tools/<name>.py with flags; returns the CompletedProcess."""
  cmd = [sys.executable, os.path.join(ROOT, "tools", name + ".py"), *args]
  proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=tool_env())
  if check and proc.returncode != 0:
    raise AssertionError(f"{name} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
  return proc


def start_tool(name, *args):
  cmd = [sys.executable, os.path.join(ROOT, "tools", name + ".py"), *args]
  return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=tool_env())


def synthetic_pages(n, seed=0, first_id=1000):
  """Articles of generated prose (with a little markup) for volume tests."""
  rnd = random.Random(seed)
  pages = []
  for k in range(n):
    paragraphs = []
    for _ in range(rnd.randint(2, 6)):
      sentences = [" ".join(rnd.choice(_WORDS) for _ in range(rnd.randint(4, 18))).capitalize()
                   + "." for _ in range(rnd.randint(2, 7))]
      paragraphs.append(" ".join(sentences))
    text = (f"'''Page {k}''' is a [[town|place]] in the north.{{{{Infobox x|a=1}}}}\n\n"
            + "\n\n".join(paragraphs) + "\n\n== History ==\n" + paragraphs[0]
            + "<ref>cite</ref>\n[[Category:Towns]]\n")
    pages.append(dict(id=first_id + k, title=f"Page {k}", text=text))
  return pages


def tree_bytes(root, skip=("stats.json",)):
  """{relative path: bytes} of every file under root (hidden dirs excluded)."""
  out = {}
  for dirpath, dirnames, files in os.walk(root):
    dirnames[:] = [d for d in dirnames if not d.startswith(".")]
    for f in files:
      if f in skip or f.startswith("."):
        continue
      p = os.path.join(dirpath, f)
      with open(p, "rb") as fh:
        out[os.path.relpath(p, root)] = fh.read()
  return out


@pytest.fixture(scope="session")
def corpus(tmp_path_factory):
  """The fixture dump through every stage: {stage name: directory}."""
  base = tmp_path_factory.mktemp("corpus")
  dump = str(base / "dump.xml.bz2")
  wiki_fixtures.write_dump(dump, wiki_fixtures.sample_pages() + synthetic_pages(120))
  dirs = {k: str(base / k) for k in ("extract", "shards", "records")}
  dirs["dump"], dirs["vocab"] = dump, str(base / "vocab" / "vocab.txt")
  run_tool("extract_wiki", f"--input={dump}", f"--output_dir={dirs['extract']}",
           f"--min_article_chars={wiki_fixtures.SAMPLE_MIN_CHARS}", "--pages_per_file=40")
  run_tool("shard_text", f"--input_dir={dirs['extract']}", f"--output_dir={dirs['shards']}",
           "--num_shards=4", "--eval_fraction=0.05")
  run_tool("build_vocab", f"--input_dir={dirs['shards']}", f"--output_file={dirs['vocab']}",
           "--vocab_size=400")
  run_tool("create_pretraining_data", *records_flags(dirs, dirs["records"]))
  return dirs


def records_flags(dirs, output_dir, *extra):
  return [f"--input_dir={dirs['shards']}", f"--output_dir={output_dir}",
          f"--vocab_file={dirs['vocab']}", "--max_seq_length=64",
          "--max_predictions_per_seq=10", "--dupe_factor=2", *extra]
