"""Extractive QA on real SQuAD 2.0, end to end with the project's tools: teacher, students, baselines.

  .venv/bin/python bench/qa_run.py --work_dir=/work/runs/qa

On ../shared/data/squad-v2.0-dev-5articles.json (real SQuAD 2.0: 5 articles,
1,407 questions), split by article (4 train, 1 dev):
  1. QA records (tools/create_qa_data.py: 384 / stride 128 / query 64, the
     shipped MiniLM's uncased vocab);
  2. the teacher: the shipped pretrained MiniLM-L6 fine-tuned (tools/finetune.py,
     best/ by the official dev F1);
  3. its start/end logits cached once (tools/extract_teacher_labels.py);
  4. students, BERT-tiny (2L-128, the shipped pretrained weights), one run per
     seed in each arm: `no_teacher` (tools/finetune.py on the records) and
     `distilled` (tools/distill.py on the cached logits, alpha·CE + (1-alpha)·T²·KL);
  5. every best/ evaluated with the official metric (tools/evaluate.py), the
     "first sentence" and "always null" baselines scored the same way, a paired
     bootstrap over dev questions (distilled vs no-teacher, per seed pair and
     pooled), and tools/benchmark.py (latency at batch 1, seq 384; throughput;
     size) for the teacher and one student of each arm;
  6. docs/qa_results.md + .png, bench/results/qa_run.json.

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
  p.add_argument("--max_seq_length", type=int, default=256,
                 help="window length; 256 instead of run_squad's 384 halves the CPU cost "
                 "here: the sample's contexts average 141 pieces, so 384-windows are 63%% "
                 "padding (256: 1,216 train windows instead of 1,167)")
  p.add_argument("--teacher_epochs", type=float, default=10.0)
  p.add_argument("--teacher_lr", type=float, default=1e-4)
  p.add_argument("--student_epochs", type=float, default=6.0)
  p.add_argument("--student_lr", type=float, default=3e-4)
  p.add_argument("--alpha", type=float, default=0.5)
  p.add_argument("--temperature", type=float, default=2.0)
  p.add_argument("--batch_size", type=int, default=16)
  p.add_argument("--seeds", default="1,2,3")
  p.add_argument("--repeats", type=int, default=20, help="benchmark timed calls")
  p.add_argument("--output_json", default=os.path.join(BENCH, "results", "qa_run.json"))
  p.add_argument("--output_md", default=os.path.join(ROOT, "docs", "qa_results.md"))
  args = p.parse_args(argv)
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
  _run(args, "create_qa_data", [f"--input_file={args.squad_file}", "--dev_articles=1",
                                f"--vocab_file={args.vocab}",
                                f"--output_dir={_path(args, 'records')}", "--nolog_examples",
                                f"--max_seq_length={args.max_seq_length}"],
       "records")


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
  """The teacher's kept checkpoint with the best dev `best_f1` (SQuAD 2.0's F1 at the
  null threshold chosen on dev, as run_squad users tune null_score_diff_threshold).

  best/ holds the best dev f1 at threshold 0; on this small sample that is the
  first epoch's always-null model (49.80), which no later epoch beat at threshold
  0 while their span answers improved, so the run's kept checkpoints are compared
  by best_f1 instead (still a dev-only choice).
  """
  evals = _read_json(_path(args, "teacher", "eval_results.json"))
  kept = {int(name.split("-")[1].split(".")[0]) for name in
          os.listdir(_path(args, "teacher", "checkpoints")) if name.startswith("ckpt-")}
  best = max((e for e in evals if e["step"] in kept), key=lambda e: (e["best_f1"], -e["step"]))
  return _path(args, "teacher", "checkpoints", f"ckpt-{best['step']}")


def students(args):
  """{arm: {seed: run dir}} of the BERT-tiny students."""
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
  return runs


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
  result["predictions_json"] = _read_json(result["predictions"][0])
  result["null_odds_json"] = _read_json(result["predictions"][-1])
  return result


# ---------------------------------------------------------------- baselines, tests


def dev_dataset(args):
  return _read_json(_path(args, "records", "dev", "dataset.json"))["data"]


def baselines(dataset):
  """The official metric of two answer-free strategies on the dev split."""
  first, null = {}, {}
  for article in dataset:
    for paragraph in article["paragraphs"]:
      sentence = _SENTENCE_END.split(paragraph["context"].strip(), maxsplit=1)[0]
      for qa in paragraph["qas"]:
        first[qa["id"]], null[qa["id"]] = sentence, ""
  return {"first_sentence": squad_metrics.evaluate(dataset, first),
          "always_null": squad_metrics.evaluate(dataset, null)}


def per_question_f1(dataset, predictions, odds):
  """F1 per dev question (id order) at the run's own null threshold (0, as trained)."""
  _, f1 = squad_metrics.raw_scores(dataset, predictions)
  has_ans = {qa["id"]: bool(qa["answers"]) for a in dataset for p in a["paragraphs"]
             for qa in p["qas"]}
  scores = squad_metrics.apply_no_ans_threshold(f1, odds, has_ans, 0.0)
  return np.array([scores[q] for q in sorted(scores)])


def compare_arms(dataset, evals, seeds):
  """Paired bootstrap distilled vs no-teacher: per seed, and over the seed-mean F1."""
  per_seed, pooled = {}, {}
  for arm in ("distilled", "no_teacher"):
    scores = [per_question_f1(dataset, evals[arm][s]["predictions_json"],
                              evals[arm][s]["null_odds_json"]) for s in seeds]
    per_seed[arm] = dict(zip(seeds, scores))
    pooled[arm] = np.mean(scores, axis=0)
  tests = {f"seed {s}": significance.paired_bootstrap(per_seed["distilled"][s],
                                                      per_seed["no_teacher"][s], seed=s)
           for s in seeds}
  tests["seed mean"] = significance.paired_bootstrap(pooled["distilled"],
                                                     pooled["no_teacher"])
  return tests


