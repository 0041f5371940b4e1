"""evaluate / benchmark / export --task on generated text tasks and tiny random
classifiers: metrics equal to a direct computation, the benchmark's table,
JSON and plot, and the raw-text SavedModel (in-graph tokenization) giving the
records' ids and the classifier's predictions."""

import csv
import json
import os
import random
import string
import unicodedata

import numpy as np
import pytest

from modeling.evaluation import classification_metrics as cm
from modeling.evaluation import task_evaluation as te
from modeling.evaluation import serving_layout as layout
from pipeline.text import tokenization
from tests.conftest import run_tool, start_tool

tf = pytest.importorskip("tensorflow")
tf_text = pytest.importorskip("tensorflow_text")  # registers the ops a SavedModel needs

WORDS = ("river valley town people history music science north south city church "
         "station bridge language school market winter summer mountain forest island "
         "century government trade railway festival library museum Café naïve Über "
         "co-operation don't U.S.").split()
GOOD, BAD = ("great", "wonderful", "superb", "fine"), ("awful", "boring", "dull", "poor")
ENDINGS = (".", "!", "...", " :)", "", "?!", " (really)")


def _sentence(rnd, label, words=(3, 14)):
  picked = [rnd.choice(WORDS) for _ in range(rnd.randint(*words))]
  picked.insert(rnd.randrange(len(picked) + 1), rnd.choice(GOOD if label else BAD))
  return " ".join(picked).capitalize() + rnd.choice(ENDINGS)


def _write_tsvs(directory, pair, sizes, seed):
  """train/dev/test.tsv: the label is whether a GOOD word is in text a."""
  os.makedirs(directory)
  rnd = random.Random(seed)
  for split, n in sizes.items():
    with open(os.path.join(directory, f"{split}.tsv"), "w", encoding="utf-8") as f:
      f.write("a\tb\tlabel\n" if pair else "sentence\tlabel\n")
      for _ in range(n):
        label = rnd.randrange(2)
        if pair:  # long enough that pairs get truncated at S=24
          f.write(f"{_sentence(rnd, label, (2, 16))}\t{_sentence(rnd, 1 - label, (2, 16))}"
                  f"\t{label}\n")
        else:
          f.write(f"{_sentence(rnd, label)}\t{label}\n")
  return str(directory)


def _strip_accents(word):
  return "".join(c for c in unicodedata.normalize("NFD", word)
                 if unicodedata.category(c) != "Mn")


def _write_vocab(path):
  """Specials, punctuation, letters and ##letters (no [UNK] needed), the words."""
  tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + list(string.punctuation)
  tokens += list(string.ascii_lowercase) + ["##" + c for c in string.ascii_lowercase]
  for word in WORDS + list(GOOD) + list(BAD):
    for piece in _strip_accents(word.lower()).replace("-", " ").replace("'", " ").replace(
        ".", " ").split():
      if piece not in tokens:
        tokens.append(piece)
  with open(path, "w", encoding="utf-8") as f:
    f.write("\n".join(tokens) + "\n")
  return str(path)


def _save_classifier(directory, hidden, layers, seed, vocab_size):
  import keras  # pylint: disable=import-outside-toplevel
  from modeling.networks import bert  # pylint: disable=import-outside-toplevel
  from modeling.models import classification
  keras.utils.set_random_seed(seed)
  config = bert.BertConfig(vocab_size=vocab_size, hidden_size=hidden, num_hidden_layers=layers,
                           num_attention_heads=2, intermediate_size=2 * hidden,
                           max_position_embeddings=64, initializer_range=0.5)
  model = classification.build_classifier(config, 2)
  classification.save_classifier(model, str(directory), labels=["neg", "pos"])
  return str(directory)


def _finish(proc):
  _, stderr = proc.communicate(timeout=300)
  assert proc.returncode == 0, stderr.decode()[-3000:]


