"""SQuAD JSON -> extractive QA windows, google-research/bert run_squad.py's algorithm.

Reading (run_squad's read_squad_examples): each context is split into whitespace
*words* (space, tab, CR, LF and U+202F, exactly the reference's is_whitespace)
with the character offset of each word; an answer's word span comes from its
`answer_start` through the char -> word map. Questions are read in file order;
`example_index` is a question's position in its split.

Windows (convert_examples_to_features): every word is tokenized into word
pieces by the reference-exact BertTokenizer (word by word, as the reference
does); the question keeps its first `max_query_length` pieces; a context
longer than the `max_seq_length - len(query) - 3` pieces one window holds is
covered by overlapping windows starting every `doc_stride` pieces, so no
context is too long (it only gets more windows). A window is

  [CLS] query [SEP] context pieces [SEP] [PAD]...   (S = max_seq_length)
  segment 0 ...........|1 ................| 0

The answer's piece span is narrowed by _improve_answer_span (the tokenized
answer text, e.g. "1895" inside "(1895-1943)"). start/end_positions index the
window; 0 ([CLS]) when the answer is not wholly inside the window or the
question is impossible (SQuAD v2.0). `max_context` marks, per context piece,
whether this window gives it the most context (_check_is_max_context): a
prediction may only start on such a piece.

Bad input (InputError naming the file and, where one is at fault, the question
id): malformed JSON, missing keys, a v1.1 question (or a v2.0 one that is not
impossible) without answers, an empty answer, an `answer_start` outside the
context, or context[answer_start:][:len(text)] != text (offsets that do not
point at the answer mean a broken or re-encoded file, e.g. byte offsets: all
1,407 questions of the real SQuAD 2.0 sample point exactly). An answer
whose whitespace words do not contain the answer text (the
reference's "Could not find answer", e.g. an answer starting inside a word) is
skipped in the training split, counted in stats (`answer_not_found`, with the
first ids); in the dev split the question is kept (its positions are 0: the
metric reads the answer texts, not the positions).

Training uses each question's first answer (SQuAD's train files have one;
dev files several, all equal in span for most questions); evaluation windows
carry the same positions, for a dev loss only. Two departures from the
reference, both for inputs it mishandles: a context without any word piece
still gets one (empty) window, so no question is lost; an answer starting on
whitespace starts at the first word, not at word -1.
"""

import dataclasses
import json
import sys

import numpy as np

from pipeline.core.errors import ConfigError, InputError
from pipeline.records import schema
from pipeline.records import tfrecord

UNIQUE_ID_BASE = 1000000000  # run_squad's first unique_id
BLOCK = 1024  # windows encoded at once (memory: BLOCK x S int64 per feature)
FIRST_IDS = 5  # question ids kept per skip reason in stats
LOG_WINDOWS = 2  # windows per split logged decoded back to tokens
_WHITESPACE = frozenset(" \t\r\n\u202f")


def output_name(split):
  return f"{split}/part-00000.tfrecord"


def sidecar_name(split):
  """The JSONL of the split's questions, words, offsets and windows."""
  return f"{split}/examples.jsonl"


def dataset_name(split):
  """The split's articles in the official format (for the official scripts)."""
  return f"{split}/dataset.json"


@dataclasses.dataclass(frozen=True)
class WindowConfig:
  """run_squad's window settings; validated on construction."""
  max_seq_length: int = 384
  doc_stride: int = 128
  max_query_length: int = 64

  def __post_init__(self):
    if self.max_query_length < 1 or self.doc_stride < 1:
      raise ConfigError("max_query_length and doc_stride must be >= 1")
    if self.max_seq_length - self.max_query_length - 3 < 1:
      raise ConfigError(f"max_seq_length {self.max_seq_length} leaves no context token "
                        f"after a {self.max_query_length}-token query, [CLS] and 2 [SEP]")


