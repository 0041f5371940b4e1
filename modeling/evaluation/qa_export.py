"""SavedModel export of an extractive QA model (BertSpanLabeler) that takes raw text.

Shape legend: B = questions, N = windows of all questions, S = max_seq_length,
K = n_best_size.

Signatures (float32 graph, whatever precision trained the model):
  serving_default: question string [B], context string [B] ->
      answer string [B]: the context's own substring (its casing, accents,
        inner whitespace), "" for no answer;
      answer_start, answer_end int32 [B]: [start, end) of the answer in
        *code points* of the context (Python str indices, SQuAD's
        `answer_start` convention; not bytes, not UTF-16; invalid UTF-8 counts
        as one U+FFFD per bad sequence), -1 for no answer;
      score float32 [B]: start + end logit of the answer's span; for a v2.0
        null answer the null score (the smallest [CLS] start + end over the
        windows); 0 for the empty answer of an empty input or (v1.1) of a
        question without any candidate span;
      v2.0 models also: is_impossible bool [B] (null_odds > the export's
        null_score_diff_threshold) and null_odds float32 [B] (null score -
        best span score; 1e6 when no span is a candidate, as
        squad_predictions; what evaluate-v2.0's --na-prob-file reads).
  encoded: input_ids, input_mask, segment_ids int32 [B,S'] -> start_logits,
      end_logits float32 [B,S'] (for engines that tokenize elsewhere).

The graph does what the records stage and squad_predictions do on the host
(qa_graph.py: windows, max_context, get_final_text; here: n-best spans per
window, the best over windows, the v2.0 null rule), so its answers are the
checkpoint's: tests/test_qa_export.py checks text and span on the real SQuAD
2.0 sample (all 1,407 questions equal, cased and uncased, with and without
[UNK] words, when measured). Where they can differ: the tokenizer (tf_text vs
the reference, task_export.compare_tokenizers), a word of at most 200
characters but more than 200 UTF-8 bytes ([UNK] here, word pieces in the
reference), and logits equal to the last float bit (a tie in the n-best or at
the null threshold may break the other way).

Cost: all windows of the batch's questions go through the model in one call
([N,S], N ~ 1 + (context pieces - S) / doc_stride per question), and
max_context builds [N,S,X] (X = most windows of a question) float64 scores.

Empty input: a question or context without any word piece gets the empty
answer ("", -1, -1, score 0; v2.0: is_impossible, null_odds 1e6), not an error
(one bad row must not fail a served batch). A v1.1 question with no candidate
span gets the same (the host path says "empty", the reference's placeholder).
"""

import dataclasses

import keras
import tensorflow as tf

from modeling.evaluation import qa_graph
from modeling.evaluation import squad_predictions
from modeling.evaluation import task_export
from modeling.models import heads
from modeling.networks import bert as bert_lib
from pipeline.records import qa_data
from pipeline.records import schema

QA_FILE = "qa.json"  # not task.json: tools/serve.py serves classifiers only
_NEG = float("-inf")


def configs_from_manifest(manifest_config, **prediction):
  """(qa_data.WindowConfig, squad_predictions.PredictionConfig) of a QA records
  manifest's "config" (max_seq_length, doc_stride, max_query_length,
  do_lower_case, version); `prediction` sets n_best_size, max_answer_length,
  null_score_diff_threshold."""
  c = manifest_config
  windows = qa_data.WindowConfig(c["max_seq_length"], c["doc_stride"], c["max_query_length"])
  return windows, squad_predictions.PredictionConfig(
      do_lower_case=bool(c["do_lower_case"]),
      version_2_with_negative=c["version"] == "v2.0", **prediction)


