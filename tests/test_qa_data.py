"""create_qa_data: SQuAD JSON -> QA windows. Hand-worked windows and offsets
(accents, CJK, whitespace runs, an answer across a window boundary, an
impossible question), the exact records of a 2-question file, the stage
contract, bad inputs as one-line errors, and the real SQuAD 2.0 sample checked
against a transcription of run_squad.py's loops."""

import collections
import json
import os

import numpy as np
import pytest
import tensorflow as tf

from pipeline.core.errors import InputError
from pipeline.inputs import qa_dataset
from pipeline.records import qa_data
from pipeline.records import qa_stage
from pipeline.records import schema
from pipeline.records import tfrecord
from pipeline.text.tokenization import BertTokenizer, prepare_text
from tests.conftest import ROOT, run_tool, tree_bytes
from tests.test_stages import _assert_one_line_error, _listing

SAMPLE = os.path.join(ROOT, "..", "shared", "data", "squad-v2.0-dev-5articles.json")
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
WORDS = ("what when where did is the a of number cafe muller open opened in 1998 . ? , "
         "river flows north fast km 10 東 京 は 日 本 の 首 都 てす 。 "
         "one two three four five six seven eight nine ten capital").split()
SMALL = qa_data.WindowConfig(max_seq_length=10, doc_stride=2, max_query_length=4)


@pytest.fixture(scope="module")
def vocab(tmp_path_factory):
  path = tmp_path_factory.mktemp("vocab") / "vocab.txt"
  path.write_text("\n".join(SPECIAL + WORDS) + "\n", encoding="utf-8")
  return str(path)


@pytest.fixture(scope="module")
def tok(vocab):
  return BertTokenizer(vocab)


def _qa(qid, question, answer=None, start=None, impossible=None):
  qa = {"id": qid, "question": question,
        "answers": [] if answer is None else [{"text": answer, "answer_start": start}]}
  if impossible is not None:
    qa["is_impossible"] = impossible
  return qa


def _articles(*paragraphs):
  """One article per (context, [qa, ...])."""
  return [{"title": f"a{i}", "paragraphs": [{"context": c, "qas": qas}]}
          for i, (c, qas) in enumerate(paragraphs)]


def _windows(tok, context, qa, windows=qa_data.WindowConfig(), version="v1.1"):
  """(Example, Context, [Window]) of one question, through the library's steps."""
  (ex,) = qa_data.read_examples("f.json", _articles((context, [qa])), version)
  ctx = qa_data.tokenize_context(tok, ex.words)
  query = tok.encode(ex.question).tolist()[:windows.max_query_length]
  answer = qa_data.answer_pieces(ex, ctx, tok)
  return ex, ctx, qa_data.make_windows(ex, ctx, query, answer, windows,
                                       (tok.cls_id, tok.sep_id), qa_data.UNIQUE_ID_BASE)


def _tokens(tok, window):
  return tok.convert_ids_to_tokens(window.input_ids)


def test_whitespace_runs_give_words_and_offsets():
  context = "The  river\tflows\n\nnorth   fast."
  words, starts, char_to_word = qa_data.split_words(context)
  assert words == ["The", "river", "flows", "north", "fast."]
  assert starts == [0, 5, 11, 18, 26]
  assert [context[s:s + len(w)] for w, s in zip(words, starts)] == words
  assert char_to_word[3:5] == [0, 0] and char_to_word[16:18] == [2, 2]  # whitespace: word before


def test_whitespace_runs_answer_span(tok):
  context = "The  river\tflows\n\nnorth   fast."
  ex, ctx, (w,) = _windows(tok, context, _qa("q", "where ?", "flows\n\nnorth", 11))
  assert (ex.start_word, ex.end_word, ex.answer_found) == (2, 3, True)
  assert _tokens(tok, w) == ["[CLS]", "where", "?", "[SEP]", "the", "river", "flows", "north",
                             "fast", ".", "[SEP]"]
  assert (w.start_position, w.end_position) == (6, 7) and w.doc_offset == 4


def test_accents_are_stripped_and_the_answer_span_improved(tok):
  context = "Café Müller opened in 1998."
  ex, ctx, (w,) = _windows(tok, context, _qa("q", "When did Café Müller open?", "1998", 22))
  assert ex.words == ("Café", "Müller", "opened", "in", "1998.")
  assert ex.word_starts == (0, 5, 12, 19, 22)
  assert ctx.tokens == ["cafe", "muller", "opened", "in", "1998", "."]
  assert ctx.piece_to_word == [0, 1, 2, 3, 4, 4]
  # Word span 4..4 is pieces 4..5 ("1998 ."): improved to the answer's "1998".
  assert _tokens(tok, w)[w.start_position:w.end_position + 1] == ["1998"]
  assert (w.start_position, w.end_position) == (12, 12)  # 8 = [CLS] + 6 query + [SEP]


