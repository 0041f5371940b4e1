"""tools/export.py --format=hf, checked with the real transformers library.

Tiny random models of each head (pre-training, classifier, span) are saved as
this project saves them, exported by the tool, and loaded by transformers in a
subprocess (torch and TensorFlow stay in separate processes; arrays travel as
.npy files): the logits equal ours within 1e-4, the tokenizer tokenizes as
ours, id2label comes from the records, and the safetensors read back with our
importer give the exact weights. A config that contradicts the checkpoint's is
a one-line error and leaves no directory behind.

Shape legend: B=batch, S=sequence length, V=vocab size, C=number of labels.
"""

import importlib.util
import json
import os
import string
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from modeling.checkpoints import hf
from modeling.evaluation import export_run
from modeling.evaluation import hf_export
from modeling.models import classification
from modeling.models import heads
from modeling.models import span
from modeling.networks import bert
from pipeline.core.errors import ConfigError, InputError
from pipeline.text import tokenization
from tests.conftest import run_tool, start_tool, tool_env

tf = pytest.importorskip("tensorflow")
# Looked up, not imported: torch stays out of this (TensorFlow) process.
pytestmark = pytest.mark.skipif(
    not all(importlib.util.find_spec(name) for name in ("transformers", "torch")),
    reason="needs requirements-test.txt (launch/setup.sh installs it)")

WORDS = "the river valley town people north south city bridge café naïve don't".split()
LABELS = ["neg", "pos", "meh"]  # The records' label names (C=3).
CARD_LABELS = ["a", "b", "c"]  # classifier.json's: the records' win when given.
TEXTS = ["The river valley, north of the town!", "Café naïve DON'T bridge-city",
         "unknownword x\ty  z", "a\u4e2d\u6587b (people) 3.14"]
B, S = 2, 12


def _write_vocab(path):
  """Specials, punctuation, cased letters and ##letters, a few words: V ~ 150."""
  tokens = list(tokenization.SPECIAL_TOKENS) + list(string.punctuation)
  tokens += list(string.ascii_letters) + ["##" + c for c in string.ascii_letters]
  tokens += [w for w in WORDS if w.isascii() and "'" not in w]
  with open(path, "w", encoding="utf-8") as f:
    f.write("\n".join(tokens) + "\n")
  return len(tokens)


def _config(vocab_size, hidden_act):
  return bert.BertConfig(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2,
                         num_attention_heads=4, intermediate_size=48, hidden_act=hidden_act,
                         max_position_embeddings=64)


def _randomize(model, seed):
  """Every variable random (biases and LayerNorm betas too: a swapped name shows)."""
  rng = np.random.default_rng(seed)
  for variable in bert.ensure_built(model).weights:
    variable.assign(rng.normal(0.0, 0.2, variable.shape).astype(np.float32))
  return model


def _write_run(model, directory):
  """A training run's output directory as the trainer writes it (checkpoints/)."""
  ckpt_dir = os.path.join(directory, "checkpoints")
  os.makedirs(ckpt_dir)
  model.config.to_json_file(os.path.join(ckpt_dir, "bert_config.json"))
  tf.train.Checkpoint(model=model, step=tf.Variable(3, dtype=tf.int64)).write(
      os.path.join(ckpt_dir, "ckpt-3"))
  return directory


def _write_tsvs(directory):
  os.makedirs(directory)
  rows = [(f"{WORDS[i % len(WORDS)]} {WORDS[(3 * i) % len(WORDS)]} Town", LABELS[i % 3])
          for i in range(12)]
  for split in ("train", "dev"):
    with open(os.path.join(directory, f"{split}.tsv"), "w", encoding="utf-8") as f:
      f.write("sentence\tlabel\n" + "".join(f"{t}\t{l}\n" for t, l in rows))
  return directory


def _inputs():
  """int32 input_ids, input_mask, segment_ids [B,S]; row 1 padded after 7 tokens."""
  rng = np.random.default_rng(7)
  ids = rng.integers(5, 100, (B, S)).astype(np.int32)
  mask = np.ones((B, S), np.int32)
  mask[1, 7:] = 0
  ids[1, 7:] = 0
  segments = np.zeros((B, S), np.int32)
  segments[:, 6:] = 1
  return {"input_ids": ids, "input_mask": mask, "segment_ids": segments}


