"""tools/export.py: a checkpoint as a SavedModel; what is exported follows the kinds.

  a pretraining run (or Google / HF weights)  -> serving_default (token ids in,
      MLM + NSP logits out) and encoder signatures (modeling/evaluation/export.py);
  a classifier, with its classification records as --input_dir -> raw text in,
      probabilities and label out, tokenization in the graph
      (modeling/evaluation/task_export.py).
"""

import dataclasses
import os
from typing import Optional

from modeling.checkpoints import loading
from modeling.evaluation import export
from modeling.evaluation import task_evaluation
from modeling.evaluation import task_export
from modeling.models import heads
from modeling.networks import bert
from modeling.evaluation import serving_layout as layout
from modeling.training import pretraining
from pipeline.core import kinds
from pipeline.core import stage
from pipeline.core.errors import ConfigError, InputError


@dataclasses.dataclass(frozen=True, kw_only=True)
class ExportConfig:
  checkpoint: str
  export_dir: str
  bert_config_file: Optional[str] = None  # Default: the config beside a training run.
  input_dir: Optional[str] = None  # Classifiers: their classification records.
  vocab_file: Optional[str] = None  # Classifiers: the records' vocab.
  version: Optional[int] = None  # TF Serving's layout: export into <export_dir>/<version>.

  @property
  def target_dir(self):
    """Where the SavedModel goes (each export is written aside and renamed in)."""
    if self.version is None:
      return self.export_dir
    return layout.versioned_export_dir(self.export_dir, self.version)


def export_model(config):
  """Exports `config.checkpoint` the way its kind (and the input's) says."""
  if config.input_dir:
    kinds.read(config.input_dir, kinds.CLASSIFICATION_RECORDS, kinds.TASK_DISTILL_RECORDS)
    return _export_classifier(config)
  if _run_kind(config.checkpoint) == kinds.CLASSIFIER_RUN:
    raise ConfigError(f"{config.checkpoint} is a classifier: give --input_dir (its "
                      "classification records) and --vocab_file for a raw-text export")
  return _export_pretrainer(config)


def _run_kind(checkpoint):
  """The Kind of a training run directory (or of the run a best/ dir is in), else None."""
  for directory in (checkpoint, os.path.dirname(os.path.abspath(checkpoint))):
    path = os.path.join(directory, stage.MANIFEST)
    if os.path.isfile(path):
      return kinds.from_manifest(stage.read_json(path))
  return None


def _config_path(config):
  if config.bert_config_file:
    return config.bert_config_file
  try:
    fmt, path = loading.resolve_checkpoint(config.checkpoint)
  except ValueError as e:
    raise InputError(config.checkpoint, str(e)) from None
  if fmt != "own":
    raise InputError(config.checkpoint, "not a training run of this project: "
                     "pass --bert_config_file")
  return os.path.join(os.path.dirname(path), "bert_config.json")


def _export_pretrainer(config):
  path = _config_path(config)
  try:
    bert_config = bert.BertConfig.from_json_file(
        path, pretraining.gelu_convention_for(config.checkpoint))
    model = bert.ensure_built(heads.BertPretrainer(bert_config))
    loading.load_checkpoint(model, config.checkpoint)
  except (OSError, ValueError) as e:
    raise InputError(config.checkpoint, str(e)) from None
  os.makedirs(os.path.dirname(os.path.abspath(config.target_dir)), exist_ok=True)
  export.export_saved_model(model, config.target_dir)
  print(f"export: {config.checkpoint} -> {config.target_dir}")


def _export_classifier(config):
  if not config.vocab_file:
    raise ConfigError("a classifier export needs --vocab_file (the records' vocab)")
  inp = task_evaluation.read_task_records(config.input_dir, config.vocab_file)
  model = task_evaluation.load_classifier(config.checkpoint, inp, config.bert_config_file)
  records = inp.manifest["config"]
  pair = bool((records.get("columns") or {}).get("text_b"))
  info = {"checkpoint": os.path.abspath(config.checkpoint), "records": inp.dir,
          "records_manifest_sha256": inp.manifest["_sha256"],
          "vocab_sha256": records.get("vocab_sha256")}
  os.makedirs(os.path.dirname(os.path.abspath(config.target_dir)), exist_ok=True)
  task_export.export_text_classifier(
      model, config.target_dir, config.vocab_file, records.get("do_lower_case", True),
      inp.spec.max_seq_length, inp.spec.labels, pair, info)
  print(f"export: {config.checkpoint} -> {config.target_dir} "
        f"({'pair' if pair else 'single'} text, {len(inp.spec.labels)} labels)")
