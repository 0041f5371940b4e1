"""Hugging Face BERT weights as safetensors, never pickle: the reader and the writer.

`model.safetensors` (or a sharded `model.safetensors.index.json`) with an
optional config.json beside it (HF's meaning of "gelu": exact erf). Pickle
based PyTorch files (.bin/.pt/...) are refused: unpickling runs arbitrary
code. save_safetensors writes the pair transformers' from_pretrained reads,
with name_map's names and layouts (the reader's, inverted).

Shape legend: H=hidden size, V=vocab size, C=number of labels.
"""

import json
import os
import re

import numpy as np
import safetensors
from safetensors import numpy as safetensors_numpy

from modeling.checkpoints import name_map
from modeling.models import heads
from modeling.networks import bert as bert_lib

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle")
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"

# The transformers class whose state dict each of our models' variables fill.
ARCHITECTURES = ((heads.BertPretrainer, "BertForPreTraining"),
                 (heads.BertClassifier, "BertForSequenceClassification"),
                 (heads.BertSpanLabeler, "BertForQuestionAnswering"),
                 (bert_lib.BertModel, "BertModel"))

# Non-parameter buffers that HF saves.
_HF_IGNORED = re.compile(r"^bert\.embeddings\.position_ids$")


def refuse_pickle(path):
  """Raises the ValueError for a pickle checkpoint, with a conversion hint."""
  raise ValueError(
      f"checkpoint {path}: refusing to unpickle a PyTorch checkpoint "
      "(loading pickle can execute arbitrary code). Convert it to "
      "safetensors first, e.g. with transformers: "
      "`BertForPreTraining.from_pretrained(src_dir).save_pretrained("
      "out_dir, safe_serialization=True)`, then load out_dir")


def has_pickle_files(directory):
  """True if `directory` holds a PyTorch pickle checkpoint file."""
  return any(name.endswith(PICKLE_SUFFIXES) for name in os.listdir(directory))


def safetensors_files(directory_or_file):
  """Returns ([safetensors files], config.json path beside them).

  Raises:
    ValueError: pickle files, or no safetensors at `directory_or_file`.
  """
  path = os.fspath(directory_or_file)
  if path.endswith(PICKLE_SUFFIXES):
    refuse_pickle(path)
  directory = path if os.path.isdir(path) else os.path.dirname(path)
  if os.path.isdir(path):
    for name in ("model.safetensors", "model.safetensors.index.json"):
      if os.path.exists(os.path.join(path, name)):
        path = os.path.join(path, name)
        break
    else:
      if has_pickle_files(path):
        refuse_pickle(path)
      raise ValueError(f"checkpoint {path}: no model.safetensors in directory")
  if not os.path.exists(path):
    raise ValueError(f"checkpoint {path}: no such file")
  files = [path]
  if path.endswith(".index.json"):
    # Sharded: {"weight_map": {tensor name: shard file}}.
    with open(path, encoding="utf-8") as f:
      shards = sorted(set(json.load(f)["weight_map"].values()))
    files = [os.path.join(directory, shard) for shard in shards]
  return files, os.path.join(directory, "config.json")


def _hf_canonical_name(name):
  """Old LayerNorm gamma/beta -> weight/bias; adds the "bert." prefix that
  BertModel (as opposed to BertFor*) checkpoints lack."""
  name = re.sub(r"LayerNorm\.gamma$", "LayerNorm.weight", name)
  name = re.sub(r"LayerNorm\.beta$", "LayerNorm.bias", name)
  if not name.startswith(("bert.", "cls.", "classifier.", "qa_outputs.")):
    name = "bert." + name
  return name


def _read_hf_tensors(files):
  tensors = {}
  for path in files:
    try:
      loaded = safetensors_numpy.load_file(path)
    except (safetensors.SafetensorError, OSError) as e:
      raise ValueError(f"checkpoint {path}: not a readable safetensors file "
                       f"({e})") from None
    for name, value in loaded.items():
      canonical = _hf_canonical_name(name)
      # On a clash keep the original name: it then shows up as unexpected.
      tensors[name if canonical in tensors else canonical] = value
  return tensors


def _untied_decoder_problems(tensors):
  """The decoder is tied to the embeddings in BERT; our model cannot hold
  a different matrix, so a file with one would load wrongly."""
  problems = []
  for copy, source in (("cls.predictions.decoder.weight",
                        "bert.embeddings.word_embeddings.weight"),
                       ("cls.predictions.decoder.bias",
                        "cls.predictions.bias")):
    if copy not in tensors or source not in tensors:
      continue
    if (tensors[copy].shape != tensors[source].shape or
        not np.array_equal(tensors[copy], tensors[source])):
      problems.append(f"{copy} differs from {source} (untied output "
                      "embeddings are not supported)")
  return problems


