"""Extractive QA on real SQuAD (2.0, or its answerable questions as 1.1), end to end with the
project's tools: teacher, students, baselines.

  .venv/bin/python bench/qa_run.py --work_dir=/work/runs/qa
  .venv/bin/python bench/qa_run.py --squad_version=v1.1 --work_dir=/work/runs/qa_v11

On ../shared/data/squad-v2.0-dev-5articles.json (real SQuAD 2.0: 5 articles,
1,407 questions), split by article (4 train, 1 dev):
  1. QA records (tools/create_qa_data.py: --max_seq_length 256 / stride 128 /
     query 64, the shipped MiniLM's uncased vocab);
  2. the teacher: the shipped pretrained MiniLM-L6 fine-tuned (tools/finetune.py,
     best/ by the official dev F1);
  3. its start/end logits cached once (tools/extract_teacher_labels.py);
  4. students, one run per seed in each arm: BERT-tiny (2L-128, the shipped
     pretrained weights) `no_teacher` (tools/finetune.py on the records) and
     `distilled` (tools/distill.py on the cached logits, alpha·CE + (1-alpha)·T²·KL);
     and a student of --own_layers of the teacher's own architecture
     (--init_from=teacher_layers): layers of the pretrained MiniLM the teacher
     was fine-tuned from (--own_init=pretrained, DistilBERT's init) or of the
     fine-tuned teacher, span head included (--own_init=teacher),
     `own<L>l_<init>_no_teacher` (alpha 1: gold spans only) and
     `own<L>l_<init>_distilled` (the same loss as BERT-tiny's);
  5. every best/ evaluated with the official metric (tools/evaluate.py), the
     "first sentence" and "always null" baselines scored the same way, paired
     bootstraps over dev questions (each model against each baseline; distilled
     vs no-teacher, per seed pair and pooled), and tools/benchmark.py (latency
     at batch 1 and the window length; throughput; size) for the teacher and one
     student of each arm. The sample has no third split: best/ is the epoch with
     the best dev score, and the same dev questions score it (the pages say so);
  6. docs/qa_results.md + .png, bench/results/qa_run.json (v1.1:
     docs/qa_results_v1.1.md, bench/results/qa_run_v1.1.json).

--squad_version=v1.1 first writes the sample's 705 answerable questions as a
SQuAD 1.1 file (the data README's "v1.1-style run"): no null answer to learn,
so the run shows whether the models learn spans, which on 2.0 the 50% null
class hides on a sample this small.

Every step is a stage of the project's tools: a killed run continues where it
stopped (finished stages are no-ops). Runs one training at a time.
"""

import argparse
import json
import os
import re
import sys

import numpy as np

BENCH = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH)
sys.path.insert(0, ROOT)
sys.path.insert(0, BENCH)
from pipeline.core import startup  # noqa: E402  pylint: disable=wrong-import-position
startup.quiet_tensorflow()  # no CUDA start-up noise on a CPU-only machine

import fetch_pretrained  # noqa: E402  pylint: disable=wrong-import-position
import significance  # noqa: E402  pylint: disable=wrong-import-position
import tooling  # noqa: E402  pylint: disable=wrong-import-position
from modeling.evaluation import squad_metrics  # noqa: E402  pylint: disable=wrong-import-position
from pipeline.core import stage  # noqa: E402  pylint: disable=wrong-import-position

