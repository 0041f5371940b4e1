"""Tests for modeling/networks/bert.py, heads.py and student_init.py at tiny sizes
(the layers they are built of: test_layers.py)."""

import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from modeling.networks import bert
from modeling.checkpoints import name_map
from modeling.models import heads
from modeling.models import student_init

CONFIG = bert.BertConfig(vocab_size=40, hidden_size=32, num_hidden_layers=2,
                         num_attention_heads=4, intermediate_size=64,
                         max_position_embeddings=32)
B, S, P = 2, 12, 3
GOOGLE_KEYS = {"vocab_size", "hidden_size", "num_hidden_layers",
               "num_attention_heads", "intermediate_size", "hidden_act",
               "hidden_dropout_prob", "attention_probs_dropout_prob",
               "max_position_embeddings", "type_vocab_size",
               "initializer_range"}


def make_inputs(seed=0, padded_from=9):
  rng = np.random.default_rng(seed)
  mask = np.ones((B, S), np.int32)
  mask[1, padded_from:] = 0
  return {
      "input_ids": rng.integers(0, CONFIG.vocab_size, (B, S)).astype(np.int32),
      "input_mask": mask,
      "segment_ids": (np.arange(S)[None] >= 5).astype(np.int32).repeat(B, 0),
      "masked_lm_positions": np.array([[1, 4, 11], [0, 2, 8]], np.int32),
  }


@pytest.fixture(scope="module")
def pretrainer():
  return bert.ensure_built(heads.BertPretrainer(CONFIG))


# --- BertConfig -------------------------------------------------------------


@pytest.mark.parametrize("changes, fragment", [
    ({"hidden_size": 30}, "not divisible"),
    ({"num_hidden_layers": 0}, "num_hidden_layers must be a positive int"),
    ({"vocab_size": 10.0}, "vocab_size must be a positive int"),
    ({"hidden_dropout_prob": 1.0}, "hidden_dropout_prob must be in [0, 1)"),
    ({"attention_probs_dropout_prob": -0.1}, "attention_probs_dropout_prob"),
    ({"hidden_act": "swish"}, "hidden_act must be one of"),
    ({"initializer_range": 0}, "initializer_range"),
])
def test_config_validation(changes, fragment):
  with pytest.raises(ValueError) as error:
    CONFIG.replace(**changes)
  assert fragment in str(error.value)


def test_config_lists_every_problem_at_once():
  with pytest.raises(ValueError) as error:
    bert.BertConfig(vocab_size=0, hidden_dropout_prob=2.0)
  assert "vocab_size" in str(error.value)
  assert "hidden_dropout_prob" in str(error.value)


def test_config_json_round_trip_in_google_format(tmp_path):
  path = tmp_path / "bert_config.json"
  CONFIG.to_json_file(path)
  with open(path) as f:
    assert set(json.load(f)) == GOOGLE_KEYS
  assert bert.BertConfig.from_json_file(path) == CONFIG
  assert bert.BertConfig.from_dict(CONFIG.to_dict()) == CONFIG


def test_config_reads_hf_files(tmp_path):
  hf = dict(CONFIG.to_dict(), model_type="bert", architectures=["BertModel"],
            layer_norm_eps=1e-6, pad_token_id=0)
  path = tmp_path / "config.json"
  path.write_text(json.dumps(hf))
  config = bert.BertConfig.from_json_file(path)
  assert config.layer_norm_eps == 1e-6
  assert config.replace(layer_norm_eps=1e-12) == CONFIG
  assert config.to_dict()["layer_norm_eps"] == 1e-6  # Kept when not default.
  del hf["type_vocab_size"]
  path.write_text(json.dumps(hf))
  with pytest.raises(ValueError, match="missing keys.*type_vocab_size"):
    bert.BertConfig.from_json_file(path)


