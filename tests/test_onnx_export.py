"""ONNX export: graphs equal to Keras, ORT's BERT fusions, int8 dynamic and static."""

import dataclasses
import json
import os
from typing import Optional

import numpy as np
import onnx
import pytest
import tensorflow as tf

from modeling.evaluation import onnx_export
from modeling.evaluation import onnx_graph
from modeling.models import classification
from modeling.models import heads
from modeling.models import span
from modeling.networks import bert as bert_lib
from pipeline.core.errors import InputError
from tests import classification_fixtures as fixtures

TINY = bert_lib.BertConfig(vocab_size=fixtures.VOCAB_SIZE, hidden_size=32, num_hidden_layers=2,
                           num_attention_heads=4, intermediate_size=64,
                           max_position_embeddings=32)
FULLY_FUSED = {"EmbedLayerNormalization": 1, "Attention": 2, "SkipLayerNormalization": 4}


@dataclasses.dataclass(frozen=True, kw_only=True)
class Config:  # ExportConfig's fields, as tools/export.py --format=onnx fills them.
  checkpoint: str
  export_dir: str
  bert_config_file: Optional[str] = None
  input_dir: Optional[str] = None
  vocab_file: Optional[str] = None
  version: Optional[int] = None
  format: str = "onnx"
  quantize: str = "none"
  calibration_dir: Optional[str] = None
  calibration_examples: int = 300


def _model(kind, act="gelu"):
  config = TINY.replace(hidden_act=act)
  model = {"classifier": lambda: heads.BertClassifier(config, 3),
           "span": lambda: heads.BertSpanLabeler(config),
           "pretrainer": lambda: heads.BertPretrainer(config)}[kind]()
  bert_lib.ensure_built(model)
  # Spread the head's logits so int8 rounding rarely flips an argmax.
  head = getattr(model, "classifier", None) or getattr(model, "span_outputs", None)
  if head is not None:
    head.kernel.assign(head.kernel * 50.0)
  return model


def _info(directory):
  with open(os.path.join(directory, onnx_export.INFO_FILE), encoding="utf-8") as f:
    return json.load(f)


@pytest.fixture(scope="module")
def task(tmp_path_factory):
  root = tmp_path_factory.mktemp("task")
  vocab = fixtures.write_vocab(str(root / "vocab.txt"))
  splits = {"train": fixtures.make_examples("single", 48, seed=1),
            "dev": fixtures.make_examples("single", 8, seed=2)}
  records = fixtures.write_task(str(root / "records"), vocab, "single", splits)
  return vocab, records


@pytest.mark.parametrize("kind,act,gelu", [("classifier", "gelu", "BiasGelu"),
                                           ("span", "gelu_new", "FastGelu"),
                                           ("pretrainer", "gelu", "BiasGelu")])
def test_fp32_export_matches_keras_and_is_fused(tmp_path, kind, act, gelu):
  model = _model(kind, act)
  out = onnx_export.export_model(model, str(tmp_path / "onnx"))
  assert sorted(os.listdir(out)) == [onnx_export.MODEL_FILE, onnx_export.INFO_FILE]
  info = _info(out)
  assert info["fusions"] == dict(FULLY_FUSED, **{gelu: 2})
  assert info["fusions_missing"] == {}
  for step in ("fp32", "optimized"):
    assert info["verification"][step]["max_abs_diff"] < 1e-4
  # Dynamic batch and sequence axes, and the outputs of each head.
  feeds = onnx_export.verification_feeds(TINY, seed=7)
  expected = onnx_export.keras_outputs(model, feeds)
  got = onnx_export.onnx_outputs(os.path.join(out, onnx_export.MODEL_FILE), feeds,
                                 onnx_graph.output_names(model))
  assert onnx_export.compare(got, expected, feeds)["max_abs_diff"] < 1e-4
  assert {"classifier": ["logits"], "span": ["start_logits", "end_logits"],
          "pretrainer": ["sequence_output", "pooled_output"]}[kind] == info["outputs"]
  ops = {n.op_type for n in onnx.load(os.path.join(out, onnx_export.MODEL_FILE)).graph.node}
  assert {"Attention", "SkipLayerNormalization", "EmbedLayerNormalization"} <= ops


