"""Extractive QA training: the span loss against NumPy, the float16 teacher-logit
features, and the whole path through the tools on a generated SQuAD 2.0 file:
create_qa_data -> finetune (span model, best/ by dev f1 with predictions.json)
-> extract_teacher_labels (QA distill records) -> distill -> evaluate / benchmark."""

import json
import os
import random

import numpy as np
import pytest
import tensorflow as tf

from modeling.checkpoints import google
from modeling.checkpoints import name_map
from modeling.losses import qa_losses
from modeling.losses import task_losses
from modeling.models import span
from modeling.networks import bert
from modeling.training import qa_runs
from pipeline.core import stage
from pipeline.inputs import parsing
from pipeline.labels import qa_labels
from pipeline.records import schema
from pipeline.records import tfrecord
from tests.conftest import run_tool
from tests.test_stages import _assert_one_line_error

CITIES = "paris rome oslo lima kyiv doha riga bern sofia quito".split()
LANDS = "france italy norway peru ukraine qatar latvia swiss bulgaria ecuador".split()
FILLER = "the river town is old and a market was built near hills in summer".split()
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
TINY = {"vocab_size": 64, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
        "intermediate_size": 64, "max_position_embeddings": 64, "hidden_act": "gelu",
        "type_vocab_size": 2, "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0,
        "initializer_range": 0.02}


def _softmax_ce(logits, label):
  z = logits - logits.max()
  return -(z[label] - np.log(np.exp(z).sum()))


def _kl(t, s, temp):
  p = np.exp(t / temp - (t / temp).max())
  p /= p.sum()
  log_q = s / temp - (s / temp).max()
  log_q -= np.log(np.exp(log_q).sum())
  p, log_q = p.astype(np.float64), log_q.astype(np.float64)
  return float(np.sum(np.where(p > 0, p * (np.log(np.maximum(p, 1e-300)) - log_q), 0.0)))


def test_span_loss_matches_numpy():
  rng = np.random.default_rng(0)
  b, s, alpha, temp = 3, 7, 0.3, 2.0
  mask = np.ones((b, s), np.int32)
  mask[1, 5:] = 0
  logits = [rng.normal(size=(b, s)).astype(np.float32) for _ in range(4)]
  masked = [span.mask_padding(tf.constant(x), tf.constant(mask)).numpy() for x in logits]
  batch = {"start_positions": np.array([[0], [2], [6]]), "end_positions": np.array([[1], [4], [6]])}
  loss, terms = qa_losses.span_loss(*map(tf.constant, masked[:2]), batch,
                                    task_losses.TaskDistillConfig(alpha, temp),
                                    tuple(map(tf.constant, masked[2:])))
  expected_ce, expected_kd = 0.0, 0.0
  for k, name in enumerate(("start_positions", "end_positions")):
    expected_ce += 0.5 * np.mean([_softmax_ce(masked[k][i], batch[name][i, 0])
                                  for i in range(b)])
    expected_kd += 0.5 * np.mean([_kl(masked[k + 2][i], masked[k][i], temp) for i in range(b)])
  np.testing.assert_allclose(float(terms["ce_loss"]), expected_ce, rtol=1e-5)
  np.testing.assert_allclose(float(terms["kd_loss"]), expected_kd, rtol=1e-4)
  np.testing.assert_allclose(float(loss), alpha * expected_ce + (1 - alpha) * temp ** 2 *
                             expected_kd, rtol=1e-4)
  # Padding carries no probability: a padded position's softmax weight is ~0.
  assert tf.nn.softmax(masked[0][1]).numpy()[5:].max() < 1e-30


def test_teacher_logits_are_float16_bytes_decoded_to_float32():
  rng = np.random.default_rng(1)
  start, end = (rng.normal(scale=5, size=(2, 8)).astype(np.float32) for _ in range(2))
  columns, dtypes = qa_labels.encode_span_logits([start, end])
  ids = {n: np.arange(16).reshape(2, 8) for n in ("input_ids", "input_mask", "segment_ids")}
  one = {"unique_id": np.array([[1], [2]]), "start_positions": np.zeros((2, 1), np.int64),
         "end_positions": np.zeros((2, 1), np.int64), "is_impossible": np.ones((2, 1), np.int64)}
  flat, lengths = tfrecord.encode_examples(
      dict(ids, **one, **columns), dict({n: schema.INT64 for n in list(ids) + list(one)},
                                        **dtypes))
  records, offset = [], 0
  for n in lengths:
    records.append(flat[offset:offset + n].tobytes())
    offset += n
  parse = parsing.parse_fn(schema.QA_FEATURES + schema.QA_TEACHER_FEATURES, 8)
  batch = parse(tf.constant(records))
  assert batch["teacher_start_logits"].dtype == tf.float32
  np.testing.assert_array_equal(batch["teacher_start_logits"].numpy(),
                                start.astype(np.float16).astype(np.float32))
  np.testing.assert_array_equal(batch["teacher_end_logits"].numpy(),
                                end.astype(np.float16).astype(np.float32))


