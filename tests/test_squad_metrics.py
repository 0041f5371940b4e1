"""SQuAD EM/F1 pinned to values worked out by hand from the official
evaluate-v1.1 / v2.0 rules, and the logits -> answer text postprocessing on
hand-made logits for two windows."""

import json
import os

import numpy as np
import pytest

from modeling.evaluation import squad_metrics as sm
from modeling.evaluation import squad_predictions as sp
from pipeline.core.errors import ConfigError
from pipeline.records import qa_data
from pipeline.text.tokenization import BertTokenizer


def _dataset(*qas):
  return [{"title": "t", "paragraphs": [{"context": "unused", "qas": list(qas)}]}]


def _q(qid, *answers, impossible=None):
  qa = {"id": qid, "question": "?", "answers": [{"text": a, "answer_start": 0} for a in answers]}
  if impossible is not None:
    qa["is_impossible"] = impossible
  return qa


def test_normalize_answer():
  assert sm.normalize_answer("The  Quick, brown FOX!") == "quick brown fox"
  assert sm.normalize_answer("an apple a day") == "apple day"
  assert sm.normalize_answer("theater") == "theater"  # articles are whole words only


V1 = _dataset(_q("q1", "the Eiffel Tower", "Eiffel Tower"), _q("q2", "Denver Broncos"),
              _q("q3", "1990s", "in the 1990s"), _q("q4", "Paris"))


def test_v1_by_hand():
  preds = {"q1": "Eiffel tower!", "q2": "the Broncos", "q3": "1980s"}  # q4 unanswered
  # q1: "eiffel tower" both: EM 1, F1 1. q2: "broncos" vs "denver broncos": EM 0,
  # P 1/1, R 1/2, F1 2/3. q3: 0, 0. q4: no prediction: 0, 0, still counted.
  out = sm.evaluate_v1(V1, preds)  # evaluate-v1.1.py's own key names
  assert out["exact_match"] == pytest.approx(100 * 1 / 4)
  assert out["f1"] == pytest.approx(100 * (1 + 2 / 3) / 4)
  # The version-following entry point: the same figures under v2.0's names, the
  # names --best_metric and the tables use for both versions.
  assert sm.evaluate(V1, preds) == {"exact": out["exact_match"], "f1": out["f1"], "total": 4}
  assert sm.f1_score("", "") == 0  # v1.1's F1 has no empty-answer rule


V2 = _dataset(_q("q1", "Paris", impossible=False), _q("q2", "a red car", "car", impossible=False),
              _q("q3", impossible=True), _q("q4", impossible=True),
              _q("q5", "42", impossible=False))
V2_PREDS = {"q1": "Paris", "q2": "blue car", "q3": "", "q4": "London", "q5": ""}
NA = {"q1": 0.1, "q2": 0.4, "q4": 0.5, "q5": 0.8, "q3": 0.9}


def test_v2_by_hand():
  # q1 1/1; q2 EM 0, F1 max("red car": 1/2, "car": P 1/2 R 1 -> 2/3); q3 "" on
  # no-answer: 1/1; q4 an answer on no-answer: 0/0; q5 "" on an answer: 0/0.
  out = sm.evaluate(V2, V2_PREDS, NA)
  assert out["total"] == 5 and out["HasAns_total"] == 3 and out["NoAns_total"] == 2
  assert out["exact"] == pytest.approx(100 * 2 / 5)
  assert out["f1"] == pytest.approx(100 * (1 + 2 / 3 + 1) / 5)
  assert out["HasAns_exact"] == pytest.approx(100 / 3)
  assert out["HasAns_f1"] == pytest.approx(100 * (1 + 2 / 3) / 3)
  assert (out["NoAns_exact"], out["NoAns_f1"]) == (50.0, 50.0)
  # find_best_thresh: start at 2 (all no-answer), then by na_prob: q1 +1 = 3
  # (0.1), q2 +0 / +2/3 (0.4), q4 -1, q5 +0, q3 +0.
  assert (out["best_exact"], out["best_exact_thresh"]) == (pytest.approx(60.0), 0.1)
  assert (out["best_f1"], out["best_f1_thresh"]) == (pytest.approx(100 * (3 + 2 / 3) / 5),
                                                     0.4)


def test_v2_threshold_and_empty_references():
  # na_prob 0.5 > thresh 0.3 turns q4 into no-answer (right: 1); q1/q2 keep theirs.
  out = sm.evaluate_v2(V2, V2_PREDS, NA, na_prob_thresh=0.3)
  assert out["exact"] == pytest.approx(100 * 3 / 5)  # q1, q3, q4
  exact, f1 = sm.raw_scores(_dataset(_q("x", "The", impossible=False)), {"x": ""})
  assert exact == {"x": 1} and f1 == {"x": 1}  # "the" normalizes to "": reference ""
  assert sm.evaluate_v2(V2, {"q1": "Paris"})["total"] == 1  # missing: left out
  assert "best_f1" not in sm.evaluate_v2(V2, V2_PREDS)