@dataclasses.dataclass(frozen=True)
class Example:
  """One question on one context (run_squad's SquadExample, plus offsets)."""
  example_index: int
  qas_id: str
  question: str
  context: str
  words: tuple  # whitespace-separated words of the context
  word_starts: tuple  # char offset of each word in the context
  answers: tuple  # answer texts (all of them: the metric takes the max)
  is_impossible: bool
  answer_text: str  # the first answer ("" when impossible)
  start_word: int  # word span of the first answer; -1 when impossible
  end_word: int
  answer_found: bool  # False: the reference's "Could not find answer"


def split_words(context):
  """(words, word_starts, char_to_word) as run_squad splits a context.

  char_to_word[i] is the word of char i (whitespace maps to the word before it,
  -1 before the first word), as the reference's char_to_word_offset.
  """
  words, starts, char_to_word = [], [], []
  prev_is_whitespace = True
  for i, c in enumerate(context):
    if c in _WHITESPACE:
      prev_is_whitespace = True
    else:
      if prev_is_whitespace:
        words.append(c)
        starts.append(i)
      else:
        words[-1] += c
      prev_is_whitespace = False
    char_to_word.append(len(words) - 1)
  return words, starts, char_to_word


def load_squad(path):
  """(version, articles) of an official SQuAD JSON file.

  version is "v2.0" when any question has `is_impossible`, else "v1.1" (the
  file's own "version" field is not trusted: copies are often renamed).
  """
  try:
    with open(path, encoding="utf-8") as f:
      data = json.load(f)
  except FileNotFoundError:
    raise InputError(path, "no such file") from None
  except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
    raise InputError(path, f"not a SQuAD JSON file ({e.__class__.__name__}: {e})") from None
  if not isinstance(data, dict) or not isinstance(data.get("data"), list):
    raise InputError(path, 'not a SQuAD JSON file (no "data" list of articles)')
  try:
    v2 = any("is_impossible" in qa for a in data["data"] for p in a["paragraphs"]
             for qa in p["qas"])
  except (KeyError, TypeError) as e:
    raise InputError(path, f"malformed article or paragraph (missing key {e})") from None
  if not data["data"]:
    raise InputError(path, "no articles")
  return ("v2.0" if v2 else "v1.1"), data["data"]


def _field(qa, key, kind, path, qid):
  if not isinstance(qa, dict) or not isinstance(qa.get(key), kind):
    raise InputError(path, f"question {qid}: missing or malformed {key!r}")
  return qa[key]


def _check_answers(qa, context, version, path, qid):
  """The question's answers as (text, start) pairs, checked against the context."""
  answers = _field(qa, "answers", list, path, qid)
  impossible = version == "v2.0" and bool(qa.get("is_impossible", False))
  if not answers and not impossible:
    raise InputError(path, f"question {qid} has no answers (and is not is_impossible)")
  checked = []
  for answer in ([] if impossible else answers):
    text = _field(answer, "text", str, path, qid)
    start = _field(answer, "answer_start", int, path, qid)
    if not text:
      raise InputError(path, f"question {qid}: empty answer text")
    if start < 0 or start + len(text) > len(context):
      raise InputError(path, f"question {qid}: answer_start {start} is outside the "
                       f"context ({len(context)} characters)")
    if context[start:start + len(text)] != text:
      raise InputError(path, f"question {qid}: answer_start {start} does not point at "
                       f"the answer text {text!r}")
    checked.append((text, start))
  return checked, impossible


def _example(index, qa, context, split, version, path):
  """An Example of one question; `split` is split_words(context)."""
  qid = _field(qa, "id", str, path, "?")
  question = _field(qa, "question", str, path, qid)
  answers, impossible = _check_answers(qa, context, version, path, qid)
  words, starts, char_to_word = split
  text, start_word, end_word, found = "", -1, -1, True
  if answers:
    text, offset = answers[0]
    start_word = max(0, char_to_word[offset])  # -1: the answer starts with whitespace
    end_word = char_to_word[offset + len(text) - 1]
    actual = " ".join(words[start_word:end_word + 1])
    found = actual.find(" ".join(text.strip().split())) != -1
  return Example(index, qid, question, context, tuple(words), tuple(starts),
                 tuple(t for t, _ in answers), impossible, text, start_word, end_word, found)