def _candidates(start_logits, end_logits, spans, max_context, usable, config):
  """Scores float64 [N,K,K] of (k-th best start, k'-th best end) pairs, -inf
  where not a candidate; and the start / end positions int64 [N,K]."""
  k = min(config.n_best_size, start_logits.shape[1])
  start_value, start_at = tf.math.top_k(start_logits, k)  # ties: lower position first
  end_value, end_at = tf.math.top_k(end_logits, k)
  start_at, end_at = tf.cast(start_at, tf.int64), tf.cast(end_at, tf.int64)
  first = spans["offset"][:, None]
  last = first + spans["length"][:, None]  # exclusive
  start_ok = ((start_at >= first) & (start_at < last) &
              tf.gather(max_context, start_at, batch_dims=1))
  start_ok &= tf.gather(usable, spans["question"])[:, None]
  end_ok = (end_at >= first) & (end_at < last)
  s, e = start_at[:, :, None], end_at[:, None, :]
  ok = (start_ok[:, :, None] & end_ok[:, None, :] & (e >= s) &
        (e - s + 1 <= config.max_answer_length))
  # float64 sums of float32 logits, as the reference's Python floats.
  score = (tf.cast(start_value, tf.float64)[:, :, None] +
           tf.cast(end_value, tf.float64)[:, None, :])
  return tf.where(ok, score, _NEG), start_at, end_at


def _best_per_question(scores, spans, num_questions):
  """(best score float64 [B], window int64 [B], pair index int64 [B]) over the
  question's windows; the first (window, start rank, end rank) on ties, as
  the reference's stable sort."""
  kk = scores.shape[1] * scores.shape[2]
  flat = tf.reshape(scores, [-1, kk])  # [N,K*K]
  per_question = tf.RaggedTensor.from_value_rowids(
      flat, spans["question"], nrows=num_questions).merge_dims(1, 2)  # [B,(X*K*K)]
  dense = per_question.to_tensor(_NEG)
  best = tf.reduce_max(dense, axis=1)
  index = tf.range(tf.shape(dense, out_type=tf.int64)[1])
  pick = tf.reduce_min(tf.where(dense == best[:, None], index, tf.int64.max), axis=1)
  pick = tf.where(best > _NEG, pick, 0)
  first_window = tf.RaggedTensor.from_value_rowids(
      spans["index"], spans["question"], nrows=num_questions).row_starts()
  return best, first_window + pick // kk, pick % kk


def _decide(best, null, usable, config):
  """{answered bool, score float64, (v2.0) is_impossible, null_odds} [B] from
  the best span score and the null score (squad_predictions' rules)."""
  has_span = best > _NEG
  if not config.version_2_with_negative:
    return {"answered": has_span, "score": tf.where(has_span, best, 0.0)}
  odds = tf.where(has_span, null - best, squad_predictions.NO_CANDIDATE_ODDS)
  answered = has_span & ~(odds > config.null_score_diff_threshold)
  return {"answered": answered, "score": tf.where(answered, best, tf.where(usable, null, 0.0)),
          "is_impossible": ~answered, "null_odds": tf.cast(odds, tf.float32)}


