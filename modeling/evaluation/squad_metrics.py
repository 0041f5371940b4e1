"""SQuAD EM and F1 exactly as the official evaluate-v1.1.py and evaluate-v2.0.py.

Pure Python (no TensorFlow). `dataset` is the official file's "data" list
(articles -> paragraphs -> qas), `predictions` {question id: answer text}, as
in predictions.json; `na_probs` {question id: no-answer score} as in
null_odds.json (v2.0 only).

The rules, as the official scripts have them:
  * normalize_answer: lower case, drop string.punctuation, drop the words
    a/an/the, collapse whitespace;
  * EM: normalized strings equal; F1: harmonic mean of token precision and
    recall over normalized whitespace tokens (multiset overlap);
  * each question scores its max over the reference answers;
  * v1.1: a question without a prediction scores 0 and counts in the total;
  * v2.0: a no-answer question's reference is "" (only an empty prediction is
    right); references that normalize to "" are ignored; a question without a
    prediction is left out of the totals (the official prints "Missing
    prediction" and skips it); `na_prob_thresh` (1.0) turns predictions with a
    larger na_prob into no-answer; HasAns_/NoAns_ splits; with na_probs,
    best_exact/best_f1 and their thresholds by the official find_best_thresh.
The one difference: the official v2.0 script crashes (KeyError) on a HasAns or
NoAns question without a prediction; here the splits count the predicted ones.
"""

import collections
import re
import string

_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCTUATION = frozenset(string.punctuation)


def normalize_answer(s):
  """Lower text and remove punctuation, articles and extra whitespace."""
  s = "".join(ch for ch in s.lower() if ch not in _PUNCTUATION)
  return " ".join(_ARTICLES.sub(" ", s).split())


def exact_match_score(prediction, ground_truth):
  """evaluate-v1.1's EM (evaluate-v2.0's compute_exact is the same)."""
  return normalize_answer(prediction) == normalize_answer(ground_truth)


def f1_score(prediction, ground_truth):
  """evaluate-v1.1's F1: 0 when nothing is shared (even if both are empty)."""
  prediction_tokens = normalize_answer(prediction).split()
  ground_truth_tokens = normalize_answer(ground_truth).split()
  common = collections.Counter(prediction_tokens) & collections.Counter(ground_truth_tokens)
  num_same = sum(common.values())
  if num_same == 0:
    return 0
  precision = num_same / len(prediction_tokens)
  recall = num_same / len(ground_truth_tokens)
  return (2 * precision * recall) / (precision + recall)


def compute_f1(a_gold, a_pred):
  """evaluate-v2.0's F1: two empty answers agree (1), one empty one does not (0)."""
  gold_toks = normalize_answer(a_gold).split() if a_gold else []
  pred_toks = normalize_answer(a_pred).split() if a_pred else []
  if not gold_toks or not pred_toks:
    return int(gold_toks == pred_toks)
  return f1_score(a_pred, a_gold)


def _questions(dataset):
  for article in dataset:
    for paragraph in article["paragraphs"]:
      yield from paragraph["qas"]


def is_v2(dataset):
  """Whether a dataset is SQuAD v2.0 (its questions say is_impossible)."""
  return any("is_impossible" in qa for qa in _questions(dataset))


def raw_scores_v1(dataset, predictions):
  """evaluate-v1.1's per-question scores: ({qid: exact}, {qid: f1}) of every question,
  each the max over its reference answers; an unanswered question scores 0 (the
  official prints "Unanswered question")."""
  exact, f1 = {}, {}
  for qa in _questions(dataset):
    if qa["id"] not in predictions:
      exact[qa["id"]] = f1[qa["id"]] = 0
      continue
    truths = [a["text"] for a in qa["answers"]]
    prediction = predictions[qa["id"]]
    exact[qa["id"]] = max(exact_match_score(prediction, t) for t in truths)
    f1[qa["id"]] = max(f1_score(prediction, t) for t in truths)
  return exact, f1


def evaluate_v1(dataset, predictions):
  """{"exact_match", "f1"} in percent, as evaluate-v1.1.py prints them."""
  exact, f1 = raw_scores_v1(dataset, predictions)
  return {"exact_match": 100.0 * sum(exact.values()) / len(exact),
          "f1": 100.0 * sum(f1.values()) / len(f1)}


