"""Checkpoint import/export checked against an independent NumPy BERT.

The reference forward pass below is written from the BERT paper/Google's
layout only (it shares no code with modeling/), in float64, and the weights it
uses are written to real TF1 and safetensors files under Google's and HF's
names. Sizes are tiny (H=32, 2 layers, S=8) to stay fast on 2 cores.

GELU: a bert_config.json that comes with a Google TF1 checkpoint means the
tanh approximation by "gelu" (google-research/bert's modeling.py), HF's
config.json means exact erf. So the TF1 cases read their config the Google
way and are checked against a tanh reference, the HF cases against erf.
"""

import json
import math
import os

import keras
import numpy as np
import pytest
from safetensors import numpy as safetensors_numpy
import tensorflow as tf

from modeling.networks import bert
from modeling.checkpoints import google
from modeling.checkpoints import hf
from modeling.checkpoints import loading
from modeling.checkpoints import name_map
from modeling.models import heads

CONFIG = bert.BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2,
                         num_attention_heads=4, intermediate_size=64,
                         max_position_embeddings=16, type_vocab_size=2)
# What reading Google's bert_config.json (hidden_act "gelu") gives.
TF1_CONFIG = bert.BertConfig.from_dict(CONFIG.to_dict(), gelu_convention="google")
B, S, P = 2, 8, 3

# ---------------------------------------------------------------------------
# Reference weights under Google's TF1 names.


def _google_names(config):
  """Google's variable names with their shapes, written out by hand."""
  h, i, v = config.hidden_size, config.intermediate_size, config.vocab_size
  names = {
      "bert/embeddings/word_embeddings": (v, h),
      "bert/embeddings/position_embeddings":
          (config.max_position_embeddings, h),
      "bert/embeddings/token_type_embeddings": (config.type_vocab_size, h),
      "bert/embeddings/LayerNorm/gamma": (h,),
      "bert/embeddings/LayerNorm/beta": (h,),
  }
  for layer in range(config.num_hidden_layers):
    p = f"bert/encoder/layer_{layer}"
    for dense, (n_in, n_out) in (("attention/self/query", (h, h)),
                                 ("attention/self/key", (h, h)),
                                 ("attention/self/value", (h, h)),
                                 ("attention/output/dense", (h, h)),
                                 ("intermediate/dense", (h, i)),
                                 ("output/dense", (i, h))):
      names[f"{p}/{dense}/kernel"] = (n_in, n_out)
      names[f"{p}/{dense}/bias"] = (n_out,)
    for norm in ("attention/output/LayerNorm", "output/LayerNorm"):
      names[f"{p}/{norm}/gamma"] = (h,)
      names[f"{p}/{norm}/beta"] = (h,)
  names.update({
      "bert/pooler/dense/kernel": (h, h),
      "bert/pooler/dense/bias": (h,),
      "cls/predictions/transform/dense/kernel": (h, h),
      "cls/predictions/transform/dense/bias": (h,),
      "cls/predictions/transform/LayerNorm/gamma": (h,),
      "cls/predictions/transform/LayerNorm/beta": (h,),
      "cls/predictions/output_bias": (v,),
      "cls/seq_relationship/output_weights": (2, h),
      "cls/seq_relationship/output_bias": (2,),
  })
  return names


def _random_weights(config, seed=0):
  rng = np.random.default_rng(seed)
  weights = {}
  for name, shape in _google_names(config).items():
    if name.endswith("/gamma"):
      value = 1.0 + 0.1 * rng.standard_normal(shape)
    else:
      # Larger than BERT's 0.02 init so every path visibly moves outputs.
      value = 0.2 * rng.standard_normal(shape)
    weights[name] = value.astype(np.float32)
  return weights


# ---------------------------------------------------------------------------
# Independent NumPy reference forward pass (float64).


