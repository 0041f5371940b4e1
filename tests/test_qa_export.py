"""The raw-text extractive-QA SavedModel (modeling/evaluation/qa_export.py): its
in-graph windows equal the QA records', and its answers (text and character
span) equal the host path's (records -> model -> squad_predictions.predict) on
the real SQuAD 2.0 sample and on hand-made cases (a context of many windows,
accents and CJK inside words, [UNK], the v2.0 null answer, empty inputs)."""

import collections
import dataclasses
import json
import os

import numpy as np
import pytest

from modeling.evaluation import qa_export
from modeling.evaluation import qa_graph
from modeling.evaluation import squad_predictions as sp
from pipeline.records import qa_data
from pipeline.records import schema
from pipeline.records import tfrecord
from pipeline.text.tokenization import BertTokenizer, prepare_text
from tests.conftest import ROOT, run_tool

tf = pytest.importorskip("tensorflow")
pytest.importorskip("tensorflow_text")  # registers the ops the SavedModel needs

SAMPLE = os.path.join(ROOT, "..", "shared", "data", "squad-v2.0-dev-5articles.json")
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
WORDS = ("what when where did is the a of number cafe muller open opened in 1998 . ? , ( ) "
         "river flows north fast km 10 東 京 は 日 本 の 首 都 てす 。 target word "
         "one two three four five six seven eight nine ten capital").split()
REAL = qa_data.WindowConfig(max_seq_length=128, doc_stride=64, max_query_length=32)


def _span_model(vocab_size, seq, seed=0):
  import keras  # pylint: disable=import-outside-toplevel
  from modeling.models import heads  # pylint: disable=import-outside-toplevel
  from modeling.networks import bert  # pylint: disable=import-outside-toplevel
  keras.utils.set_random_seed(seed)
  config = bert.BertConfig(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2,
                           num_attention_heads=4, intermediate_size=64,
                           max_position_embeddings=seq, initializer_range=0.5)
  return bert.ensure_built(heads.BertSpanLabeler(config))


def _records(path):
  """{feature: int64 [N, ...]} of a QA records file."""
  columns = collections.defaultdict(list)
  for record in tfrecord.iter_records(path):
    for k, v in tf.train.Example.FromString(record).features.feature.items():
      columns[k].append(list(v.int64_list.value))
  return {k: np.array(v) for k, v in columns.items()}


def _logits(model_fn, columns, batch=256):
  """(start, end) float32 [N,S] of model_fn on the records' model inputs."""
  out = collections.defaultdict(list)
  for i in range(0, len(columns["input_ids"]), batch):
    result = model_fn({k: tf.constant(columns[k][i:i + batch], tf.int32)
                       for k in schema.QA_MODEL_INPUTS})
    for k in ("start_logits", "end_logits"):
      out[k].append(np.asarray(result[k]))
  return np.concatenate(out["start_logits"]), np.concatenate(out["end_logits"])


def _host(entries, columns, model_fn, config):
  """{id: (text, start, end)} of the host path; its "empty" placeholder (v1.1,
  no candidate) is the export's empty answer."""
  preds = sp.predict(entries, columns["unique_id"][:, 0], *_logits(model_fn, columns), config)
  return {q: ("", -1, -1) if p.char_start == -1 else (p.text, p.char_start, p.char_end)
          for q, p in preds.items()}


def _served(fn, entries, batch=64):
  """{id: (text, start, end)} and the raw outputs of a serving function."""
  found, raw = {}, collections.defaultdict(list)
  for i in range(0, len(entries), batch):
    chunk = entries[i:i + batch]
    out = fn(question=tf.constant([e["question"] for e in chunk]),
             context=tf.constant([e["context"] for e in chunk]))
    for k, v in out.items():
      raw[k] += v.numpy().tolist()
  for n, e in enumerate(entries):
    found[e["id"]] = (raw["answer"][n].decode(), raw["answer_start"][n], raw["answer_end"][n])
  return found, raw


# --- the real SQuAD 2.0 sample -------------------------------------------------------------


