"""Extractive QA text handling in the graph: strings -> run_squad's windows, and a
chosen window span -> characters of the context (run_squad's get_final_text).

Shape legend: B = questions, W = whitespace words (all contexts, flat),
P = context word pieces (all contexts, flat), Q = query pieces, N = windows of
all questions, L = pieces of one window, S = max_seq_length, X = windows per
question (max over the batch).

Every step is pipeline/records/qa_data.py's, on tensors:
  * words: the context split on run_squad's whitespace (space, tab, CR, LF,
    U+202F) with each word's start, in code points of the context;
  * pieces: each word normalized and word-pieced alone (task_export.TextEncoder:
    the reference normalization, then tf_text.FastBertTokenizer), with the
    pieces' byte offsets into the normalized word;
  * windows: [CLS] query[:max_query_length] [SEP] context pieces [SEP], padded
    to S, starting every min(doc_stride, room) pieces as qa_data.doc_spans, and
    each window position's max_context (qa_data.is_max_context, first window on
    ties).
Final text (squad_predictions.final_text_span): the span's pieces de-tokenized
("pred_text") are searched in the normalized, punctuation-split text of the
words they lie in ("tok_text", rebuilt from the pieces' own surface strings, so
[UNK] pieces keep their text); the first match is mapped back character by
character ignoring spaces; the whole words when it is not found or the
normalization changed the number of characters.
"""

import tensorflow as tf

from modeling.evaluation import task_export
from pipeline.text import tokenization

# qa_data.split_words' whitespace (run_squad's is_whitespace).
WHITESPACE = (0x20, 0x09, 0x0D, 0x0A, 0x202F)


def split_words(context):
  """context string [B] (valid UTF-8) -> (words string [B,(W)], starts and
  lengths int64 [B,(W)] in code points of the context)."""
  chars = tf.strings.unicode_decode(context, "UTF-8")  # int32 [B,(C)]
  flat = chars.flat_values
  position = tf.ragged.range(chars.row_lengths()).flat_values  # [sum C]
  space = tf.reduce_any(flat[:, None] == tf.constant(WHITESPACE)[None, :], axis=1)
  after_space = tf.concat([[True], space], 0)[:-1] | tf.equal(position, 0)
  first = ~space & after_space  # a word's first character
  word_of_char = tf.cumsum(tf.cast(first, tf.int64)) - 1  # global word index
  word_chars = tf.RaggedTensor.from_value_rowids(
      tf.boolean_mask(flat, ~space), tf.boolean_mask(word_of_char, ~space),
      nrows=tf.reduce_sum(tf.cast(first, tf.int64)))  # [W,(chars)]
  per_row = tf.reduce_sum(tf.cast(tf.RaggedTensor.from_row_lengths(
      first, chars.row_lengths()), tf.int64), axis=1)  # [B]
  as_rows = lambda t: tf.RaggedTensor.from_row_lengths(t, per_row)
  return (as_rows(tf.strings.unicode_encode(word_chars, "UTF-8")),
          as_rows(tf.boolean_mask(position, first)), as_rows(word_chars.row_lengths()))


def safe_gather(params, indices, valid, default):
  """params[indices] where valid, else default (indices may be out of range)."""
  padded = tf.concat([params, tf.reshape(tf.cast(default, params.dtype), [1])], 0)
  return tf.gather(padded, tf.where(valid, indices, tf.shape(params, out_type=indices.dtype)[0]))


