"""modeling/evaluation/evaluation.py, tools/evaluate.py and tools/benchmark.py on a few
hand-made records (S=16, P=4, vocab 50) and two tiny random models.

The metrics are checked against a NumPy computation from the model's logits;
the distill targets are hand-made top-K rows (K=4, T=2) with a known top-1.
"""

import json
import os

import numpy as np
import pytest

from modeling.networks import bert
from modeling.checkpoints import google
from modeling.evaluation import evaluation
from modeling.losses import distill_losses
from modeling.models import heads
from pipeline.inputs import distill_dataset
from pipeline.records import schema
from pipeline.core import stage
from pipeline.labels import packed_labels
from pipeline.records import tfrecord
from pipeline.core.errors import InputError
from tests.conftest import run_tool, start_tool

tf = pytest.importorskip("tensorflow")

S, P, V, K, T = 16, 4, 50, 4, 2.0
NUM_RECORDS = 7
EVAL_FILE = "eval/part-00000.tfrecord"


def _pretraining_columns(rng, n):
  """n records of random ids with 1..P real masked positions each."""
  lengths = rng.integers(P + 2, S + 1, n)
  mask = (np.arange(S)[None] < lengths[:, None]).astype(np.int64)  # [n,S]
  num_real = rng.integers(1, P + 1, n)
  real = np.arange(P)[None] < num_real[:, None]  # [n,P]
  positions = np.stack([np.sort(rng.choice(np.arange(1, l), P, replace=False))
                        for l in lengths])
  return {
      "input_ids": rng.integers(0, V, (n, S)) * mask, "input_mask": mask,
      "segment_ids": (np.arange(S)[None] >= lengths[:, None] // 2) * mask,
      "masked_lm_positions": positions * real,
      "masked_lm_ids": rng.integers(1, V, (n, P)) * real,
      "masked_lm_weights": real.astype(np.float32),
      "next_sentence_labels": rng.integers(0, 2, (n, 1)),
  }, num_real


def _teacher_columns(rng, n, num_real):
  """Top-K rows: K distinct ids, float16-exact descending probabilities."""
  ids = np.stack([[rng.choice(V, K, replace=False) for _ in range(P)]
                  for _ in range(n)])  # [n,P,K]
  values = np.broadcast_to(np.array([0.5, 0.25, 0.125, 0.0625]), (n, P, K))
  tail = np.full((n, P), 0.0625)
  nsp = rng.normal(size=(n, 2))
  return packed_labels.teacher_columns(ids, values, tail, nsp, num_real, "uint16")


def _write_stage(directory, stage_name, config, columns, dtypes):
  out = stage.StageOutput(str(directory), stage_name, config, "0" * 64)
  out.prepare()
  with out.writing(EVAL_FILE) as tmp:
    with tfrecord.TFRecordWriter(tmp) as writer:
      writer.write_batch(*tfrecord.encode_examples(columns, dtypes))
  out.finalize([EVAL_FILE], {"eval_instances": NUM_RECORDS}, {})
  return str(directory)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
  """{"records": a records dir, "distill": the same records with labels}."""
  base = tmp_path_factory.mktemp("eval_data")
  rng = np.random.default_rng(0)
  columns, num_real = _pretraining_columns(rng, NUM_RECORDS)
  dtypes = {f.name: f.dtype for f in schema.PRETRAINING_FEATURES}
  config = {"max_seq_length": S, "max_predictions_per_seq": P, "vocab_size": V}
  records = _write_stage(base / "records", "create_pretraining_data", config,
                         columns, dtypes)
  teacher_cols, teacher_dtypes = _teacher_columns(rng, NUM_RECORDS, num_real)
  labels_config = dict(config, truncation_factor=K, teacher_id_dtype="uint16",
                       label_method="topk", temperature=T)
  distill = _write_stage(base / "distill", "extract_teacher_labels", labels_config,
                         {**columns, **teacher_cols}, {**dtypes, **teacher_dtypes})
  return {"records": records, "distill": distill}


def _save_model(directory, hidden, layers, seed):
  import keras  # pylint: disable=import-outside-toplevel
  keras.utils.set_random_seed(seed)
  # A wide init spreads the logits: accuracies and agreement are not all 0.
  config = bert.BertConfig(vocab_size=V, hidden_size=hidden, num_hidden_layers=layers,
                           num_attention_heads=2, intermediate_size=2 * hidden,
                           max_position_embeddings=32, hidden_act="gelu_new",
                           initializer_range=0.5)
  model = bert.ensure_built(heads.BertPretrainer(config))
  return google.save_tf1_checkpoint(model, str(directory / "bert_model.ckpt"))


@pytest.fixture(scope="module")
def models(tmp_path_factory):
  base = tmp_path_factory.mktemp("eval_models")
  return {"teacher": _save_model(base / "teacher", 16, 2, 1),
          "student": _save_model(base / "student", 8, 1, 2)}


def _logsumexp(x):
  m = x.max(-1, keepdims=True)
  return (m + np.log(np.exp(x - m).sum(-1, keepdims=True)))[..., 0]


def _numpy_metrics(logits, nsp_logits, b):
  """The metrics from the model's logits [N,P,V], [N,2] and the batch b."""
  w, ids = b["masked_lm_weights"], b["masked_lm_ids"]
  label_logit = np.take_along_axis(logits, ids[..., None], -1)[..., 0]
  ce = _logsumexp(logits) - label_logit
  top5 = (logits > label_logit[..., None]).sum(-1) < 5
  nsp_labels = b["next_sentence_labels"][:, 0]
  nsp_ce = _logsumexp(nsp_logits) - nsp_logits[np.arange(len(nsp_labels)), nsp_labels]

  def mean(x):  # over the real masked positions
    return (w * x).sum() / w.sum()

  return {"mlm_accuracy": mean(logits.argmax(-1) == ids), "mlm_loss": mean(ce),
          "mlm_top5_accuracy": mean(top5), "nsp_loss": nsp_ce.mean(),
          "nsp_accuracy": (nsp_logits.argmax(-1) == nsp_labels).mean()}


def _numpy_teacher(logits, b, temperature):
  """Agreement with the first cached id (the hand-made rows are sorted by
  probability) and the renormalized top-K KL."""
  w, ids, values = b["masked_lm_weights"], b["teacher_ids"], b["teacher_values"]
  top1 = ids[..., 0]
  log_q = logits / temperature
  log_q = log_q - _logsumexp(log_q)[..., None]
  kept = values > 0
  log_q_k = np.take_along_axis(log_q, ids, -1)
  log_q_k = log_q_k - _logsumexp(np.where(kept, log_q_k, -1e30))[..., None]
  p = values / np.maximum(values.sum(-1, keepdims=True), 1e-30)
  kl = np.where(kept, p * (np.log(np.where(kept, p, 1)) - log_q_k), 0).sum(-1)
  return {"teacher_agreement": (w * (logits.argmax(-1) == top1)).sum() / w.sum(),
          "teacher_kl_topk": (w * kl).sum() / w.sum()}


def _load(inp, ckpt):
  return evaluation.load_model(ckpt, inp)


def _whole_split(inp):
  batch = next(iter(evaluation.eval_batches(inp, NUM_RECORDS)))
  return {k: v.numpy() for k, v in batch.items()}


def test_metrics_equal_numpy(data, models):
  inp = evaluation.read_eval_input(data["distill"])
  model = _load(inp, models["teacher"])
  b = _whole_split(inp)
  out = model({k: b[k] for k in schema.PRETRAINING_MODEL_INPUTS}, training=False)
  logits, nsp = out["mlm_logits"].numpy().astype(np.float64), out["nsp_logits"].numpy()
  expected = _numpy_metrics(logits, nsp.astype(np.float64), b)
  expected.update(_numpy_teacher(logits, b, T))
  # Batches of 3, 3, 1: exact sums, so the batch size does not matter.
  metrics, counts = evaluation.evaluate(model, evaluation.eval_batches(inp, 3), inp.labels)
  for name, value in expected.items():
    assert metrics[name] == pytest.approx(value, rel=1e-4, abs=1e-6), name
  assert metrics["mlm_perplexity"] == pytest.approx(np.exp(metrics["mlm_loss"]), rel=1e-9)
  assert metrics["teacher_topk_mass"] == pytest.approx(0.9375)
  assert counts == {"examples": NUM_RECORDS,
                    "masked_positions": int(b["masked_lm_weights"].sum())}
  assert 0 < metrics["mlm_top5_accuracy"] and metrics["teacher_agreement"] > 0


def test_plain_records_have_no_teacher_metrics(data, models):
  inp = evaluation.read_eval_input(data["records"])
  metrics, counts = evaluation.evaluate(_load(inp, models["student"]),
                                        evaluation.eval_batches(inp, 4, max_batches=1))
  assert sorted(metrics) == ["mlm_accuracy", "mlm_loss", "mlm_perplexity",
                             "mlm_top5_accuracy", "nsp_accuracy", "nsp_loss"]
  assert counts["examples"] == 4  # --max_eval_batches=1
  with pytest.raises(InputError, match="no .tfrecord files"):
    evaluation.read_eval_input(data["records"], "train")


def test_size_counts_the_checkpoint_files(data, models):
  inp = evaluation.read_eval_input(data["records"])
  model = _load(inp, models["student"])
  info = evaluation.describe(model, models["student"])
  names = [os.path.basename(f) for f in info["disk_files"]]
  assert names == ["bert_model.ckpt.data-00000-of-00001", "bert_model.ckpt.index"]
  assert info["disk_bytes"] == sum(os.path.getsize(f) for f in info["disk_files"])
  assert info["parameters"] == model.count_params()
  assert info["bert_config_file"].endswith("student/bert_config.json")


def test_topk_kl_and_agreement_on_hand_made_targets():
  # One position, V=4. Teacher: ids (2, 0) with values (0.5, 0.5) padded by
  # (0, 0) as sampled rows are; student logits log(1, 1, 3, 5).
  logits = tf.math.log(tf.constant([[[1.0, 1.0, 3.0, 5.0]]]))
  ids = tf.constant([[[2, 0, 0]]])
  values = tf.constant([[[0.5, 0.5, 0.0]]])
  # Student renormalized over {2, 0}: (3/4, 1/4); KL = .5 log(.5/.75) + .5 log(.5/.25).
  expected = 0.5 * np.log(0.5 / 0.75) + 0.5 * np.log(2.0)
  kl = distill_losses.renormalized_kl(distill_losses.log_probs(logits, 1.0), ids, values).numpy()
  assert kl[0, 0] == pytest.approx(expected, rel=1e-5)
  assert distill_losses.renormalized_kl(tf.math.log(tf.constant([[[3.0, 1.0, 3.0, 5.0]]])),
                                        ids, values).numpy()[0, 0] == pytest.approx(0, abs=1e-6)
  batch = {"masked_lm_ids": tf.constant([[3]]), "masked_lm_weights": tf.constant([[1.0]]),
           "next_sentence_labels": tf.constant([[0]]), "teacher_ids": ids,
           "teacher_values": values}
  outputs = {"mlm_logits": logits, "nsp_logits": tf.constant([[1.0, 0.0]])}
  spec = distill_dataset.LabelSpec(S, P, 3, "uint16", "sampled", 1.0, 4)
  sums = evaluation.metric_sums(outputs, batch, spec)
  # Student argmax 3, teacher top-1 2 (ties: the first): disagree.
  assert [float(x) for x in sums["teacher_agreement"]] == [0.0, 1.0]
  assert "teacher_topk_mass" not in sums  # sampled labels cover no "top-k"


def _config_file(path, **changes):
  config = bert.BertConfig(vocab_size=V, hidden_size=8, num_hidden_layers=1,
                           num_attention_heads=2, intermediate_size=16,
                           max_position_embeddings=32).replace(**changes)
  config.to_json_file(str(path))
  return str(path)


def test_evaluate_tool_writes_the_metrics(data, models, tmp_path):
  out = str(tmp_path / "eval.json")
  run_tool("evaluate", f"--checkpoint={models['student']}", f"--input_dir={data['distill']}",
           "--batch_size=2", f"--output_json={out}")
  with open(out) as f:
    result = json.load(f)
  inp = evaluation.read_eval_input(data["distill"])
  expected, _ = evaluation.evaluate(_load(inp, models["student"]),
                                    evaluation.eval_batches(inp, 8), inp.labels)
  assert result["metrics"] == pytest.approx(expected, rel=1e-5)
  assert result["counts"]["examples"] == NUM_RECORDS
  assert result["teacher_labels"]["temperature"] == T
  assert "renormalized" in result["teacher_labels"]["teacher_kl_topk"]
  assert result["model"]["parameters"] == result["model"]["weights_f32_bytes"] // 4


def _assert_one_line_error(proc, *fragments):
  _, stderr = proc.communicate(timeout=300)
  stderr = stderr.decode()
  assert proc.returncode == 2, stderr
  assert "Traceback" not in stderr, stderr
  (line,) = [l for l in stderr.splitlines() if l.startswith("error:")]
  for fragment in fragments:
    assert fragment in line, line


def test_evaluate_errors_are_one_line(data, models, tmp_path):
  common = [f"--input_dir={data['records']}", f"--output_json={tmp_path / 'x.json'}"]
  wrong = _config_file(tmp_path / "wrong_vocab.json", vocab_size=V + 10)
  missing = str(tmp_path / "no_such_run")
  # Both at once: each run is mostly TensorFlow's start-up.
  wrong_vocab = start_tool("evaluate", f"--bert_config_file={wrong}",
                           f"--checkpoint={models['teacher']}", *common)
  no_checkpoint = start_tool("evaluate", f"--checkpoint={missing}", *common)
  _assert_one_line_error(wrong_vocab, wrong, f"vocab_size {V + 10}", f"vocab of {V}")
  _assert_one_line_error(no_checkpoint, missing, "does not exist")
  assert not os.path.exists(tmp_path / "x.json")


def test_benchmark_tool_writes_table_json_and_plot(data, models, tmp_path):
  out = tmp_path / "bench"
  run_tool("benchmark", f"--models=teacher=:{models['teacher']},student=:{models['student']}",
           f"--input_dir={data['distill']}", f"--output_dir={out}", "--seq_length=16",
           "--num_predictions=4", "--throughput_batch=4", "--repeats=2", "--warmup=1")
  assert sorted(os.listdir(out)) == ["benchmark.json", "benchmark.md", "benchmark.png"]
  with open(out / "benchmark.json") as f:
    report = json.load(f)
  teacher, student = report["models"]
  assert [teacher["name"], student["name"]] == ["teacher", "student"]
  assert teacher["speedup"] == 1.0 and teacher["accuracy_kept"] == 1.0
  assert teacher["parameters"] > student["parameters"] > 0
  for r in report["models"]:
    assert len(r["latency_ms"]["samples"]) == 2 and r["throughput"]["mean"] > 0
    assert r["disk_bytes"] > 0 and "teacher_kl_topk" in r["metrics"]
  assert len(report["environment"]["load_average_before"]) == 3
  markdown = (out / "benchmark.md").read_text()
  assert "{" not in markdown and "Throughput: batch 4" in markdown
  table = [l for l in markdown.splitlines() if l.startswith("|")]
  header = [c.strip() for c in table[0].strip("|").split("|")]
  assert header[:3] == ["Model", "Layers x hidden", "Params"]
  for column in ("Disk (MB)", "f32 weights (MB)", "Latency (ms)", "Speedup", "Throughput (seq/s)", "MLM acc", "Acc kept",
                 "Top-5", "Perplexity", "NSP acc", "Teacher agree", "KL (top-K)"):
    assert column in header
  assert [r.split("|")[1].strip() for r in table[2:]] == ["teacher", "student"]
  assert "1.00x" in table[2] and "100.0%" in table[2]
  png = (out / "benchmark.png").read_bytes()
  assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 5000