def load_safetensors(model, directory_or_file):
  """Loads Hugging Face BERT weights from safetensors (never from pickle).

  Args:
    model: BertModel, BertPretrainer, BertClassifier or BertSpanLabeler
      (`cls.*` is skipped for models without pre-training heads,
      `classifier.*` / `qa_outputs.*` for models without that head).
    directory_or_file: a directory with model.safetensors (or a sharded
      model.safetensors.index.json), or the file itself. A config.json beside
      it is checked against the model's config.

  Returns:
    name_map.LoadResult(loaded=[names], ignored=[names]).

  Raises:
    ValueError: for pickle files, and listing all missing/unexpected/
      mis-shaped tensors.
  """
  files, config_path = safetensors_files(directory_or_file)
  tensors = _read_hf_tensors(files)
  skipped = name_map.absent_head_prefixes(model, "cls.", ["classifier."], ["qa_outputs."])
  tied_copies = ("cls.predictions.decoder.weight",
                 "cls.predictions.decoder.bias")

  def is_ignored(name):
    return (bool(_HF_IGNORED.search(name)) or name.startswith(skipped) or
            name in tied_copies)

  shapes = {name: value.shape for name, value in tensors.items()}
  plan = name_map.plan_load(name_map.model_params(model), shapes, "hf",
                            is_ignored)
  if isinstance(model, heads.BertPretrainer):
    plan.problems["other"] += _untied_decoder_problems(tensors)
  plan.problems["config mismatch"] += name_map.config_problems(
      config_path, bert_lib.backbone(model).config, "hf")
  plan.raise_if_problems(os.fspath(directory_or_file))
  return name_map.assign(plan, tensors.__getitem__, "hf")


def tensor_shape(directory_or_file, name):
  """The stored shape of tensor `name` (as stored, e.g. "classifier.weight"
  [C,H]), or None; reads the headers only, not the weights."""
  files, _ = safetensors_files(directory_or_file)
  for path in files:
    with safetensors.safe_open(path, framework="numpy") as f:
      if name in f.keys():
        return tuple(f.get_slice(name).get_shape())
  return None


# --- Writing -------------------------------------------------------------------


def architecture(model):
  """The transformers class name for `model` (BertForPreTraining, ...)."""
  for cls, name in ARCHITECTURES:
    if isinstance(model, cls):
      return name
  raise TypeError(f"no Hugging Face class for a {type(model).__name__}")


def hf_tensors(model):
  """{HF name: float32 array in HF's layout} of every variable of `model`.

  Dense kernels [in,out] become PyTorch Linear weights [out,in]. The MLM
  decoder (cls.predictions.decoder.*) is left out, as save_pretrained does:
  it is tied to the word embeddings [V,H] and cls.predictions.bias [V], and
  tie_word_embeddings in config.json ties it back on load.
  """
  tensors = {}
  for param in name_map.model_params(model):
    value = np.asarray(param.variable.numpy(), dtype=np.float32)
    tensors[param.hf_name] = np.ascontiguousarray(value.T if param.hf_transposed else value)
  return tensors


def _id2label(model, labels):
  """{"0": name, ...} of a classifier: HF derives num_labels (C) from it."""
  names = list(labels) if labels is not None else [
      f"LABEL_{i}" for i in range(model.num_labels)]
  if len(names) != model.num_labels or len(set(map(str, names))) != len(names):
    raise ValueError(f"labels {names}: need {model.num_labels} distinct names "
                     "(one per classifier output)")
  return {str(i): str(name) for i, name in enumerate(names)}


def hf_config(model, labels=None, pad_token_id=0):
  """config.json's dict for `model`: HF's BertConfig keys ("gelu" = exact erf).

  labels: a classifier's label names (index i = class i); default LABEL_i.
  """
  config = bert_lib.backbone(model).config
  values = config.to_dict("hf")
  values.update(model_type="bert", architectures=[architecture(model)],
                layer_norm_eps=config.layer_norm_eps, pad_token_id=pad_token_id,
                position_embedding_type="absolute", tie_word_embeddings=True,
                dtype="float32")
  if isinstance(model, heads.BertClassifier):
    id2label = _id2label(model, labels)
    values.update(id2label=id2label, label2id={v: int(k) for k, v in id2label.items()},
                  classifier_dropout=model.dropout_rate)
  return values


def save_safetensors(model, directory, labels=None, pad_token_id=0):
  """Writes model.safetensors and config.json of `model` into `directory`.

  What BertFor{PreTraining,MaskedLM,SequenceClassification,QuestionAnswering}
  .from_pretrained(directory) reads, and load_safetensors reads back
  unchanged. `labels`, `pad_token_id`: see hf_config. Returns the file names.
  """
  os.makedirs(directory, exist_ok=True)
  # "format": "pt" is what transformers requires of a safetensors file's metadata.
  safetensors_numpy.save_file(hf_tensors(model), os.path.join(directory, WEIGHTS_FILE),
                              metadata={"format": "pt"})
  with open(os.path.join(directory, CONFIG_FILE), "w", encoding="utf-8") as f:
    f.write(json.dumps(hf_config(model, labels, pad_token_id), indent=2, sort_keys=True)
            + "\n")
  return [WEIGHTS_FILE, CONFIG_FILE]
