"""Per-window start/end logits -> SQuAD answers, as run_squad.py's write_predictions.

Pure NumPy: it takes logits arrays, so it is tested without a model. Shapes:
N = windows, S = max_seq_length. `examples` are the entries of a QA records
stage's dev/examples.jsonl (pipeline/records/qa_data.py: words, their char
offsets, word pieces and each window's span); `unique_ids` [N] say which
window each logits row is.

Per question, as the reference does it:
  1. in each window, the n_best_size best start and end positions; a pair is a
     candidate if both are context pieces of the window, the start is a piece
     this window gives the most context (max_context), end >= start and the
     span is at most max_answer_length pieces;
  2. v2.0: the null score is the smallest start[0] + end[0] ([CLS]) over the
     windows, and the null answer is a candidate;
  3. candidates by start + end logit, best first; each span's text is its
     pieces de-tokenized, found in the whitespace words it covers
     (get_final_text: the words re-tokenized without word-piecing, aligned
     character by character ignoring spaces; whole words if that fails);
     repeated texts are dropped, n_best_size kept;
  4. v1.1: the best text; v2.0: "" when null score - best non-null score >
     null_score_diff_threshold, else the best non-null text. null_odds.json
     holds that difference (what evaluate-v2.0's --na-prob-file reads).
The answer is then the context's own substring for the chosen word-aligned
span (so it keeps the context's casing, accents and whitespace; the reference
joins words with one space, which the official metric's normalization cannot
tell apart), with its character span.

Where the reference would crash (v2.0 and no non-null candidate in any
window) the answer is "" with null odds NO_CANDIDATE_ODDS.
"""

import dataclasses
import json
import math
import os

import numpy as np

from pipeline.core.errors import ConfigError
from pipeline.text.tokenization import prepare_text

NO_CANDIDATE_ODDS = 1e6  # the reference's own "no null score yet" value


@dataclasses.dataclass(frozen=True, kw_only=True)
class PredictionConfig:
  """run_squad's prediction flags."""
  n_best_size: int = 20
  max_answer_length: int = 30
  do_lower_case: bool = True  # as the records were tokenized
  version_2_with_negative: bool = False
  null_score_diff_threshold: float = 0.0

  def __post_init__(self):
    if self.n_best_size < 1 or self.max_answer_length < 1:
      raise ConfigError("n_best_size and max_answer_length must be >= 1")


@dataclasses.dataclass(frozen=True)
class Prediction:
  """One question's answer: text, [char_start, char_end) in the context (-1, -1
  for no answer), the n-best list and (v2.0) the null odds."""
  text: str
  char_start: int
  char_end: int
  nbest: list  # [{"text", "probability", "start_logit", "end_logit"}]
  null_odds: float = None


@dataclasses.dataclass(frozen=True)
class _Candidate:
  window: int  # index into the example's windows
  start: int  # window positions; 0 = the null answer
  end: int
  start_logit: float
  end_logit: float


def best_indexes(logits, n_best_size):
  """Positions of the n_best_size largest logits, largest first (ties: first
  position first, as the reference's stable sort)."""
  return np.argsort(-np.asarray(logits), kind="stable")[:n_best_size].tolist()


def _strip_spaces(text):
  """(text without " ", {index in it: index in text})."""
  kept = [(i, c) for i, c in enumerate(text) if c != " "]
  return "".join(c for _, c in kept), {n: i for n, (i, _) in enumerate(kept)}


def final_text_span(pred_text, orig_text, do_lower_case):
  """run_squad's get_final_text as a span [start, end) of orig_text.

  pred_text is normalized (lower case, no accents); orig_text is the words it
  came from. orig_text is tokenized without word-piecing, pred_text found in
  it, and the match mapped back character by character (spaces ignored). The
  whole of orig_text when any step fails, as in the reference.
  """
  tok_text = " ".join(prepare_text(orig_text, do_lower_case).split())
  start = tok_text.find(pred_text)
  whole = (0, len(orig_text))
  if start == -1:
    return whole
  end = start + len(pred_text) - 1
  orig_ns, orig_map = _strip_spaces(orig_text)
  tok_ns, tok_map = _strip_spaces(tok_text)
  if len(orig_ns) != len(tok_ns):
    return whole
  tok_to_ns = {i: n for n, i in tok_map.items()}
  if start not in tok_to_ns or end not in tok_to_ns:
    return whole
  return orig_map[tok_to_ns[start]], orig_map[tok_to_ns[end]] + 1


def _candidates(example, rows, start_logits, end_logits, config):
  """Every window's candidate spans (step 1) and the null candidate (step 2)."""
  out, null = [], None
  for k, (window, row) in enumerate(zip(example["windows"], rows)):
    starts, ends = start_logits[row], end_logits[row]
    null_start, null_end = float(starts[0]), float(ends[0])  # float64 sums, as the reference
    if config.version_2_with_negative and (null is None or null_start + null_end <
                                           null.start_logit + null.end_logit):
      null = _Candidate(k, 0, 0, null_start, null_end)
    first, count = window["doc_offset"], window["span_length"]
    for s in best_indexes(starts, config.n_best_size):
      for e in best_indexes(ends, config.n_best_size):
        if not (first <= s < first + count and first <= e < first + count):
          continue
        if not window["max_context"][s - first] or e < s:
          continue
        if e - s + 1 <= config.max_answer_length:
          out.append(_Candidate(k, s, e, float(starts[s]), float(ends[e])))
  if null is not None:
    out.append(null)
  return sorted(out, key=lambda c: c.start_logit + c.end_logit, reverse=True), null