def _finish(proc):
  _, stderr = proc.communicate(timeout=300)
  return proc.returncode, stderr.decode()


# The transformers side, in its own process: loads each export, writes logits and
# tokens. argv: work dir holding inputs.npz; the export dirs by name follow.
HF_SCRIPT = textwrap.dedent("""
    import json, os, sys
    import numpy as np
    import torch
    from transformers import (AutoTokenizer, BertForMaskedLM, BertForPreTraining,
                              BertForQuestionAnswering, BertForSequenceClassification)
    work, pre, cls, qa = sys.argv[1:5]
    inp = np.load(os.path.join(work, "inputs.npz"))
    feed = dict(input_ids=torch.tensor(inp["input_ids"], dtype=torch.long),
                attention_mask=torch.tensor(inp["input_mask"], dtype=torch.long),
                token_type_ids=torch.tensor(inp["segment_ids"], dtype=torch.long))
    texts = json.loads(open(os.path.join(work, "texts.json")).read())
    out, info = {}, {}
    def load(cls_, path, key):
      model, loading = cls_.from_pretrained(path, output_loading_info=True)
      info[key] = {k: sorted(map(str, v)) for k, v in loading.items()}
      return model.eval()
    with torch.no_grad():
      out["mlm"] = load(BertForMaskedLM, pre, "mlm")(**feed).logits.numpy()
      pt = load(BertForPreTraining, pre, "pretraining")(**feed)
      out["pt_mlm"] = pt.prediction_logits.numpy()
      out["nsp"] = pt.seq_relationship_logits.numpy()
      model = load(BertForSequenceClassification, cls, "cls")
      out["cls"] = model(**feed).logits.numpy()
      info["id2label"] = {str(k): v for k, v in model.config.id2label.items()}
      qa_out = load(BertForQuestionAnswering, qa, "qa")(**feed)
      out["start"], out["end"] = qa_out.start_logits.numpy(), qa_out.end_logits.numpy()
    for key, path in (("tokens_pre", pre), ("tokens_cls", cls)):
      tok = AutoTokenizer.from_pretrained(path)
      info[key] = [tok.tokenize(t) for t in texts]
      info[key + "_ids"] = tok(texts[0])["input_ids"]
    np.savez(os.path.join(work, "hf_out.npz"), **out)
    with open(os.path.join(work, "hf_info.json"), "w") as f:
      json.dump(info, f)
""")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
  """Three models saved as the project saves them, exported by the tool, loaded by
  transformers: {name: path or model}, plus "hf" (arrays) and "info" (JSON)."""
  base = tmp_path_factory.mktemp("hf_export")
  d = {k: str(base / k) for k in ("pre_run", "cls_dir", "span_dir", "tsv", "records",
                                  "pre_hf", "cls_hf", "span_hf", "bad_hf", "work")}
  d["vocab"] = str(base / "vocab.txt")
  vocab_size = _write_vocab(d["vocab"])
  d["pre"] = _randomize(heads.BertPretrainer(_config(vocab_size, "gelu")), 1)
  d["cls"] = _randomize(classification.build_classifier(_config(vocab_size, "gelu_new"), 3), 2)
  d["span"] = _randomize(span.build_span_model(_config(vocab_size, "gelu_pytorch_tanh")), 3)
  _write_run(d["pre"], d["pre_run"])
  classification.save_classifier(d["cls"], d["cls_dir"], labels=CARD_LABELS)
  span.save_span_model(d["span"], d["span_dir"])
  bad_config = str(base / "bad_config.json")
  _config(vocab_size, "gelu").replace(num_attention_heads=2).to_json_file(bad_config)
  vocab = f"--vocab_file={d['vocab']}"
  procs = {
      "records": start_tool("create_classification_data", f"--input_dir={_write_tsvs(d['tsv'])}",
                            f"--output_dir={d['records']}", vocab, "--max_seq_length=16",
                            f"--labels={','.join(LABELS)}", "--label_column=label",
                            "--text_a_column=sentence", "--nodo_lower_case"),
      "pre": start_tool("export", "--format=hf", f"--checkpoint={d['pre_run']}", vocab,
                        f"--export_dir={d['pre_hf']}"),
      "bad": start_tool("export", "--format=hf", f"--checkpoint={d['pre_run']}", vocab,
                        f"--bert_config_file={bad_config}", f"--export_dir={d['bad_hf']}")}
  # The span model through the library (the tool's path is the same call), while the
  # tools run: one TensorFlow start-up less on a small machine.
  export_run.export_model(export_run.ExportConfig(
      checkpoint=d["span_dir"], export_dir=d["span_hf"], format="hf", vocab_file=d["vocab"]))
  d["results"] = {name: _finish(proc) for name, proc in procs.items()}
  for name in ("records", "pre"):
    assert d["results"][name][0] == 0, d["results"][name][1][-3000:]
  run_tool("export", "--format=hf", f"--checkpoint={d['cls_dir']}", vocab,
           f"--input_dir={d['records']}", f"--export_dir={d['cls_hf']}")
  _run_transformers(d)
  return d


