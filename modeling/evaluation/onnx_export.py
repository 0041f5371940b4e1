"""tools/export.py --format=onnx: a checkpoint as an ONNX Runtime graph, fp32 and int8.

Shape legend: B=batch, S=sequence length, H=hidden size, C=number of labels.

What is exported follows the checkpoint's head (token ids in, int32 [B,S],
dynamic B and S; raw-text tokenization stays in the SavedModel export, tf_text
ops have no ONNX form):
  classifier  -> logits [B,C]
  span model  -> start_logits, end_logits [B,S]
  pretraining -> sequence_output [B,S,H], pooled_output [B,H]: the encoder,
      as the SavedModel's `encoder` signature. MLM logits at every position
      would be [B,S,V] (V=30,522 for BERT-base: 15.6 MB per 128-token row)
      for a fill-mask use nobody serves from ONNX; embeddings and fine-tuning
      features are what a pretrained encoder is exported for.

Steps, each checked against the Keras model on the same random batches
(refused past FP32_TOLERANCE, nothing published): the graph written from the
weights (onnx_graph.py); ONNX Runtime's BERT fusions (optimize_model);
optionally int8 (onnx_quantize.py), whose difference and argmax agreement
are reported, refused only when absurd (not finite, or off by more than the
outputs' own range).

Output, written beside `export_dir` and renamed into place: model.onnx (the
optimized fp32 graph), model.int8.onnx when quantized, onnx_export.json.
"""

import json
import logging
import os
import shutil

import numpy as np
import onnx
import onnxruntime as ort
from onnxruntime.transformers import optimizer
from onnxruntime.transformers.fusion_options import FusionOptions

from modeling.checkpoints import loading
from modeling.evaluation import onnx_graph
from modeling.evaluation import onnx_quantize
from modeling.evaluation import serving_layout as layout
from modeling.evaluation import task_evaluation
from modeling.models import classification
from modeling.models import heads
from modeling.models import span
from modeling.networks import bert as bert_lib
from modeling.training import pretraining
from pipeline.core import stage
from pipeline.core.errors import ConfigError, InputError

MODEL_FILE = "model.onnx"
INT8_FILE = "model.int8.onnx"
INFO_FILE = "onnx_export.json"
FP32_TOLERANCE = 1e-3  # Max abs difference to Keras (observed: ~1e-7).
# What optimize_model can fuse in a BERT graph, and which of them we expect.
FUSIONS = ("EmbedLayerNormalization", "Attention", "SkipLayerNormalization", "Gelu",
           "BiasGelu", "FastGelu", "LayerNormalization")
VERIFY_SHAPES = ((8, 64), (1, 5))  # (B, S), capped at max_position_embeddings.


def export_checkpoint(config):
  """Exports config.checkpoint as ONNX (see the module doc); returns the directory.

  Reads ExportConfig's checkpoint, export_dir, version, bert_config_file,
  input_dir and vocab_file (classifiers: the records fix C and the vocab),
  quantize ("none" | "dynamic" | "static"), calibration_dir and
  calibration_examples (static).
  """
  mode = getattr(config, "quantize", None) or "none"
  onnx_quantize.check_mode(mode)
  if mode == "static" and not getattr(config, "calibration_dir", None):
    raise ConfigError("static quantization needs calibration_dir (classification or QA "
                      "records made with the model's vocab)")
  model, info = load_model(config)
  info = dict(info, checkpoint=os.path.abspath(config.checkpoint))
  return export_model(model, _target_dir(config), quantize=mode,
                      calibration_dir=getattr(config, "calibration_dir", None),
                      calibration_examples=getattr(config, "calibration_examples", 300),
                      vocab_file=config.vocab_file, info=info)


def _target_dir(config):
  version = getattr(config, "version", None)
  if version is None:
    return config.export_dir
  return layout.versioned_export_dir(config.export_dir, version)


def _explicit_config(config):
  if not config.bert_config_file:
    return None
  return bert_lib.load_config(config.bert_config_file,
                              pretraining.gelu_convention_for(config.checkpoint))


def load_model(config):
  """(float32 model, info) for config.checkpoint: a classifier, span model or encoder.

  Raises:
    InputError: nothing loadable, a config or weights that do not fit, or
      (input_dir given) records the classifier does not fit.
  """
  path = config.checkpoint
  if getattr(config, "input_dir", None):
    inp = task_evaluation.read_task_records(config.input_dir, config.vocab_file)
    model = task_evaluation.load_classifier(path, inp, config.bert_config_file)
    return model, {"records": inp.dir, "labels": list(inp.spec.labels)}
  try:
    bert_config = _explicit_config(config)
    if classification.stored_num_labels(path):
      return classification.load_classifier(path, "float32", config=bert_config), {}
    if span.holds_span_head(path):
      return span.load_span_model(path, bert_config, "float32"), {}
    model = heads.BertPretrainer(bert_config or loading.stored_config(path), dtype="float32")
    loading.load_checkpoint(bert_lib.ensure_built(model), path)
    return model, {}
  except (OSError, ValueError) as e:
    raise InputError(path, str(e)) from None