@pytest.fixture(scope="module")
def real(tmp_path_factory):
  """QA records of the sample's last article (dev), a random span model, its
  export (v2.0, null threshold 0: many null answers) and the same serving
  function, not exported, at threshold 1e9 (a span whenever there is one)."""
  if not os.path.exists(SAMPLE):
    pytest.skip(f"the real SQuAD sample is absent ({SAMPLE}; see ../shared/data/README.md)")
  with open(SAMPLE, encoding="utf-8") as f:
    data = json.load(f)["data"]
  words = collections.Counter()
  for p in (p for a in data for p in a["paragraphs"]):
    words.update(prepare_text(p["context"], True).split())
    words.update(w for q in p["qas"] for w in prepare_text(q["question"], True).split())
  chars = sorted({c for w in words for c in w})
  d = tmp_path_factory.mktemp("qa_export")
  vocab = d / "vocab.txt"  # every character (no [UNK]), "##" pieces, 400 whole words
  vocab.write_text("\n".join(SPECIAL + chars + ["##" + c for c in chars] + [
      w for w, _ in words.most_common(400) if w not in chars]) + "\n", encoding="utf-8")
  out = d / "records"
  run_tool("create_qa_data", f"--input_file={SAMPLE}", "--dev_articles=1",
           f"--vocab_file={vocab}", f"--output_dir={out}", "--max_seq_length=128",
           "--doc_stride=64", "--max_query_length=32", "--nolog_examples")
  manifest = json.load(open(out / "manifest.json"))
  model = _span_model(len(vocab.read_text(encoding="utf-8").splitlines()), 128)
  windows, config = qa_export.configs_from_manifest(manifest["config"])
  path = qa_export.export_text_qa(model, d / "export", str(vocab), windows, config,
                                  info={"test": True})
  spans = dataclasses.replace(config, null_score_diff_threshold=1e9)
  server = qa_export.QaServer(model, qa_graph.QaEncoder(str(vocab), True, windows), spans)
  text = [tf.TensorSpec([None], tf.string)] * 2
  return {"vocab": str(vocab), "model": model, "path": path, "windows": windows,
          "served": {0.0: (config, tf.saved_model.load(path).signatures["serving_default"]),
                     1e9: (spans, tf.function(server.answer, input_signature=text))},
          "entries": qa_data.read_sidecar(out / "dev" / "examples.jsonl"),
          "columns": _records(out / "dev" / "part-00000.tfrecord")}


def test_in_graph_windows_are_the_records(real):
  entries, columns = real["entries"], real["columns"]
  encoder = qa_graph.QaEncoder(real["vocab"], True, real["windows"])
  ctx = encoder.context_pieces(tf.constant([e["context"] for e in entries]))
  query = encoder.query_pieces(tf.constant([e["question"] for e in entries]))
  spans = encoder.window_spans(query, ctx["pieces"])
  inputs = encoder.model_inputs(query, ctx["pieces"], spans)
  for k in schema.QA_MODEL_INPUTS:
    np.testing.assert_array_equal(inputs[k].numpy(), columns[k])
  windows = [w for e in entries for w in e["windows"]]
  assert spans["start"].numpy().tolist() == [w["span_start"] for w in windows]
  max_context = encoder.max_context(spans).numpy()
  assert [row[w["doc_offset"]:w["doc_offset"] + w["span_length"]].astype(int).tolist()
          for row, w in zip(max_context, windows)] == [w["max_context"] for w in windows]
  assert ctx["words"].to_list() == [[x.encode() for x in e["words"]] for e in entries]
  assert ctx["word_starts"].to_list() == [e["word_starts"] for e in entries]


@pytest.mark.parametrize("threshold", [0.0, 1e9])
def test_answers_equal_the_host_path_on_the_real_sample(real, threshold):
  config, serving = real["served"][threshold]
  entries = real["entries"]
  host = _host(entries, real["columns"], real["model"], config)
  served, raw = _served(serving, entries)
  differing = [(q, host[q], served[q]) for q in host if host[q] != served[q]]
  assert not differing, differing[:5]
  spans = sum(h[1] >= 0 for h in host.values())
  assert len(host) == 247 and spans > (100 if threshold else 20)
  inside = 0  # answers trimmed inside a word (get_final_text), e.g. "1990" of "(1990),"
  for e in entries:  # the answer is the context's substring at its code-point span
    text, start, end = served[e["id"]]
    assert text == (e["context"][start:end] if start >= 0 else "")
    ends = [s + len(w) for s, w in zip(e["word_starts"], e["words"])]
    inside += start >= 0 and (start not in e["word_starts"] or end not in ends)
  assert inside > spans // 2
  assert all(raw["is_impossible"][n] == (served[e["id"]][1] == -1)
             for n, e in enumerate(entries))


