"""tools/export.py: a checkpoint as a SavedModel, a Hugging Face directory or ONNX.

--format=saved_model (default): what is exported follows the kinds.
  a pretraining run (or Google / HF weights)  -> serving_default (token ids in,
      MLM + NSP logits out) and encoder signatures (modeling/evaluation/export.py);
  a classifier, with its classification records as --input_dir -> raw text in,
      probabilities and label out, tokenization in the graph
      (modeling/evaluation/task_export.py);
  a span (QA) model, with its QA records as --input_dir -> question and context
      strings in, the answer text, its character span and score out, windows and
      tokenization in the graph (modeling/evaluation/qa_export.py).
--format=hf: config.json + model.safetensors + tokenizer files that transformers
  loads as BertForMaskedLM / BertForSequenceClassification / BertForQuestionAnswering
  (modeling/evaluation/hf_export.py).
--format=onnx: an ONNX Runtime graph, optionally int8 (modeling/evaluation/onnx_export.py).
"""

import dataclasses
import os
from typing import Optional

from modeling.checkpoints import loading
from modeling.evaluation import export
from modeling.evaluation import hf_export
from modeling.evaluation import qa_evaluation
from modeling.evaluation import qa_export
from modeling.evaluation import task_evaluation
from modeling.evaluation import task_export
from modeling.models import heads
from modeling.networks import bert
from modeling.evaluation import serving_layout as layout
from modeling.training import pretraining
from pipeline.core import kinds
from pipeline.core import stage
from pipeline.core.errors import ConfigError, InputError

FORMATS = ("saved_model", "hf", "onnx")
QUANTIZE_MODES = ("none", "dynamic", "static")


@dataclasses.dataclass(frozen=True, kw_only=True)
class ExportConfig:
  checkpoint: str
  export_dir: str
  format: str = "saved_model"  # One of FORMATS.
  bert_config_file: Optional[str] = None  # Default: the config beside a training run.
  input_dir: Optional[str] = None  # Classifiers: their classification records.
  vocab_file: Optional[str] = None  # Classifiers (hf: every model): the records' vocab.
  # TF Serving's layout: export into <export_dir>/<version> (any format: a server of
  # that layout picks the highest; from_pretrained takes the version directory).
  version: Optional[int] = None
  do_lower_case: Optional[bool] = None  # hf: the tokenizer's (default the records', else True).
  quantize: str = "none"  # onnx: one of QUANTIZE_MODES (int8 weights; static: activations too).
  calibration_dir: Optional[str] = None  # onnx, static: records to calibrate on.
  calibration_examples: int = 300  # onnx, static: how many of them.

  def __post_init__(self):
    problems = self._problems()
    if problems:
      raise ConfigError("; ".join(problems))

  def _problems(self):
    problems = []
    if self.format not in FORMATS:
      problems.append(f"--format must be one of {', '.join(FORMATS)}, got {self.format!r}")
    if self.quantize not in QUANTIZE_MODES:
      problems.append(f"--quantize must be one of {', '.join(QUANTIZE_MODES)}, "
                      f"got {self.quantize!r}")
    elif self.quantize != "none" and self.format != "onnx":
      problems.append(f"--quantize={self.quantize} needs --format=onnx")
    if self.calibration_dir and self.quantize != "static":
      problems.append("--calibration_dir applies to --quantize=static only")
    if isinstance(self.calibration_examples, bool) or not isinstance(
        self.calibration_examples, int) or self.calibration_examples < 1:
      problems.append(f"--calibration_examples must be a positive integer, "
                      f"got {self.calibration_examples!r}")
    if self.do_lower_case is not None and self.format != "hf":
      problems.append("--do_lower_case applies to --format=hf only (the other formats "
                      "take the records' or tokenize outside the model)")
    return problems

  @property
  def target_dir(self):
    """Where the SavedModel goes (each export is written aside and renamed in)."""
    if self.version is None:
      return self.export_dir
    return layout.versioned_export_dir(self.export_dir, self.version)


def export_model(config):
  """Exports `config.checkpoint` in config.format, the way its kind (and the input's) says."""
  if config.format == "hf":
    return hf_export.export_checkpoint(config)
  if config.format == "onnx":
    # Imported here: onnxruntime is heavy, and only this format needs it.
    from modeling.evaluation import onnx_export  # pylint: disable=import-outside-toplevel
    return onnx_export.export_checkpoint(config)
  if config.input_dir:
    kind, _ = kinds.read(config.input_dir, kinds.CLASSIFICATION_RECORDS,
                         kinds.TASK_DISTILL_RECORDS, kinds.QA_RECORDS,
                         kinds.QA_DISTILL_RECORDS)
    if kind in (kinds.QA_RECORDS, kinds.QA_DISTILL_RECORDS):
      return _export_span_model(config)
    return _export_classifier(config)
  run_kind = _run_kind(config.checkpoint)
  if run_kind in (kinds.CLASSIFIER_RUN, kinds.QA_RUN):
    raise ConfigError(f"{config.checkpoint} is {run_kind.what}: give --input_dir (its "
                      "records) and --vocab_file for a raw-text export")
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


def _export_span_model(config):
  if not config.vocab_file:
    raise ConfigError("a QA export needs --vocab_file (the records' vocab)")
  inp = qa_evaluation.read_qa_eval_input(config.input_dir, "dev", config.vocab_file)
  model = qa_evaluation.load_span_model(config.checkpoint, inp, config.bert_config_file)
  records = inp.manifest["config"]
  windows, predictions = qa_export.configs_from_manifest(records)
  info = {"checkpoint": os.path.abspath(config.checkpoint), "records": inp.dir,
          "records_manifest_sha256": inp.manifest["_sha256"],
          "vocab_sha256": records.get("vocab_sha256")}
  os.makedirs(os.path.dirname(os.path.abspath(config.target_dir)), exist_ok=True)
  try:
    qa_export.export_text_qa(model, config.target_dir, config.vocab_file, windows,
                             predictions, info)
  except ValueError as e:
    raise InputError(config.checkpoint, str(e)) from None
  print(f"export: {config.checkpoint} -> {config.target_dir} (question + context -> "
        f"answer, SQuAD {inp.spec.version})")
