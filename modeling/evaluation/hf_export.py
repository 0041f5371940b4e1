"""tools/export.py --format=hf: a checkpoint as a Hugging Face model directory.

Shape legend: H=hidden size, V=vocab size, C=number of labels.

What transformers loads from it follows the checkpoint's head (the stored
classifier / span head, else the pre-training heads):
  pretraining run, distillation student, Google / HF pre-trained weights
      -> BertForPreTraining's weights: BertForMaskedLM and BertForPreTraining
         load them (cls.predictions.decoder tied to the word embeddings [V,H]);
  classifier -> BertForSequenceClassification, id2label / label2id from the
      classification records (--input_dir), else classifier.json, else LABEL_i;
  span (QA) model -> BertForQuestionAnswering (qa_outputs.*).

The directory: config.json and model.safetensors (checkpoints/hf.py, never
pickle), vocab.txt, tokenizer_config.json (BertTokenizer; do_lower_case from
the records' manifest when --input_dir is given, else --do_lower_case, default
True), special_tokens_map.json and hf_export.json (where it came from). It is
written to a temp directory beside the target, read back with our own
importer (hf.load_safetensors: every variable bit for bit), and only then
renamed into place: the target is the previous export or the new one, never
half of one.
"""

import dataclasses
import json
import os
import shutil
from typing import Optional

import keras
import numpy as np

from modeling.checkpoints import hf
from modeling.checkpoints import loading
from modeling.checkpoints import name_map
from modeling.evaluation import task_evaluation
from modeling.models import classification
from modeling.models import heads
from modeling.models import span
from modeling.networks import bert as bert_lib
from modeling.training import pretraining
from pipeline.core import kinds
from pipeline.core import stage
from pipeline.core.errors import ConfigError, InputError, OutputError
from pipeline.text import tokenization

VOCAB_FILE = "vocab.txt"
TOKENIZER_CONFIG_FILE = "tokenizer_config.json"
SPECIAL_TOKENS_FILE = "special_tokens_map.json"
INFO_FILE = "hf_export.json"
FILES = (hf.CONFIG_FILE, hf.WEIGHTS_FILE, VOCAB_FILE, TOKENIZER_CONFIG_FILE,
         SPECIAL_TOKENS_FILE, INFO_FILE)
SPECIAL_TOKENS = {"unk_token": tokenization.UNK_TOKEN, "sep_token": tokenization.SEP_TOKEN,
                  "pad_token": tokenization.PAD_TOKEN, "cls_token": tokenization.CLS_TOKEN,
                  "mask_token": tokenization.MASK_TOKEN}
# Records whose manifest says how the text was tokenized (vocab, lower-casing).
RECORD_KINDS = (kinds.CLASSIFICATION_RECORDS, kinds.TASK_DISTILL_RECORDS, kinds.QA_RECORDS,
                kinds.QA_DISTILL_RECORDS, kinds.PRETRAINING_RECORDS, kinds.DISTILL_RECORDS)
CLASSIFIER_RECORD_KINDS = (kinds.CLASSIFICATION_RECORDS, kinds.TASK_DISTILL_RECORDS)


@dataclasses.dataclass(frozen=True)
class Source:
  """A float32 model and what its export needs to know besides the weights."""
  model: keras.Model
  labels: Optional[list] = None  # A classifier's label names, index i = class i.
  do_lower_case: Optional[bool] = None  # The records' (None: no records given).
  manifest: Optional[dict] = None  # The records' manifest.


def export_checkpoint(config):
  """Writes config.checkpoint as a Hugging Face directory (module doc); returns it.

  Reads ExportConfig's checkpoint, export_dir / target_dir, bert_config_file,
  input_dir, vocab_file and do_lower_case.
  Raises:
    ConfigError: no vocab, or --do_lower_case against the records'.
    InputError: nothing loadable, a config or vocab that does not fit.
  """
  source = load_source(config)
  do_lower_case = _do_lower_case(config, source)
  vocab_file = _vocab_file(config)
  tokens = _check_vocab(vocab_file, bert_lib.backbone(source.model).config)
  target = os.path.abspath(config.target_dir)
  _check_target(target)
  tmp = f"{target}.tmp.{os.getpid()}"
  try:
    _write(source, tmp, vocab_file, tokens, do_lower_case, config)
    verify(source.model, tmp)
    stage.replace_directory(tmp, target)
  finally:
    shutil.rmtree(tmp, ignore_errors=True)
  print(f"export: {config.checkpoint} -> {target} (Hugging Face "
        f"{hf.architecture(source.model)})")
  return target