def test_export_directory(real):
  assert sorted(os.listdir(real["path"])) == ["assets", "bert_config.json", "fingerprint.pb",
                                              "qa.json", "saved_model.pb", "variables",
                                              "vocab.txt"]
  task = json.load(open(os.path.join(real["path"], qa_export.QA_FILE)))
  assert task["windows"] == {"max_seq_length": 128, "doc_stride": 64, "max_query_length": 32}
  assert task["predictions"] == {"n_best_size": 20, "max_answer_length": 30,
                                 "do_lower_case": True, "version_2_with_negative": True,
                                 "null_score_diff_threshold": 0.0}
  assert task["info"] == {"test": True} and task["inputs"] == ["question", "context"]


def test_scores_and_the_encoded_signature(real):
  config, serving = real["served"][0.0]
  entries, columns = real["entries"][:8], real["columns"]
  n = sum(len(e["windows"]) for e in entries)
  encoded = tf.saved_model.load(real["path"]).signatures["encoded"](
      **{k: tf.constant(columns[k][:n], tf.int32) for k in schema.QA_MODEL_INPUTS})
  start, end = _logits(real["model"], {k: v[:n] for k, v in columns.items()})
  np.testing.assert_allclose(encoded["start_logits"].numpy(), start, atol=1e-4)
  np.testing.assert_allclose(encoded["end_logits"].numpy(), end, atol=1e-4)
  preds = sp.predict(entries, columns["unique_id"][:n, 0], start, end, config)
  _, raw = _served(serving, entries)
  for i, e in enumerate(entries):
    p = preds[e["id"]]
    np.testing.assert_allclose(raw["null_odds"][i], p.null_odds, rtol=1e-4, atol=1e-3)
    if p.text:  # the score is the answer's start + end logit
      best = next(x for x in p.nbest if x["text"])
      np.testing.assert_allclose(raw["score"][i], best["start_logit"] + best["end_logit"],
                                 rtol=1e-4, atol=1e-3)


# --- hand-made cases, with a keyword "model" -----------------------------------------------


@pytest.fixture(scope="module")
def small(tmp_path_factory):
  path = tmp_path_factory.mktemp("small_vocab") / "vocab.txt"
  path.write_text("\n".join(SPECIAL + WORDS) + "\n", encoding="utf-8")
  return str(path), BertTokenizer(str(path))


def _keyword_model(tok, start_word, end_word, null=-50.0):
  """Logits peaked on the first piece of start_word / end_word (a small
  position slope breaks ties), [CLS] at `null`."""
  s_id, e_id = tok.convert_tokens_to_ids([start_word, end_word]).tolist()

  def model(inputs, training=False):
    del training
    ids = tf.cast(inputs["input_ids"], tf.float32)
    slope = -0.01 * tf.cast(tf.range(tf.shape(ids)[1]), tf.float32)[None, :]
    cls = tf.one_hot(tf.zeros(tf.shape(ids)[:1], tf.int32), tf.shape(ids)[1]) * null
    return {"start_logits": 10.0 * tf.cast(tf.equal(ids, s_id), tf.float32) + slope + cls,
            "end_logits": 10.0 * tf.cast(tf.equal(ids, e_id), tf.float32) + slope + cls}
  return model


def _compare(small, pairs, model, windows, config):
  """Host and in-graph answers of (question, context) pairs, asserted equal;
  returns [(text, start, end)] and the raw serving outputs."""
  vocab, tok = small
  articles = [{"title": "t", "paragraphs": [{"context": c, "qas": [
      {"id": str(i), "question": q, "answers": [], "is_impossible": True}]}]}
              for i, (q, c) in enumerate(pairs)]
  entries, made = [], []
  for ex in qa_data.read_examples("f.json", articles, "v2.0"):
    ctx = qa_data.tokenize_context(tok, ex.words)
    query = tok.encode(ex.question).tolist()[:windows.max_query_length]
    these = qa_data.make_windows(ex, ctx, query, None, windows, (tok.cls_id, tok.sep_id),
                                 qa_data.UNIQUE_ID_BASE + len(made))
    entries.append(json.loads(qa_data.sidecar_line(ex, ctx, these)))
    made += these
  columns = qa_data.encode_windows(made, windows.max_seq_length, schema.QA_EVAL_FEATURES)
  server = qa_export.QaServer(model, qa_graph.QaEncoder(vocab, True, windows), config)
  served, raw = _served(server.answer, entries)
  host = _host(entries, columns, model, config)
  assert served == host
  return [served[str(i)] for i in range(len(pairs))], raw