SAMPLE = os.path.join(ROOT, "..", "shared", "data", "squad-v2.0-dev-5articles.json")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--work_dir", default="/work/runs/qa")
  p.add_argument("--squad_file", default=SAMPLE)
  p.add_argument("--squad_version", default="v2.0", choices=("v2.0", "v1.1"),
                 help="v1.1: train and evaluate on --squad_file's answerable questions only")
  p.add_argument("--max_seq_length", type=int, default=256,
                 help="window length; 256 instead of run_squad's 384 halves the CPU cost "
                 "here: the sample's contexts average 141 pieces, so 384-windows are 63%% "
                 "padding (256: 1,216 train windows instead of 1,167)")
  p.add_argument("--teacher_epochs", type=float, default=10.0)
  p.add_argument("--teacher_lr", type=float, default=1e-4)
  p.add_argument("--student_epochs", type=float, default=6.0)
  p.add_argument("--student_lr", type=float, default=3e-4)
  p.add_argument("--own_layers", type=int, default=3,
                 help="layers of the student made from the teacher's own (0: none)")
  p.add_argument("--own_init", default="pretrained", choices=("pretrained", "teacher"),
                 help="whose layers the own-layer student starts from: the pretrained MiniLM "
                 "(DistilBERT's init) or the fine-tuned teacher (then it has trained on the "
                 "same windows already: on this sample it relearns them without generalising)")
  p.add_argument("--own_epochs", type=float, default=6.0)
  p.add_argument("--own_lr", type=float, default=1e-4)
  p.add_argument("--alpha", type=float, default=0.5)
  p.add_argument("--temperature", type=float, default=2.0)
  p.add_argument("--batch_size", type=int, default=16)
  p.add_argument("--seeds", default="1,2,3")
  p.add_argument("--repeats", type=int, default=20, help="benchmark timed calls")
  p.add_argument("--output_json", default=None,
                 help="default bench/results/qa_run.json (v1.1: qa_run_v1.1.json)")
  p.add_argument("--output_md", default=None,
                 help="default docs/qa_results.md (v1.1: qa_results_v1.1.md)")
  args = p.parse_args(argv)
  suffix = "" if args.squad_version == "v2.0" else "_v1.1"
  args.output_json = args.output_json or os.path.join(BENCH, "results", f"qa_run{suffix}.json")
  args.output_md = args.output_md or os.path.join(ROOT, "docs", f"qa_results{suffix}.md")
  # The dev measure checkpoints are kept and compared by: 2.0's F1 at the null
  # threshold chosen on dev (see teacher_checkpoint); 1.1 has no null answer.
  args.select_metric = "best_f1" if args.squad_version == "v2.0" else "f1"
  args.seeds = [int(s) for s in args.seeds.split(",")]
  args.log_dir = os.path.join(args.work_dir, "logs")
  return args


def _path(args, *parts):
  return os.path.join(args.work_dir, *parts)


def _complete(directory):
  return os.path.exists(os.path.join(directory, stage.COMPLETED))


def _run(args, tool, flags, name):
  if name and _complete(_path(args, name)):
    return
  result = tooling.run_tool(tool, flags, os.path.join(args.log_dir, name.replace("/", "_") +
                                                      ".log"))
  print(f"[qa_run] {name}: {result['wall_seconds']:.0f}s", flush=True)


def _read_json(path):
  with open(path, encoding="utf-8") as f:
    return json.load(f)


# ---------------------------------------------------------------- the stages


def prepare(args):
  for name in ("minilm_l6", "bert_tiny"):
    fetch_pretrained.fetch(name, _path(args, "pretrained"), _path(args, "downloads"))
  args.vocab = _path(args, "pretrained", "minilm_l6", "vocab.txt")
  source = args.squad_file
  if args.squad_version == "v1.1":
    source = _path(args, "squad-v1.1-answerable.json")
    stage.atomic_write_text(source, json.dumps(answerable_only(_read_json(args.squad_file))))
  _run(args, "create_qa_data", [f"--input_file={source}", "--dev_articles=1",
                                f"--vocab_file={args.vocab}",
                                f"--output_dir={_path(args, 'records')}", "--nolog_examples",
                                f"--max_seq_length={args.max_seq_length}"],
       "records")


def answerable_only(squad):
  """A SQuAD 2.0 dict -> SQuAD 1.1: its answerable questions, without the 2.0 keys
  (`is_impossible`, `plausible_answers`); paragraphs left without a question go."""
  articles = []
  for article in squad["data"]:
    paragraphs = []
    for paragraph in article["paragraphs"]:
      qas = [{k: v for k, v in qa.items() if k not in ("is_impossible", "plausible_answers")}
             for qa in paragraph["qas"] if not qa.get("is_impossible") and qa.get("answers")]
      if qas:
        paragraphs.append({"context": paragraph["context"], "qas": qas})
    if paragraphs:
      articles.append({"title": article["title"], "paragraphs": paragraphs})
  return {"version": "1.1", "data": articles}