def verification_feeds(bert_config, seed=0):
  """Random right-padded batches {input name: int32 [B,S]} at VERIFY_SHAPES."""
  rng = np.random.default_rng(seed)
  feeds = []
  for batch, length in VERIFY_SHAPES:
    length = min(length, bert_config.max_position_embeddings)
    ids = rng.integers(0, bert_config.vocab_size, (batch, length), dtype=np.int32)
    lengths = rng.integers(1, length + 1, batch)
    mask = (np.arange(length)[None] < lengths[:, None]).astype(np.int32)
    segments = (np.arange(length)[None] >= lengths[:, None] // 2).astype(np.int32)
    segments *= mask * int(bert_config.type_vocab_size > 1)
    feeds.append({"input_ids": ids * mask, "input_mask": mask, "segment_ids": segments})
  return feeds


def keras_outputs(model, feeds):
  """[{output name: float32 numpy}] of the Keras model, per feed."""
  names = onnx_graph.output_names(model)
  call = model if onnx_graph.head_kind(model) != "encoder" else bert_lib.backbone(model)
  results = []
  for feed in feeds:
    outputs = call(feed, training=False)
    results.append({n: np.asarray(outputs[n], np.float32) for n in names})
  return results


def onnx_outputs(path, feeds, names):
  session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
  return [dict(zip(names, session.run(list(names), feed))) for feed in feeds]


def compare(got, expected, feeds):
  """{max_abs_diff, mean_abs_diff, argmax_agreement (None for the encoder)}."""
  diffs = [np.abs(g[n] - e[n]) for g, e in zip(got, expected) for n in e]
  finite = all(np.isfinite(g[n]).all() for g in got for n in g)
  agree = [_argmax_agreement(g, e, f) for g, e, f in zip(got, expected, feeds)]
  agree = [a for a in agree if a is not None]
  return {"max_abs_diff": float(max(d.max() for d in diffs)) if finite else float("inf"),
          "mean_abs_diff": float(np.mean(np.concatenate([d.ravel() for d in diffs]))),
          "argmax_agreement": float(np.mean(np.concatenate(agree))) if agree else None}


def _argmax_agreement(got, expected, feed):
  """Per-row agreement of predicted classes / span ends (padding excluded), or None."""
  if "logits" in expected:
    return got["logits"].argmax(-1) == expected["logits"].argmax(-1)
  if "start_logits" not in expected:
    return None
  padding = (1 - feed["input_mask"]) * -1e9
  return np.concatenate([(got[n] + padding).argmax(-1) == (expected[n] + padding).argmax(-1)
                         for n in ("start_logits", "end_logits")])


def _checked(step, path, feeds, reference, names, tolerance):
  """compare() of the graph at `path`; raises InputError past `tolerance`."""
  result = compare(onnx_outputs(path, feeds, names), reference, feeds)
  if not result["max_abs_diff"] <= tolerance:
    raise InputError(path, f"{step} differs from the Keras model by "
                     f"{result['max_abs_diff']:.3g} (tolerance {tolerance:g}): not exported")
  return dict(result, tolerance=tolerance)


def optimize(src, dst, bert_config):
  """ORT's BERT fusions of `src` into `dst`; returns {fused op: count} (non-zero).

  opt_level=0: the Python fusions only (ONNX Runtime applies its own graph
  optimizations when a session loads the model anyway; its opt_level >= 1
  path imports torch in onnxruntime 1.31). The raw 2D attention mask is kept
  (not a mask index), so masks with holes stay exact.
  """
  options = FusionOptions("bert")
  options.use_raw_attention_mask(True)
  # Its "producer not matched: expected pytorch" warning is about the graph's
  # author, not its pattern: the fusion counts below say what matched.
  logging.getLogger("onnxruntime.transformers.optimizer").setLevel(logging.ERROR)
  model = optimizer.optimize_model(src, model_type="bert", opt_level=0,
                                   num_heads=bert_config.num_attention_heads,
                                   hidden_size=bert_config.hidden_size,
                                   optimization_options=options)
  model.save_model_to_file(dst)
  stats = model.get_fused_operator_statistics()
  return {op: stats.get(op, 0) for op in FUSIONS if stats.get(op, 0)}


def expected_fusions(bert_config):
  """What a fully fused L-layer graph holds: one EmbedLayerNormalization, L
  Attention, 2L SkipLayerNormalization, L BiasGelu (erf) / FastGelu (tanh)."""
  layers = bert_config.num_hidden_layers
  expected = {"EmbedLayerNormalization": 1, "Attention": layers,
              "SkipLayerNormalization": 2 * layers}
  if bert_config.hidden_act == "gelu":
    expected["BiasGelu"] = layers
  elif bert_config.hidden_act != "relu":
    expected["FastGelu"] = layers
  return expected


def _quantize_step(mode, work, feeds, reference, names, calibration):
  """Writes INT8_FILE into `work`; returns its report."""
  annotated = os.path.join(work, "annotated.onnx")
  onnx_quantize.annotate_shapes(os.path.join(work, MODEL_FILE), annotated)
  reader = onnx_quantize.FeedReader(calibration[0]) if calibration else None
  onnx_quantize.quantize(annotated, os.path.join(work, INT8_FILE), mode, reader)
  os.remove(annotated)
  path = os.path.join(work, INT8_FILE)
  result = compare(onnx_outputs(path, feeds, names), reference, feeds)
  scale = max(float(np.ptp(np.concatenate([e[n].ravel() for e in reference for n in e]))), 1.0)
  if not result["max_abs_diff"] <= scale:
    raise InputError(path, f"int8 ({mode}) outputs are off by {result['max_abs_diff']:.3g}, "
                     f"more than the outputs' range {scale:.3g}: not exported")
  return dict(result, mode=mode, calibration=calibration[1] if calibration else None)


def export_model(model, target_dir, quantize="none", calibration_dir=None,
                 calibration_examples=300, vocab_file=None, info=None):
  """Writes model.onnx (+ model.int8.onnx) and onnx_export.json into target_dir.

  Written to a sibling temp directory and renamed in: target_dir is either
  untouched or complete (an existing one is replaced).
  """
  onnx_quantize.check_mode(quantize)
  config, head = bert_lib.backbone(model).config, onnx_graph.head_kind(model)
  calibration = None
  if quantize == "static":
    calibration = onnx_quantize.calibration_feeds(calibration_dir, vocab_file, config, head,
                                                  calibration_examples)
  target_dir = os.path.abspath(target_dir)
  work = f"{target_dir}.tmp.{os.getpid()}"
  shutil.rmtree(work, ignore_errors=True)
  os.makedirs(work)
  try:
    report = _write_exports(model, work, quantize, calibration)
    report.update(info or {})
    _write_info(work, report)
    os.makedirs(os.path.dirname(target_dir), exist_ok=True)
    stage.replace_directory(work, target_dir)
  finally:
    shutil.rmtree(work, ignore_errors=True)
  print(f"export: onnx {head} -> {target_dir} (fusions {report['fusions']}"
        f"{', int8 ' + quantize if quantize != 'none' else ''})")
  return target_dir


def _write_exports(model, work, quantize, calibration):
  """The graphs, each checked; returns the report (without file sizes)."""
  config, names = bert_lib.backbone(model).config, onnx_graph.output_names(model)
  feeds = verification_feeds(config)
  reference = keras_outputs(model, feeds)
  raw, fused = os.path.join(work, "raw.onnx"), os.path.join(work, MODEL_FILE)
  onnx.save(onnx_graph.build_model(model), raw)
  checks = {"fp32": _checked("the fp32 graph", raw, feeds, reference, names, FP32_TOLERANCE)}
  fusions = optimize(raw, fused, config)
  os.remove(raw)
  checks["optimized"] = _checked("the optimized graph", fused, feeds, reference, names,
                                 FP32_TOLERANCE)
  expected = expected_fusions(config)
  report = {"head": onnx_graph.head_kind(model), "opset": onnx_graph.OPSET,
            "inputs": {n: "int32 [batch, sequence]" for n in onnx_graph.INPUTS},
            "outputs": list(names), "bert_config": config.to_dict(),
            "fusions": fusions, "fusions_expected": expected,
            "fusions_missing": {op: n - fusions.get(op, 0) for op, n in expected.items()
                                if fusions.get(op, 0) < n},
            "verification": dict(checks, batches=[list(f["input_ids"].shape) for f in feeds]),
            "quantization": {"mode": quantize}, "onnx": onnx.__version__,
            "onnxruntime": ort.__version__}
  if quantize != "none":
    report["quantization"] = _quantize_step(quantize, work, feeds, reference, names,
                                            calibration)
  return report


def _write_info(work, report):
  report["files"] = {name: {"bytes": os.path.getsize(os.path.join(work, name)),
                            "sha256": stage.file_sha256(os.path.join(work, name))}
                     for name in sorted(os.listdir(work))}
  with open(os.path.join(work, INFO_FILE), "w", encoding="utf-8") as f:
    f.write(json.dumps(report, indent=2, sort_keys=True) + "\n")


