"""SavedModel export of a classifier that takes raw text.

Shape legend: B=batch, S=max_seq_length, C=number of labels, T=word pieces,
L=the batch's longest input in word pieces with [CLS]/[SEP] (<= S).

Signatures (float32 graph, whatever precision trained the model):
  serving_default: text_a string [B] (+ text_b string [B] for pair tasks)
      -> probabilities [B,C], logits [B,C], label_id int32 [B], label string [B],
      truncated bool [B] (the input was cut to S). The model runs on [B,L], not
      [B,S]: padding adds nothing to a row's outputs (it is masked), so short
      texts cost what they are, not what the longest possible one would.
  encoded: input_ids, input_mask, segment_ids int32 [B,S'] (S' <= the
      model's max_position_embeddings) -> the same outputs
  tokenize: the text inputs -> input_ids, input_mask, segment_ids int32 [B,S]

Text becomes ids in the graph (tensorflow-text), the way
tools/create_classification_data.py makes the records: the reference BERT
normalization (drop U+0000, U+FFFD and Cc/Cf except \\t \\n \\r; uncased:
lower-case, NFD, drop nonspacing marks), then tf_text.FastBertTokenizer's
whitespace/punctuation split and WordPiece on the same vocab (a word of more
than 200 bytes is [UNK], as the reference does for 200 characters), then
[CLS] a [SEP] (b [SEP]) with BERT's longest-first truncation, padded to S.
pipeline/text/tokenization.py is the reference-exact tokenizer; the in-graph one
differs where the two libraries' Unicode tables differ: compare_tokenizers
measures how often on real text (docs/task_distillation.md has the figures).
"""

import json
import os
import shutil

import keras
import tensorflow as tf

from modeling.networks import bert as bert_lib
from modeling.models import classification
from pipeline.records import schema
from pipeline.text import tokenization
from pipeline.core import stage

# The reference clean_text drops these (pipeline/text/tokenization.py).
_DROPPED = r"[\x{0}\x{FFFD}]|[^\P{Cc}\t\n\r]|\p{Cf}"
_MAX_BYTES_PER_WORD = tokenization.MAX_INPUT_CHARS_PER_WORD
TASK_FILE = "task.json"