def test_bundled_configs():
  expected = {"bert_base": (12, 768, 12, 3072),
              "bert_large": (24, 1024, 16, 4096),
              "student_4l_312d": (4, 312, 12, 1200),
              "student_4l_288d": (4, 288, 12, 1152),
              "student_6l_768d": (6, 768, 12, 3072)}
  assert set(expected) | {"tiny_teacher", "tiny_student"} <= set(
      bert.bundled_config_names())
  for name, sizes in expected.items():
    c = bert.load_config(name)
    assert (c.num_hidden_layers, c.hidden_size, c.num_attention_heads,
            c.intermediate_size) == sizes
    assert c.vocab_size == 30522 and c.hidden_act == "gelu"
  assert bert.load_config("tiny_teacher", vocab_size=77).vocab_size == 77


# --- Forward pass -----------------------------------------------------------


def test_output_shapes_and_dtypes(pretrainer):
  out = pretrainer(make_inputs(), training=False, output_hidden_states=True,
                   output_attentions=True)
  h, n, v = CONFIG.hidden_size, CONFIG.num_attention_heads, CONFIG.vocab_size
  assert out["sequence_output"].shape == (B, S, h)
  assert out["pooled_output"].shape == (B, h)
  assert out["mlm_logits"].shape == (B, P, v)
  assert out["nsp_logits"].shape == (B, 2)
  assert len(out["hidden_states"]) == CONFIG.num_hidden_layers + 1
  np.testing.assert_array_equal(out["hidden_states"][-1],
                                out["sequence_output"])
  assert [a.shape for a in out["attention_probs"]] == [(B, n, S, S)] * 2
  np.testing.assert_allclose(tf.reduce_sum(out["attention_probs"][0], -1),
                             1.0, atol=1e-5)
  for key in ("sequence_output", "pooled_output", "mlm_logits", "nsp_logits"):
    assert out[key].dtype == tf.float32
  assert "hidden_states" not in pretrainer(make_inputs(), training=False)


def test_mlm_logits_are_computed_only_at_masked_positions(pretrainer):
  inputs = make_inputs()
  out = pretrainer(inputs, training=False)
  # Reference: the head applied to every position, then the masked ones
  # picked; the pretrainer must give exactly those P rows.
  all_positions = np.tile(np.arange(S, dtype=np.int32), (B, 1))
  table = pretrainer.bert.embeddings.word_embeddings
  every = pretrainer.masked_lm(out["sequence_output"], all_positions, table)
  assert every.shape == (B, S, CONFIG.vocab_size)
  picked = tf.gather(every, inputs["masked_lm_positions"], batch_dims=1)
  np.testing.assert_allclose(out["mlm_logits"], picked, atol=1e-5)
  # Permuting positions permutes logits: they follow the positions given.
  swapped = dict(inputs, masked_lm_positions=inputs["masked_lm_positions"][
      :, ::-1].copy())
  np.testing.assert_allclose(pretrainer(swapped)["mlm_logits"],
                             out["mlm_logits"].numpy()[:, ::-1], atol=1e-5)


def test_attention_mask_hides_padding(pretrainer):
  inputs = make_inputs(padded_from=7)
  changed = {k: v.copy() for k, v in inputs.items()}
  changed["input_ids"][1, 7:] = (changed["input_ids"][1, 7:] + 5) % 40
  changed["segment_ids"][1, 7:] = 0
  out = pretrainer.bert(inputs, training=False, output_attentions=True)
  out2 = pretrainer.bert(changed, training=False)
  np.testing.assert_allclose(out["sequence_output"][1, :7],
                             out2["sequence_output"][1, :7], atol=1e-5)
  np.testing.assert_allclose(out["pooled_output"], out2["pooled_output"],
                             atol=1e-5)
  # Row 0 is unpadded and must be untouched by row 1's change.
  np.testing.assert_allclose(out["sequence_output"][0],
                             out2["sequence_output"][0], atol=1e-6)
  assert np.max(out["attention_probs"][0][1, :, :, 7:]) < 1e-6
  # Without the mask the padded tokens do leak in.
  no_mask = dict(changed, input_mask=np.ones((B, S), np.int32))
  leaked = pretrainer.bert(no_mask, training=False)["sequence_output"]
  assert np.max(np.abs(leaked[1, :7] - out["sequence_output"][1, :7])) > 1e-3


def test_dropout_only_when_training(pretrainer):
  inputs = make_inputs()
  a = pretrainer.bert(inputs, training=False)["sequence_output"]
  b = pretrainer.bert(inputs)["sequence_output"]
  c = pretrainer.bert(inputs, training=True)["sequence_output"]
  np.testing.assert_array_equal(a, b)
  assert np.max(np.abs(a - c)) > 1e-3