class QaEncoder(tf.Module):
  """Questions and contexts -> windows for a span model, and spans -> text."""

  def __init__(self, vocab_file, do_lower_case, windows):
    """windows: a qa_data.WindowConfig (max_seq_length, doc_stride, max_query_length)."""
    super().__init__(name="qa_encoder")
    self.text = task_export.TextEncoder(vocab_file, do_lower_case, windows.max_seq_length)
    vocab = tokenization.load_vocab(vocab_file)
    self.vocab = tf.constant(list(vocab))  # [V] piece strings, for pred_text
    self.continuation = tf.constant([t.startswith("##") for t in vocab])  # [V]
    self.windows = windows

  def context_pieces(self, context):
    """context string [B] -> dict of the words and pieces (flat over the batch).

    words [B,(W)] strings, word_starts / word_lengths [B,(W)]; pieces [B,(P)]
    ids; piece_word [P] global word index; word_pieces [W,(T)] ids (row_starts:
    first piece of each word, global); tok_piece [P] string: the piece's surface
    text, after a space unless it continues a word ("##").
    """
    words, starts, lengths = split_words(context)
    normalized = self.text.normalize(words.flat_values)  # [W]
    ids, begin, end = self.text.tokenizer.tokenize_with_offsets(normalized)  # [W,(T)]
    piece_word = ids.value_rowids()  # [P]
    surface = tf.strings.substr(tf.gather(normalized, piece_word), begin.flat_values,
                                end.flat_values - begin.flat_values)  # [P], bytes
    gap = tf.where(tf.gather(self.continuation, ids.flat_values), "", " ")
    pieces = tf.RaggedTensor.from_nested_row_lengths(
        ids.flat_values, [words.row_lengths(), ids.row_lengths()]).merge_dims(1, 2)
    return {"words": words, "word_starts": starts, "word_lengths": lengths,
            "pieces": pieces, "piece_word": piece_word, "word_pieces": ids,
            "tok_piece": tf.strings.join([gap, surface])}

  def query_pieces(self, question):
    """question string [B] -> int64 [B,(Q)], the first max_query_length pieces."""
    return self.text.word_pieces(question)[:, :self.windows.max_query_length]

  def window_spans(self, query, pieces):
    """Every question's windows (qa_data.doc_spans in closed form).

    Returns a dict of [N] int64: question (its index b), index (k within the
    question), start (first context piece, within the question), length,
    offset (window position of that piece: len(query) + 2); and of [B]:
    count (windows), room (max context pieces), step (the stride used),
    num_pieces (context pieces).
    """
    q_len, p_len = query.row_lengths(), pieces.row_lengths()
    room = self.windows.max_seq_length - q_len - 3  # max_tokens_for_doc [B]
    step = tf.minimum(room, self.windows.doc_stride)
    count = 1 + (tf.maximum(p_len - room, 0) + step - 1) // step  # [B]
    ks = tf.ragged.range(count)
    question, index = ks.value_rowids(), ks.flat_values
    start = index * tf.gather(step, question)
    length = tf.minimum(tf.gather(p_len, question) - start, tf.gather(room, question))
    return {"question": question, "index": index, "start": start, "length": length,
            "offset": tf.gather(q_len, question) + 2, "count": count, "room": room,
            "step": step, "num_pieces": p_len}

  def model_inputs(self, query, pieces, spans):
    """-> {input_ids, input_mask, segment_ids} int32 [N,S]."""
    n = tf.shape(spans["question"])[0]
    first = tf.gather(pieces.row_starts(), spans["question"]) + spans["start"]  # [N]
    context = tf.gather(pieces.flat_values, tf.ragged.range(first, first + spans["length"]))
    special = lambda i: tf.RaggedTensor.from_tensor(tf.fill([n, 1], tf.constant(i, tf.int64)))
    parts = [special(self.text.cls_id), tf.gather(query, spans["question"]),
             special(self.text.sep_id), context, special(self.text.sep_id)]
    ids = tf.concat(parts, axis=1)  # [N,(L)]
    segments = tf.concat([tf.zeros_like(p) for p in parts[:3]] +
                         [tf.ones_like(p) for p in parts[3:]], axis=1)
    shape = [None, self.windows.max_seq_length]
    dense = lambda r: tf.cast(r.to_tensor(0, shape=shape), tf.int32)
    return {"input_ids": dense(ids), "input_mask": dense(tf.ones_like(ids)),
            "segment_ids": dense(segments)}

  def max_context(self, spans):
    """bool [N,S]: window position i holds a context piece this window gives the
    most context (min of left and right context + 0.01 x window length, in
    float64 like the reference; the first window on ties)."""
    b = spans["question"]
    piece = (spans["start"] - spans["offset"])[:, None] + tf.range(
        self.windows.max_seq_length, dtype=tf.int64)  # [N,S] context piece at position i
    ks = tf.range(tf.reduce_max(spans["count"]), dtype=tf.int64)  # [X]
    k_start = ks[None, :] * tf.gather(spans["step"], b)[:, None]  # [N,X]: the question's windows
    k_len = tf.clip_by_value(tf.gather(spans["num_pieces"], b)[:, None] - k_start, 0,
                             tf.gather(spans["room"], b)[:, None])
    exists = ks[None, :] < tf.gather(spans["count"], b)[:, None]
    p = piece[:, :, None]
    k_start, k_end, k_len = (t[:, None, :] for t in (k_start, k_start + k_len - 1, k_len))
    inside = (p >= k_start) & (p <= k_end) & exists[:, None, :]  # [N,S,X]
    score = (tf.cast(tf.minimum(p - k_start, k_end - p), tf.float64) +
             0.01 * tf.cast(k_len, tf.float64))
    score = tf.where(inside, score, tf.constant(-1.0, tf.float64))
    best = tf.reduce_max(score, axis=2, keepdims=True)
    winner = tf.reduce_min(tf.where(inside & (score == best), ks, tf.int64.max), axis=2)
    own = (piece >= spans["start"][:, None]) & (
        piece < (spans["start"] + spans["length"])[:, None])
    return own & tf.equal(winner, spans["index"][:, None])

  def pred_text(self, pieces, first, last, valid):
    """get_final_text's pred_text (write_predictions' tok_text) of the global
    pieces first..last [B]: their tokens joined by spaces, " ##" then "##"
    removed, stripped; "" where not valid."""
    ids = tf.gather(pieces, tf.ragged.range(tf.where(valid, first, 0),
                                             tf.where(valid, last + 1, 0)))  # [B,(L)]
    text = tf.strings.reduce_join(tf.gather(self.vocab, ids), axis=1, separator=" ")
    text = tf.strings.regex_replace(text, " ##", "")
    return tf.strings.strip(tf.strings.regex_replace(text, "##", ""))

  @staticmethod
  def tok_text(ctx, w0, w1, valid):
    """get_final_text's tok_text of the global words w0..w1 [B]: their pieces'
    surface strings, a space before each that starts a basic token (so an
    [UNK] keeps its text); "" where not valid."""
    words = ctx["word_pieces"]  # [W,(T)]
    pieces = tf.ragged.range(safe_gather(words.row_starts(), w0, valid, 0),
                             safe_gather(words.row_limits(), w1, valid, 0))  # [B,(T')]
    return tf.strings.strip(tf.strings.reduce_join(tf.gather(ctx["tok_piece"], pieces), axis=1))

  def final_span(self, ctx, first, last, valid):
    """The answer's [start, end) in code points of its context [B] (-1 where not
    valid), for the span of global context pieces first..last [B]."""
    starts, lengths = ctx["word_starts"].flat_values, ctx["word_lengths"].flat_values  # [W]
    before = tf.cumsum(lengths, exclusive=True)  # [W] characters of the earlier words
    w0 = safe_gather(ctx["piece_word"], first, valid, 0)
    w1 = safe_gather(ctx["piece_word"], last, valid, 0)
    tok = self.tok_text(ctx, w0, w1, valid)
    pred = self.pred_text(ctx["pieces"].flat_values, first, last, valid)
    found, prefix = find_first(tok, pred)
    chars = lambda t: tf.cast(tf.strings.length(
        tf.strings.regex_replace(t, " ", ""), unit="UTF8_CHAR"), tf.int64)  # spaces ignored
    w0_before = safe_gather(before, w0, valid, 0)
    # The reference maps characters 1:1 only if normalization kept their number.
    aligned = valid & found & tf.equal(
        chars(tok), safe_gather(before + lengths, w1, valid, 0) - w0_before)
    n0 = w0_before + chars(prefix)  # index among all words' characters

    def to_context(n):  # the n-th word character -> its position in the context
      j = tf.searchsorted(before + lengths, n, side="right", out_type=tf.int64)
      return safe_gather(starts, j, aligned, 0) + n - safe_gather(before, j, aligned, 0)

    whole = (safe_gather(starts, w0, valid, -1), safe_gather(starts + lengths, w1, valid, -1))
    return (tf.where(aligned, to_context(n0), whole[0]),
            tf.where(aligned, to_context(n0 + chars(pred) - 1) + 1, whole[1]))


def find_first(text, pattern):
  """(found bool [B], text before the first occurrence of pattern string [B]),
  as str.find; an empty pattern is never found."""
  usable = tf.strings.length(pattern) > 0
  pattern = tf.where(usable, pattern, "\x00")

  def one(pair):
    parts = tf.strings.split(pair[0], sep=pair[1], maxsplit=1)  # [1] or [2]
    return tf.size(parts) > 1, parts[0]

  found, prefix = tf.map_fn(one, (text, pattern), fn_output_signature=(
      tf.TensorSpec([], tf.bool), tf.TensorSpec([], tf.string)))
  return found & usable, prefix