@pytest.fixture(scope="module")
def task(tmp_path_factory):
  """Records of a single-sentence and a pair task, teacher labels, 3 models."""
  base = tmp_path_factory.mktemp("text_task")
  vocab = _write_vocab(base / "vocab.txt")
  sizes = {"train": 40, "dev": 50, "test": 10}
  d = {"base": base, "vocab": vocab,
       "tsv": _write_tsvs(base / "tsv", False, sizes, 0),
       "tsv_pair": _write_tsvs(base / "tsv_pair", True, sizes, 1),
       "records": str(base / "records"), "records_pair": str(base / "records_pair")}
  common = [f"--vocab_file={vocab}", "--labels=0,1", "--label_column=label"]
  _finish_all([
      start_tool("create_classification_data", f"--input_dir={d['tsv']}",
                 f"--output_dir={d['records']}", "--max_seq_length=32",
                 "--text_a_column=sentence", *common),
      start_tool("create_classification_data", f"--input_dir={d['tsv_pair']}",
                 f"--output_dir={d['records_pair']}", "--max_seq_length=24",
                 "--text_a_column=a", "--text_b_column=b", *common)])
  with open(vocab) as f:
    size = len(f.read().split("\n")) - 1
  for name, hidden, layers, seed in (("teacher", 32, 2, 1), ("finetuned", 16, 1, 2),
                                     ("distilled", 16, 1, 3)):
    d[name] = _save_classifier(base / name, hidden, layers, seed, size)
  d["labels"] = str(base / "labels")
  run_tool("extract_teacher_labels", f"--init_checkpoint={d['teacher']}",
           f"--vocab_file={vocab}", f"--input_dir={d['records']}",
           f"--output_dir={d['labels']}", "--batch_size=16")
  return d


def _finish_all(procs):
  for proc in procs:
    _finish(proc)


def _direct_logits(checkpoint, records, split="dev"):
  from modeling.models import classification  # pylint: disable=import-outside-toplevel
  inp = te.read_task_eval_input(records, split)
  batch = next(iter(te.cds.eval_dataset(inp.dir, inp.spec, 1000, split)))
  model = classification.load_classifier(checkpoint)
  return batch, classification.logits(model, batch).numpy().astype(np.float64)


def test_metrics_equal_a_direct_computation(task):
  inp = te.read_task_eval_input(task["labels"], "dev", task["vocab"])
  model = te.load_classifier(task["finetuned"], inp)
  metrics, report, counts = te.evaluate(model, inp, batch_size=7)  # 7 batches, last short
  batch, logits = _direct_logits(task["finetuned"], task["labels"])
  labels = batch["label_ids"].numpy().reshape(-1)
  teacher = batch["teacher_logits"].numpy().astype(np.float64)
  expected = cm.classification_metrics(labels, logits)
  for name in te.METRICS:
    assert metrics[name] == pytest.approx(expected[name], rel=1e-5, abs=1e-6), name
  assert metrics["accuracy"] == pytest.approx(np.mean(logits.argmax(-1) == labels))
  p = cm.softmax(teacher)
  kl = (p * (np.log(p) - np.log(cm.softmax(logits)))).sum(-1).mean()
  assert metrics["teacher_kl_task"] == pytest.approx(kl, rel=1e-4)
  assert metrics["teacher_agreement"] == pytest.approx(
      np.mean(teacher.argmax(-1) == logits.argmax(-1)))
  assert metrics["teacher_accuracy"] == pytest.approx(np.mean(teacher.argmax(-1) == labels))
  assert counts == {"examples": 50}
  assert report["labels"] == ["0", "1"] and np.sum(report["confusion_matrix"]) == 50
  assert sum(c["support"] for c in report["per_class"].values()) == 50


@pytest.fixture(scope="module")
def runs(task):
  """The tools' outputs: evaluate, a failing evaluate, benchmark and export
  started at once (each is mostly TensorFlow's start-up and tracing), while
  this process exports the pair task with the library."""
  from modeling.evaluation import task_export  # pylint: disable=import-outside-toplevel
  base = task["base"] / "runs"
  out = {name: str(base / name) for name in ("eval.json", "bench", "export", "export_pair")}
  models = ",".join(f"{n}=:{task[n]}" for n in ("teacher", "finetuned", "distilled"))
  procs = {
      "evaluate": start_tool("evaluate", f"--checkpoint={task['distilled']}",
                             f"--input_dir={task['records']}", "--split=test",
                             f"--output_json={out['eval.json']}"),
      "bad_split": start_tool("evaluate", f"--checkpoint={task['teacher']}",
                              f"--input_dir={task['records_pair']}", "--split=eval",
                              f"--output_json={base / 'x.json'}", f"--vocab_file={task['vocab']}"),
      "benchmark": start_tool("benchmark", f"--models={models}",
                              f"--input_dir={task['labels']}", f"--output_dir={out['bench']}",
                              "--throughput_batch=4", "--repeats=2", "--warmup=1"),
      "export": start_tool("export", f"--checkpoint={task['distilled']}", "--version=3",
                           f"--input_dir={task['labels']}", f"--vocab_file={task['vocab']}",
                           f"--export_dir={out['export']}")}
  inp = te.read_task_records(task["records_pair"], task["vocab"])
  task_export.export_text_classifier(te.load_classifier(task["teacher"], inp),
                                     out["export_pair"], task["vocab"], True, 24,
                                     ["neg", "pos"], pair=True)
  results = {}
  for name, proc in procs.items():
    _, stderr = proc.communicate(timeout=600)
    results[name] = (proc.returncode, stderr.decode())
    assert name == "bad_split" or proc.returncode == 0, stderr.decode()[-3000:]
  return dict(out, results=results)