def _layer_norm(x, w, scope):
  mean = x.mean(-1, keepdims=True)
  var = ((x - mean) ** 2).mean(-1, keepdims=True)
  return ((x - mean) / np.sqrt(var + 1e-12) * w[f"{scope}/gamma"] +
          w[f"{scope}/beta"])


def _dense(x, w, scope):
  return x @ w[f"{scope}/kernel"] + w[f"{scope}/bias"]


_erf = np.vectorize(math.erf)


def gelu_erf(x):
  """Exact GELU (HF's "gelu")."""
  return 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)))


def gelu_tanh(x):
  """google-research/bert's "gelu": the tanh approximation."""
  return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) *
                                  (x + 0.044715 * x ** 3)))


def _softmax(x):
  e = np.exp(x - x.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def _attention(x, w, scope, mask, heads_n):
  b, s, h = x.shape
  d = h // heads_n
  split = lambda t: t.reshape(b, s, heads_n, d).transpose(0, 2, 1, 3)
  q = split(_dense(x, w, f"{scope}/self/query"))  # [B,N,S,D]
  k = split(_dense(x, w, f"{scope}/self/key"))
  v = split(_dense(x, w, f"{scope}/self/value"))
  scores = q @ k.transpose(0, 1, 3, 2) / math.sqrt(d)  # [B,N,S,S]
  scores += (1.0 - mask[:, None, None, :]) * -10000.0
  context = (_softmax(scores) @ v).transpose(0, 2, 1, 3).reshape(b, s, h)
  return _layer_norm(_dense(context, w, f"{scope}/output/dense") + x, w,
                     f"{scope}/output/LayerNorm")


def reference_forward(w, config, inputs, gelu):
  w = {k: v.astype(np.float64) for k, v in w.items()}
  ids, mask = inputs["input_ids"], inputs["input_mask"].astype(np.float64)
  x = (w["bert/embeddings/word_embeddings"][ids] +
       w["bert/embeddings/token_type_embeddings"][inputs["segment_ids"]] +
       w["bert/embeddings/position_embeddings"][:ids.shape[1]])
  x = _layer_norm(x, w, "bert/embeddings/LayerNorm")
  for layer in range(config.num_hidden_layers):
    p = f"bert/encoder/layer_{layer}"
    x = _attention(x, w, f"{p}/attention", mask, config.num_attention_heads)
    ffn = _dense(gelu(_dense(x, w, f"{p}/intermediate/dense")), w,
                 f"{p}/output/dense")
    x = _layer_norm(ffn + x, w, f"{p}/output/LayerNorm")
  pooled = np.tanh(_dense(x[:, 0], w, "bert/pooler/dense"))
  rows = np.arange(ids.shape[0])[:, None]
  picked = x[rows, inputs["masked_lm_positions"]]  # [B,P,H]
  t = gelu(_dense(picked, w, "cls/predictions/transform/dense"))
  t = _layer_norm(t, w, "cls/predictions/transform/LayerNorm")
  mlm = t @ w["bert/embeddings/word_embeddings"].T + w[
      "cls/predictions/output_bias"]
  nsp = pooled @ w["cls/seq_relationship/output_weights"].T + w[
      "cls/seq_relationship/output_bias"]
  return {"sequence_output": x, "pooled_output": pooled, "mlm_logits": mlm,
          "nsp_logits": nsp}


def _inputs(seed=1):
  rng = np.random.default_rng(seed)
  mask = np.ones((B, S), np.int32)
  mask[1, 5:] = 0  # Second row is padded, so masking is exercised.
  return {
      "input_ids": rng.integers(0, CONFIG.vocab_size, (B, S)).astype(np.int32),
      "input_mask": mask,
      "segment_ids": (np.arange(S)[None] >= 4).astype(np.int32).repeat(B, 0),
      "masked_lm_positions": np.array([[1, 4, 7], [0, 2, 3]], np.int32),
  }


def _assert_matches_reference(model, weights, keys, gelu):
  inputs = _inputs()
  expected = reference_forward(weights, CONFIG, inputs, gelu)
  got = model(inputs, training=False)
  for key in keys:
    np.testing.assert_allclose(got[key].numpy(), expected[key], rtol=1e-5,
                               atol=1e-5, err_msg=key)


PRETRAINER_KEYS = ("sequence_output", "pooled_output", "mlm_logits",
                   "nsp_logits")

# ---------------------------------------------------------------------------
# Writers for real files in both layouts.


def write_tf1_checkpoint(weights, prefix):
  """Google-style: graph-mode tf.compat.v1 Variables + Saver, exact names."""
  graph = tf.Graph()
  with graph.as_default():
    for name, value in weights.items():
      tf.compat.v1.Variable(value, name=name)
    saver = tf.compat.v1.train.Saver()
    with tf.compat.v1.Session() as session:
      session.run(tf.compat.v1.global_variables_initializer())
      return saver.save(session, os.fspath(prefix), write_meta_graph=False)


def to_hf_names(weights, prefix="bert."):
  """Google names -> HF names, transposing dense kernels to [out,in]."""
  hf = {}
  for name, value in weights.items():
    parts = name.split("/")
    if parts[0] == "bert":
      parts[0] = prefix.rstrip(".") if prefix else None
    parts = [p for p in parts if p]
    if parts[-1] == "kernel":
      parts[-1], value = "weight", value.T
    elif parts[-1] == "gamma":
      parts[-1] = "weight"
    elif parts[-1] == "beta":
      parts[-1] = "bias"
    elif parts[-1] in ("word_embeddings", "position_embeddings",
                       "token_type_embeddings"):
      parts.append("weight")
    joined = ".".join(parts).replace("encoder.layer_", "encoder.layer.")
    joined = {"cls.predictions.output_bias": "cls.predictions.bias",
              "cls.seq_relationship.output_weights":
                  "cls.seq_relationship.weight",
              "cls.seq_relationship.output_bias":
                  "cls.seq_relationship.bias"}.get(joined, joined)
    hf[joined] = np.ascontiguousarray(value)
  return hf


def write_hf_dir(weights, directory, extra=None):
  os.makedirs(directory, exist_ok=True)
  tensors = to_hf_names(weights)
  # BertForPreTraining also saves the tied decoder.
  tensors["cls.predictions.decoder.weight"] = tensors[
      "bert.embeddings.word_embeddings.weight"]
  tensors.update(extra or {})
  safetensors_numpy.save_file(tensors,
                              os.path.join(directory, "model.safetensors"))
  hf_config = dict(CONFIG.to_dict(), model_type="bert", layer_norm_eps=1e-12,
                   architectures=["BertForPreTraining"], pad_token_id=0)
  with open(os.path.join(directory, "config.json"), "w") as f:
    json.dump(hf_config, f)
  return directory


@pytest.fixture(scope="module")
def weights():
  return _random_weights(CONFIG)


@pytest.fixture(scope="module")
def tf1_prefix(weights, tmp_path_factory):
  with_slots = dict(weights)
  # Training leftovers that loading must skip.
  for name in ("bert/pooler/dense/kernel", "cls/predictions/output_bias"):
    with_slots[f"{name}/adam_m"] = np.zeros_like(weights[name])
    with_slots[f"{name}/adam_v"] = np.zeros_like(weights[name])
  with_slots["global_step"] = np.array(7, np.int64)
  directory = tmp_path_factory.mktemp("google")
  # Google's file: "gelu" there is the tanh form.
  CONFIG.to_json_file(directory / "bert_config.json")
  return write_tf1_checkpoint(with_slots, directory / "bert_model.ckpt")


# ---------------------------------------------------------------------------
# TF1 tests.


def test_tf1_writer_uses_reference_names(tf1_prefix):
  names = {name for name, _ in tf.train.list_variables(tf1_prefix)}
  assert set(_google_names(CONFIG)) <= names
  assert "bert/encoder/layer_1/attention/self/query/kernel" in names
  assert "cls/seq_relationship/output_weights" in names


def test_tf1_checkpoint_matches_numpy_reference(weights, tf1_prefix):
  config = bert.BertConfig.from_json_file(
      os.path.join(os.path.dirname(tf1_prefix), "bert_config.json"),
      gelu_convention="google")
  assert config == TF1_CONFIG and config.hidden_act == "gelu_new"
  model = heads.BertPretrainer(config)
  result = google.load_tf1_checkpoint(model, tf1_prefix)
  assert len(result.loaded) == len(_google_names(CONFIG))
  assert "global_step" in result.ignored
  assert "bert/pooler/dense/kernel/adam_m" in result.ignored
  _assert_matches_reference(model, weights, PRETRAINER_KEYS, gelu_tanh)


def test_gelu_conventions_are_distinguishable(weights):
  # The two references differ well above the 1e-5 tolerance, so the TF1
  # and HF tests really check which GELU each import uses.
  inputs = _inputs()
  erf = reference_forward(weights, CONFIG, inputs, gelu_erf)["mlm_logits"]
  tanh = reference_forward(weights, CONFIG, inputs, gelu_tanh)["mlm_logits"]
  assert np.abs(erf - tanh).max() > 1e-4


def test_erf_model_with_google_config_is_a_mismatch(tf1_prefix):
  # Built from Google's file read the HF way: the loader says so.
  with pytest.raises(ValueError, match="config mismatch.*hidden_act.*gelu_new"):
    google.load_tf1_checkpoint(heads.BertPretrainer(CONFIG),
                                           tf1_prefix)


def test_google_config_round_trip_keeps_google_gelu(tmp_path):
  path = tmp_path / "bert_config.json"
  TF1_CONFIG.to_json_file(path, gelu_convention="google")
  assert json.loads(path.read_text())["hidden_act"] == "gelu"
  assert bert.BertConfig.from_json_file(path, "google") == TF1_CONFIG
  with pytest.raises(ValueError, match="exact-erf GELU"):
    CONFIG.to_json_string(gelu_convention="google")


def test_tf1_checkpoint_into_bare_encoder_skips_heads(weights, tf1_prefix):
  directory = os.path.dirname(tf1_prefix)
  # Google's downloads have no "checkpoint" state file: find the .index.
  if os.path.exists(os.path.join(directory, "checkpoint")):
    os.remove(os.path.join(directory, "checkpoint"))
  model = bert.BertModel(TF1_CONFIG)
  result = loading.load_checkpoint(model, directory)
  assert "cls/predictions/output_bias" in result.ignored
  _assert_matches_reference(model, weights, ("sequence_output",
                                             "pooled_output"), gelu_tanh)


def test_tf1_errors_list_all_problems(weights, tmp_path):
  broken = dict(weights)
  del broken["bert/encoder/layer_1/output/dense/bias"]
  broken["bert/encoder/layer_0/attention/self/extra"] = np.zeros(3, np.float32)
  broken["bert/pooler/dense/kernel"] = np.zeros((32, 31), np.float32)
  prefix = write_tf1_checkpoint(broken, tmp_path / "bert_model.ckpt")
  model = bert.ensure_built(heads.BertPretrainer(TF1_CONFIG))
  before = model.bert.pooler.bias.numpy().copy()
  with pytest.raises(ValueError) as error:
    google.load_tf1_checkpoint(model, prefix)
  message = str(error.value)
  assert "missing [bert/encoder/layer_1/output/dense/bias]" in message
  assert "unexpected [bert/encoder/layer_0/attention/self/extra]" in message
  assert ("shape mismatch [bert/pooler/dense/kernel: ckpt (32, 31) vs model "
          "(32, 32)]") in message
  # Atomic: nothing was assigned.
  np.testing.assert_array_equal(model.bert.pooler.bias.numpy(), before)


def test_tf1_config_mismatch_is_reported(weights, tmp_path):
  prefix = write_tf1_checkpoint(weights, tmp_path / "bert_model.ckpt")
  CONFIG.replace(num_attention_heads=8).to_json_file(
      tmp_path / "bert_config.json")
  with pytest.raises(ValueError, match="config mismatch.*num_attention_heads"):
    google.load_tf1_checkpoint(heads.BertPretrainer(TF1_CONFIG),
                                           prefix)


def test_tf1_export_round_trip(weights, tf1_prefix, tmp_path):
  source = heads.BertPretrainer(TF1_CONFIG)
  google.load_tf1_checkpoint(source, tf1_prefix)
  prefix = google.save_tf1_checkpoint(source,
                                                  tmp_path / "bert_model.ckpt")
  stored = dict(tf.train.list_variables(prefix))
  assert stored == {name: list(shape)
                    for name, shape in _google_names(CONFIG).items()}
  # Written for Google's code: its "gelu" is what the model computes.
  written = tmp_path / "bert_config.json"
  assert json.loads(written.read_text())["hidden_act"] == "gelu"
  assert bert.BertConfig.from_json_file(written, "google") == TF1_CONFIG
  target = heads.BertPretrainer(TF1_CONFIG)
  loading.load_checkpoint(target, prefix)
  _assert_matches_reference(target, weights, PRETRAINER_KEYS, gelu_tanh)


# ---------------------------------------------------------------------------
# Hugging Face safetensors tests.


def test_hf_safetensors_matches_numpy_reference(weights, tmp_path):
  directory = write_hf_dir(weights, tmp_path / "hf")
  model = heads.BertPretrainer(CONFIG)
  result = loading.load_checkpoint(model, directory)
  assert "cls.predictions.decoder.weight" in result.ignored
  _assert_matches_reference(model, weights, PRETRAINER_KEYS, gelu_erf)


def test_hf_bare_model_names_and_legacy_layer_norm(weights, tmp_path):
  # As saved by HF BertModel: no "bert." prefix, old gamma/beta names.
  tensors = {}
  for name, value in to_hf_names(weights, prefix="").items():
    if name.startswith("cls."):
      continue
    if ".LayerNorm." in name:
      name = name.replace(".weight", ".gamma").replace(".bias", ".beta")
    tensors[name] = value
  assert "embeddings.LayerNorm.gamma" in tensors
  path = os.path.join(tmp_path, "encoder.safetensors")
  safetensors_numpy.save_file(tensors, path)
  model = bert.BertModel(CONFIG)
  loading.load_checkpoint(model, path)
  _assert_matches_reference(model, weights, ("sequence_output",
                                             "pooled_output"), gelu_erf)


def test_hf_errors_list_all_problems(weights, tmp_path):
  directory = tmp_path / "hf"
  write_hf_dir(weights, directory)
  tensors = safetensors_numpy.load_file(directory / "model.safetensors")
  del tensors["bert.encoder.layer.0.intermediate.dense.bias"]
  tensors["bert.encoder.layer.0.surprise"] = np.zeros(2, np.float32)
  tensors["cls.predictions.bias"] = np.zeros(49, np.float32)
  tensors["cls.predictions.decoder.weight"] = np.ones((50, 32), np.float32)
  safetensors_numpy.save_file(tensors, directory / "model.safetensors")
  with pytest.raises(ValueError) as error:
    hf.load_safetensors(heads.BertPretrainer(CONFIG), directory)
  message = str(error.value)
  assert "missing [bert.encoder.layer.0.intermediate.dense.bias]" in message
  assert "unexpected [bert.encoder.layer.0.surprise]" in message
  assert "cls.predictions.bias: ckpt (49,) vs model (50,)" in message
  assert "untied" in message


@pytest.mark.parametrize("filename", ["pytorch_model.bin", "model.pt"])
def test_pickle_files_are_refused(tmp_path, filename):
  path = tmp_path / filename
  path.write_bytes(b"not even a pickle")
  model = bert.BertModel(CONFIG)
  for target in (path, tmp_path):
    with pytest.raises(ValueError, match="refusing to unpickle") as error:
      loading.load_checkpoint(model, target)
    assert "safe_serialization=True" in str(error.value)
  with pytest.raises(ValueError, match="refusing to unpickle"):
    hf.load_safetensors(model, path)


# ---------------------------------------------------------------------------
# This project's own (trainer) checkpoints.


def _write_trainer_checkpoint(model, directory):
  """A checkpoint laid out as the trainer writes it (model + optimizer)."""
  bert.ensure_built(model)
  optimizer = keras.optimizers.AdamW(1e-3)
  optimizer.build(model.trainable_variables)
  os.makedirs(directory, exist_ok=True)
  bert.backbone(model).config.to_json_file(
      os.path.join(directory, "bert_config.json"))
  return tf.train.Checkpoint(model=model, optimizer=optimizer,
                             step=tf.Variable(3, dtype=tf.int64)).write(
                                 os.path.join(directory, "ckpt-3"))


@pytest.fixture(scope="module")
def trained(weights, tmp_path_factory):
  """(prefix, source pretrainer) of a trainer checkpoint with known weights."""
  source = bert.ensure_built(heads.BertPretrainer(CONFIG))
  for param in name_map.model_params(source):
    value = weights[param.tf1_name]
    param.variable.assign(value.T if param.tf1_transposed else value)
  directory = tmp_path_factory.mktemp("own") / "checkpoints"
  return _write_trainer_checkpoint(source, str(directory)), source


@pytest.mark.parametrize("make", [
    lambda: heads.BertPretrainer(CONFIG),
    lambda: bert.BertModel(CONFIG),
    lambda: heads.BertClassifier(CONFIG, num_labels=3)])
def test_own_checkpoint_loads_into_each_model(trained, weights, make):
  prefix, _ = trained
  model = make()
  result = loading.load_checkpoint(model, prefix)
  keys = ("sequence_output", "pooled_output")
  if isinstance(model, heads.BertPretrainer):
    keys = PRETRAINER_KEYS
    assert len(result.loaded) == len(_google_names(CONFIG))
  else:
    assert "cls/predictions/output_bias" in result.ignored
  _assert_matches_reference(model, weights, keys, gelu_erf)


def test_own_checkpoint_directory_and_run_directory(trained, weights):
  prefix, _ = trained
  run_dir = os.path.dirname(os.path.dirname(prefix))
  for path in (os.path.dirname(prefix), run_dir):
    assert loading.resolve_checkpoint(path) == ("own", prefix)
    model = bert.BertModel(CONFIG)
    loading.load_checkpoint(model, path)
    _assert_matches_reference(model, weights, ("sequence_output",
                                               "pooled_output"), gelu_erf)


def test_own_checkpoint_mismatch_is_atomic(trained, tmp_path):
  prefix, _ = trained
  other = CONFIG.replace(vocab_size=60)
  model = bert.ensure_built(heads.BertPretrainer(other))
  before = model.bert.pooler.bias.numpy().copy()
  with pytest.raises(ValueError) as error:
    loading.load_checkpoint(model, prefix)
  message = str(error.value)
  assert "bert/embeddings/word_embeddings: ckpt (50, 32) vs model (60, 32)" in (
      message)
  assert "config mismatch [vocab_size: bert_config.json 50 vs model 60]" in (
      message)
  np.testing.assert_array_equal(model.bert.pooler.bias.numpy(), before)


def test_unreadable_paths(tmp_path):
  model = bert.BertModel(CONFIG)
  with pytest.raises(ValueError, match="not a TF checkpoint prefix"):
    loading.load_checkpoint(model, tmp_path / "nothing_here")
  junk = tmp_path / "junk.safetensors"
  junk.write_bytes(b"junk")
  with pytest.raises(ValueError, match="not a readable safetensors file"):
    loading.load_checkpoint(model, junk)