# --- What to export ----------------------------------------------------------------


def load_source(config):
  """The model (and labels, lower-casing) of config.checkpoint, input_dir's if given.

  Raises:
    InputError: see export_checkpoint.
  """
  if not config.input_dir:
    model = load_model(config.checkpoint, config.bert_config_file)
    return Source(model, labels=_stored_labels(config.checkpoint, model))
  kind, manifest = kinds.read(config.input_dir, *RECORD_KINDS)
  lower = bool(manifest["config"].get("do_lower_case", True))
  if kind in CLASSIFIER_RECORD_KINDS:
    # read_task_records checks the vocab; load_classifier the config, C and V.
    inp = task_evaluation.read_task_records(config.input_dir, config.vocab_file)
    model = task_evaluation.load_classifier(config.checkpoint, inp, config.bert_config_file)
    return Source(model, list(inp.spec.labels), lower, manifest)
  if config.vocab_file:
    kinds.check_vocab(manifest, config.vocab_file)
  model = load_model(config.checkpoint, config.bert_config_file)
  return Source(model, _stored_labels(config.checkpoint, model), lower, manifest)


def load_model(checkpoint, bert_config_file=None):
  """A float32 BertClassifier, BertSpanLabeler or BertPretrainer: the head stored.

  bert_config_file: default the config stored beside the weights; given, it must
  agree with that one (the loaders compare them).
  Raises:
    InputError: nothing loadable, or a config / weights that do not fit.
  """
  config = _explicit_config(checkpoint, bert_config_file)
  try:
    if classification.stored_num_labels(checkpoint):
      return classification.load_classifier(checkpoint, "float32", config=config)
    if span.holds_span_head(checkpoint):
      return span.load_span_model(checkpoint, config, "float32")
    model = heads.BertPretrainer(config or loading.stored_config(checkpoint), dtype="float32")
    loading.load_checkpoint(bert_lib.ensure_built(model), checkpoint)
    return model
  except (OSError, ValueError) as e:
    raise InputError(checkpoint, str(e)) from None


def _explicit_config(checkpoint, bert_config_file):
  if not bert_config_file:
    return None
  try:
    return bert_lib.load_config(bert_config_file,
                                pretraining.gelu_convention_for(checkpoint))
  except (OSError, ValueError) as e:
    raise InputError(bert_config_file, str(e)) from None


def _stored_labels(checkpoint, model):
  """A classifier's label names from its classifier.json, or None."""
  if not isinstance(model, heads.BertClassifier):
    return None
  try:
    return classification.read_classifier_info(checkpoint).get("labels")
  except ValueError:  # Not a save_classifier directory: no names stored.
    return None


def _do_lower_case(config, source):
  if source.do_lower_case is None:
    return True if config.do_lower_case is None else config.do_lower_case
  if config.do_lower_case is not None and config.do_lower_case != source.do_lower_case:
    raise ConfigError(f"--do_lower_case={config.do_lower_case} but the records in "
                      f"{config.input_dir} were made with do_lower_case="
                      f"{source.do_lower_case}")
  return source.do_lower_case


def _vocab_file(config):
  """--vocab_file, else the vocab.txt beside the weights (HF directories keep one)."""
  if config.vocab_file:
    return config.vocab_file
  path = os.path.abspath(config.checkpoint)
  candidate = os.path.join(path if os.path.isdir(path) else os.path.dirname(path), VOCAB_FILE)
  if os.path.isfile(candidate):
    return candidate
  raise ConfigError("--format=hf needs --vocab_file (the model's vocab.txt): the "
                    "export carries its tokenizer")


