"""int8 quantization of an exported (fused) BERT ONNX graph, and its calibration data.

Shape legend: B=batch, S=max_seq_length of the calibration records.

  dynamic  quantize_dynamic: QInt8 weights, activations quantized at run time;
           MatMul -> MatMulInteger and the fused Attention -> QAttention.
  static   quantize_static, QDQ format, int8 weights per channel and int8
           activations whose ranges come from `calibration_examples` records
           of the train split (MinMax). QDQ has no quantized Attention, so the
           fused Attention (its Q/K/V projections included) stays float32; the
           attention output, FFN, pooler and head MatMuls run in int8 (ONNX
           Runtime folds their Q/DQ pairs into QLinearMatMul when it loads).

Both run on the optimized graph, whose contrib ops (Attention,
SkipLayerNormalization, ...) the ONNX shape inference does not know: the
quantizer needs every tensor's type, so ONNX Runtime's symbolic shape
inference annotates the graph first.
"""

import numpy as np
import onnx
from onnxruntime.quantization import CalibrationDataReader
from onnxruntime.quantization import QuantFormat
from onnxruntime.quantization import QuantType
from onnxruntime.quantization import quantize_dynamic
from onnxruntime.quantization import quantize_static
from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

from modeling.evaluation import onnx_graph
from pipeline.core import kinds
from pipeline.core.errors import ConfigError, InputError
from pipeline.inputs import classification_dataset as cds
from pipeline.inputs import qa_dataset

MODES = ("none", "dynamic", "static")
CALIBRATION_SPLIT = "train"
CALIBRATION_BATCH = 16
_CLASSIFICATION = (kinds.CLASSIFICATION_RECORDS, kinds.TASK_DISTILL_RECORDS)
_QA = (kinds.QA_RECORDS, kinds.QA_DISTILL_RECORDS)
# The records a calibration set may come from, by the model's head (the
# encoder's inputs are the same in both kinds).
_CALIBRATION_KINDS = {"classifier": _CLASSIFICATION, "span": _QA, "encoder": _CLASSIFICATION + _QA}


def check_mode(mode):
  if mode not in MODES:
    raise ConfigError(f"quantize must be one of {MODES}, got {mode!r}")


def annotate_shapes(src, dst):
  """Writes `src` with every tensor's type and shape inferred (contrib ops too)."""
  model = SymbolicShapeInference.infer_shapes(onnx.load(src), auto_merge=True)
  onnx.save(model, dst)


def quantize(src, dst, mode, reader=None):
  """Writes the int8 graph of the annotated fp32 graph `src` to `dst`."""
  if mode == "dynamic":
    quantize_dynamic(src, dst, op_types_to_quantize=["MatMul", "Gemm", "Attention"],
                     weight_type=QuantType.QInt8, per_channel=False)
  elif mode == "static":
    quantize_static(src, dst, reader, quant_format=QuantFormat.QDQ, per_channel=True,
                    op_types_to_quantize=["MatMul", "Gemm"],
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)
  else:
    raise ConfigError(f"not a quantization mode: {mode!r}")


class FeedReader(CalibrationDataReader):
  """The calibration feeds, once, in order (what quantize_static asks for)."""

  def __init__(self, feeds):
    self._feeds = iter(feeds)

  def get_next(self):
    return next(self._feeds, None)


def _records_dataset(calibration_dir, vocab_file, head):
  """(tf.data batches of the train split, manifest) of vocab-checked records."""
  kind, manifest = kinds.read(calibration_dir, *_CALIBRATION_KINDS[head])
  kinds.check_vocab(manifest, vocab_file)
  if kind in _CLASSIFICATION:
    spec = cds.TaskSpec.from_manifest(manifest)
    batches = cds.eval_dataset(calibration_dir, spec, CALIBRATION_BATCH, CALIBRATION_SPLIT)
  else:
    spec = qa_dataset.QaSpec.from_manifest(manifest)
    batches = qa_dataset.eval_dataset(calibration_dir, spec, CALIBRATION_BATCH,
                                      CALIBRATION_SPLIT)
  return batches, manifest


def _check_fits(manifest, bert_config):
  """Records' ids and lengths must be ones the model has embeddings for."""
  config = manifest["config"]
  if int(config["vocab_size"]) > bert_config.vocab_size:
    raise InputError(manifest["_dir"], f"vocab_size {config['vocab_size']} exceeds the "
                     f"model's {bert_config.vocab_size}: made with another vocab")
  if int(config["max_seq_length"]) > bert_config.max_position_embeddings:
    raise InputError(manifest["_dir"], f"max_seq_length {config['max_seq_length']} exceeds "
                     f"the model's max_position_embeddings "
                     f"{bert_config.max_position_embeddings}")


def calibration_feeds(calibration_dir, vocab_file, bert_config, head, max_examples):
  """(feeds: list of {input name: int32 [B,S]}, info) from the train split.

  Raises:
    ConfigError: no vocab file, or calibration_examples < 1.
    InputError: records of another kind or vocab, too long, or no train split.
  """
  if not vocab_file:
    raise ConfigError("static quantization needs the model's vocab_file (the calibration "
                      "records must be made with it)")
  if isinstance(max_examples, bool) or not isinstance(max_examples, int) or max_examples < 1:
    raise ConfigError(f"calibration_examples must be a positive int, got {max_examples!r}")
  batches, manifest = _records_dataset(calibration_dir, vocab_file, head)
  _check_fits(manifest, bert_config)
  feeds, count = [], 0
  for batch in batches:
    take = min(max_examples - count, int(batch["input_ids"].shape[0]))
    feeds.append({n: np.asarray(batch[n][:take], np.int32) for n in onnx_graph.INPUTS})
    count += take
    if count >= max_examples:
      break
  if not count:
    raise InputError(calibration_dir, f"no {CALIBRATION_SPLIT} records to calibrate on")
  return feeds, {"dir": manifest["_dir"], "stage": manifest["stage"],
                 "manifest_sha256": manifest["_sha256"], "split": CALIBRATION_SPLIT,
                 "examples": count, "vocab_sha256": manifest["config"].get("vocab_sha256")}