def _train_flags(args, seed, lr, epochs):
  return [f"--vocab_file={args.vocab}", f"--train_batch_size={args.batch_size}",
          "--eval_batch_size=32", f"--learning_rate={lr}", f"--num_train_epochs={epochs}",
          f"--seed={seed}", "--log_every_steps=10"]


def teacher(args):
  init = _path(args, "pretrained", "minilm_l6")
  _run(args, "finetune", [f"--model_config={init}/bert_config.json", f"--init_checkpoint={init}",
                          f"--data_dir={_path(args, 'records')}",
                          f"--output_dir={_path(args, 'teacher')}",
                          *_train_flags(args, 1, args.teacher_lr, args.teacher_epochs)],
       "teacher")
  args.teacher = teacher_checkpoint(args)
  _run(args, "extract_teacher_labels", [
      f"--init_checkpoint={args.teacher}", f"--vocab_file={args.vocab}",
      f"--input_dir={_path(args, 'records')}", f"--output_dir={_path(args, 'labels')}",
      "--batch_size=32"], "labels")


def teacher_checkpoint(args):
  """The teacher's kept checkpoint with the best dev `args.select_metric`: for 2.0,
  `best_f1` (the F1 at the null threshold chosen on dev, as run_squad users tune
  null_score_diff_threshold); for 1.1, f1 (best/'s own measure).

  On 2.0, best/ holds the best dev f1 at threshold 0; on this small sample that is
  the first epoch's always-null model (49.80), which no later epoch beat at
  threshold 0 while their span answers improved, so the run's kept checkpoints are
  compared by best_f1 instead (still a dev-only choice).
  """
  evals = _read_json(_path(args, "teacher", "eval_results.json"))
  kept = {int(name.split("-")[1].split(".")[0]) for name in
          os.listdir(_path(args, "teacher", "checkpoints")) if name.startswith("ckpt-")}
  best = max((e for e in evals if e["step"] in kept),
             key=lambda e: (e[args.select_metric], -e["step"]))
  return _path(args, "teacher", "checkpoints", f"ckpt-{best['step']}")


def students(args):
  """{arm: {seed: run dir}}: BERT-tiny's arms, then the own-layer student's."""
  init = _path(args, "pretrained", "bert_tiny")
  runs = {"no_teacher": {}, "distilled": {}}
  for seed in args.seeds:
    flags = _train_flags(args, seed, args.student_lr, args.student_epochs)
    name = f"students/no_teacher_s{seed}"
    _run(args, "finetune", [f"--model_config={init}/bert_config.json",
                            f"--init_checkpoint={init}", f"--data_dir={_path(args, 'records')}",
                            f"--output_dir={_path(args, name)}", *flags], name)
    runs["no_teacher"][seed] = _path(args, name)
    name = f"students/distilled_s{seed}"
    _run(args, "distill", [f"--student_config={init}/bert_config.json",
                           "--init_from=checkpoint", f"--init_checkpoint={init}",
                           f"--teacher_labels_dir={_path(args, 'labels')}",
                           f"--output_dir={_path(args, name)}", f"--alpha={args.alpha}",
                           f"--temperature={args.temperature}", *flags], name)
    runs["distilled"][seed] = _path(args, name)
  if args.own_layers:
    runs.update(own_students(args))
  return runs