def test_cjk_characters_are_pieces_of_one_word(tok):
  context = "東京は日本の首都です。"
  ex, ctx, (w,) = _windows(tok, context, _qa("q", "首都?", "日本", 3))
  assert ex.words == (context,) and (ex.start_word, ex.end_word) == (0, 0)
  assert ctx.tokens == ["東", "京", "は", "日", "本", "の", "首", "都", "てす", "。"]
  assert ctx.piece_to_word == [0] * 10
  # The whole word is the span until _improve_answer_span finds "日 本".
  assert _tokens(tok, w)[w.start_position:w.end_position + 1] == ["日", "本"]
  assert (w.start_position, w.end_position) == (8, 9)  # 5 = [CLS] 首 都 ? [SEP]


def test_answer_across_window_boundaries(tok):
  context = "one two three four five six seven eight nine ten"
  qa = _qa("q", "what number", "five six", context.index("five"))
  ex, ctx, windows = _windows(tok, context, qa, SMALL)
  # 10 pieces, 10 - 2 - 3 = 5 per window, stride 2: starts 0, 2, 4, 6.
  assert [(w.span_start, w.span_length) for w in windows] == [(0, 5), (2, 5), (4, 5), (6, 4)]
  assert _tokens(tok, windows[1]) == ["[CLS]", "what", "number", "[SEP]", "three", "four",
                                      "five", "six", "seven", "[SEP]"]
  # Pieces 4..5 are wholly inside windows 1 and 2 only; elsewhere [CLS].
  assert [(w.start_position, w.end_position) for w in windows] == [(0, 0), (6, 7), (4, 5),
                                                                    (0, 0)]
  # min(left, right) + 0.01 * length, first window on ties (worked by hand).
  assert [w.max_context for w in windows] == [(1, 1, 1, 1, 0), (0, 0, 1, 1, 0),
                                              (0, 0, 1, 1, 0), (0, 0, 1, 1)]
  assert [w.unique_id for w in windows] == [qa_data.UNIQUE_ID_BASE + k for k in range(4)]


def test_impossible_question_points_at_cls(tok):
  qa = _qa("q", "what capital", impossible=True)
  ex, _, (w,) = _windows(tok, "The river flows north.", qa, version="v2.0")
  assert ex.is_impossible and ex.answers == () and (ex.start_word, ex.end_word) == (-1, -1)
  assert (w.start_position, w.end_position, w.is_impossible) == (0, 0, True)


def test_answer_not_found_is_skipped_for_training_and_kept_for_dev(tok, tmp_path):
  # U+00A0 is no whitespace to run_squad's word split, but is to str.split:
  # the reference's "Could not find answer" case.
  context = "It flows 10\u00a0km north."
  examples = qa_data.read_examples("f.json", _articles(
      (context, [_qa("nbsp", "what", "10\u00a0km", 9), _qa("ok", "what", "north", 15)])),
      "v1.1")
  assert [e.answer_found for e in examples] == [False, True]
  paths = (str(tmp_path / "train.tfrecord"), None)
  stats, _ = qa_data.write_split(examples, tok, qa_data.WindowConfig(), paths, True)
  assert stats.as_dict()["answer_not_found"] == {"count": 1, "first_ids": ["nbsp"]}
  assert (stats.questions, stats.written_questions, stats.windows) == (2, 1, 1)
  paths = (str(tmp_path / "dev.tfrecord"), str(tmp_path / "dev.jsonl"))
  stats, _ = qa_data.write_split(examples, tok, qa_data.WindowConfig(), paths, False)
  assert (stats.questions, stats.written_questions, stats.windows) == (2, 2, 2)
  lines = qa_data.read_sidecar(paths[1])
  assert [(e["id"], e["answer_found"]) for e in lines] == [("nbsp", False), ("ok", True)]


TWO = _articles(("Café Müller opened in 1998.",
                 [_qa("q1", "When did Café Müller open?", "1998", 22, False)]),
                ("The river flows north.", [_qa("q2", "what capital", None, None, True)]))


def _records(path):
  out = []
  for r in tfrecord.iter_records(path):
    feats = tf.train.Example.FromString(r).features.feature
    out.append({k: list(v.int64_list.value) for k, v in sorted(feats.items())})
  return out