def select(encoder, ctx, spans, logits, usable, config):
  """The answer of each question from its windows' logits.

  Args:
    encoder: a qa_graph.QaEncoder; ctx: its context_pieces; spans: its
      window_spans; logits: (start, end) float32 [N,S]; usable: bool [B]
      (question and context have pieces); config: a PredictionConfig.
  Returns:
    _decide's outputs plus "first" / "last" (global context pieces of the
    best span) and "has_span" (bool [B]: there is a candidate span).
  """
  b = tf.shape(spans["count"], out_type=tf.int64)[0]
  scores, start_at, end_at = _candidates(*logits, spans, encoder.max_context(spans), usable,
                                         config)
  best, window, pair = _best_per_question(scores, spans, b)
  k = tf.cast(start_at.shape[1], tf.int64)
  s = tf.gather(tf.gather(start_at, window), pair // k, batch_dims=1)  # window positions [B]
  e = tf.gather(tf.gather(end_at, window), pair % k, batch_dims=1)
  base = ctx["pieces"].row_starts() + tf.gather(spans["start"] - spans["offset"], window)
  null_each = tf.cast(logits[0][:, 0], tf.float64) + tf.cast(logits[1][:, 0], tf.float64)
  null = tf.math.unsorted_segment_min(null_each, spans["question"], b)  # [B]
  out = _decide(best, null, usable, config)
  out.update(first=base + s, last=base + e, has_span=best > _NEG)
  return out


class QaServer(tf.Module):
  """The span model with its encoder: the serving computations."""

  def __init__(self, model, encoder, config):
    super().__init__(name="qa_server")
    self.model, self.encoder, self.config = model, encoder, config

  def answer(self, question, context):
    """question, context string [B] -> the serving outputs."""
    context = tf.strings.unicode_transcode(context, "UTF-8", "UTF-8", errors="replace",
                                           replacement_char=0xFFFD)
    ctx = self.encoder.context_pieces(context)
    query = self.encoder.query_pieces(question)
    spans = self.encoder.window_spans(query, ctx["pieces"])
    outputs = self.model(self.encoder.model_inputs(query, ctx["pieces"], spans),
                         training=False)
    logits = (outputs["start_logits"], outputs["end_logits"])  # float32 [N,S]
    usable = (query.row_lengths() > 0) & (ctx["pieces"].row_lengths() > 0)
    chosen = select(self.encoder, ctx, spans, logits, usable, self.config)
    start, end = self.encoder.final_span(ctx, chosen.pop("first"), chosen.pop("last"),
                                         chosen.pop("has_span"))
    answered = chosen.pop("answered")
    start, end = tf.where(answered, start, -1), tf.where(answered, end, -1)
    chosen.update(answer=tf.where(answered, tf.strings.substr(
        context, tf.maximum(start, 0), end - start, unit="UTF8_CHAR"), ""),
                  answer_start=tf.cast(start, tf.int32), answer_end=tf.cast(end, tf.int32),
                  score=tf.cast(chosen["score"], tf.float32))
    return chosen

  def logits(self, input_ids, input_mask, segment_ids):
    outputs = self.model({"input_ids": input_ids, "input_mask": input_mask,
                          "segment_ids": segment_ids}, training=False)
    return {"start_logits": outputs["start_logits"], "end_logits": outputs["end_logits"]}


def float32_copy(model):
  """A float32 BertSpanLabeler with `model`'s weights (any dtype policy)."""
  copy = bert_lib.ensure_built(heads.BertSpanLabeler(model.config, dtype="float32"))
  copy.set_weights(bert_lib.ensure_built(model).get_weights())
  return copy


def _archive(model, vocab_file, windows, predictions):
  server = QaServer(float32_copy(model), qa_graph.QaEncoder(
      vocab_file, predictions.do_lower_case, windows), predictions)
  archive = keras.export.ExportArchive()
  archive.track(server.model)
  archive.track(server.encoder)
  text = [tf.TensorSpec([None], tf.string, name=n) for n in ("question", "context")]
  ids = [tf.TensorSpec([None, None], tf.int32, name=n)
         for n in schema.QA_MODEL_INPUTS]
  archive.add_endpoint("serving_default", server.answer, input_signature=text)
  archive.add_endpoint("encoded", server.logits, input_signature=ids)
  return archive


def export_text_qa(model, export_dir, vocab_file, windows, predictions, info=None):
  """Writes a raw-text extractive-QA SavedModel of a BertSpanLabeler; returns
  export_dir (absolute).

  Args:
    model: a BertSpanLabeler (any dtype policy; exported in float32).
    export_dir: written atomically (task_export.publish_export), with
      bert_config.json, vocab.txt and qa.json (the settings below + info).
    vocab_file: the vocab the QA records were made with.
    windows: a qa_data.WindowConfig (max_seq_length, doc_stride,
      max_query_length), as the records' manifest says.
    predictions: a squad_predictions.PredictionConfig: n_best_size,
      max_answer_length, null_score_diff_threshold (baked in), do_lower_case
      and version_2_with_negative as the manifest says.
    configs_from_manifest builds both from a QA records manifest's config.
    info: JSON-able provenance kept in qa.json.
  """
  if windows.max_seq_length > model.config.max_position_embeddings:
    raise ValueError(f"max_seq_length {windows.max_seq_length} > the model's "
                     f"max_position_embeddings {model.config.max_position_embeddings}")
  archive = _archive(model, vocab_file, windows, predictions)
  task = {"kind": "extractive_qa", "inputs": ["question", "context"],
          "offsets": "code points of the context, [answer_start, answer_end)",
          "windows": dataclasses.asdict(windows),
          "predictions": dataclasses.asdict(predictions), "info": info or {}}
  return task_export.publish_export(archive, export_dir, model.config, vocab_file,
                                    {QA_FILE: task})