def own_students(args):
  """{arm: {seed: run dir}} of the student made of --own_layers of the pretrained
  MiniLM's or the fine-tuned teacher's layers (--own_init; the teacher's span head
  too): both arms start from the same weights; only the loss differs. best/ is
  kept by the dev measure the teacher's checkpoint was picked by (on 2.0, at
  threshold 0 the always-null first epoch would win, as it did the teacher's)."""
  teacher_config = _path(args, "pretrained", "minilm_l6", "bert_config.json")
  source = _path(args, "pretrained", "minilm_l6") if args.own_init == "pretrained" else args.teacher
  config = _path(args, f"own_{args.own_layers}l_config.json")
  stage.atomic_write_text(config, json.dumps(dict(_read_json(teacher_config),
                                                  num_hidden_layers=args.own_layers)))
  key = own_key(args)
  runs = {f"{key}_no_teacher": {}, f"{key}_distilled": {}}
  for seed in args.seeds:
    for arm, loss in ((f"{key}_no_teacher", ["--alpha=1"]),
                      (f"{key}_distilled", [f"--alpha={args.alpha}",
                                            f"--temperature={args.temperature}"])):
      name = f"students/{arm}_s{seed}"
      _run(args, "distill", [f"--student_config={config}", "--init_from=teacher_layers",
                             f"--teacher_config={teacher_config}",
                             f"--teacher_checkpoint={source}",
                             f"--teacher_labels_dir={_path(args, 'labels')}",
                             f"--output_dir={_path(args, name)}", *loss,
                             f"--best_metric={args.select_metric}",
                             *_train_flags(args, seed, args.own_lr, args.own_epochs)], name)
      runs[arm][seed] = _path(args, name)
  return runs


def own_key(args):
  return f"own{args.own_layers}l_{OWN_INITS[args.own_init]}"


OWN_INITS = {"pretrained": "pre", "teacher": "ft"}  # --own_init -> the arms' infix


def student_pairs(args):
  """(title, distilled arm, no-teacher arm) of each student."""
  pairs = [("BERT-tiny", "distilled", "no_teacher")]
  if args.own_layers:
    key = own_key(args)
    pairs.append((_own_title(args.own_layers, OWN_INITS[args.own_init]), f"{key}_distilled",
                  f"{key}_no_teacher"))
  return pairs


def evaluate(args, name, run_dir):
  """tools/evaluate.py's JSON of a run's best/ on the dev records (cached)."""
  out = _path(args, "eval", f"{name}.json")
  if not os.path.exists(out):
    checkpoint = run_dir if os.path.basename(run_dir).startswith("ckpt-") else f"{run_dir}/best"
    tooling.run_tool("evaluate", [f"--checkpoint={checkpoint}",
                                  f"--input_dir={_path(args, 'records')}",
                                  f"--output_json={out}", f"--vocab_file={args.vocab}"],
                     os.path.join(args.log_dir, f"eval_{name}.log"))
  result = _read_json(out)
  files = {os.path.basename(f): f for f in result["predictions"]}
  result["predictions_json"] = _read_json(files["predictions.json"])
  result["null_odds_json"] = (_read_json(files["null_odds.json"])
                              if "null_odds.json" in files else None)  # v1.1: none
  return result


# ---------------------------------------------------------------- baselines, tests


def dev_dataset(args):
  return _read_json(_path(args, "records", "dev", "dataset.json"))["data"]


def baseline_predictions(dataset):
  """{baseline: {question id: answer}} of two answer-free strategies on the dev split
  (on 1.1, always-null scores 0 by definition and is left out)."""
  first, null = {}, {}
  for article in dataset:
    for paragraph in article["paragraphs"]:
      sentence = _SENTENCE_END.split(paragraph["context"].strip(), maxsplit=1)[0]
      for qa in paragraph["qas"]:
        first[qa["id"]], null[qa["id"]] = sentence, ""
  out = {"first_sentence": first}
  if squad_metrics.is_v2(dataset):
    out["always_null"] = null
  return out


def baselines(dataset):
  """The official metric of each baseline."""
  return {name: squad_metrics.evaluate(dataset, predictions)
          for name, predictions in baseline_predictions(dataset).items()}


def question_scores(dataset, evals):
  """{arm: {seed: per-question F1 [questions]}} of every student run, computed once
  for both kinds of test."""
  return {arm: {s: per_question_f1(dataset, e["predictions_json"], e["null_odds_json"])
                for s, e in by_seed.items()} for arm, by_seed in evals.items()}


def beats_baselines(dataset, teacher_eval, scores):
  """{system: {baseline: paired bootstrap}}: does each model learn? The teacher, and
  each student arm on its per-question F1 averaged over the seeds (`scores`:
  question_scores), against each answer-free baseline (an empty answer is 2.0's
  null: odds 0 keeps it as given)."""
  v2 = squad_metrics.is_v2(dataset)
  floors = {name: per_question_f1(dataset, preds, {q: 0.0 for q in preds} if v2 else None)
            for name, preds in baseline_predictions(dataset).items()}
  systems = {"teacher": per_question_f1(dataset, teacher_eval["predictions_json"],
                                        teacher_eval["null_odds_json"])}
  for arm, by_seed in scores.items():
    systems[arm] = np.mean(list(by_seed.values()), axis=0)
  return {system: {name: significance.paired_bootstrap(scores, floor)
                   for name, floor in floors.items()}
          for system, scores in systems.items()}