# --- Postprocessing: two windows of "One two three four Five Six seven eight". ---

SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
WORDS = "what number one two three four five six seven eight".split()
CONTEXT = "One two three four  Five Six seven eight"


@pytest.fixture(scope="module")
def example(tmp_path_factory):
  d = tmp_path_factory.mktemp("post")
  (d / "vocab.txt").write_text("\n".join(SPECIAL + WORDS) + "\n", encoding="utf-8")
  tok = BertTokenizer(str(d / "vocab.txt"))
  qa = {"id": "q", "question": "what number", "answers": [], "is_impossible": True}
  articles = [{"title": "t", "paragraphs": [{"context": CONTEXT, "qas": [qa]}]}]
  examples = qa_data.read_examples("f.json", articles, "v2.0")
  paths = (str(d / "r.tfrecord"), str(d / "e.jsonl"))
  windows = qa_data.WindowConfig(max_seq_length=10, doc_stride=3, max_query_length=4)
  qa_data.write_split(examples, tok, windows, paths, False)
  (entry,) = qa_data.read_sidecar(paths[1])
  return entry


def _logits(spans):
  """[2, 10] start and end logits: -10 everywhere but {(window, pos): value}."""
  start, end = np.full((2, 10), -10.0, np.float32), np.full((2, 10), -10.0, np.float32)
  for (k, pos), (s, e) in spans.items():
    start[k, pos], end[k, pos] = s, e
  return start, end


def test_two_windows_and_their_max_context(example):
  # 8 pieces, 5 per window, stride 3: pieces 0-4 and 3-7. Piece 3 ("four") has
  # more context in window 0 (min(3, 1) > min(0, 4)), piece 4 in window 1.
  assert [(w["span_start"], w["span_length"]) for w in example["windows"]] == [(0, 5), (3, 5)]
  assert [w["max_context"] for w in example["windows"]] == [[1, 1, 1, 1, 0], [0, 1, 1, 1, 1]]


def test_best_span_over_windows_keeps_the_original_text(example):
  # Window positions: 4 = [CLS] what number [SEP]; window 1's position 4 is
  # "four" (not its max context: excluded although its logit is the largest).
  start, end = _logits({(0, 0): (1.0, 1.0), (0, 7): (3.0, -10), (0, 8): (-10, 3.0),
                        (1, 0): (0.5, 0.5), (1, 4): (9.0, -10), (1, 5): (4.0, -10),
                        (1, 6): (-10, 4.0)})
  ids = [w["unique_id"] for w in example["windows"]]
  config = sp.PredictionConfig(version_2_with_negative=True)
  (pred,) = sp.predict([example], ids, start, end, config).values()
  assert pred.text == "Five Six" == CONTEXT[pred.char_start:pred.char_end]
  assert (pred.char_start, pred.char_end) == (20, 28)
  assert pred.null_odds == pytest.approx((0.5 + 0.5) - (4.0 + 4.0))  # min null: window 1
  # Then window 0's "four  Five" (the n-best shows run_squad's one-space text),
  # then the null answer (score 1).
  assert [n["text"] for n in pred.nbest[:3]] == ["Five Six", "four Five", ""]
  assert sum(n["probability"] for n in pred.nbest) == pytest.approx(1.0)
  config = sp.PredictionConfig(version_2_with_negative=True, null_score_diff_threshold=-8.0)
  (pred,) = sp.predict([example], ids, start, end, config).values()
  assert (pred.text, pred.char_start) == ("", -1)  # -7 > -8: no answer


def test_v1_answer_and_written_files(example, tmp_path):
  start, end = _logits({(0, 7): (3.0, -10), (0, 8): (-10, 3.0)})
  ids = [w["unique_id"] for w in example["windows"]]
  preds = sp.predict([example], ids, start, end, sp.PredictionConfig())
  assert preds["q"].text == "four  Five" and preds["q"].null_odds is None
  paths = sp.write_predictions(preds, str(tmp_path), version_2_with_negative=False)
  assert [os.path.basename(p) for p in paths] == ["predictions.json", "nbest_predictions.json"]
  assert json.load(open(paths[0])) == {"q": "four  Five"}
  with pytest.raises(ValueError, match="no logits for window"):
    sp.predict([example], ids[:1], start[:1], end[:1], sp.PredictionConfig())
  with pytest.raises(ConfigError):
    sp.PredictionConfig(n_best_size=0)


def test_final_text_maps_back_through_accents_and_cjk():
  # get_final_text: the prediction is found in the re-tokenized words, then
  # mapped back character by character (spaces ignored).
  assert sp.final_text_span("muller", "Café Müller,", True) == (5, 11)
  assert sp.final_text_span("日 本", "東京は日本の首都です。", True) == (3, 5)
  # No alignment (a prediction not in the words): the whole words.
  assert sp.final_text_span("berlin", "Café Müller,", True) == (0, 12)
