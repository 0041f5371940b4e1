"""How often the exported model's in-graph tokenizer differs from the records'.

  .venv/bin/python bench/tokenizer_parity.py --task_dir=out/task/rotten_tomatoes \
      --records_dir=out/task/records --vocab_file=out/vocab/vocab.txt \
      [--extract_dir=out/extract]

The raw-text SavedModel (tools/export.py with --input_dir) tokenizes in the graph with
tensorflow-text (modeling/evaluation/task_export.py); the records were made by
pipeline/text/tokenization.py, which is reference-exact. For every row of the
task's TSV/CSV files that create_classification_data kept (same parser, same
order), this compares (a) the word pieces of each text and (b) the packed
model inputs (input_ids, input_mask, segment_ids after truncation) with the
records' own; with --extract_dir also the word pieces of every paragraph of
the extracted Wikipedia text. Writes bench/results/tokenizer_parity.json.
"""

import argparse
import glob
import json
import os
import sys
import time
import unicodedata

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from pipeline.core import startup  # noqa: E402  pylint: disable=wrong-import-position
startup.quiet_tensorflow()  # no CUDA start-up noise on a CPU-only machine

# pylint: disable=wrong-import-position
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tensorflow_text as tf_text  # noqa: E402

from modeling.evaluation import task_export  # noqa: E402
from pipeline.records import classification_data as cd  # noqa: E402
from pipeline.inputs import classification_dataset as cds  # noqa: E402
from pipeline.core import kinds  # noqa: E402
from pipeline.core import stage  # noqa: E402

BATCH = 512


def _task_format(config):
  columns = config["columns"]
  return cd.TaskFormat(config["format"], config["has_header"], columns["text_a"],
                       columns["text_b"], columns["label"], tuple(config["labels"]),
                       config["max_seq_length"])


def _rows(path, task, labeled):
  stats = cd.SplitStats(task.labels)
  return [(a, b) for _, a, b, _ in cd.parse_rows(path, task, labeled, stats)]


def _split_parity(rows, records_dir, split, spec, encoder, vocab_file, lower):
  """Word-piece and packed-input differences of one split's rows."""
  texts = [a for a, _ in rows] + [b for _, b in rows if b is not None]
  pieces = task_export.compare_tokenizers(texts, vocab_file, lower)
  records = cds.eval_dataset(records_dir, spec, BATCH, split)
  differing, examples, start = 0, [], 0
  for batch in records:
    chunk = rows[start:start + len(batch["input_ids"])]
    args = [tf.constant([a for a, _ in chunk])]
    if chunk[0][1] is not None:
      args.append(tf.constant([b for _, b in chunk]))
    ours = encoder(*args)
    same = np.ones(len(chunk), bool)
    for name in ("input_ids", "input_mask", "segment_ids"):
      same &= (ours[name].numpy() == batch[name].numpy()).all(1)
    differing += int((~same).sum())
    examples += [list(chunk[i]) for i in np.flatnonzero(~same)[:5 - len(examples)]]
    start += len(chunk)
  if start != len(rows):
    raise RuntimeError(f"{split}: {len(rows)} rows but {start} records")
  return {"examples": len(rows), "examples_differing": differing,
          "differing_examples": examples, "texts": pieces["texts"],
          "texts_differing": pieces["differing"], "differing_texts": pieces["examples"]}


def _paragraphs(extract_dir):
  out = []
  for path in sorted(glob.glob(os.path.join(extract_dir, "docs", "*.jsonl"))):
    with open(path, encoding="utf-8") as f:
      for line in f:
        out += [p for p in json.loads(line)["text"].split("\n") if p.strip()]
  return out


def _code_points(vocab_file, lower):
  """Every code point c (surrogates excepted) as the word "a" c "b": which
  ones the two tokenizers treat differently, by Unicode category."""
  points = [c for c in range(0x20, sys.maxunicode + 1) if not 0xD800 <= c < 0xE000]
  found = task_export.compare_tokenizers([f"a{chr(c)}b" for c in points], vocab_file,
                                         lower, batch_size=8192, max_examples=len(points))
  differing = [ord(text[1]) for text, _, _ in found["examples"]]
  categories = {}
  for c in differing:
    category = unicodedata.category(chr(c))
    categories[category] = categories.get(category, 0) + 1
  return {"tested": len(points), "differing": len(differing),
          "by_category": dict(sorted(categories.items())),
          "differing_code_points": [f"U+{c:04X}" for c in differing],
          "unicode_version_python": unicodedata.unidata_version}


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--task_dir", required=True, help="train/dev/test.tsv")
  parser.add_argument("--records_dir", required=True, help="their classification records")
  parser.add_argument("--vocab_file", required=True)
  parser.add_argument("--extract_dir", help="extract_wiki output (optional)")
  parser.add_argument("--output", default=os.path.join(ROOT, "bench", "results",
                                                       "tokenizer_parity.json"))
  args = parser.parse_args()
  start = time.monotonic()
  _, manifest = kinds.read(args.records_dir, kinds.CLASSIFICATION_RECORDS)
  config = manifest["config"]
  task, spec = _task_format(config), cds.TaskSpec.from_manifest(manifest)
  lower = config["do_lower_case"]
  encoder = task_export.TextEncoder(args.vocab_file, lower, config["max_seq_length"])
  files = cd.split_files(args.task_dir, config["format"], {})
  splits = {}
  for split in sorted(files):
    if split not in config["splits"]:
      continue
    rows = _rows(files[split], task, split not in config.get("unlabeled_splits", []))
    splits[split] = _split_parity(rows, args.records_dir, split, spec, encoder,
                                  args.vocab_file, lower)
    print(f"{split}: {splits[split]['examples_differing']} of {len(rows)} examples, "
          f"{splits[split]['texts_differing']} of {splits[split]['texts']} texts differ",
          flush=True)
  result = {"splits": splits, "records": {"dir": manifest["_dir"],
                                          "manifest_sha256": manifest["_sha256"],
                                          "max_seq_length": config["max_seq_length"],
                                          "do_lower_case": lower},
            "vocab": {"file": os.path.abspath(args.vocab_file),
                      "sha256": stage.file_sha256(args.vocab_file)},
            "tensorflow_text": tf_text.__version__, "code_version": stage.code_version()}
  result["code_points"] = _code_points(args.vocab_file, lower)
  print(f"code points: {result['code_points']['differing']} of "
        f"{result['code_points']['tested']} differ {result['code_points']['by_category']}")
  if args.extract_dir:
    paragraphs = _paragraphs(args.extract_dir)
    result["wikipedia_paragraphs"] = task_export.compare_tokenizers(
        paragraphs, args.vocab_file, lower)
    print(f"wikipedia: {result['wikipedia_paragraphs']['differing']} of "
          f"{len(paragraphs)} paragraphs differ")
  result["seconds"] = round(time.monotonic() - start, 1)
  os.makedirs(os.path.dirname(args.output), exist_ok=True)
  stage.atomic_write_text(args.output, stage.json_dumps(result))
  print(f"-> {args.output}")


if __name__ == "__main__":
  main()