def per_question_f1(dataset, predictions, odds):
  """F1 per dev question (id order) at the run's own null threshold (0, as trained;
  1.1: odds is None, every question has an answer)."""
  if not squad_metrics.is_v2(dataset):  # evaluate-v1.1's F1 (max over the references)
    _, f1 = squad_metrics.raw_scores_v1(dataset, predictions)
    return np.array([f1[q] for q in sorted(f1)], np.float64)
  if odds is None:
    raise ValueError("a SQuAD 2.0 evaluation without null_odds.json")
  _, f1 = squad_metrics.raw_scores(dataset, predictions)
  has_ans = {qa["id"]: bool(qa["answers"]) for a in dataset for p in a["paragraphs"]
             for qa in p["qas"]}
  scores = squad_metrics.apply_no_ans_threshold(f1, odds, has_ans, 0.0)
  return np.array([scores[q] for q in sorted(scores)])


def compare_arms(scores, seeds, pairs):
  """{student: paired bootstrap distilled vs no-teacher, per seed and over the seed-mean
  F1} (`scores`: question_scores)."""
  out = {}
  for title, distilled, no_teacher in pairs:
    pooled = {arm: np.mean([scores[arm][s] for s in seeds], axis=0)
              for arm in (distilled, no_teacher)}
    tests = {f"seed {s}": significance.paired_bootstrap(scores[distilled][s],
                                                        scores[no_teacher][s], seed=s)
             for s in seeds}
    tests["seed mean"] = significance.paired_bootstrap(pooled[distilled], pooled[no_teacher])
    out[title] = tests
  return out


def benchmark(args, runs):
  out, seed = _path(args, "benchmark"), args.seeds[0]
  models = [f"teacher=:{args.teacher}", f"tiny_distilled=:{runs['distilled'][seed]}/best",
            f"tiny_no_teacher=:{runs['no_teacher'][seed]}/best"]
  if args.own_layers:
    key = own_key(args)
    models.append(f"{key}_distilled=:{runs[key + '_distilled'][seed]}/best")
  done = os.path.join(out, "benchmark.json")
  have = [m["name"] for m in _read_json(done)["models"]] if os.path.exists(done) else None
  if have != [m.split("=")[0] for m in models]:  # another set of rows: all timed again
    tooling.run_tool("benchmark", [f"--models={','.join(models)}",
                                   f"--input_dir={_path(args, 'records')}",
                                   f"--output_dir={out}", f"--vocab_file={args.vocab}",
                                   f"--repeats={args.repeats}", "--throughput_batch=16"],
                     os.path.join(args.log_dir, "benchmark.log"))
  return _read_json(os.path.join(out, "benchmark.json")), out


# ---------------------------------------------------------------- full SQuAD v1.1 arithmetic

# run_squad's training features of train-v1.1.json (87,599 questions) at 384 / stride
# 128 / query 64 with BERT's uncased vocab; 2 epochs is run_squad's recipe.
SQUAD_V11_TRAIN_WINDOWS = 88641
EPOCHS = 2
A100_BF16_DENSE_TFLOPS = 312.0  # NVIDIA A100 datasheet, dense BF16 tensor-core peak
FLOPS_FORMULA = ("training FLOPs/window = 3 x forward; forward = 2*S*L*(4H^2 + 2HI) + "
                 "2*L*2*S^2*H + 2*S*H*2 (span head), S = 384")


def span_training_flops(c, s=384):
  h, i, n = c.hidden_size, c.intermediate_size, c.num_hidden_layers
  return 3 * (2 * s * n * (4 * h * h + 2 * h * i) + 2 * n * 2 * s * s * h + 2 * s * h * 2)


