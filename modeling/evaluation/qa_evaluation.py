"""Held-out SQuAD metrics of span models, their speed, and the QA comparison report.

Shape legend: B=batch, S=max_seq_length, N=windows of the split.

The classifier counterpart is modeling/evaluation/task_evaluation.py; the
size, timing and table machinery is evaluation.py's. A split's windows are
predicted, turned into answers as run_squad does (squad_predictions.py) and
scored with the official SQuAD metric (squad_metrics.py): exact and f1, and
on SQuAD 2.0 the HasAns / NoAns splits and the best null threshold. On QA
distill records the cached teacher logits add teacher_agreement (the same
argmax start and end position as the teacher, per window).
"""

import dataclasses
import os

import numpy as np
import tensorflow as tf

from modeling.evaluation import evaluation
from modeling.evaluation import squad_predictions
from modeling.models import span
from modeling.training import pretraining
from modeling.training import qa_runs
from pipeline.core import kinds
from pipeline.core.errors import InputError
from pipeline.inputs import qa_dataset
from pipeline.labels import task_labels
from pipeline.records import schema

SUMMARY = ("exact", "f1", "HasAns_f1", "NoAns_f1", "best_f1", "best_f1_thresh")


@dataclasses.dataclass(frozen=True)
class QaEvalInput:
  """A QA (or QA distill) records directory and a split with its sidecars."""
  manifest: dict
  spec: qa_dataset.QaSpec
  split: str

  @property
  def dir(self):
    return self.manifest["_dir"]

  def describe(self):
    return {"dir": self.dir, "stage": self.manifest["stage"], "split": self.split,
            "manifest_sha256": self.manifest["_sha256"], "version": self.spec.version,
            "teacher_logits": self.split in self.spec.teacher_splits}

  def prediction_config(self):
    """run_squad's prediction settings for these records."""
    return squad_predictions.PredictionConfig(
        do_lower_case=self.manifest["config"].get("do_lower_case", True),
        version_2_with_negative=self.spec.version == "v2.0")


def read_qa_eval_input(input_dir, split="dev", vocab_file=None):
  """Completed QA records whose `split` was written with its evaluation sidecars."""
  if vocab_file:
    manifest, spec = qa_dataset.read_qa_input(input_dir, vocab_file)
  else:
    _, manifest = kinds.read(input_dir, kinds.QA_RECORDS, kinds.QA_DISTILL_RECORDS)
    spec = qa_dataset.QaSpec.from_manifest(manifest)
  if split not in spec.eval_splits:
    raise InputError(input_dir, f"split {split!r} has no evaluation sidecars (has "
                     f"{list(spec.eval_splits)})")
  schema.record_files(input_dir, (split,))  # raises when the split has no records
  return QaEvalInput(manifest, spec, split)


def load_span_model(checkpoint, inp, config_file=None):
  """A float32 span model from `checkpoint` that fits the records of `inp`."""
  evaluation.checkpoint_files(checkpoint)  # InputError when there is none
  config = None
  if config_file:
    config = pretraining.model_config(config_file, inp.manifest,
                                      pretraining.gelu_convention_for(checkpoint))
  try:
    model = span.load_span_model(checkpoint, config=config, dtype="float32")
  except (OSError, ValueError) as e:
    raise InputError(checkpoint, str(e)) from None
  task_labels.check_model_fits(inp.manifest, model.config, checkpoint,
                               task_labels.run_vocab_sha256(checkpoint), "span model")
  return model


def predict(model, inp, batch_size, max_batches=None):
  """{start_logits, end_logits [N,S], unique_id [N] (, teacher_*)} in record order."""
  batches = qa_dataset.eval_dataset(inp.dir, inp.spec, batch_size, inp.split)
  if max_batches:
    batches = batches.take(max_batches)

  @tf.function(input_signature=[batches.element_spec])
  def step(batch):
    start, end = span.masked_span_logits(model, batch)
    out = {"start_logits": start, "end_logits": end,
           "unique_id": tf.reshape(batch["unique_id"], [-1])}
    for name in ("teacher_start_logits", "teacher_end_logits"):
      if name in batch:
        out[name] = span.mask_padding(batch[name], batch["input_mask"])
    return out

  parts = {}
  for batch in batches:
    for name, value in step(batch).items():
      parts.setdefault(name, []).append(value.numpy())
  if not parts:
    raise InputError(inp.dir, f"split {inp.split!r} has no records")
  return {name: np.concatenate(values) for name, values in parts.items()}


def teacher_agreement(predicted):
  """Share of windows where the model's argmax start and end equal the teacher's."""
  same = [np.argmax(predicted[f"{k}_logits"], -1) == np.argmax(
      predicted[f"teacher_{k}_logits"], -1) for k in ("start", "end")]
  return float(np.mean(same[0] & same[1]))