def benchmark(args, runs):
  out = _path(args, "benchmark")
  if not os.path.exists(os.path.join(out, "benchmark.json")):
    seed = args.seeds[0]
    models = [f"teacher=:{args.teacher}",
              f"tiny_distilled=:{runs['distilled'][seed]}/best",
              f"tiny_no_teacher=:{runs['no_teacher'][seed]}/best"]
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


def markdown(result, bench_md):
  rows = ["| System | Seeds | EM | F1 | HasAns F1 | NoAns F1 | Best F1 |",
          "|---|---:|---:|---:|---:|---:|---:|"]
  for name, m in result["baselines"].items():
    rows.append(f"| baseline: {name.replace('_', ' ')} | - | {m['exact']:.2f} | {m['f1']:.2f} | "
                f"{m.get('HasAns_f1', 0):.2f} | {m.get('NoAns_f1', 0):.2f} | - |")
  t = result["teacher"]
  rows.append(f"| teacher MiniLM-L6 (fine-tuned; {os.path.basename(result['teacher_checkpoint'])}) "
              f"| 1 | {t['exact']:.2f} | {t['f1']:.2f} | "
              f"{t['HasAns_f1']:.2f} | {t['NoAns_f1']:.2f} | {t['best_f1']:.2f} |")
  for arm, summary in result["students"].items():
    rows.append(f"| BERT-tiny {arm.replace('_', ' ')} | {len(summary['seeds'])} | "
                f"{_fmt(summary['exact'])} | {_fmt(summary['f1'])} | "
                f"{_fmt(summary['HasAns_f1'])} | {_fmt(summary['NoAns_f1'])} | "
                f"{_fmt(summary['best_f1'])} |")
  tests = ["| Comparison | F1 distilled | F1 no teacher | Difference | p (paired bootstrap) |",
           "|---|---:|---:|---:|---:|"]
  for name, t in result["significance"].items():
    tests.append(f"| {name} | {100 * t['mean_a']:.2f} | {100 * t['mean_b']:.2f} | "
                 f"{100 * t['diff']:+.2f} | "
                 f"{t['p_value']:.4f} |")
  s = result["settings"]
  return "\n".join([
      "# Extractive QA on real SQuAD 2.0: teacher, distilled student, baselines", "",
      f"Produced by `{result['command']}` ({result['load_note']}).", "",
      f"Data: `{os.path.basename(s['squad_file'])}` (real SQuAD 2.0 dev questions), split "
      f"by article: {result['records']['train_questions']} train questions "
      f"({result['records']['train_windows']} windows), {result['records']['dev_questions']} "
      f"dev questions; {s['max_seq_length']}-token windows, stride 128. EM / F1: the official evaluate-v2.0 "
      "rules, null threshold 0 (Best F1: at the threshold chosen on dev). Students: "
      f"{len(s['seeds'])} seeds per arm, mean ± std.", "",
      "\n".join(rows), "",
      f"Teacher: the shipped MiniLM-L6 fine-tuned {s['teacher_epochs']:g} epochs at lr "
      f"{s['teacher_lr']:g}. Students: the shipped BERT-tiny, {s['student_epochs']:g} epochs "
      f"at lr {s['student_lr']:g}; distilled: alpha {s['alpha']:g}, T {s['temperature']:g} on "
      "the teacher's cached start/end logits (float16).", "",
      "Teacher's dev curve (official metric after every epoch; f1 at null threshold 0, "
      "best_f1 at the threshold chosen on dev):", "",
      "| step | EM | F1 | HasAns F1 | NoAns F1 | best F1 |", "|---:|---:|---:|---:|---:|---:|",
      "\n".join(f"| {e['step']} | {e['exact']:.2f} | {e['f1']:.2f} | {e['HasAns_f1']:.2f} | "
                f"{e['NoAns_f1']:.2f} | {e['best_f1']:.2f} |" for e in result["teacher_epochs_dev"]),
      "",
      "## Does the teacher help?", "",
      "\n".join(tests), "",
      "One-sided paired bootstrap over dev questions (10,000 resamples): per seed pair, and "
      "on the per-question F1 averaged over the seeds.", "",
      "## Speed and size (tools/benchmark.py)", "", bench_md, "",
      arithmetic_md(result["full_squad_v11"])])


def summarize(evals):
  out = {}
  for arm, by_seed in evals.items():
    out[arm] = {"seeds": sorted(by_seed)}
    for metric in ("exact", "f1", "HasAns_f1", "NoAns_f1", "best_f1"):
      out[arm][metric] = significance.mean_std([e["metrics"][metric] for e in by_seed.values()])
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
  result = {
      "command": "python bench/qa_run.py " + " ".join(sys.argv[1:] if argv is None else argv),
      "settings": {k: v for k, v in vars(args).items() if k not in ("log_dir", "vocab")},
      "records": records, "baselines": baselines(dataset), "teacher": teacher_eval["metrics"],
      "teacher_checkpoint": args.teacher,
      "teacher_epochs_dev": _read_json(_path(args, "teacher", "eval_results.json")),
      "students": summarize(evals), "significance": compare_arms(dataset, evals, args.seeds),
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