def read_examples(path, articles, version):
  """Every question of `articles` (a SQuAD file's "data" list) as an Example."""
  examples = []
  for article in articles:
    for paragraph in _field(article, "paragraphs", list, path, "?"):
      context = _field(paragraph, "context", str, path, "?")
      split = split_words(context)
      for qa in _field(paragraph, "qas", list, path, "?"):
        examples.append(_example(len(examples), qa, context, split, version, path))
  if not examples:
    raise InputError(path, "no questions")
  return examples


def improve_answer_span(doc_ids, start, end, answer_ids):
  """run_squad's _improve_answer_span on ids (pieces and ids correspond 1:1).

  The tightest piece span [new_start, new_end] within [start, end] whose pieces
  are the tokenized answer; the input span when there is none.
  """
  answer = list(answer_ids)
  for new_start in range(start, end + 1):
    for new_end in range(end, new_start - 1, -1):
      if list(doc_ids[new_start:new_end + 1]) == answer:
        return new_start, new_end
  return start, end


def doc_spans(num_pieces, max_tokens_for_doc, doc_stride):
  """[(start, length)] of the windows over a context of `num_pieces` pieces."""
  spans, start = [], 0
  while start < num_pieces:
    length = min(num_pieces - start, max_tokens_for_doc)
    spans.append((start, length))
    if start + length == num_pieces:
      break
    start += min(length, doc_stride)
  return spans


def is_max_context(spans, span_index, position):
  """run_squad's _check_is_max_context: whether window `span_index` gives piece
  `position` its most context (min of left and right, + 0.01 x window length)."""
  best_score, best_index = None, None
  for index, (start, length) in enumerate(spans):
    end = start + length - 1
    if position < start or position > end:
      continue
    score = min(position - start, end - position) + 0.01 * length
    if best_score is None or score > best_score:
      best_score, best_index = score, index
  return span_index == best_index


@dataclasses.dataclass
class Context:
  """A context's word pieces: ids [P], tokens [P], piece -> word index [P]."""
  ids: np.ndarray
  tokens: list
  piece_to_word: list
  word_to_piece: list  # first piece of each word


def tokenize_context(tokenizer, words):
  """Word pieces of each whitespace word (the reference tokenizes word by word)."""
  per_word = tokenizer.encode_batch(list(words)) if words else []
  ids, piece_to_word, word_to_piece = [], [], []
  for i, pieces in enumerate(per_word):
    word_to_piece.append(len(ids))
    ids += pieces.tolist()
    piece_to_word += [i] * len(pieces)
  ids = np.asarray(ids, np.int64)
  return Context(ids, tokenizer.convert_ids_to_tokens(ids), piece_to_word, word_to_piece)


def answer_pieces(example, context, tokenizer):
  """(start, end) piece span of the example's first answer, or None (impossible
  or not found)."""
  if example.is_impossible or not example.answer_found:
    return None
  start = context.word_to_piece[example.start_word]
  if example.end_word < len(example.words) - 1:
    end = context.word_to_piece[example.end_word + 1] - 1
  else:
    end = len(context.ids) - 1
  return improve_answer_span(context.ids, start, end, tokenizer.encode(example.answer_text))


@dataclasses.dataclass(frozen=True)
class Window:
  """One record: a window of an example's context (run_squad's InputFeatures)."""
  unique_id: int
  example_index: int
  doc_span_index: int
  span_start: int  # first context piece of the window
  span_length: int
  doc_offset: int  # window position of that piece: len(query) + 2
  input_ids: list  # [CLS] query [SEP] pieces [SEP], unpadded
  start_position: int  # 0 ([CLS]): no answer in this window
  end_position: int
  is_impossible: bool
  max_context: tuple  # 0/1 per context piece of the window