def full_squad_arithmetic(args):
  """The full v1.1 run's FLOPs and time, from the teacher run's measured rate here."""
  import train_throughput  # pylint: disable=import-outside-toplevel
  from modeling.networks import bert  # pylint: disable=import-outside-toplevel
  stats = _read_json(_path(args, "teacher", "stats.json"))
  minilm = bert.load_config(_path(args, "pretrained", "minilm_l6", "bert_config.json"))
  # The teacher trained on args.max_seq_length windows: its rate in FLOP/s at that length.
  achieved = span_training_flops(minilm, args.max_seq_length) * stats["sequences_per_second"]
  peak = train_throughput.matmul_rate("float32") * 1e9
  utilization = achieved / peak
  models = {"BERT-base (teacher size)": bert.load_config("bert_base"), "MiniLM-L6": minilm,
            "4L-312D": bert.load_config("student_4l_312d"),
            "BERT-tiny": bert.load_config(_path(args, "pretrained", "bert_tiny",
                                                "bert_config.json"))}
  rows = {}
  for name, c in models.items():
    total = span_training_flops(c) * SQUAD_V11_TRAIN_WINDOWS * EPOCHS
    rows[name] = {"total_pflop": total / 1e15, "this_cpu_hours": total / achieved / 3600,
                  "8_gpu_seconds": total / (8 * A100_BF16_DENSE_TFLOPS * 1e12 * utilization)}
  return {"formula": FLOPS_FORMULA, "windows": SQUAD_V11_TRAIN_WINDOWS, "epochs": EPOCHS,
          "measured_teacher_sequences_per_second": stats["sequences_per_second"],
          "achieved_gflops": achieved / 1e9, "cpu_matmul_gflops": peak / 1e9,
          "utilization": utilization, "gpu_peak_tflops": A100_BF16_DENSE_TFLOPS,
          "models": rows}


def arithmetic_md(a):
  rows = ["| Model | Training PFLOP (2 epochs) | This CPU (hours) | 8 x A100 (seconds) |",
          "|---|---:|---:|---:|"]
  for name, r in a["models"].items():
    rows.append(f"| {name} | {r['total_pflop']:.2f} | {r['this_cpu_hours']:.1f} | "
                f"{r['8_gpu_seconds']:.0f} |")
  return "\n".join([
      "## The full SQuAD v1.1 run, by arithmetic", "",
      "\n".join(rows), "",
      f"{a['formula']}; {a['windows']:,} training windows x {a['epochs']} epochs. Measured "
      f"here: the teacher's fine-tuning ran at {a['measured_teacher_sequences_per_second']:.2f} "
      f"windows/s = {a['achieved_gflops']:.1f} GFLOP/s, {a['utilization']:.0%} of this CPU's "
      f"float32 matmul rate ({a['cpu_matmul_gflops']:.0f} GFLOP/s, measured in the same "
      "run). The 8-GPU column assumes the same share of an A100's dense BF16 peak "
      f"({a['gpu_peak_tflops']:.0f} TFLOP/s, datasheet) on each of 8 GPUs with perfect "
      "scaling and no input, evaluation or start-up time: the compute floor from these "
      "two figures, not a GPU measurement (a GPU's matmuls reach less of its datasheet peak "
      "than this CPU's of its measured rate, so real runs take longer).", ""])


# ---------------------------------------------------------------- report


def _fmt(mean_std):
  return f"{mean_std[0]:.2f} ± {mean_std[1]:.2f}"


def _own_title(layers, infix):
  return (f"{layers} layers of the pretrained MiniLM" if infix == "pre" else
          f"{layers} layers of the fine-tuned teacher")


def arm_title(arm):
  """no_teacher -> BERT-tiny no teacher; own3l_pre_distilled -> 3 layers of the
  pretrained MiniLM distilled."""
  match = re.fullmatch(r"own(\d+)l_(pre|ft)_(.+)", arm)
  if match:
    return f"{_own_title(match[1], match[2])} {match[3].replace('_', ' ')}"
  return f"BERT-tiny {arm.replace('_', ' ')}"