def truncated_lengths(len_a, len_b, budget):
  """BERT's _truncate_seq_pair in closed form on int tensors [B]: the
  longer side loses tokens first (b on ties) until a + b <= budget."""
  short = tf.minimum(len_a, len_b)
  fits = len_a + len_b <= budget
  one_side = 2 * short <= budget
  keep_a = tf.where(one_side, tf.where(len_a > len_b, budget - short, short),
                    (budget + 1) // 2)
  keep_b = tf.where(one_side, tf.where(len_a > len_b, short, budget - short),
                    budget // 2)
  return tf.where(fits, len_a, keep_a), tf.where(fits, len_b, keep_b)


def _keep_first(ragged, lengths):
  """The first lengths[i] items of each row of a ragged [B,(T)]."""
  positions = tf.ragged.range(ragged.row_lengths())
  return tf.ragged.boolean_mask(ragged, positions < lengths[:, tf.newaxis])


class TextEncoder(tf.Module):
  """Raw strings -> BERT classifier inputs, in the graph."""

  def __init__(self, vocab_file, do_lower_case, max_seq_length):
    super().__init__(name="text_encoder")
    import tensorflow_text as tf_text  # pylint: disable=import-outside-toplevel
    self._text = tf_text
    vocab = tokenization.load_vocab(vocab_file)
    ids = {token: i for i, token in enumerate(vocab)}
    self.cls_id = ids[tokenization.CLS_TOKEN]
    self.sep_id = ids[tokenization.SEP_TOKEN]
    self.do_lower_case = bool(do_lower_case)
    self.max_seq_length = int(max_seq_length)
    self.tokenizer = tf_text.FastBertTokenizer(
        list(vocab), token_out_type=tf.int64, unknown_token=tokenization.UNK_TOKEN,
        max_bytes_per_word=_MAX_BYTES_PER_WORD, lower_case_nfd_strip_accents=False)

  def normalize(self, text):
    """string [B] -> string [B] as the reference normalizes before splitting."""
    # Invalid UTF-8 bytes become U+FFFD, which is dropped: the reference
    # decodes with errors="ignore".
    text = tf.strings.unicode_transcode(text, "UTF-8", "UTF-8", errors="replace",
                                        replacement_char=0xFFFD)
    text = tf.strings.regex_replace(text, _DROPPED, "")
    if self.do_lower_case:
      text = tf.strings.lower(text, encoding="utf-8")
      text = self._text.normalize_utf8(text, "NFD")
      text = tf.strings.regex_replace(text, r"\p{Mn}", "")
    return text

  def word_pieces(self, text):
    """string [B] -> int64 ragged [B,(T)] ids, no [CLS]/[SEP]."""
    return self.tokenizer.tokenize(self.normalize(text))

  def __call__(self, text_a, text_b=None, pad_to_longest=False):
    """-> {input_ids, input_mask, segment_ids}: int32 [B,S] (the records' layout),
    or [B,L] with pad_to_longest; plus truncated: bool [B]."""
    s = self.max_seq_length
    a = self.word_pieces(text_a)
    if text_b is None:
      truncated = a.row_lengths() > s - 2
      segments = [a[:, :s - 2]]
    else:
      b = self.word_pieces(text_b)
      truncated = a.row_lengths() + b.row_lengths() > s - 3
      keep_a, keep_b = truncated_lengths(a.row_lengths(), b.row_lengths(), s - 3)
      segments = [_keep_first(a, keep_a), _keep_first(b, keep_b)]
    ids, segment_ids = self._text.combine_segments(
        segments, start_of_sequence_id=self.cls_id, end_of_segment_id=self.sep_id)
    # max(.., 2): an empty batch still gets a valid [0,2] shape.
    length = tf.maximum(tf.reduce_max(ids.row_lengths()), 2) if pad_to_longest else s
    input_ids, input_mask = self._text.pad_model_inputs(ids, length)
    segment_ids, _ = self._text.pad_model_inputs(segment_ids, length)
    return {"input_ids": tf.cast(input_ids, tf.int32),
            "input_mask": tf.cast(input_mask, tf.int32),
            "segment_ids": tf.cast(segment_ids, tf.int32), "truncated": truncated}


def _outputs(model, labels, inputs):
  logits = model(inputs, training=False)["logits"]  # [B,C] float32
  label_id = tf.argmax(logits, -1, output_type=tf.int32)
  return {"logits": logits, "probabilities": tf.nn.softmax(logits),
          "label_id": label_id, "label": tf.gather(tf.constant(labels), label_id)}


def _endpoints(model, encoder, labels, pair):
  """(name, fn, input signature) of each signature."""
  text_names = ("text_a", "text_b") if pair else ("text_a",)
  text_specs = [tf.TensorSpec([None], tf.string, name=n) for n in text_names]
  id_specs = [tf.TensorSpec([None, None], tf.int32, name=n)
              for n in schema.CLASSIFICATION_MODEL_INPUTS]

  def serving(*texts):
    inputs = encoder(*texts, pad_to_longest=True)
    return _outputs(model, labels, inputs) | {"truncated": inputs.pop("truncated")}

  def encoded(input_ids, input_mask, segment_ids):
    return _outputs(model, labels, {"input_ids": input_ids, "input_mask": input_mask,
                                    "segment_ids": segment_ids})

  def tokenize(*texts):
    inputs = encoder(*texts)
    del inputs["truncated"]
    return inputs

  return [("serving_default", serving, text_specs), ("encoded", encoded, id_specs),
          ("tokenize", tokenize, text_specs)]


def float32_copy(model):
  """A float32 BertClassifier with `model`'s weights (any dtype policy)."""
  copy = classification.build_classifier(model.config, model.num_labels,
                                         model.dropout_rate, dtype="float32")
  copy.set_weights(bert_lib.ensure_built(model).get_weights())
  return copy


def export_text_classifier(model, export_dir, vocab_file, do_lower_case,
                           max_seq_length, labels, pair, info=None):
  """Writes a raw-text SavedModel of a BertClassifier; returns export_dir.

  Args:
    model: a BertClassifier.
    vocab_file, do_lower_case, max_seq_length: how its records were made.
    labels: the C label names (index = class id); pair: two text inputs.
    info: JSON-able provenance kept in task.json.
  Published atomically (publish_export).
  """
  if len(labels) != model.num_labels:
    raise ValueError(f"{len(labels)} label names for {model.num_labels} classes")
  serving = float32_copy(model)
  encoder = TextEncoder(vocab_file, do_lower_case, max_seq_length)
  archive = keras.export.ExportArchive()
  archive.track(serving)
  archive.track(encoder)
  for name, fn, signature in _endpoints(serving, encoder, [str(x) for x in labels], pair):
    archive.add_endpoint(name, fn, input_signature=signature)
  task = {"labels": list(labels), "num_labels": model.num_labels, "pair": bool(pair),
          "do_lower_case": bool(do_lower_case), "max_seq_length": int(max_seq_length),
          "inputs": ["text_a", "text_b"] if pair else ["text_a"], "info": info or {}}
  return publish_export(archive, export_dir, model.config, vocab_file, {TASK_FILE: task})


def publish_export(archive, export_dir, config, vocab_file, files):
  """Writes a keras ExportArchive with its bert_config.json, vocab.txt and
  `files` ({name: JSON-able}); returns export_dir (absolute).

  Written to a sibling temp directory and renamed: export_dir is either
  absent, the previous export or the complete new one.
  """
  export_dir = os.path.abspath(export_dir)
  tmp = f"{export_dir}.tmp.{os.getpid()}"
  shutil.rmtree(tmp, ignore_errors=True)
  archive.write_out(tmp, verbose=False)
  config.to_json_file(os.path.join(tmp, classification.CONFIG_FILE))
  shutil.copyfile(vocab_file, os.path.join(tmp, "vocab.txt"))
  for name, content in files.items():
    with open(os.path.join(tmp, name), "w", encoding="utf-8") as f:
      f.write(json.dumps(content, indent=1, sort_keys=True) + "\n")
  stage.replace_directory(tmp, export_dir)
  return export_dir


def compare_tokenizers(texts, vocab_file, do_lower_case, batch_size=1024,
                       max_examples=5):
  """How often the in-graph word pieces differ from pipeline/tokenization's.

  Returns:
    {"texts": N, "differing": n, "examples": up to max_examples [text, ours,
    in-graph tokens] of differing texts}.
  """
  reference = tokenization.BertTokenizer(vocab_file, do_lower_case)
  encoder = TextEncoder(vocab_file, do_lower_case, max_seq_length=3)
  differing, examples = 0, []
  for start in range(0, len(texts), batch_size):
    chunk = list(texts[start:start + batch_size])
    ours = reference.encode_batch(chunk)
    theirs = encoder.word_pieces(tf.constant(chunk)).to_list()
    for text, a, b in zip(chunk, ours, theirs):
      if a.tolist() != b:
        differing += 1
        if len(examples) < max_examples:
          examples.append([text, reference.convert_ids_to_tokens(a),
                           reference.convert_ids_to_tokens(b)])
  return {"texts": len(texts), "differing": differing, "examples": examples}