def _write_json(path, articles, version="v2.0"):
  with open(path, "w", encoding="utf-8") as f:
    json.dump({"version": version, "data": articles}, f, ensure_ascii=False)
  return str(path)


def _flags(path, vocab, out, *extra):
  return [f"--input_file={path}", "--dev_articles=1", f"--vocab_file={vocab}",
          f"--output_dir={out}", "--max_seq_length=16", "--max_query_length=8", *extra]


def _pad(ids, n=16):
  return ids + [0] * (n - len(ids))


@pytest.fixture(scope="module")
def two(tmp_path_factory, vocab):
  d = tmp_path_factory.mktemp("two")
  path = _write_json(d / "two.json", TWO)
  run_tool("create_qa_data", *_flags(path, vocab, d / "out"))
  return path, str(d / "out")


def test_exact_records_of_two_questions(two, tok):
  _, out = two
  assert _listing(out) == ["COMPLETED", "dev/dataset.json", "dev/examples.jsonl",
                           "dev/part-00000.tfrecord", "manifest.json", "stats.json",
                           "train/part-00000.tfrecord"]
  ids = lambda s: tok.convert_tokens_to_ids(s.split()).tolist()
  train_ids = ids("[CLS] when did cafe muller open ? [SEP] cafe muller opened in 1998 . [SEP]")
  assert _records(os.path.join(out, "train", "part-00000.tfrecord")) == [{
      "end_positions": [12], "input_ids": _pad(train_ids), "input_mask": _pad([1] * 15),
      "is_impossible": [0], "segment_ids": _pad([0] * 8 + [1] * 7), "start_positions": [12],
      "unique_id": [1000000000]}]
  dev_ids = ids("[CLS] what capital [SEP] the river flows north . [SEP]")
  assert _records(os.path.join(out, "dev", "part-00000.tfrecord")) == [{
      "doc_span_index": [0], "end_positions": [0], "example_index": [0],
      "input_ids": _pad(dev_ids), "input_mask": _pad([1] * 10), "is_impossible": [1],
      "segment_ids": _pad([0] * 4 + [1] * 6), "start_positions": [0],
      "unique_id": [1000000000]}]
  (entry,) = qa_data.read_sidecar(os.path.join(out, "dev", "examples.jsonl"))
  assert entry["words"] == ["The", "river", "flows", "north."]
  assert entry["word_starts"] == [0, 4, 10, 16] and entry["piece_to_word"] == [0, 1, 2, 3, 3]
  assert entry["windows"] == [{"unique_id": 1000000000, "doc_span_index": 0, "span_start": 0,
                               "span_length": 5, "doc_offset": 4,
                               "max_context": [1, 1, 1, 1, 1]}]


def test_readers_give_the_records_as_int32_batches(two, vocab, tok):
  """pipeline/inputs/qa_dataset.py parses what the stage wrote, from the schema."""
  _, out = two
  manifest, spec = qa_dataset.read_qa_input(out, vocab)
  assert (spec.max_seq_length, spec.version, spec.eval_splits) == (16, "v2.0", ("dev",))
  (dev,) = list(qa_dataset.eval_dataset(out, spec, 4))
  assert sorted(dev) == sorted(f.name for f in schema.QA_EVAL_FEATURES)
  assert dev["input_ids"].dtype.name == "int32" and dev["input_ids"].shape == (1, 16)
  assert dev["is_impossible"].numpy().tolist() == [[1]]
  train = next(iter(qa_dataset.train_dataset(out, spec, 2, seed=1, shuffle_buffer_size=0)))
  assert sorted(train) == sorted(f.name for f in schema.QA_FEATURES)
  assert train["start_positions"].numpy().tolist() == [[12], [12]]  # One record, repeated.
  with pytest.raises(InputError, match="were made with another vocab"):
    qa_dataset.read_qa_input(out, _other_vocab(vocab, manifest))


def _other_vocab(vocab, manifest):
  other = os.path.join(os.path.dirname(manifest["_dir"]), "other_vocab.txt")
  with open(vocab, encoding="utf-8") as f, open(other, "w", encoding="utf-8") as g:
    g.write(f.read() + "extra\n")
  return other