def test_evaluate_tool_writes_the_task_metrics(runs):
  with open(runs["eval.json"]) as f:
    result = json.load(f)
  assert sorted(result["metrics"]) == sorted(te.METRICS)  # plain records: no teacher
  assert result["counts"]["examples"] == 10 and result["input"]["split"] == "test"
  assert result["model"]["num_labels"] == 2 and result["model"]["parameters"] > 0
  assert set(result["report"]) == {"per_class", "confusion_matrix", "labels"}
  returncode, stderr = runs["results"]["bad_split"]
  assert returncode == 2 and "Traceback" not in stderr
  assert ("error: --split: classification records have splits ('train', 'dev', 'test')"
          == stderr.strip().splitlines()[-1])


def test_benchmark_tool_writes_the_task_table(runs):
  out = runs["bench"]
  assert sorted(os.listdir(out)) == ["benchmark.json", "benchmark.md", "benchmark.png"]
  with open(os.path.join(out, "benchmark.json")) as f:
    report = json.load(f)
  teacher, finetuned, distilled = report["models"]
  assert [r["name"] for r in report["models"]] == ["teacher", "finetuned", "distilled"]
  assert teacher["speedup"] == 1.0 and teacher["metrics"]["teacher_agreement"] == 1.0
  assert teacher["parameters"] > distilled["parameters"] == finetuned["parameters"]
  assert report["settings"]["seq_length"] == 32  # the records' max_seq_length
  for r in report["models"]:
    assert len(r["latency_ms"]["samples"]) == 2 and r["throughput"]["mean"] > 0
    assert r["disk_bytes"] > 0 and r["counts"]["examples"] == 50
  with open(os.path.join(out, "benchmark.md"), encoding="utf-8") as f:
    markdown = f.read()
  table = [l for l in markdown.splitlines() if l.startswith("|")]
  header = [c.strip() for c in table[0].strip("|").split("|")]
  assert header == ["Model", "Layers x hidden", "Params", "Disk (MB)", "Latency (ms)",
                    "Speedup", "Throughput (seq/s)", "Accuracy", "Acc kept", "F1",
                    "Precision", "Recall", "MCC", "ROC-AUC", "Teacher agree"]
  assert [r.split("|")[1].strip() for r in table[2:]] == ["teacher", "finetuned", "distilled"]
  assert "{" not in markdown and "sequence length 32" in markdown
  with open(os.path.join(out, "benchmark.png"), "rb") as f:
    png = f.read()
  assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 5000


def _texts(tsv_dir, split, pair):
  with open(os.path.join(tsv_dir, f"{split}.tsv"), encoding="utf-8") as f:
    rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))[1:]
  return {"text_a": tf.constant([r[0] for r in rows])} | (
      {"text_b": tf.constant([r[1] for r in rows])} if pair else {})


def _assert_round_trip(export_dir, checkpoint, tsv_dir, records, pair, labels):
  """The SavedModel on the raw dev texts = the classifier on the dev records."""
  loaded = tf.saved_model.load(export_dir)
  assert sorted(loaded.signatures) == ["encoded", "serving_default", "tokenize"]
  texts = _texts(tsv_dir, "dev", pair)
  batch, logits = _direct_logits(checkpoint, records)
  ids = loaded.signatures["tokenize"](**texts)
  for name in ("input_ids", "input_mask", "segment_ids"):
    np.testing.assert_array_equal(ids[name].numpy(), batch[name].numpy(), err_msg=name)
  out = loaded.signatures["serving_default"](**texts)
  np.testing.assert_allclose(out["logits"].numpy(), logits, atol=1e-5)
  np.testing.assert_allclose(out["probabilities"].numpy(), cm.softmax(logits), atol=1e-5)
  np.testing.assert_array_equal(out["label_id"].numpy(), logits.argmax(-1))
  names = np.array(labels, dtype=object)[logits.argmax(-1)].astype(bytes)
  np.testing.assert_array_equal(out["label"].numpy(), names)
  return ids, loaded