def _check_vocab(vocab_file, bert_config):
  """The vocab's tokens; a token id past the embeddings [V,H] would crash HF."""
  tokens = tokenization.load_vocab(vocab_file)  # InputError: unreadable, no specials
  if len(tokens) > bert_config.vocab_size:
    raise InputError(vocab_file, f"{len(tokens)} tokens, but the model's vocab_size is "
                     f"{bert_config.vocab_size} (another model's vocab?)")
  return tokens


def _check_target(target):
  """Refuses to replace a directory that is not an earlier export."""
  if os.path.exists(target) and not (
      os.path.isdir(target) and (not os.listdir(target) or
                                 os.path.isfile(os.path.join(target, INFO_FILE)))):
    raise InputError(target, "exists and is not a Hugging Face export of this tool: "
                     "not replaced (remove it or choose another --export_dir)")


# --- Writing, checking, publishing --------------------------------------------------


def tokenizer_config(do_lower_case, model_max_length):
  """tokenizer_config.json: HF's BertTokenizer, set up as google-research/bert's.

  strip_accents None follows do_lower_case, as the reference tokenizer does.
  """
  return dict(SPECIAL_TOKENS, tokenizer_class="BertTokenizer", do_lower_case=do_lower_case,
              do_basic_tokenize=True, tokenize_chinese_chars=True, strip_accents=None,
              model_max_length=model_max_length)


def _info(source, config, vocab_file, do_lower_case):
  manifest = source.manifest or {}
  return {"checkpoint": os.path.abspath(config.checkpoint),
          "architecture": hf.architecture(source.model),
          "records": manifest.get("_dir"), "records_manifest_sha256": manifest.get("_sha256"),
          "vocab_sha256": stage.file_sha256(vocab_file), "do_lower_case": do_lower_case,
          "labels": source.labels, "code_version": stage.code_version()}


def _write_json(path, values):
  with open(path, "w", encoding="utf-8") as f:
    f.write(json.dumps(values, indent=2, sort_keys=True) + "\n")


def _write(source, tmp, vocab_file, tokens, do_lower_case, config):
  shutil.rmtree(tmp, ignore_errors=True)
  try:
    os.makedirs(tmp)
  except OSError as e:
    raise OutputError(tmp, f"cannot create the export directory ({e.strerror})") from None
  bert_config = bert_lib.backbone(source.model).config
  hf.save_safetensors(source.model, tmp, source.labels,
                      pad_token_id=tokens.index(tokenization.PAD_TOKEN))
  shutil.copyfile(vocab_file, os.path.join(tmp, VOCAB_FILE))
  _write_json(os.path.join(tmp, TOKENIZER_CONFIG_FILE),
              tokenizer_config(do_lower_case, bert_config.max_position_embeddings))
  _write_json(os.path.join(tmp, SPECIAL_TOKENS_FILE), SPECIAL_TOKENS)
  _write_json(os.path.join(tmp, INFO_FILE), _info(source, config, vocab_file, do_lower_case))


def empty_like(model):
  """A new float32 model of `model`'s class and config (weights not loaded)."""
  config = bert_lib.backbone(model).config
  if isinstance(model, heads.BertClassifier):
    fresh = heads.BertClassifier(config, model.num_labels, dtype="float32")
  elif isinstance(model, heads.BertSpanLabeler):
    fresh = heads.BertSpanLabeler(config, dtype="float32")
  elif isinstance(model, heads.BertPretrainer):
    fresh = heads.BertPretrainer(config, dtype="float32")
  else:
    fresh = bert_lib.BertModel(config, dtype="float32")
  return bert_lib.ensure_built(fresh)


def verify(model, directory):
  """Reads `directory` back with hf.load_safetensors: every variable bit for bit.

  Raises:
    RuntimeError: a tensor that did not round-trip (a bug: nothing is published).
  """
  fresh = empty_like(model)
  try:
    hf.load_safetensors(fresh, directory)
  except ValueError as e:
    raise RuntimeError(f"the Hugging Face export does not read back: {e}") from None
  differ = [ours.hf_name for ours, back in zip(name_map.model_params(model),
                                               name_map.model_params(fresh))
            if not np.array_equal(ours.variable.numpy(), back.variable.numpy())]
  if differ:
    raise RuntimeError(f"the Hugging Face export reads back different tensors: {differ}")