def test_manifest_and_stats(two, vocab):
  _, out = two
  manifest = json.load(open(os.path.join(out, "manifest.json")))
  assert manifest["stage"] == "create_qa_data"
  config = manifest["config"]
  assert {k: config[k] for k in ("max_seq_length", "doc_stride", "max_query_length",
                                 "do_lower_case", "version", "splits", "vocab_size")} == {
      "max_seq_length": 16, "doc_stride": 128, "max_query_length": 8, "do_lower_case": True,
      "version": "v2.0", "splits": ["dev", "train"], "vocab_size": len(SPECIAL + WORDS)}
  assert len(config["vocab_sha256"]) == 64
  assert manifest["counts"] == {"train_questions": 1, "train_windows": 1, "train_articles": 1,
                                "train_answer_not_found": 0, "dev_questions": 1,
                                "dev_windows": 1, "dev_articles": 1, "dev_answer_not_found": 0}
  dataset = json.load(open(os.path.join(out, "dev", "dataset.json")))
  assert dataset == {"version": "v2.0", "data": TWO[1:]}


def test_rerun_is_a_noop_and_another_config_is_refused(two, vocab, tmp_path):
  path, out = two
  before = tree_bytes(out, skip=())
  proc = run_tool("create_qa_data", *_flags(path, vocab, out))
  assert "up to date" in proc.stdout and tree_bytes(out, skip=()) == before
  proc = run_tool("create_qa_data", *_flags(path, vocab, out, "--doc_stride=64"), check=False)
  _assert_one_line_error(proc, out, "differs in: doc_stride", "--overwrite")
  again = str(tmp_path / "again")
  run_tool("create_qa_data", *_flags(path, vocab, again, "--doc_stride=64"))
  run_tool("create_qa_data", *_flags(path, vocab, again, "--overwrite"))
  assert tree_bytes(again) == tree_bytes(out)


def test_a_run_killed_after_the_train_split_resumes_identically(two, vocab, tmp_path,
                                                                  monkeypatch):
  path, out = two
  config = qa_stage.QaRecordsConfig(input_file=path, dev_articles=1, vocab_file=vocab,
                                    output_dir=str(tmp_path / "out"), max_seq_length=16,
                                    max_query_length=8,
                                    log_examples=False)
  real = qa_data.write_split

  def dies_on_dev(examples, tok, windows, paths, training):
    if not training:
      raise KeyboardInterrupt  # as a kill: nothing after the train split is published
    return real(examples, tok, windows, paths, training)

  monkeypatch.setattr(qa_data, "write_split", dies_on_dev)
  with pytest.raises(KeyboardInterrupt):
    qa_stage.run(config)
  assert os.path.exists(tmp_path / "out" / "train" / "part-00000.tfrecord")
  assert not os.path.exists(tmp_path / "out" / "COMPLETED")
  monkeypatch.setattr(qa_data, "write_split", real)
  qa_stage.run(config)
  assert tree_bytes(str(tmp_path / "out")) == tree_bytes(out)


def _bad_json(d):
  (d / "bad.json").write_text('{"data": [', encoding="utf-8")
  return str(d / "bad.json"), "not a SQuAD JSON file"


def _missing_key(d):
  qa = _qa("q7", "what", "river", 4)
  del qa["question"]
  return _write_json(d / "f.json", _articles(("The river.", [qa]), ("x", []))), \
      "question q7: missing or malformed 'question'"


def _no_answers_v11(d):
  return _write_json(d / "f.json", _articles(("The river.", [_qa("q8", "what")]), ("x", [])),
                     "1.1"), "question q8 has no answers"


def _outside(d):
  return _write_json(d / "f.json", _articles(("The river.", [_qa("q9", "what", "river", 40)]),
                                             ("x", []))), "question q9: answer_start 40 is outside"


def _mismatch(d):
  path = _write_json(d / "f.json", _articles(("The river.", [_qa("q10", "what", "river", 2)]),
                                             ("x", [])))
  return path, "question q10: answer_start 2 does not point"


def _one_article(d):
  return _write_json(d / "f.json", _articles(("The river.", [_qa("q", "what", "river", 4)]))), \
      "has 1 articles: --dev_articles=1 leaves none to train on"


@pytest.mark.parametrize("make", [_bad_json, _missing_key, _no_answers_v11, _outside, _mismatch,
                                  _one_article])
def test_bad_input_is_one_line_naming_file_and_question(make, vocab, tmp_path):
  path, cause = make(tmp_path)
  proc = run_tool("create_qa_data", *_flags(path, vocab, tmp_path / "out"), check=False)
  _assert_one_line_error(proc, path, cause)
  assert not os.path.exists(tmp_path / "out")