def make_windows(example, context, query_ids, answer, windows, special_ids, first_id):
  """The Windows of one example.

  Args:
    example: an Example; context: its tokenize_context; query_ids: the
      question's (truncated) piece ids; answer: answer_pieces' span or None.
    windows: a WindowConfig; special_ids: ([CLS] id, [SEP] id).
    first_id: the unique_id of the first window.
  A context without any piece still gets one (empty) window, so no question
  is lost (the reference would make none).
  """
  cls_id, sep_id = special_ids
  spans = doc_spans(len(context.ids), windows.max_seq_length - len(query_ids) - 3,
                    windows.doc_stride) or [(0, 0)]
  offset, out = len(query_ids) + 2, []
  for k, (start, length) in enumerate(spans):
    ids = [cls_id, *query_ids, sep_id, *context.ids[start:start + length].tolist(), sep_id]
    first = last = 0
    if answer is not None and start <= answer[0] and answer[1] <= start + length - 1:
      first, last = answer[0] - start + offset, answer[1] - start + offset
    max_context = tuple(int(is_max_context(spans, k, start + i)) for i in range(length))
    out.append(Window(first_id + k, example.example_index, k, start, length, offset, ids,
                      first, last, example.is_impossible, max_context))
  return out


def encode_windows(windows, max_seq_length, features):
  """{feature name: int64 [N, S] or [N, 1]} of `windows` (the schema's `features`)."""
  n, seq = len(windows), max_seq_length
  input_ids = np.zeros((n, seq), np.int64)
  segment_ids = np.zeros((n, seq), np.int64)
  lengths = np.array([len(w.input_ids) for w in windows], np.int64)
  for i, w in enumerate(windows):
    input_ids[i, :len(w.input_ids)] = w.input_ids
    segment_ids[i, w.doc_offset:len(w.input_ids)] = 1
  columns = {"input_ids": input_ids, "segment_ids": segment_ids,
             "input_mask": (np.arange(seq)[None, :] < lengths[:, None]).astype(np.int64)}
  scalars = {"unique_id": "unique_id", "start_positions": "start_position",
             "end_positions": "end_position", "is_impossible": "is_impossible",
             "example_index": "example_index", "doc_span_index": "doc_span_index"}
  for name, attr in scalars.items():
    columns[name] = np.array([[int(getattr(w, attr))] for w in windows], np.int64)
  return {f.name: columns[f.name] for f in features}


def sidecar_line(example, context, windows):
  """One example's JSONL entry: what maps a predicted window span to the text.

  A window's piece i (window position doc_offset + i) is context piece
  span_start + i, of word piece_to_word[span_start + i]; word w is
  context[word_starts[w]:word_starts[w] + len(words[w])].
  """
  entry = {"example_index": example.example_index, "id": example.qas_id,
           "question": example.question, "context": example.context,
           "words": list(example.words), "word_starts": list(example.word_starts),
           "answers": list(example.answers), "is_impossible": example.is_impossible,
           "answer_found": example.answer_found, "pieces": context.tokens,
           "piece_to_word": context.piece_to_word,
           "windows": [{"unique_id": w.unique_id, "doc_span_index": w.doc_span_index,
                        "span_start": w.span_start, "span_length": w.span_length,
                        "doc_offset": w.doc_offset, "max_context": list(w.max_context)}
                       for w in windows]}
  return json.dumps(entry, ensure_ascii=False, sort_keys=True, separators=(",", ":")) + "\n"


def read_sidecar(path):
  """The example entries of a split's examples.jsonl, in example_index order."""
  try:
    with open(path, encoding="utf-8") as f:
      return [json.loads(line) for line in f]
  except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
    raise InputError(path, f"unreadable examples sidecar ({e.__class__.__name__})") from None