def _squad(seed, articles=4, per_article=48):
  """SQuAD 2.0 articles of one-fact paragraphs ("... the capital of <land> is <city> .
  ..."): a question on the paragraph's land (answer: its city) or, one in four, on
  another land (impossible)."""
  rnd = random.Random(seed)
  data = []
  for a in range(articles):
    paragraphs = []
    for p in range(per_article):
      land, city = rnd.choice(list(zip(LANDS, CITIES)))
      context = (" ".join(rnd.sample(FILLER, 4)) + f" . the capital of {land} is {city} . " +
                 " ".join(rnd.sample(FILLER, 3)) + " .")
      if p % 4 == 3:
        other = rnd.choice([x for x in LANDS if x != land])
        qa = {"id": f"q{a}-{p}", "question": f"what is the capital of {other} ?",
              "answers": [], "plausible_answers": [], "is_impossible": True}
      else:
        start = context.index(f"of {land} is {city}") + len(f"of {land} is ")
        qa = {"id": f"q{a}-{p}", "question": f"what is the capital of {land} ?",
              "answers": [{"text": city, "answer_start": start}], "is_impossible": False}
      paragraphs.append({"context": context, "qas": [qa]})
    data.append({"title": f"article {a}", "paragraphs": paragraphs})
  return {"version": "v2.0", "data": data}


@pytest.fixture(scope="module")
def qa_run(tmp_path_factory):
  """Records, a fine-tuned tiny teacher, its label cache."""
  d = tmp_path_factory.mktemp("qa_run")
  vocab = d / "vocab.txt"
  words = sorted(set(CITIES + LANDS + FILLER + "what capital of ? .".split()))
  vocab.write_text("\n".join(SPECIAL + words) + "\n", encoding="utf-8")
  config = d / "bert_config.json"
  config.write_text(json.dumps(dict(TINY, vocab_size=len(SPECIAL) + len(words))))
  (d / "squad.json").write_text(json.dumps(_squad(0)))
  run_tool("create_qa_data", f"--input_file={d / 'squad.json'}", "--dev_articles=1",
           f"--vocab_file={vocab}", f"--output_dir={d / 'records'}", "--max_seq_length=48",
           "--doc_stride=16", "--max_query_length=12", "--nolog_examples")
  common = [f"--vocab_file={vocab}", "--train_batch_size=8", "--eval_batch_size=16",
            "--log_every_steps=5", "--learning_rate=1e-3"]
  run_tool("finetune", f"--model_config={config}", f"--data_dir={d / 'records'}",
           f"--output_dir={d / 'teacher'}", "--num_train_epochs=2", *common, timeout=600)
  run_tool("extract_teacher_labels", f"--init_checkpoint={d / 'teacher' / 'best'}",
           f"--vocab_file={vocab}", f"--input_dir={d / 'records'}",
           f"--output_dir={d / 'labels'}", "--batch_size=16")
  return {"dir": d, "vocab": str(vocab), "config": str(config), "common": common}


def test_finetune_keeps_the_best_dev_f1_with_official_predictions(qa_run):
  d = qa_run["dir"]
  manifest = stage.read_json(d / "teacher" / "manifest.json")
  assert manifest["stage"] == "finetune_qa"
  best = d / "teacher" / "best"
  info = json.loads((best / "span.json").read_text())["info"]
  assert info["metric"] == "f1"
  evals = json.loads((d / "teacher" / "eval_results.json").read_text())
  assert max(e["f1"] for e in evals) == info["value"]
  predictions = json.loads((best / "predictions.json").read_text())
  odds = json.loads((best / "null_odds.json").read_text())
  assert len(predictions) == len(odds) == 48  # the dev article's questions
  # The answerable questions are learnt ("always null" scores 0 on them).
  assert info["results"]["HasAns_f1"] > 60, info