def test_bad_flags_are_one_line(two, vocab, tmp_path):
  path, _ = two
  proc = run_tool("create_qa_data", *_flags(path, vocab, tmp_path / "o"), f"--train_file={path}",
                  check=False)
  _assert_one_line_error(proc, "error: flags: give either")
  proc = run_tool("create_qa_data", *_flags(path, vocab, tmp_path / "o", "--max_query_length=14"),
                  check=False)
  _assert_one_line_error(proc, "leaves no context token")
  proc = run_tool("create_qa_data", f"--train_file={path}", f"--dev_file={path}",
                  f"--vocab_file={vocab}", f"--output_dir={tmp_path / 'o'}", check=False)
  _assert_one_line_error(proc, f"error: {path}: shares 2 questions with the train file")
  with pytest.raises(InputError, match="no such file"):
    qa_data.load_squad(str(tmp_path / "none.json"))


# --- The real SQuAD 2.0 sample, against run_squad.py's loops transcribed. ---


def _reference_examples(data):
  """run_squad.read_squad_examples (is_training=True, version_2_with_negative)."""
  out = []
  for article in data:
    for paragraph in article["paragraphs"]:
      doc_tokens, char_to_word_offset, prev_is_whitespace = [], [], True
      for c in paragraph["context"]:
        if c in " \t\r\n" or ord(c) == 0x202F:
          prev_is_whitespace = True
        else:
          if prev_is_whitespace:
            doc_tokens.append(c)
          else:
            doc_tokens[-1] += c
          prev_is_whitespace = False
        char_to_word_offset.append(len(doc_tokens) - 1)
      for qa in paragraph["qas"]:
        if qa["is_impossible"]:
          out.append((qa["question"], doc_tokens, -1, -1, ""))
          continue
        text, offset = qa["answers"][0]["text"], qa["answers"][0]["answer_start"]
        start, end = char_to_word_offset[offset], char_to_word_offset[offset + len(text) - 1]
        if " ".join(doc_tokens[start:end + 1]).find(" ".join(text.strip().split())) == -1:
          continue  # "Could not find answer"
        out.append((qa["question"], doc_tokens, start, end, text))
  return out


def _reference_features(tok, examples, max_seq_length, doc_stride, max_query_length):
  """run_squad.convert_examples_to_features on token strings: (tokens, start, end)."""
  feats = []
  for question, doc_tokens, start, end, text in examples:
    query = tok.tokenize(question)[:max_query_length]
    tok_to_orig, orig_to_tok, all_doc = [], [], []
    for i, token in enumerate(doc_tokens):
      orig_to_tok.append(len(all_doc))
      for sub in tok.tokenize(token):
        tok_to_orig.append(i)
        all_doc.append(sub)
    if start >= 0:
      tok_start = orig_to_tok[start]
      tok_end = orig_to_tok[end + 1] - 1 if end < len(doc_tokens) - 1 else len(all_doc) - 1
      want = " ".join(tok.tokenize(text))
      tok_start, tok_end = next(((s, e) for s in range(tok_start, tok_end + 1)
                                 for e in range(tok_end, s - 1, -1)
                                 if " ".join(all_doc[s:e + 1]) == want), (tok_start, tok_end))
    max_doc, spans, offset = max_seq_length - len(query) - 3, [], 0
    while offset < len(all_doc):
      spans.append((offset, min(len(all_doc) - offset, max_doc)))
      if offset + spans[-1][1] == len(all_doc):
        break
      offset += min(spans[-1][1], doc_stride)
    for span_start, length in spans:
      tokens = ["[CLS]", *query, "[SEP]", *all_doc[span_start:span_start + length], "[SEP]"]
      s = e = 0
      if start >= 0 and span_start <= tok_start and tok_end <= span_start + length - 1:
        s, e = (p - span_start + len(query) + 2 for p in (tok_start, tok_end))
      feats.append((tokens, s, e))
  return feats


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
  if not os.path.exists(SAMPLE):
    pytest.skip(f"the real SQuAD sample is absent ({SAMPLE}; see ../shared/data/README.md)")
  with open(SAMPLE, encoding="utf-8") as f:
    data = json.load(f)["data"]
  words = collections.Counter()
  for a in data:
    for p in a["paragraphs"]:
      words.update(prepare_text(p["context"], True).split())
      words.update(w for q in p["qas"] for w in prepare_text(q["question"], True).split())
  chars = sorted({c for w in words for c in w})
  d = tmp_path_factory.mktemp("squad")
  vocab = d / "vocab.txt"  # every character, so no [UNK]; 400 whole words
  vocab.write_text("\n".join(SPECIAL + chars + ["##" + c for c in chars] + [
      w for w, _ in words.most_common(400) if w not in chars]) + "\n", encoding="utf-8")
  out = str(d / "out")
  run_tool("create_qa_data", f"--input_file={SAMPLE}", "--dev_articles=1",
           f"--vocab_file={vocab}", f"--output_dir={out}", "--max_seq_length=128",
           "--doc_stride=64", "--max_query_length=32")
  return data, str(vocab), out