class SplitStats:
  """Questions, windows and skipped answers of one split (stats.json)."""

  def __init__(self):
    self.questions = self.impossible = self.written_questions = self.windows = 0
    self.windows_with_answer = self.max_windows = self.truncated_queries = 0
    self.not_found, self.not_found_ids = 0, []

  def add(self, example, windows, query_truncated):
    self.questions += 1
    self.impossible += example.is_impossible
    self.truncated_queries += query_truncated
    if not example.answer_found:
      self.not_found += 1
      if len(self.not_found_ids) < FIRST_IDS:
        self.not_found_ids.append(example.qas_id)
    if windows:
      self.written_questions += 1
      self.windows += len(windows)
      self.windows_with_answer += sum(w.start_position > 0 for w in windows)
      self.max_windows = max(self.max_windows, len(windows))

  def as_dict(self):
    return {"questions": self.questions, "impossible_questions": self.impossible,
            "written_questions": self.written_questions,
            "skipped_questions": self.questions - self.written_questions,
            "windows": self.windows,
            "windows_with_answer": self.windows_with_answer,
            "max_windows_per_question": self.max_windows,
            "truncated_queries": self.truncated_queries,
            "answer_not_found": {"count": self.not_found, "first_ids": self.not_found_ids}}


class _Writer:
  """Buffers windows and writes them BLOCK at a time (bounded memory)."""

  def __init__(self, path, max_seq_length, features):
    self._records = tfrecord.TFRecordWriter(path)
    self._seq, self._features, self._block = max_seq_length, features, []
    self._dtypes = {f.name: f.dtype for f in features}
    self.first = []  # the first windows, to log

  def add(self, windows):
    self._block += windows
    self.first += windows[:max(0, LOG_WINDOWS - len(self.first))]
    if len(self._block) >= BLOCK:
      self.flush()

  def flush(self):
    if self._block:
      columns = encode_windows(self._block, self._seq, self._features)
      self._records.write_batch(*tfrecord.encode_examples(columns, self._dtypes))
      self._block = []

  def close(self):
    self.flush()
    self._records.close()


def write_split(examples, tokenizer, windows, paths, training):
  """Writes one split's records (and, for evaluation, its sidecar).

  Args:
    examples: the split's Examples; tokenizer: a BertTokenizer.
    windows: a WindowConfig.
    paths: (records path, sidecar path or None).
    training: skip questions whose answer is not found (the reference's rule).
  Returns:
    (SplitStats, the first Windows written, to log).
  """
  stats, cache = SplitStats(), (None, None)
  features = schema.QA_FEATURES if training else schema.QA_EVAL_FEATURES
  writer = _Writer(paths[0], windows.max_seq_length, features)
  sidecar = open(paths[1], "w", encoding="utf-8") if paths[1] else None
  next_id = UNIQUE_ID_BASE
  try:
    for example in examples:
      if cache[0] != example.context:
        cache = (example.context, tokenize_context(tokenizer, example.words))
      query = tokenizer.encode(example.question).tolist()
      made = []
      if not (training and not example.answer_found):
        made = make_windows(example, cache[1], query[:windows.max_query_length],
                            answer_pieces(example, cache[1], tokenizer), windows,
                            (tokenizer.cls_id, tokenizer.sep_id), next_id)
      next_id += len(made)
      stats.add(example, made, len(query) > windows.max_query_length)
      writer.add(made)
      if sidecar:
        sidecar.write(sidecar_line(example, cache[1], made))
  finally:
    writer.close()
    if sidecar:
      sidecar.close()
  return stats, writer.first


def log_windows(split, windows, tokenizer, stream=None):
  """Prints windows decoded back to tokens, as run_squad logs its first features."""
  stream = stream or sys.stderr
  for w in windows:
    tokens = tokenizer.convert_ids_to_tokens(w.input_ids)
    print(f"*** Window ({split}, unique_id {w.unique_id}, example {w.example_index}, "
          f"span {w.doc_span_index}) ***", file=stream)
    print("tokens: " + " ".join(tokens), file=stream)
    answer = " ".join(tokens[w.start_position:w.end_position + 1])
    print(f"start_position: {w.start_position} end_position: {w.end_position} "
          f"answer: {answer if w.start_position else '(none: [CLS])'}", file=stream)