def evaluate(model, inp, batch_size, max_batches=None):
  """(metrics, counts, {question id: Prediction}) of `model` on the split of `inp`.

  With max_batches only the questions whose windows were all predicted count.
  """
  predicted = predict(model, inp, batch_size, max_batches)
  eval_set = qa_runs.read_eval_set(inp.dir, inp.split, inp.prediction_config())
  have = set(predicted["unique_id"].tolist())
  examples = [e for e in eval_set.examples
              if all(w["unique_id"] in have for w in e["windows"])]
  eval_set.examples = examples
  eval_set.dataset = _only_questions(eval_set.dataset, {e["id"] for e in examples})
  results, predictions = eval_set.score(predicted["unique_id"], predicted["start_logits"],
                                        predicted["end_logits"])
  metrics = {k: float(v) for k, v in results.items() if k != "total"}
  if "teacher_start_logits" in predicted:
    metrics["teacher_agreement"] = teacher_agreement(predicted)
  counts = {"questions": len(examples), "windows": int(len(predicted["unique_id"]))}
  return metrics, counts, predictions


def _only_questions(dataset, ids):
  """The official dataset reduced to the question ids `ids` (empty articles dropped)."""
  out = []
  for article in dataset:
    paragraphs = []
    for paragraph in article["paragraphs"]:
      qas = [qa for qa in paragraph["qas"] if qa["id"] in ids]
      if qas:
        paragraphs.append(dict(paragraph, qas=qas))
    if paragraphs:
      out.append(dict(article, paragraphs=paragraphs))
  return out


def write_outputs(predictions, output_json, version_2):
  """predictions.json (+ nbest, null_odds) beside the evaluation JSON; their paths."""
  directory = os.path.splitext(os.path.abspath(output_json))[0] + "_predictions"
  return squad_predictions.write_predictions(predictions, directory, version_2)


# ---------------------------------------------------------------- speed


def serving_fn(model, batch_size, seq_length):
  """The span model compiled for fixed [batch_size, seq_length] inputs."""
  specs = {name: tf.TensorSpec([batch_size, seq_length], tf.int32, name)
           for name in schema.QA_MODEL_INPUTS}

  @tf.function(input_signature=[specs])
  def forward(inputs):
    outputs = model(inputs, training=False)
    return {"start_logits": outputs["start_logits"], "end_logits": outputs["end_logits"]}

  return forward


def qa_case(model, batch_size, settings):
  """evaluation.measure_speed's make_case: full windows ([CLS] q [SEP] context [SEP]
  fills S on SQuAD's long contexts), question in segment 0, context in segment 1."""
  s = settings.seq_length
  rng = np.random.default_rng(0)
  segment = (np.arange(s)[None] >= min(64, s // 4)).astype(np.int32).repeat(batch_size, 0)
  inputs = {"input_ids": rng.integers(1, model.config.vocab_size, (batch_size, s),
                                      dtype=np.int32),
            "input_mask": np.ones((batch_size, s), np.int32), "segment_ids": segment}
  inputs = {k: tf.constant(v) for k, v in inputs.items()}
  return serving_fn(model, batch_size, s), inputs, "start_logits"


# ---------------------------------------------------------------- report


def _metric(name, header, spec=".2f"):
  return header, lambda r: ("n/a" if r["metrics"].get(name) is None
                            else f"{r['metrics'][name]:{spec}}")


def columns(results):
  """The table's (header, formatter) pairs: size and speed, then EM / F1."""
  shared = dict(evaluation.columns(results))
  cols = [(h, shared[h]) for h in ("Model", "Layers x hidden", "Params", "Disk (MB)",
                                   "Latency (ms)", "Speedup", "Throughput (seq/s)")]
  cols += [_metric("exact", "EM"), _metric("f1", "F1"),
           ("F1 kept", lambda r: "n/a" if r["accuracy_kept"] is None
            else f"{r['accuracy_kept']:.1%}")]
  if any("HasAns_f1" in r["metrics"] for r in results):
    cols += [_metric("HasAns_f1", "HasAns F1"), _metric("NoAns_f1", "NoAns F1"),
             _metric("best_f1", "Best F1")]
  if all("teacher_agreement" in r["metrics"] for r in results):
    cols.append(_metric("teacher_agreement", "Teacher agree", ".4f"))
  return tuple(cols)


def markdown_report(report):
  """benchmark.md of tools/benchmark.py on QA records."""
  env, inp, s = report["environment"], report["input"], report["settings"]
  loads = ", ".join(f"{x:.2f}" for x in env["load_average_before"])
  loads_after = ", ".join(f"{x:.2f}" for x in env["load_average_after"])
  return "\n".join([
      f"# Teacher vs students on extractive QA (SQuAD {inp['version']})", "",
      evaluation.markdown_table(report["models"], columns(report["models"])),
      f"Latency: batch {s['latency_batch']}, sequence length {s['seq_length']} (full "
      f"windows); mean ± std of {s['repeats']} timed calls after tracing and "
      f"{s['warmup']} warm-up call(s). Throughput: batch {s['throughput_batch']}. Repeats "
      "interleaved across models. Speedup: the first model's latency / this model's. "
      "F1 kept: F1 / the first model's.",
      f"EM / F1: the official SQuAD evaluation script's, on `{inp['dir']}` (split "
      f"{inp['split']}, {inp['questions']} questions)" + (
          "; HasAns / NoAns are the questions with / without an answer, Best F1 at the "
          "null threshold chosen on this split." if inp["version"] == "v2.0" else "."),
      f"Load average (1, 5, 15 min) before: {loads}; after: {loads_after}; "
      f"{env['cpu_count']} CPUs.", ""])


def write_plot(results, path, latency_batch=1):
  evaluation.write_plot(results, path, latency_batch, metric="f1", label="dev F1 (SQuAD)")