def _run_transformers(d):
  os.makedirs(d["work"])
  np.savez(os.path.join(d["work"], "inputs.npz"), **_inputs())
  with open(os.path.join(d["work"], "texts.json"), "w", encoding="utf-8") as f:
    json.dump(TEXTS, f)
  script = os.path.join(d["work"], "hf_side.py")
  with open(script, "w", encoding="utf-8") as f:
    f.write(HF_SCRIPT)
  env = dict(tool_env(), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
             TRANSFORMERS_VERBOSITY="error")
  proc = subprocess.run([sys.executable, script, d["work"], d["pre_hf"], d["cls_hf"],
                         d["span_hf"]], capture_output=True, text=True, env=env, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  d["hf"] = dict(np.load(os.path.join(d["work"], "hf_out.npz")))
  with open(os.path.join(d["work"], "hf_info.json"), encoding="utf-8") as f:
    d["info"] = json.load(f)


def test_export_dirs_hold_exactly_the_hf_files(exported):
  for name in ("pre_hf", "cls_hf", "span_hf"):
    assert sorted(os.listdir(exported[name])) == sorted(hf_export.FILES)
  leftovers = [n for n in os.listdir(os.path.dirname(exported["pre_hf"])) if ".tmp." in n
               or ".old." in n]
  assert not leftovers


def test_config_json_says_what_transformers_loads(exported):
  archs = {}
  for name in ("pre_hf", "cls_hf", "span_hf"):
    with open(os.path.join(exported[name], hf.CONFIG_FILE), encoding="utf-8") as f:
      config = json.load(f)
    assert config["model_type"] == "bert"
    archs[name] = (config["architectures"], config["hidden_act"])
  assert archs == {"pre_hf": (["BertForPreTraining"], "gelu"),
                   "cls_hf": (["BertForSequenceClassification"], "gelu_new"),
                   "span_hf": (["BertForQuestionAnswering"], "gelu_pytorch_tanh")}


def test_transformers_loads_every_weight(exported):
  info = exported["info"]
  for key in ("mlm", "pretraining", "cls", "qa"):
    assert info[key]["missing_keys"] == [], (key, info[key])
    assert info[key]["mismatched_keys"] == [], (key, info[key])
  # BertForMaskedLM has no pooler and no NSP head, BertForQuestionAnswering no pooler
  # (ours always has one: it reads back into a BertSpanLabeler); the others use all.
  assert all(k.startswith(("bert.pooler.", "cls.seq_relationship."))
             for k in info["mlm"]["unexpected_keys"])
  assert all(k.startswith("bert.pooler.") for k in info["qa"]["unexpected_keys"])
  for key in ("pretraining", "cls"):
    assert info[key]["unexpected_keys"] == [], (key, info[key])


def test_mlm_and_nsp_logits_match_ours(exported):
  inputs = _inputs()
  positions = np.tile(np.arange(S, dtype=np.int32), (B, 1))  # every position: [B,S]
  ours = exported["pre"](dict(inputs, masked_lm_positions=positions))
  mlm = ours["mlm_logits"].numpy()  # [B,S,V]
  np.testing.assert_allclose(exported["hf"]["mlm"], mlm, atol=1e-4, rtol=0)
  np.testing.assert_allclose(exported["hf"]["pt_mlm"], mlm, atol=1e-4, rtol=0)
  np.testing.assert_allclose(exported["hf"]["nsp"], ours["nsp_logits"].numpy(), atol=1e-4,
                             rtol=0)
  assert np.abs(mlm).max() > 1.0  # Not vacuous: the logits are far from 0.


def test_classifier_logits_and_labels_match_ours(exported):
  logits = exported["cls"](_inputs())["logits"].numpy()  # [B,C]
  np.testing.assert_allclose(exported["hf"]["cls"], logits, atol=1e-4, rtol=0)
  # The records' labels, not classifier.json's.
  assert exported["info"]["id2label"] == {str(i): name for i, name in enumerate(LABELS)}


def test_span_logits_match_ours(exported):
  ours = exported["span"](_inputs())  # start/end [B,S]
  np.testing.assert_allclose(exported["hf"]["start"], ours["start_logits"].numpy(),
                             atol=1e-4, rtol=0)
  np.testing.assert_allclose(exported["hf"]["end"], ours["end_logits"].numpy(), atol=1e-4,
                             rtol=0)


@pytest.mark.parametrize("name,lower", [("pre", True), ("cls", False)])
def test_tokenizer_tokenizes_as_ours(exported, name, lower):
  # The classifier's records were made with --nodo_lower_case: the export follows them.
  with open(os.path.join(exported[f"{name}_hf"], hf_export.TOKENIZER_CONFIG_FILE)) as f:
    assert json.load(f)["do_lower_case"] is lower
  ours = tokenization.BertTokenizer(exported["vocab"], do_lower_case=lower)
  assert exported["info"][f"tokens_{name}"] == [ours.tokenize(t) for t in TEXTS]
  ids = ours.encode(TEXTS[0]).tolist()
  assert exported["info"][f"tokens_{name}_ids"] == [ours.cls_id] + ids + [ours.sep_id]


@pytest.mark.parametrize("name", ["pre", "cls", "span"])
def test_safetensors_round_trip_through_our_importer(exported, name):
  model = exported[name]
  fresh = hf_export.empty_like(model)
  hf.load_safetensors(fresh, exported[f"{name}_hf"])
  for ours, back in zip(model.weights, fresh.weights):
    assert ours.path == back.path
    assert np.array_equal(ours.numpy(), back.numpy()), ours.path


def test_classifier_json_labels_without_records(exported, tmp_path):
  target = str(tmp_path / "cls_card_hf")
  export_run.export_model(export_run.ExportConfig(
      checkpoint=exported["cls_dir"], export_dir=target, format="hf",
      vocab_file=exported["vocab"], version=2))
  with open(os.path.join(target, "2", hf.CONFIG_FILE), encoding="utf-8") as f:
    config = json.load(f)
  assert config["id2label"] == {str(i): name for i, name in enumerate(CARD_LABELS)}
  assert config["label2id"] == {name: i for i, name in enumerate(CARD_LABELS)}


def test_mismatched_config_is_one_line_and_writes_nothing(exported):
  code, stderr = exported["results"]["bad"]
  assert code == 2, stderr
  assert "Traceback" not in stderr
  last = stderr.strip().splitlines()[-1]
  assert last.startswith("error: ") and "num_attention_heads" in last, last
  parent = os.path.dirname(exported["bad_hf"])
  assert not [n for n in os.listdir(parent) if n.startswith("bad_hf")]


def test_existing_foreign_directory_is_not_replaced(exported, tmp_path):
  target = tmp_path / "precious"
  target.mkdir()
  (target / "notes.txt").write_text("keep me")
  with pytest.raises(InputError, match="not a Hugging Face export"):
    export_run.export_model(export_run.ExportConfig(
        checkpoint=exported["span_dir"], export_dir=str(target), format="hf",
        vocab_file=exported["vocab"]))
  assert os.listdir(target) == ["notes.txt"]


@pytest.mark.parametrize("changes,message", [
    (dict(format="torchscript"), "--format must be one of"),
    (dict(format="hf", quantize="dynamic"), "needs --format=onnx"),
    (dict(format="onnx", quantize="int4"), "--quantize must be one of"),
    (dict(format="onnx", calibration_dir="x"), "--quantize=static only"),
    (dict(format="saved_model", do_lower_case=False), "--format=hf only")])
def test_bad_flag_combinations_are_config_errors(changes, message):
  with pytest.raises(ConfigError, match=message):
    export_run.ExportConfig(checkpoint="c", export_dir="e", **changes)