def raw_scores(dataset, predictions):
  """evaluate-v2.0's get_raw_scores: ({qid: exact}, {qid: f1}) of predicted qids."""
  exact, f1 = {}, {}
  for qa in _questions(dataset):
    golds = [a["text"] for a in qa["answers"] if normalize_answer(a["text"])] or [""]
    if qa["id"] not in predictions:
      continue
    pred = predictions[qa["id"]]
    exact[qa["id"]] = max(int(exact_match_score(pred, a)) for a in golds)
    f1[qa["id"]] = max(compute_f1(a, pred) for a in golds)
  return exact, f1


def apply_no_ans_threshold(scores, na_probs, qid_to_has_ans, na_prob_thresh):
  """Scores with a no-answer prediction wherever na_prob > thresh."""
  return {qid: (float(not qid_to_has_ans[qid]) if na_probs[qid] > na_prob_thresh else s)
          for qid, s in scores.items()}


def _eval_dict(exact, f1, qids):
  return {"exact": 100.0 * sum(exact[k] for k in qids) / len(qids),
          "f1": 100.0 * sum(f1[k] for k in qids) / len(qids), "total": len(qids)}


def find_best_thresh(predictions, scores, na_probs, qid_to_has_ans):
  """evaluate-v2.0's find_best_thresh: (best score in %, its na_prob threshold).

  Starts from "every question is no-answer" (score = the no-answer count), then
  answers questions in increasing na_prob, keeping the best running score.
  """
  cur_score = best_score = sum(1 for k in qid_to_has_ans if not qid_to_has_ans[k])
  best_thresh = 0.0
  for qid in sorted(na_probs, key=lambda k: na_probs[k]):
    if qid not in scores:
      continue
    if qid_to_has_ans[qid]:
      diff = scores[qid]
    else:
      diff = -1 if predictions[qid] else 0
    cur_score += diff
    if cur_score > best_score:
      best_score, best_thresh = cur_score, na_probs[qid]
  return 100.0 * best_score / len(scores), best_thresh


def evaluate_v2(dataset, predictions, na_probs=None, na_prob_thresh=1.0):
  """evaluate-v2.0.py's output dict (exact, f1, total, HasAns_*, NoAns_*, and
  with na_probs best_exact(_thresh), best_f1(_thresh))."""
  has_ans = {qa["id"]: bool(qa["answers"]) for qa in _questions(dataset)}
  exact_raw, f1_raw = raw_scores(dataset, predictions)
  probs = na_probs if na_probs is not None else {k: 0.0 for k in predictions}
  exact = apply_no_ans_threshold(exact_raw, probs, has_ans, na_prob_thresh)
  f1 = apply_no_ans_threshold(f1_raw, probs, has_ans, na_prob_thresh)
  out = _eval_dict(exact, f1, list(exact))
  for prefix, want in (("HasAns", True), ("NoAns", False)):
    qids = [k for k, v in has_ans.items() if v == want and k in exact]
    if qids:
      out.update({f"{prefix}_{k}": v for k, v in _eval_dict(exact, f1, qids).items()})
  if na_probs is not None:
    out["best_exact"], out["best_exact_thresh"] = find_best_thresh(
        predictions, exact_raw, na_probs, has_ans)
    out["best_f1"], out["best_f1_thresh"] = find_best_thresh(
        predictions, f1_raw, na_probs, has_ans)
  return out


def evaluate(dataset, predictions, na_probs=None):
  """The official script of the dataset's version: evaluate_v2 for v2.0 data
  (with is_impossible), else evaluate_v1, under evaluate-v2.0's key names for both
  ("exact", "f1", "total"), so that one set of metric names (--best_metric, the
  tables) serves both versions; evaluate_v1 keeps evaluate-v1.1.py's own names."""
  if is_v2(dataset):
    return evaluate_v2(dataset, predictions, na_probs)
  v1 = evaluate_v1(dataset, predictions)
  return {"exact": v1["exact_match"], "f1": v1["f1"],
          "total": sum(1 for _ in _questions(dataset))}