def score_columns(v2):
  """(header, metric) of the score columns: EM and F1; 2.0 adds HasAns / NoAns / Best F1."""
  cols = [("EM", "exact"), ("F1", "f1")]
  if v2:
    cols += [("HasAns F1", "HasAns_f1"), ("NoAns F1", "NoAns_f1"), ("Best F1", "best_f1")]
  return cols


def _table(head, cols, rows):
  """A Markdown table: head cells, then one header per score column; rows of cells."""
  return "\n".join([f"| {' | '.join(head + [h for h, _ in cols])} |",
                    "|---|" + "---:|" * (len(head) - 1 + len(cols)),
                    *(f"| {' | '.join(r)} |" for r in rows)])


def markdown(result, bench_md):
  s = result["settings"]
  v2 = s["squad_version"] == "v2.0"
  cols = score_columns(v2)
  rows = [[f"baseline: {name.replace('_', ' ')}", "-"] +
          [f"{m[k]:.2f}" if k in m else "-" for _, k in cols]
          for name, m in result["baselines"].items()]
  t = result["teacher"]
  rows.append([f"teacher MiniLM-L6 (fine-tuned; {os.path.basename(result['teacher_checkpoint'])})",
               "1"] + [f"{t[k]:.2f}" for _, k in cols])
  rows += [[arm_title(arm), str(len(summary["seeds"]))] + [_fmt(summary[k]) for _, k in cols]
           for arm, summary in result["students"].items()]
  tests = ["| Student | Comparison | F1 distilled | F1 no teacher | Difference | "
           "p (paired bootstrap) |", "|---|---|---:|---:|---:|---:|"]
  for student, by_name in result["significance"].items():
    for name, t in by_name.items():
      tests.append(f"| {student} | {name} | {100 * t['mean_a']:.2f} | {100 * t['mean_b']:.2f} | "
                   f"{100 * t['diff']:+.2f} | {t['p_value']:.4f} |")
  curve = [[str(e["step"])] + [f"{e[k]:.2f}" for _, k in cols]
           for e in result["teacher_epochs_dev"]]
  version = "2.0" if v2 else "1.1"
  return "\n".join([
      f"# Extractive QA on real SQuAD {version}: teacher, distilled students, baselines", "",
      f"Produced by `{result['command']}` ({result['load_note']}).", "",
      f"Data: `{os.path.basename(s['squad_file'])}` (real SQuAD 2.0 dev questions" +
      ("" if v2 else "; its answerable questions only, written as a SQuAD 1.1 file") +
      f"), split by article: {result['records']['train_questions']} train questions "
      f"({result['records']['train_windows']} windows), {result['records']['dev_questions']} "
      f"dev questions; {s['max_seq_length']}-token windows, stride 128. EM / F1: the official "
      f"evaluate-v{version} rules" +
      (", null threshold 0 (Best F1: at the threshold chosen on dev)" if v2 else "") +
      f". Students: {len(s['seeds'])} seeds per arm, mean ± std. The sample has no third "
      "split: every model is kept at its epoch with the best dev score and scored on the "
      "same dev questions, which favours the models over the (unselected) baselines.", "",
      _table(["System", "Seeds"], cols, rows), "",
      f"Teacher: the shipped MiniLM-L6 fine-tuned {s['teacher_epochs']:g} epochs at lr "
      f"{s['teacher_lr']:g}, the checkpoint with the best dev {s['select_metric']}. Students: "
      f"the shipped BERT-tiny, {s['student_epochs']:g} epochs at lr {s['student_lr']:g}; "
      f"distilled: alpha {s['alpha']:g}, T {s['temperature']:g} on the teacher's cached "
      "start/end logits (float16)." + (
          f" Own-layer student: {s['own_layers']} of the 6 layers (uniform map) of " +
          ("the pretrained MiniLM the teacher was fine-tuned from (DistilBERT's init; span "
           "head fresh)" if s.get("own_init") == "pretrained" else
           "the kept teacher checkpoint and its span head") + f", {s['own_epochs']:g} "
          f"epochs at lr {s['own_lr']:g}, no teacher (alpha 1) or distilled as BERT-tiny; "
          f"best/ by dev {s['select_metric']} as the teacher's checkpoint."
          if s.get("own_layers") else ""), "",
      "Teacher's dev curve (official metric after every epoch" +
      ("; F1 at null threshold 0, Best F1 at the threshold chosen on dev" if v2 else "") + "):",
      "", _table(["step"], cols, curve), "",
      "## Do the models learn?", "",
      learning_md(result["beats_baselines"]), "",
      "## Does the teacher help?", "",
      "\n".join(tests), "",
      "One-sided paired bootstrap over dev questions (10,000 resamples): per seed pair, and "
      "on the per-question F1 averaged over the seeds.", "",
      "## Speed and size (tools/benchmark.py)", "", bench_md, "",
      arithmetic_md(result["full_squad_v11"])])


