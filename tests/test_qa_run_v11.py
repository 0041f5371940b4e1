"""bench/qa_run.py's SQuAD 1.1 mode without training: the answerable-only file it
writes from a 2.0 file, its per-question F1 against the official v1.1 rules, and
that v1.1 scores carry every metric name the QA trainer keeps checkpoints by."""

import json
import os
import sys

import numpy as np
import pytest

from modeling.evaluation import squad_metrics
from modeling.training import qa_training
from pipeline.core import stage
from pipeline.records import qa_data
from tests.conftest import ROOT

sys.path.insert(0, os.path.join(ROOT, "bench"))
import qa_run  # noqa: E402  pylint: disable=wrong-import-position


def _qa(qid, answers=(), impossible=False, plausible=()):
  return {"id": qid, "question": f"question {qid}?", "is_impossible": impossible,
          "answers": [{"text": t, "answer_start": 0} for t in answers],
          **({"plausible_answers": [{"text": t, "answer_start": 0} for t in plausible]}
             if plausible else {})}


V2 = {"version": "v2.0", "data": [
    {"title": "A", "paragraphs": [
        {"context": "Paris is in France.", "qas": [_qa("a1", ["Paris"]),
                                                   _qa("a2", impossible=True,
                                                       plausible=["France"])]},
        {"context": "Only impossible here.", "qas": [_qa("a3", impossible=True)]}]},
    {"title": "B", "paragraphs": [
        {"context": "Nothing to ask.", "qas": [_qa("b1", impossible=True)]}]},
    {"title": "C", "paragraphs": [
        {"context": "Rome is old.", "qas": [_qa("c1", ["Rome", "Rome is"])]}]}]}


def test_answerable_only_is_a_v1_file_of_the_answerable_questions(tmp_path):
  out = qa_run.answerable_only(V2)
  # Paragraphs and articles left without a question are dropped; titles and contexts kept.
  assert [a["title"] for a in out["data"]] == ["A", "C"]
  assert [p["context"] for p in out["data"][0]["paragraphs"]] == ["Paris is in France."]
  qas = [qa for a in out["data"] for p in a["paragraphs"] for qa in p["qas"]]
  assert [qa["id"] for qa in qas] == ["a1", "c1"]
  assert all(set(qa) == {"id", "question", "answers"} for qa in qas)
  assert V2["data"][0]["paragraphs"][0]["qas"][1]["is_impossible"]  # input left alone
  path = tmp_path / "v11.json"
  stage.atomic_write_text(str(path), stage.json_dumps(out))
  version, articles = qa_data.load_squad(str(path))  # the records tool reads it as 1.1
  assert version == "v1.1" and len(articles) == 2


def test_per_question_f1_follows_evaluate_v1():
  dataset = qa_run.answerable_only(V2)["data"]
  preds = {"a1": "paris", "c1": "Rome is old"}  # a1 exact; c1: best of "Rome", "Rome is"
  f1 = qa_run.per_question_f1(dataset, preds, None)
  # id order: a1 = 1; c1 vs "rome is" (articles/punctuation aside): P 2/3, R 1 -> 0.8.
  np.testing.assert_allclose(f1, [1.0, 0.8])
  assert squad_metrics.evaluate(dataset, preds)["f1"] == pytest.approx(100 * f1.mean())
  # An unanswered question scores 0, as evaluate-v1.1 counts it.
  np.testing.assert_allclose(qa_run.per_question_f1(dataset, {"a1": "Paris"}, None), [1, 0])


def test_v1_scores_carry_every_metric_the_trainer_keeps_by():
  dataset = qa_run.answerable_only(V2)["data"]
  scores = squad_metrics.evaluate(dataset, {"a1": "Paris"})
  assert set(qa_training.metric_names("v1.1")) <= set(scores)
  assert scores["exact"] == pytest.approx(50.0) and scores["total"] == 2


def test_v1_report_has_no_null_columns():
  args = qa_run.parse_args(["--squad_version=v1.1", "--work_dir=/tmp/x"])
  assert (args.select_metric, os.path.basename(args.output_md)) == ("f1", "qa_results_v1.1.md")
  assert [h for h, _ in qa_run.score_columns(False)] == ["EM", "F1"]
  assert qa_run.parse_args([]).select_metric == "best_f1"


@pytest.mark.parametrize("name,v2", [("qa_run_v1.1.json", False), ("qa_run.json", True)])
def test_the_committed_results_render_with_their_versions_columns(name, v2):
  """The page of each committed result: 2.0's null columns and always-null baseline
  only on 2.0; every student arm and the baselines' bootstrap table on both."""
  with open(os.path.join(ROOT, "bench", "results", name), encoding="utf-8") as f:
    result = json.load(f)
  page = qa_run.markdown(result, "(benchmark table)")
  head = "| System | Seeds | EM | F1 |" + (" HasAns F1 | NoAns F1 | Best F1 |" if v2 else "")
  assert head in page.splitlines()
  assert ("always null" in page) == v2 and ("HasAns" in page) == v2
  assert "## Do the models learn?" in page and "(benchmark table)" in page
  for arm in result["students"]:
    assert f"| {qa_run.arm_title(arm)} | 3 |" in page


def test_beats_baselines_compares_each_model_per_question():
  dataset = qa_run.answerable_only(V2)["data"]
  # First sentences: a1 "Paris is in France." vs "Paris": P 1/4, R 1 -> F1 0.4;
  # c1 "Rome is old." vs "Rome is" (its best reference): P 2/3, R 1 -> F1 0.8.
  perfect = {"predictions_json": {"a1": "Paris", "c1": "Rome"}, "null_odds_json": None}
  half = {"predictions_json": {"a1": "Paris", "c1": "old"}, "null_odds_json": None}
  scores = qa_run.question_scores(dataset, {"no_teacher": {1: perfect, 2: half}})
  tests = qa_run.beats_baselines(dataset, perfect, scores)
  assert set(tests) == {"teacher", "no_teacher"}
  assert list(tests["teacher"]) == ["first_sentence"]  # 1.1: no always-null
  teacher = tests["teacher"]["first_sentence"]
  assert (teacher["mean_a"], teacher["mean_b"]) == pytest.approx((1.0, 0.6))
  # The student arm: per question, the mean over seeds (a1: 1, c1: (1 + 0) / 2).
  assert tests["no_teacher"]["first_sentence"]["mean_a"] == pytest.approx(0.75)