def test_label_cache_holds_the_teachers_logits_in_float16(qa_run):
  d = qa_run["dir"]
  manifest = stage.read_json(d / "labels" / "manifest.json")
  assert manifest["stage"] == "extract_qa_labels"
  names = [f["name"] for f in manifest["files"]]
  assert "dev/examples.jsonl" in names and "train/part-00000.tfrecord" in names
  teacher = span.load_span_model(str(d / "teacher" / "best"))
  parse = parsing.parse_fn(schema.QA_FEATURES + schema.QA_TEACHER_FEATURES, 48)
  records = list(tfrecord.iter_records(str(d / "labels" / "train" / "part-00000.tfrecord")))
  batch = parse(tf.constant(records[:16]))
  out = teacher({k: batch[k] for k in schema.QA_MODEL_INPUTS})
  np.testing.assert_allclose(batch["teacher_start_logits"].numpy(),
                             out["start_logits"].numpy(), atol=2e-2, rtol=1e-3)
  proc = run_tool("extract_teacher_labels", f"--init_checkpoint={d / 'teacher' / 'best'}",
                  f"--vocab_file={qa_run['vocab']}", f"--input_dir={d / 'records'}",
                  f"--output_dir={d / 'labels'}", "--batch_size=16")
  assert "nothing to do" in proc.stdout


def test_evaluate_and_benchmark_follow_the_qa_kind(qa_run):
  d = qa_run["dir"]
  run_tool("evaluate", f"--checkpoint={d / 'teacher' / 'best'}",
           f"--input_dir={d / 'labels'}", f"--output_json={d / 'eval' / 'teacher.json'}",
           f"--vocab_file={qa_run['vocab']}")
  result = json.loads((d / "eval" / "teacher.json").read_text())
  best = json.loads((d / "teacher" / "best" / "span.json").read_text())["info"]
  assert result["metrics"]["f1"] == pytest.approx(best["results"]["f1"], abs=1e-6)
  assert result["metrics"]["teacher_agreement"] == 1.0
  assert os.path.exists(d / "eval" / "teacher_predictions" / "predictions.json")
  run_tool("benchmark", f"--models=teacher=:{d / 'teacher' / 'best'}",
           f"--input_dir={d / 'records'}", f"--output_dir={d / 'bench'}",
           f"--vocab_file={qa_run['vocab']}", "--repeats=2", "--throughput_batch=4")
  table = (d / "bench" / "benchmark.md").read_text()
  assert "| EM | F1 | F1 kept | HasAns F1 |" in table
  report = json.loads((d / "bench" / "benchmark.json").read_text())
  assert report["models"][0]["metrics"]["f1"] == pytest.approx(best["results"]["f1"])


def test_qa_flags_on_classification_input_and_bad_teacher(qa_run, tmp_path):
  d = qa_run["dir"]
  proc = run_tool("extract_teacher_labels", f"--init_checkpoint={qa_run['dir'] / 'records'}",
                  f"--vocab_file={qa_run['vocab']}", f"--input_dir={d / 'records'}",
                  f"--output_dir={tmp_path / 'labels'}", check=False)
  _assert_one_line_error(proc, "records")
  assert not os.path.exists(tmp_path / "labels" / "COMPLETED")


def test_distill_a_student_from_the_cached_logits(qa_run):
  d = qa_run["dir"]
  run_tool("distill", f"--student_config={qa_run['config']}", "--init_from=random",
           f"--teacher_labels_dir={d / 'labels'}", f"--output_dir={d / 'student'}",
           "--alpha=0.5", "--temperature=2", "--num_train_epochs=2", *qa_run["common"],
           timeout=600)
  manifest = stage.read_json(d / "student" / "manifest.json")
  assert manifest["stage"] == "distill_qa"
  identity = stage.read_json(d / "student" / "train_config.json")["identity"]
  assert identity["distill"] == {"alpha": 0.5, "temperature": 2.0}
  info = json.loads((d / "student" / "best" / "span.json").read_text())["info"]
  assert info["results"]["HasAns_f1"] > 60, info  # learnt from the teacher's logits
  proc = run_tool("distill", f"--student_config={qa_run['config']}",
                  f"--teacher_labels_dir={d / 'labels'}", f"--output_dir={d / 'x'}",
                  "--hidden_mse_weight=1", *qa_run["common"], check=False)
  _assert_one_line_error(proc, "--distill_phase=backbone")