def _word_span(example, candidate):
  """(first word, last word, the de-tokenized pieces) of a non-null candidate."""
  window = example["windows"][candidate.window]
  first = window["span_start"] + candidate.start - window["doc_offset"]
  last = window["span_start"] + candidate.end - window["doc_offset"]
  text = " ".join(example["pieces"][first:last + 1]).replace(" ##", "").replace("##", "")
  return example["piece_to_word"][first], example["piece_to_word"][last], " ".join(
      text.strip().split())


def span_text(example, candidate, do_lower_case):
  """(reference text, char start, char end) of a non-null candidate; the text is
  run_squad's (words joined by one space), the span indexes the context."""
  w0, w1, tok_text = _word_span(example, candidate)
  words = example["words"][w0:w1 + 1]
  orig_text = " ".join(words)
  s, e = final_text_span(tok_text, orig_text, do_lower_case)
  # orig_text position -> context position (the joining spaces are never ends).
  to_context = []
  for word, start in zip(words, example["word_starts"][w0:w1 + 1]):
    to_context += list(range(start, start + len(word))) + [None]
  return orig_text[s:e], to_context[s], to_context[e - 1] + 1


def softmax(scores):
  """run_squad's _compute_softmax (max-shifted, in float64)."""
  if not scores:
    return []
  top = max(scores)
  exps = [math.exp(x - top) for x in scores]
  return [x / sum(exps) for x in exps]


def _nbest(example, ranked, null, config):
  """[(text, char start, char end, start logit, end logit)]: step 3."""
  nbest, seen = [], set()
  for c in ranked:
    if len(nbest) >= config.n_best_size:
      break
    text, s, e = span_text(example, c, config.do_lower_case) if c.start > 0 else ("", -1, -1)
    if text in seen:
      continue
    seen.add(text)
    nbest.append((text, s, e, c.start_logit, c.end_logit))
  if config.version_2_with_negative and "" not in seen:
    nbest.append(("", -1, -1, null.start_logit, null.end_logit))
  return nbest or [("empty", -1, -1, 0.0, 0.0)]


def predict_example(example, rows, start_logits, end_logits, config):
  """The Prediction of one sidecar example; rows[k]: its window k's logits row."""
  ranked, null = _candidates(example, rows, start_logits, end_logits, config)
  nbest = _nbest(example, ranked, null, config)
  probs = softmax([n[3] + n[4] for n in nbest])
  nbest_json = [{"text": n[0], "probability": p, "start_logit": n[3], "end_logit": n[4]}
                for n, p in zip(nbest, probs)]
  best = next((n for n in nbest if n[0]), None)
  if not config.version_2_with_negative:
    text, s, e = nbest[0][:3]
    return Prediction(example["context"][s:e] if s >= 0 else text, s, e, nbest_json)
  if best is None:
    return Prediction("", -1, -1, nbest_json, NO_CANDIDATE_ODDS)
  odds = null.start_logit + null.end_logit - best[3] - best[4]
  if odds > config.null_score_diff_threshold:
    return Prediction("", -1, -1, nbest_json, odds)
  return Prediction(example["context"][best[1]:best[2]], best[1], best[2], nbest_json, odds)


def predict(examples, unique_ids, start_logits, end_logits, config):
  """{question id: Prediction} of every example.

  Args:
    examples: the sidecar entries (qa_data.read_sidecar).
    unique_ids: int [N], the windows' unique_id feature.
    start_logits, end_logits: float [N, S].
    config: a PredictionConfig.
  Raises:
    ValueError: a window of an example has no logits row.
  """
  row_of = {int(u): i for i, u in enumerate(np.asarray(unique_ids).reshape(-1))}
  start_logits, end_logits = np.asarray(start_logits), np.asarray(end_logits)
  out = {}
  for example in examples:
    missing = [w["unique_id"] for w in example["windows"] if w["unique_id"] not in row_of]
    if missing:
      raise ValueError(f"question {example['id']}: no logits for window unique_id "
                       f"{missing[0]}")
    rows = [row_of[w["unique_id"]] for w in example["windows"]]
    out[example["id"]] = predict_example(example, rows, start_logits, end_logits, config)
  return out


def prediction_files(predictions, version_2_with_negative):
  """{file name: JSON text}: predictions.json ({id: text}, the official format),
  nbest_predictions.json and, for v2.0, null_odds.json (evaluate-v2.0's
  --na-prob-file)."""
  files = {"predictions.json": {q: p.text for q, p in predictions.items()},
           "nbest_predictions.json": {q: p.nbest for q, p in predictions.items()}}
  if version_2_with_negative:
    files["null_odds.json"] = {q: p.null_odds for q, p in predictions.items()}
  return {name: json.dumps(obj, indent=2, ensure_ascii=False) + "\n"
          for name, obj in files.items()}


def write_predictions(predictions, output_dir, version_2_with_negative):
  """Writes prediction_files into output_dir; returns their paths."""
  os.makedirs(output_dir, exist_ok=True)
  paths = []
  for name, text in prediction_files(predictions, version_2_with_negative).items():
    paths.append(os.path.join(output_dir, name))
    with open(paths[-1], "w", encoding="utf-8") as f:
      f.write(text)
  return paths