def test_gradients_reach_every_variable_in_tf_function(pretrainer):
  inputs = {k: tf.constant(v) for k, v in make_inputs().items()}

  @tf.function
  def gradients(inputs):
    with tf.GradientTape() as tape:
      out = pretrainer(inputs, training=True, output_attentions=True)
      loss = (tf.reduce_mean(out["mlm_logits"]**2) +
              tf.reduce_mean(out["nsp_logits"]**2))
    return tape.gradient(loss, pretrainer.trainable_variables)

  grads = gradients(inputs)
  assert all(g is not None for g in grads)
  table = pretrainer.bert.embeddings.word_embeddings
  table_grad = tf.convert_to_tensor(
      [g for v, g in zip(pretrainer.trainable_variables, grads)
       if v is table][0])
  # Tokens absent from the batch still get gradient: through the tied head.
  unused = sorted(set(range(CONFIG.vocab_size)) -
                  set(inputs["input_ids"].numpy().ravel()))
  assert float(tf.reduce_max(tf.abs(tf.gather(table_grad, unused)))) > 0


def test_sequence_longer_than_positions_is_rejected(pretrainer):
  ids = np.zeros((1, CONFIG.max_position_embeddings + 1), np.int32)
  with pytest.raises(ValueError, match="max_position_embeddings"):
    pretrainer.bert({"input_ids": ids})


def test_classifier_outputs():
  model = heads.BertClassifier(CONFIG, num_labels=3)
  out = model(make_inputs(), training=False)
  assert out["logits"].shape == (B, 3) and out["logits"].dtype == tf.float32
  with pytest.raises(ValueError, match="num_labels"):
    heads.BertClassifier(CONFIG, num_labels=0)


# --- Serialization ----------------------------------------------------------


@pytest.mark.parametrize("make", [
    lambda: bert.BertModel(CONFIG),
    lambda: heads.BertPretrainer(CONFIG, dtype="mixed_bfloat16"),
    lambda: heads.BertClassifier(CONFIG, num_labels=5, dropout_rate=0.2),
])
def test_get_config_round_trip(make):
  layer = make()
  config = layer.get_config()
  clone = type(layer).from_config(config)
  assert clone.get_config() == config
  assert clone.config == CONFIG
  # Through Keras' registry as well (as .keras files would do).
  revived = keras.saving.deserialize_keras_object(
      keras.saving.serialize_keras_object(layer))
  assert type(revived) is type(layer) and revived.get_config() == config


def test_weights_h5_and_keras_file_round_trip(pretrainer, tmp_path):
  path = os.fspath(tmp_path / "model.weights.h5")
  pretrainer.save_weights(path)
  clone = bert.ensure_built(heads.BertPretrainer(CONFIG))
  clone.load_weights(path)
  pretrainer.save(tmp_path / "model.keras")
  revived = keras.saving.load_model(tmp_path / "model.keras")
  inputs = make_inputs()
  for key in ("mlm_logits", "nsp_logits", "sequence_output"):
    np.testing.assert_array_equal(pretrainer(inputs)[key], clone(inputs)[key])
    np.testing.assert_array_equal(pretrainer(inputs)[key],
                                  revived(inputs)[key])


def test_tf_train_checkpoint_round_trip(pretrainer, tmp_path):
  prefix = tf.train.Checkpoint(model=pretrainer).write(
      os.fspath(tmp_path / "ckpt"))
  # Every variable must be reachable by TF's object graph (layers held in
  # Keras-tracked lists are not, which once dropped the encoder layers).
  stored = [n for n, _ in tf.train.list_variables(prefix)
            if n.endswith("VARIABLE_VALUE")]
  assert len(stored) == len(pretrainer.weights)
  clone = bert.ensure_built(heads.BertPretrainer(CONFIG))
  tf.train.Checkpoint(model=clone).read(prefix).assert_consumed()
  inputs = make_inputs()
  np.testing.assert_array_equal(pretrainer(inputs)["mlm_logits"],
                                clone(inputs)["mlm_logits"])