def test_teacher_layers_come_from_a_span_model_or_a_headless_encoder(qa_run, tmp_path):
  """A fine-tuned span model gives its head as well; a pretrained encoder without
  one (DistilBERT's init: the pretrained model a teacher was tuned from) gives its
  encoder and a freshly initialised head, instead of a refusal."""
  d = qa_run["dir"]
  tuned = name_map.tf1_variable_map(span.load_span_model(str(d / "teacher" / "best")))
  source = name_map.tf1_variable_map(
      qa_runs.layer_source(qa_run["config"], str(d / "teacher" / "best")))
  assert "cls/squad/output_weights" in tuned and set(source) == set(tuned)
  for name, variable in tuned.items():
    np.testing.assert_array_equal(source[name].numpy(), variable.numpy())
  # A Google checkpoint of an encoder alone (no cls/squad/*).
  encoder = bert.backbone(span.build_span_model(qa_run["config"]))
  prefix = google.save_tf1_checkpoint(encoder, str(tmp_path / "pre" / "bert_model.ckpt"),
                                      write_config=False)
  source = name_map.tf1_variable_map(qa_runs.layer_source(qa_run["config"], prefix))
  encoder_vars = name_map.tf1_variable_map(encoder)
  assert set(source) - set(encoder_vars) == {"cls/squad/output_weights",
                                             "cls/squad/output_bias"}
  for name, variable in encoder_vars.items():
    np.testing.assert_array_equal(source[name].numpy(), variable.numpy())


def test_backbone_phase_then_the_span_loss(qa_run):
  """Phase 1 (hidden MSE through projections 16 -> 32 + attention KL, the teacher
  online) leaves no best/ and reports its terms; phase 2 starts from it."""
  d = qa_run["dir"]
  narrow = d / "narrow_config.json"
  narrow.write_text(json.dumps(dict(json.loads(open(qa_run["config"]).read()), hidden_size=16,
                                    num_attention_heads=2, intermediate_size=32)))
  teacher = [f"--teacher_config={qa_run['config']}",
             f"--teacher_checkpoint={d / 'teacher' / 'best'}"]
  proc = run_tool("distill", f"--student_config={narrow}", "--init_from=random",
                  f"--teacher_labels_dir={d / 'labels'}", f"--output_dir={d / 'phase1'}",
                  "--distill_phase=backbone", "--hidden_mse_weight=1",
                  "--attention_kl_weight=1", "--num_train_epochs=2", *teacher,
                  *qa_run["common"], timeout=600)
  assert "distill_qa (backbone phase)" in proc.stdout
  assert not os.path.exists(d / "phase1" / "best")
  identity = stage.read_json(d / "phase1" / "train_config.json")["identity"]
  assert identity["distill"]["phase"] == "backbone"
  assert identity["teacher"]["bert_config"]["hidden_size"] == 32
  evals = json.loads((d / "phase1" / "eval_results.json").read_text())
  assert {"hidden_mse", "attention_kl", "loss"} <= set(evals[-1])
  assert evals[-1]["loss"] < evals[0]["loss"], evals  # the student moves toward the teacher
  run_tool("distill", f"--student_config={narrow}", "--init_from=checkpoint",
           f"--init_checkpoint={d / 'phase1'}", f"--teacher_labels_dir={d / 'labels'}",
           f"--output_dir={d / 'phase2'}", "--alpha=0.5", "--temperature=2",
           "--num_train_epochs=2", *qa_run["common"], timeout=600)
  info = json.loads((d / "phase2" / "best" / "span.json").read_text())["info"]
  assert info["results"]["HasAns_f1"] > 60, info
  # The phase-1 checkpoint loads into the plain span model (projections left behind).
  phase1 = span.build_span_model(str(narrow), init_checkpoint=str(d / "phase1"))
  assert phase1.config.hidden_size == 16
  proc = run_tool("distill", f"--student_config={narrow}", f"--teacher_labels_dir={d / 'labels'}",
                  f"--output_dir={d / 'x2'}", "--distill_phase=backbone",
                  "--hidden_mse_weight=1", *qa_run["common"], check=False)
  _assert_one_line_error(proc, "--teacher_config")


def test_export_answers_raw_questions_like_the_checkpoint(qa_run):
  import tensorflow_text  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import
  d = qa_run["dir"]
  run_tool("export", f"--checkpoint={d / 'teacher' / 'best'}", f"--input_dir={d / 'records'}",
           f"--vocab_file={qa_run['vocab']}", f"--export_dir={d / 'export'}")
  serve = tf.saved_model.load(str(d / "export")).signatures["serving_default"]
  dataset = json.loads((d / "records" / "dev" / "dataset.json").read_text())["data"]
  qas = [(p["context"], qa) for a in dataset for p in a["paragraphs"] for qa in p["qas"]]
  out = serve(question=tf.constant([qa["question"] for _, qa in qas]),
              context=tf.constant([c for c, _ in qas]))
  expected = json.loads((d / "teacher" / "best" / "predictions.json").read_text())
  got = {qa["id"]: a.decode() for (_, qa), a in zip(qas, out["answer"].numpy())}
  assert got == expected
  for (context, _), a, s, e in zip(qas, out["answer"].numpy(), out["answer_start"].numpy(),
                                   out["answer_end"].numpy()):
    assert (context[s:e] if s >= 0 else "") == a.decode()