def learning_md(tests):
  """Each model's F1 at threshold 0 against each baseline's, per question."""
  names = [name.replace("_", " ") for name in next(iter(tests.values()))]
  rows = ["| Model | F1 | " + " | ".join(f"vs {n}: difference, p" for n in names) + " |",
          "|---|---:|" + "---:|" * len(names)]
  for system, by_name in tests.items():
    title = "teacher MiniLM-L6" if system == "teacher" else arm_title(system)
    first = next(iter(by_name.values()))
    rows.append(f"| {title} | {100 * first['mean_a']:.2f} | " + " | ".join(
        f"{100 * t['diff']:+.2f}, {t['p_value']:.4f}" for t in by_name.values()) + " |")
  return "\n".join(rows + ["", "One-sided paired bootstrap over dev questions (10,000 "
                            "resamples); students: the per-question F1 averaged over seeds."])


def summarize(evals):
  out = {}
  for arm, by_seed in evals.items():
    out[arm] = {"seeds": sorted(by_seed)}
    for metric in ("exact", "f1", "HasAns_f1", "NoAns_f1", "best_f1"):
      values = [e["metrics"].get(metric) for e in by_seed.values()]
      if None not in values:  # 1.1: exact and f1 only
        out[arm][metric] = significance.mean_std(values)
  return out


def main(argv=None):
  args = parse_args(argv)
  os.makedirs(args.log_dir, exist_ok=True)
  load_before = os.getloadavg()
  prepare(args)
  teacher(args)
  runs = students(args)
  dataset = dev_dataset(args)
  teacher_eval = evaluate(args, "teacher", args.teacher)
  evals = {arm: {s: evaluate(args, f"{arm}_s{s}", d) for s, d in by_seed.items()}
           for arm, by_seed in runs.items()}
  bench, bench_dir = benchmark(args, runs)
  with open(os.path.join(bench_dir, "benchmark.md"), encoding="utf-8") as f:
    bench_md = f.read().split("\n", 2)[2]
  records = _read_json(_path(args, "records", "manifest.json"))["counts"]
  scores = question_scores(dataset, evals)
  result = {
      "command": "python bench/qa_run.py " + " ".join(sys.argv[1:] if argv is None else argv),
      "settings": {k: v for k, v in vars(args).items() if k not in ("log_dir", "vocab")},
      "records": records, "baselines": baselines(dataset), "teacher": teacher_eval["metrics"],
      "teacher_checkpoint": args.teacher,
      "teacher_epochs_dev": _read_json(_path(args, "teacher", "eval_results.json")),
      "students": summarize(evals),
      "beats_baselines": beats_baselines(dataset, teacher_eval, scores),
      "significance": compare_arms(scores, args.seeds, student_pairs(args)),
      "benchmark": bench, "full_squad_v11": full_squad_arithmetic(args),
      "load_average_start": load_before,
      "load_note": "load average at start " + ", ".join(f"{x:.2f}" for x in load_before) +
                   "; the benchmark table states its own"}
  os.makedirs(os.path.dirname(args.output_json), exist_ok=True)
  stage.atomic_write_text(args.output_json, stage.json_dumps(result))
  stage.atomic_write_text(args.output_md, markdown(result, bench_md))
  png = os.path.join(bench_dir, "benchmark.png")
  if os.path.exists(png):
    with open(png, "rb") as src, open(os.path.splitext(args.output_md)[0] + ".png", "wb") as dst:
      dst.write(src.read())
  print(f"qa_run: -> {args.output_md}, {args.output_json}")


if __name__ == "__main__":
  main()