def test_real_sample_split_by_article(sample):
  data, _, out = sample
  manifest = json.load(open(os.path.join(out, "manifest.json")))
  counts = manifest["counts"]
  assert counts["train_questions"] + counts["dev_questions"] == 1407
  assert (counts["train_articles"], counts["dev_articles"]) == (4, 1)
  assert manifest["config"]["version"] == "v2.0"
  dev = qa_data.read_sidecar(os.path.join(out, "dev", "examples.jsonl"))
  dev_ids = {q["id"] for p in data[-1]["paragraphs"] for q in p["qas"]}
  assert [e["id"] for e in dev] == [q["id"] for p in data[-1]["paragraphs"] for q in p["qas"]]
  assert counts["dev_questions"] == len(dev_ids) == len(dev)
  dataset = json.load(open(os.path.join(out, "dev", "dataset.json")))
  assert [a["title"] for a in dataset["data"]] == [data[-1]["title"]]
  stats = json.load(open(os.path.join(out, "stats.json")))
  assert stats["train"]["skipped_questions"] == counts["train_answer_not_found"]
  assert counts["train_windows"] > counts["train_questions"]  # long contexts: more windows


def test_real_sample_windows_equal_the_reference(sample):
  data, vocab, out = sample
  tok = BertTokenizer(vocab)
  expected = _reference_features(tok, _reference_examples(data[:-1]), 128, 64, 32)
  found = _records(os.path.join(out, "train", "part-00000.tfrecord"))
  assert len(found) == len(expected)
  for record, (tokens, start, end) in zip(found, expected):
    n = sum(record["input_mask"])
    assert tok.convert_ids_to_tokens(record["input_ids"][:n]) == tokens
    assert (record["start_positions"][0], record["end_positions"][0]) == (start, end)


def test_real_sample_gold_positions_predict_the_gold_answers(sample):
  """Records -> sidecar -> postprocessing -> official metric: logits peaked at
  each dev window's stored positions give back the reference answers."""
  from modeling.evaluation import squad_metrics  # pylint: disable=import-outside-toplevel
  from modeling.evaluation import squad_predictions  # pylint: disable=import-outside-toplevel
  _, _, out = sample
  records = _records(os.path.join(out, "dev", "part-00000.tfrecord"))
  start = np.full((len(records), 128), -5.0, np.float32)
  end = start.copy()
  for i, r in enumerate(records):
    start[i, r["start_positions"][0]] = end[i, r["end_positions"][0]] = 5.0
  examples = qa_data.read_sidecar(os.path.join(out, "dev", "examples.jsonl"))
  config = squad_predictions.PredictionConfig(version_2_with_negative=True,
                                              max_answer_length=128)
  preds = squad_predictions.predict(examples, [r["unique_id"][0] for r in records],
                                    start, end, config)
  dataset = json.load(open(os.path.join(out, "dev", "dataset.json")))["data"]
  scores = squad_metrics.evaluate(dataset, {q: p.text for q, p in preds.items()},
                                  {q: p.null_odds for q, p in preds.items()})
  assert (scores["total"], scores["HasAns_total"], scores["NoAns_total"]) == (247, 124, 123)
  assert scores["NoAns_exact"] == 100.0
  by_id = {r["unique_id"][0]: r for r in records}
  for e in examples:
    p = preds[e["id"]]
    assert p.text == e["context"][p.char_start:p.char_end] or p.char_start == -1
    if squad_metrics.evaluate_v2(dataset, {e["id"]: p.text})["exact"] < 100:
      # run_squad's rule: a span starts only where its window gives the start
      # piece the most context; with 128-token windows, a window holding the
      # whole answer need not (the answer is then unreachable).
      holding = [w for w in e["windows"] if by_id[w["unique_id"]]["start_positions"][0]]
      assert holding and all(
          w["max_context"][by_id[w["unique_id"]]["start_positions"][0] - w["doc_offset"]] == 0
          for w in holding)
  assert scores["HasAns_exact"] > 99.0