V2 = sp.PredictionConfig(version_2_with_negative=True)
V1 = sp.PredictionConfig()


def test_an_answer_in_the_second_window_of_a_long_context(small):
  windows = qa_data.WindowConfig(max_seq_length=64, doc_stride=16, max_query_length=8)
  filler = "one two three four five six seven eight nine"
  context = f"{' '.join([filler] * 6)} the target word is (1998), {filler}"
  # 71 pieces, 57 per window: windows at 0 and 16; "target" .. "1998" are
  # pieces 55..59, wholly inside the second window only.
  encoder = qa_graph.QaEncoder(small[0], True, windows)
  ctx = encoder.context_pieces(tf.constant([context]))
  spans = encoder.window_spans(encoder.query_pieces(tf.constant(["what is the target"])),
                               ctx["pieces"])
  assert (spans["start"].numpy().tolist(), spans["length"].numpy().tolist()) == (
      [0, 16], [57, 55])
  model = _keyword_model(small[1], "target", "1998")
  (answer,), raw = _compare(small, [("what is the target", context)], model, windows, V2)
  start = context.index("target")
  assert answer == ("target word is (1998", start, start + len("target word is (1998"))
  assert not raw["is_impossible"][0] and raw["score"][0] > 15


def test_accents_cjk_and_unknown_words_map_back_to_the_context(small):
  model = _keyword_model(small[1], "1998", "1998")
  cafe = "Café  Müller opened in (1998)."
  (answer,), _ = _compare(small, [("when did it open", cafe)], model, REAL, V1)
  assert answer == ("1998", cafe.index("1998"), cafe.index("1998") + 4)
  japan = "東京は日本の首都です。"  # one whitespace word; です -> てす (NFD, marks dropped)
  (answer,), _ = _compare(small, [("首都?", japan)], _keyword_model(small[1], "日", "本"),
                          REAL, V1)
  assert answer == ("日本", 3, 5)
  (answer,), _ = _compare(small, [("首都?", japan)], _keyword_model(small[1], "首", "てす"),
                          REAL, V1)
  assert answer == ("首都です", 6, 10)
  # An [UNK] piece in the span: the reference cannot find "[UNK]" in the words'
  # text and answers with the whole words.
  odd = "The river xyzzy flows north."
  (answer,), _ = _compare(small, [("where", odd)], _keyword_model(small[1], "river", "flows"),
                          REAL, V1)
  assert answer == ("river xyzzy flows", 4, 21)


def test_v2_null_answer_when_cls_wins(small):
  context = "The river flows north fast."
  model = _keyword_model(small[1], "river", "north", null=30.0)
  (answer,), raw = _compare(small, [("where", context)], model, REAL, V2)
  assert answer == ("", -1, -1) and raw["is_impossible"][0]
  assert raw["null_odds"][0] > 0 and raw["score"][0] == pytest.approx(60.0, abs=0.1)
  threshold = sp.PredictionConfig(version_2_with_negative=True, null_score_diff_threshold=1e3)
  (answer,), raw = _compare(small, [("where", context)], model, REAL, threshold)
  assert answer == ("river flows north", 4, 21) and not raw["is_impossible"][0]


def test_empty_question_or_context_gets_the_empty_answer(small):
  vocab, tok = small
  model = _keyword_model(tok, "river", "north")
  server = qa_export.QaServer(model, qa_graph.QaEncoder(vocab, True, REAL), V2)
  out = server.answer(tf.constant(["", "where", "where", "\u200b"]),
                      tf.constant(["The river flows north.", "", "   \n", "The river flows north."]))
  assert out["answer"].numpy().tolist() == [b""] * 4
  assert out["answer_start"].numpy().tolist() == [-1] * 4
  assert out["is_impossible"].numpy().all() and (out["null_odds"].numpy() == 1e6).all()
  assert out["score"].numpy().tolist() == [0.0] * 4
  server = qa_export.QaServer(model, qa_graph.QaEncoder(vocab, True, REAL), V1)
  out = server.answer(tf.constant(["where", ""]), tf.constant(["", "north"]))
  assert out["answer"].numpy().tolist() == [b"", b""] and "is_impossible" not in out