def test_export_tool_single_text_round_trip(task, runs):
  # --version=3: TF Serving's layout, which tools/serve.py (and TF Serving) resolve.
  export_dir = os.path.join(runs["export"], "3")
  assert layout.resolve_model_dir(runs["export"]) == (export_dir, 3)
  assert {"saved_model.pb", "variables", "task.json", "vocab.txt", "bert_config.json"} <= set(
      os.listdir(export_dir))
  with open(os.path.join(export_dir, "task.json")) as f:
    meta = json.load(f)
  assert (meta["pair"], meta["max_seq_length"], meta["inputs"]) == (False, 32, ["text_a"])
  # The label names are the records' (the task's label values).
  ids, _ = _assert_round_trip(export_dir, task["distilled"], task["tsv"], task["records"],
                              False, ["0", "1"])
  assert ids["input_mask"].numpy().sum(1).max() < 32  # nothing to truncate here


def test_export_pair_round_trip_with_truncation(task, runs):
  ids, loaded = _assert_round_trip(runs["export_pair"], task["teacher"], task["tsv_pair"],
                                   task["records_pair"], True, ["neg", "pos"])
  full = ids["input_mask"].numpy().sum(1) == 24
  assert 0 < full.sum() < len(full)  # both truncated and short pairs
  encoded = loaded.signatures["encoded"](**ids)
  assert encoded["logits"].shape == (50, 2)


def test_truncation_matches_bert_truncate_seq_pair():
  from modeling.evaluation import task_export  # pylint: disable=import-outside-toplevel

  def reference(a, b, budget):  # google-research/bert's _truncate_seq_pair
    while a + b > budget:
      if a > b:
        a -= 1
      else:
        b -= 1
    return a, b

  cases = [(a, b, m) for a in range(12) for b in range(12) for m in range(1, 15)]
  a, b, m = (tf.constant(x) for x in zip(*cases))
  keep_a, keep_b = task_export.truncated_lengths(a, b, m)
  assert list(zip(keep_a.numpy().tolist(), keep_b.numpy().tolist())) == [
      reference(*c) for c in cases]


def test_compare_tokenizers_counts_the_known_difference(task):
  from modeling.evaluation import task_export  # pylint: disable=import-outside-toplevel
  texts = [_sentence(random.Random(i), i % 2) for i in range(200)]
  texts += ["A\u00a0non-breaking space, tabs\tand\nnewlines", "Zero\u200bwidth", "e\u0301te"]
  texts += ["ΟΔΟΣ Σ"]  # final sigma: both lower-case it in context ("οδος σ")
  same = task_export.compare_tokenizers(texts, task["vocab"], True)
  assert same == {"texts": 204, "differing": 0, "examples": []}
  # U+2E52 is punctuation since Unicode 14 (Python 3.11's tables), not in the
  # older tables of tensorflow-text's ICU: the reference splits the word there.
  newer = task_export.compare_tokenizers(["a\u2e52b"], task["vocab"], True)
  assert newer["differing"] == 1
  assert newer["examples"][0][1:] == [["a", "[UNK]", "b"], ["[UNK]"]]


def test_serving_pads_to_the_longest_input_and_flags_truncation(task):
  """The records' layout pads to S; serving_default's inputs stop at the batch's
  longest row, the same ids and mask up to it, and say which rows were cut."""
  from modeling.evaluation import task_export  # pylint: disable=import-outside-toplevel
  texts = [_sentence(random.Random(i), i % 2) for i in range(6)]
  texts[2] = " ".join(texts[2:5])  # three sentences: the one row cut
  lengths = np.array([len(x) for x in tokenization.BertTokenizer(
      task["vocab"], True).encode_batch(texts)])
  for pair, others in ((False, 0), (True, lengths[0])):  # text_b: texts[0] in every row
    total = lengths + others
    seq = int(np.sort(total)[-2]) + (3 if pair else 2)  # every row but the longest fits
    encoder = task_export.TextEncoder(task["vocab"], True, max_seq_length=seq)
    args = [tf.constant(texts)] + ([tf.constant(texts[:1] * len(texts))] if pair else [])
    fixed, longest = encoder(*args), encoder(*args, pad_to_longest=True)
    width = int(fixed["input_mask"].numpy().sum(1).max())
    assert fixed["input_ids"].shape[1] == seq and longest["input_ids"].shape[1] == width
    for name in ("input_ids", "input_mask", "segment_ids"):
      np.testing.assert_array_equal(longest[name].numpy(), fixed[name].numpy()[:, :width])
    cut = longest["truncated"].numpy()
    assert cut.tolist() == (total > seq - (3 if pair else 2)).tolist() and cut.sum() >= 1
    two = np.argsort(total)[:2]  # the two shortest rows alone
    short = encoder(*[tf.gather(x, two) for x in args], pad_to_longest=True)
    assert short["input_ids"].shape[1] < width and not short["truncated"].numpy().any()