@pytest.mark.parametrize("kind", ["classifier", "span"])
def test_dynamic_int8_agrees(tmp_path, kind):
  out = onnx_export.export_model(_model(kind), str(tmp_path / "onnx"), quantize="dynamic")
  assert sorted(os.listdir(out)) == [onnx_export.INT8_FILE, onnx_export.MODEL_FILE,
                                     onnx_export.INFO_FILE]
  quant = _info(out)["quantization"]
  assert quant["mode"] == "dynamic" and quant["calibration"] is None
  assert quant["argmax_agreement"] >= 0.75
  ops = {n.op_type for n in onnx.load(os.path.join(out, onnx_export.INT8_FILE)).graph.node}
  assert {"QAttention", "MatMulInteger"} <= ops


def test_static_int8_from_a_classifier_checkpoint(tmp_path, task):
  vocab, records = task
  checkpoint = str(tmp_path / "classifier")
  classification.save_classifier(_model("classifier"), checkpoint)
  config = Config(checkpoint=checkpoint, export_dir=str(tmp_path / "export"), version=2,
                  vocab_file=vocab, quantize="static", calibration_dir=records,
                  calibration_examples=40)
  out = onnx_export.export_checkpoint(config)
  assert out == str(tmp_path / "export" / "2")
  info = _info(out)
  assert info["head"] == "classifier" and info["checkpoint"] == checkpoint
  calibration = info["quantization"]["calibration"]
  assert (calibration["examples"], calibration["split"]) == (40, "train")
  assert info["quantization"]["max_abs_diff"] < 1.0
  ops = {n.op_type for n in onnx.load(os.path.join(out, onnx_export.INT8_FILE)).graph.node}
  assert {"QuantizeLinear", "DequantizeLinear"} <= ops
  assert set(info["files"]) == {onnx_export.MODEL_FILE, onnx_export.INT8_FILE}
  assert sorted(os.listdir(tmp_path / "export")) == ["2"]


def test_calibration_records_of_another_vocab_are_refused(tmp_path, task):
  _, records = task
  other = fixtures.write_vocab(str(tmp_path / "other" / "vocab.txt"))
  with open(other, "a", encoding="utf-8") as f:
    f.write("extra\n")
  with pytest.raises(InputError, match="another vocab"):
    onnx_export.export_model(_model("classifier"), str(tmp_path / "onnx"), quantize="static",
                             calibration_dir=records, vocab_file=other)
  assert not os.path.exists(tmp_path / "onnx")


def test_a_graph_that_differs_from_keras_is_refused(tmp_path, monkeypatch):
  build = onnx_graph.build_model

  def corrupted(model):  # One weight changed between export and the check.
    proto = build(model)
    tensor = next(t for t in proto.graph.initializer if t.name == "layer_1/output/bias")
    value = onnx.numpy_helper.to_array(tensor).copy()
    value[0] += 1.0  # Not all of them: LayerNorm would cancel a uniform shift.
    tensor.CopyFrom(onnx.numpy_helper.from_array(value, tensor.name))
    return proto

  monkeypatch.setattr(onnx_graph, "build_model", corrupted)
  target = tmp_path / "export" / "onnx"
  with pytest.raises(InputError, match=r"the fp32 graph differs from the Keras model by"):
    onnx_export.export_model(_model("classifier"), str(target))
  assert not os.path.exists(target)
  assert os.listdir(tmp_path / "export") == []


def test_export_checkpoint_follows_the_stored_head(tmp_path):
  span.save_span_model(_model("span"), str(tmp_path / "span"))
  pretrainer = _model("pretrainer")
  prefix = tf.train.Checkpoint(model=pretrainer).write(str(tmp_path / "run" / "ckpt-1"))
  TINY.to_json_file(str(tmp_path / "run" / "bert_config.json"))
  for checkpoint, head in ((str(tmp_path / "span"), "span"), (prefix, "encoder")):
    out = onnx_export.export_checkpoint(Config(checkpoint=checkpoint,
                                               export_dir=str(tmp_path / head)))
    assert _info(out)["head"] == head
    assert _info(out)["verification"]["optimized"]["max_abs_diff"] < 1e-4