# --- Student initialisation -------------------------------------------------


def test_default_layer_map():
  assert student_init.default_layer_map(12, 6) == (0, 2, 4, 7, 9, 11)
  assert student_init.default_layer_map(4, 2) == (0, 3)
  assert student_init.default_layer_map(4, 1) == (3,)
  with pytest.raises(ValueError, match="more than"):
    student_init.default_layer_map(2, 4)


def _layer_vars(model, index):
  names = name_map.tf1_variable_map(model)
  prefix = f"bert/encoder/layer_{index}/"
  return {k[len(prefix):]: v.numpy() for k, v in names.items()
          if k.startswith(prefix)}


def _assert_same(a, b):
  assert a.keys() == b.keys() and a
  for key in a:
    np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_init_student_copies_layer_subset():
  teacher = heads.BertPretrainer(CONFIG.replace(num_hidden_layers=4))
  student = heads.BertPretrainer(CONFIG)
  copied = student_init.init_student_from_teacher(student, teacher)
  assert len(copied) == len(name_map.model_params(student))
  _assert_same(_layer_vars(student, 0), _layer_vars(teacher, 0))
  _assert_same(_layer_vars(student, 1), _layer_vars(teacher, 3))
  for name in ("word_embeddings", "position_embeddings",
               "token_type_embeddings"):
    np.testing.assert_array_equal(
        getattr(student.bert.embeddings, name),
        getattr(teacher.bert.embeddings, name))
  np.testing.assert_array_equal(student.masked_lm.output_bias,
                                teacher.masked_lm.output_bias)
  np.testing.assert_array_equal(student.bert.pooler.kernel,
                                teacher.bert.pooler.kernel)
  student_init.init_student_from_teacher(student, teacher, layer_map=[2, 1])
  _assert_same(_layer_vars(student, 0), _layer_vars(teacher, 2))
  _assert_same(_layer_vars(student, 1), _layer_vars(teacher, 1))


def test_init_student_rejects_other_widths_and_bad_maps():
  teacher = bert.BertModel(CONFIG.replace(num_hidden_layers=4))
  narrow = bert.ensure_built(
      bert.BertModel(CONFIG.replace(hidden_size=16, intermediate_size=32)))
  before = narrow.get_weights()
  with pytest.raises(ValueError, match="widths differ"):
    student_init.init_student_from_teacher(narrow, teacher)
  # Nothing copied, not even the equally shaped LayerNorm-free tables.
  for old, new in zip(before, narrow.get_weights()):
    np.testing.assert_array_equal(old, new)
  student = bert.BertModel(CONFIG)
  with pytest.raises(ValueError, match="not teacher layers"):
    student_init.init_student_from_teacher(student, teacher, layer_map=[0, 4])
  with pytest.raises(ValueError, match="2 layers"):
    student_init.init_student_from_teacher(student, teacher, layer_map=[0])


# --- Mixed precision --------------------------------------------------------


def test_mixed_bfloat16_policy(pretrainer):
  previous = keras.config.dtype_policy()
  keras.mixed_precision.set_global_policy("mixed_bfloat16")
  try:
    model = bert.ensure_built(heads.BertPretrainer(CONFIG))
  finally:
    keras.mixed_precision.set_global_policy(previous)
  layer = model.bert.encoder_layers[0]
  assert layer.intermediate.compute_dtype == "bfloat16"
  assert all(w.dtype == "float32" for w in model.weights)
  model.set_weights(pretrainer.get_weights())
  inputs = make_inputs()
  out = model(inputs, training=False, output_attentions=True)
  assert out["sequence_output"].dtype == tf.bfloat16
  assert out["attention_probs"][0].dtype == tf.float32
  assert out["mlm_logits"].dtype == tf.float32
  assert out["nsp_logits"].dtype == tf.float32
  # Same weights as the float32 model: only bf16 rounding (~1%) differs.
  reference = pretrainer(inputs, training=False)
  np.testing.assert_allclose(tf.cast(out["sequence_output"], tf.float32),
                             reference["sequence_output"], atol=0.1)
  np.testing.assert_allclose(out["mlm_logits"], reference["mlm_logits"],
                             atol=0.02)
