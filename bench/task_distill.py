"""Task-specific distillation: sweep alpha x T on a task and report the best.

  .venv/bin/python bench/task_distill.py --records_dir=out/task/records \
      --vocab_file=out/vocab/vocab.txt --teacher=out/task_teacher/best \
      --init_checkpoint=out/student --student_config=student_4l_312d \
      --num_train_epochs=3 --work_dir=out/task_distill_sweep
  .venv/bin/python bench/task_distill.py --demo --work_dir=/tmp/task_distill_demo

With the records (create_classification_data output) and a fine-tuned teacher,
the project's tools run as a user runs them: extract_teacher_labels on the classification records
(train and dev logits), then for every alpha in --alphas and T in
--temperatures `distill.py` trains the student with the same budget,
data, init and seed, plus the no-teacher baseline (`finetune.py`, the same
student). alpha weighs the hard-label CE, 1 - alpha the T^2-scaled KL to the
teacher (modeling/losses/task_losses.py); alpha = 0 is pure KD. Each run keeps
its best dev checkpoint (--best_metric); every best/ checkpoint and the teacher
are scored by evaluate.py on dev and, when the records have a labelled
test split, on test. The best arm is chosen on dev only; its test figures are
reported beside the baseline's. Finally benchmark.py times teacher,
baseline and best (batch 1 latency, throughput, size) on the same records.

--demo generates a small rule-based sentiment task (sentences from a word
list, tiny vocab), fine-tunes a tiny teacher on it and sweeps a tiny student:
it shows the machinery working, not a finding.

Every step is a stage (a no-op when complete), so a rerun resumes. Writes
<output_json> (default bench/results/task_distill.json) and a Markdown table
and plot (default docs/task_distill_results.md / .png); --demo writes them
into its work dir.
"""

import argparse
import itertools
import json
import os
import random
import string
import sys
import time
import unicodedata

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench import tooling  # noqa: E402  pylint: disable=wrong-import-position
from pipeline.core import stage  # noqa: E402  pylint: disable=wrong-import-position


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--work_dir", required=True)
  p.add_argument("--demo", action="store_true", help="generate a tiny task and teacher")
  p.add_argument("--records_dir", help="create_classification_data output")
  p.add_argument("--vocab_file")
  p.add_argument("--teacher", help="the fine-tuned teacher (e.g. a finetune run's best/)")
  p.add_argument("--student_config", default="student_4l_312d")
  p.add_argument("--init_checkpoint", help="student init (e.g. a general-distilled student)")
  p.add_argument("--alphas", default="0,0.5,0.9")
  p.add_argument("--temperatures", default="1,2,4")
  p.add_argument("--num_train_epochs", type=float, default=3.0)
  p.add_argument("--train_batch_size", type=int, default=32)
  p.add_argument("--learning_rate", type=float, default=5e-5)
  p.add_argument("--seed", type=int, default=12345)
  p.add_argument("--best_metric", default="accuracy")
  p.add_argument("--extra_flag", action="append", default=[],
                 help="more flags for finetune.py and distill.py (repeatable)")
  p.add_argument("--output_json", default=os.path.join(ROOT, "bench", "results",
                                                       "task_distill.json"))
  p.add_argument("--output_md", default=os.path.join(ROOT, "docs", "task_distill_results.md"))
  args = p.parse_args(argv)
  if args.demo:  # tiny random models: their own defaults
    for name, value in (("student_config", "tiny_student"), ("learning_rate", 1e-3)):
      if getattr(args, name) == p.get_default(name):
        setattr(args, name, value)
    if args.output_json == p.get_default("output_json"):
      args.output_json = os.path.join(args.work_dir, "task_distill.json")
      args.output_md = os.path.join(args.work_dir, "task_distill_results.md")
  elif not (args.records_dir and args.vocab_file and args.teacher):
    p.error("give --records_dir, --vocab_file and --teacher (or --demo)")
  args.alphas = [float(a) for a in args.alphas.split(",")]
  args.temperatures = [float(t) for t in args.temperatures.split(",")]
  return args


# ---------------------------------------------------------------- tools


def run_tool(tool, flags, log_dir, name):
  """Runs tools/<tool>.py (output in log_dir/name.log); returns wall seconds."""
  seconds = tooling.run_tool(tool, flags, os.path.join(log_dir, name + ".log"))["wall_seconds"]
  print(f"[task_distill] {name}: {seconds:.0f}s", flush=True)
  return seconds


def read_json(path):
  with open(path, encoding="utf-8") as f:
    return json.load(f)


# ---------------------------------------------------------------- demo task

_WORDS = ("river valley town people history music science north south city church "
          "station bridge language school market winter summer mountain forest island "
          "century government trade railway festival library museum film story plot").split()
_GOOD = ("great", "wonderful", "superb", "fine", "moving", "clever")
_BAD = ("awful", "boring", "dull", "poor", "clumsy", "flat")
_NEGATION = "not"


def _demo_example(rnd):
  """A sentence and its label: the sign of (good - bad) words, a "not" right
  before a word flipping it; ties are resolved by a coin (label noise)."""
  words, score = [rnd.choice(_WORDS) for _ in range(rnd.randint(4, 16))], 0
  for _ in range(rnd.randint(1, 3)):
    good = rnd.random() < 0.5
    negated = rnd.random() < 0.25
    sign = (1 if good else -1) * (-1 if negated else 1)
    score += sign
    word = rnd.choice(_GOOD if good else _BAD)
    at = rnd.randrange(len(words) + 1)
    words[at:at] = [_NEGATION, word] if negated else [word]
  label = int(score > 0) if score else rnd.randrange(2)
  return " ".join(words).capitalize() + rnd.choice((".", "!", "")), label


def _write_demo_files(directory, sizes, seed=0):
  os.makedirs(directory, exist_ok=True)
  rnd = random.Random(seed)
  for split, n in sizes.items():
    with open(os.path.join(directory, f"{split}.tsv"), "w", encoding="utf-8") as f:
      f.write("sentence\tlabel\n")
      for _ in range(n):
        text, label = _demo_example(rnd)
        f.write(f"{text}\t{label}\n")
  tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + list(string.punctuation)
  tokens += list(string.ascii_lowercase) + ["##" + c for c in string.ascii_lowercase]
  tokens += sorted(set(_WORDS + list(_GOOD + _BAD)) | {_NEGATION})
  vocab = os.path.join(directory, "vocab.txt")
  with open(vocab, "w", encoding="utf-8") as f:
    f.write("\n".join(unicodedata.normalize("NFC", t) for t in tokens) + "\n")
  return vocab


def demo_inputs(args):
  """Generates the demo task, its records and a fine-tuned tiny teacher."""
  w = args.work_dir
  vocab = _write_demo_files(os.path.join(w, "demo_task"),
                            {"train": 3000, "dev": 400, "test": 400})
  records = os.path.join(w, "demo_records")
  if not stage_complete(records):
    run_tool("create_classification_data", [
        f"--input_dir={os.path.join(w, 'demo_task')}", f"--output_dir={records}",
        f"--vocab_file={vocab}", "--max_seq_length=32", "--text_a_column=sentence",
        "--label_column=label", "--labels=0,1", "--log_examples=0"], args.log_dir, "records")
  teacher_run = os.path.join(w, "demo_teacher")
  if not stage_complete(teacher_run):
    run_tool("finetune", [
        "--model_config=tiny_teacher", f"--vocab_file={vocab}", f"--data_dir={records}",
        f"--output_dir={teacher_run}", "--num_train_epochs=4", "--train_batch_size=32",
        "--learning_rate=1e-3", f"--best_metric={args.best_metric}"],
             args.log_dir, "teacher")
  args.records_dir, args.vocab_file = records, vocab
  args.teacher = os.path.join(teacher_run, "best")


def stage_complete(directory):
  return os.path.exists(os.path.join(directory, stage.COMPLETED))


# ---------------------------------------------------------------- the sweep


def arms(args):
  """[(name, alpha or None for the baseline, T)]; the baseline first."""
  grid = [(f"alpha{a:g}_T{t:g}", a, t)
          for a, t in itertools.product(args.alphas, args.temperatures)]
  return [("finetuned", None, None)] + grid


def training_flags(args):
  return [f"--vocab_file={args.vocab_file}", f"--num_train_epochs={args.num_train_epochs}",
          f"--train_batch_size={args.train_batch_size}",
          f"--learning_rate={args.learning_rate}", f"--seed={args.seed}",
          f"--best_metric={args.best_metric}", "--eval_split=dev", *args.extra_flag]


def train(args, name, alpha, temperature, labels_dir):
  """Trains one arm (no-op when complete); returns its best/ directory."""
  out = os.path.join(args.work_dir, "runs", name)
  if not stage_complete(out):
    if alpha is None:
      flags = [f"--model_config={args.student_config}", f"--data_dir={args.records_dir}"]
      if args.init_checkpoint:
        flags.append(f"--init_checkpoint={args.init_checkpoint}")
      tool = "finetune"
    else:
      flags = [f"--student_config={args.student_config}",
               f"--teacher_labels_dir={labels_dir}", f"--alpha={alpha}",
               f"--temperature={temperature}"]
      if args.init_checkpoint:
        flags += ["--init_from=checkpoint", f"--init_checkpoint={args.init_checkpoint}"]
      tool = "distill"
    run_tool(tool, flags + training_flags(args) + [f"--output_dir={out}"], args.log_dir,
             name)
  return os.path.join(out, "best")


def _is_fresh(result_json, checkpoint, records_dir):
  """An earlier evaluation of these weights on these records."""
  if not os.path.exists(result_json):
    return False
  weights = max(os.path.getmtime(os.path.join(checkpoint, f)) for f in os.listdir(checkpoint))
  records = stage.file_sha256(os.path.join(records_dir, stage.MANIFEST))
  return (os.path.getmtime(result_json) > weights and
          read_json(result_json)["input"]["manifest_sha256"] == records)


def evaluate(args, name, checkpoint, split):
  """evaluate.py's metrics of `checkpoint` on `split` (kept from an
  earlier run of this script when neither the weights nor the records changed)."""
  out = os.path.join(args.work_dir, "eval", f"{name}_{split}.json")
  if _is_fresh(out, checkpoint, args.records_dir):
    return read_json(out)["metrics"]
  run_tool("evaluate", [f"--checkpoint={checkpoint}",
                        f"--input_dir={args.records_dir}", f"--split={split}",
                        f"--vocab_file={args.vocab_file}", f"--output_json={out}"],
           args.log_dir, f"eval_{name}_{split}")
  return read_json(out)["metrics"]


def test_split(records_dir):
  config = read_json(os.path.join(records_dir, stage.MANIFEST))["config"]
  labeled = "test" in config.get("splits", []) and "test" not in config.get(
      "unlabeled_splits", [])
  return "test" if labeled else None


def best_arm(results, metric):
  """The distilled arm with the best dev `metric` (ties: the first)."""
  lower = metric == "loss"
  distilled = [r for r in results if r["alpha"] is not None]
  return min(distilled, key=lambda r: (1 if lower else -1) * r["dev"][metric])


def run_sweep(args):
  labels = os.path.join(args.work_dir, "teacher_labels")
  if not stage_complete(labels):
    run_tool("extract_teacher_labels", [
        f"--init_checkpoint={args.teacher}", f"--vocab_file={args.vocab_file}",
        f"--input_dir={args.records_dir}", f"--output_dir={labels}", "--splits=train,dev"],
             args.log_dir, "teacher_labels")
  test = test_split(args.records_dir)
  splits = ["dev"] + ([test] if test else [])
  teacher = {"name": "teacher", "checkpoint": args.teacher,
             **{s: evaluate(args, "teacher", args.teacher, s) for s in splits}}
  results = []
  for name, alpha, temperature in arms(args):
    start = time.monotonic()
    best = train(args, name, alpha, temperature, labels)
    result = {"name": name, "alpha": alpha, "temperature": temperature,
              "checkpoint": best, "train_seconds": round(time.monotonic() - start, 1)}
    result.update({s: evaluate(args, name, best, s) for s in splits})
    results.append(result)
  return teacher, results, labels


def benchmark(args, teacher, baseline, best, labels):
  out = os.path.join(args.work_dir, "benchmark")
  models = f"teacher=:{teacher['checkpoint']},finetuned=:{baseline['checkpoint']}," \
           f"distilled=:{best['checkpoint']}"
  run_tool("benchmark", [f"--models={models}", f"--input_dir={labels}",
                         "--split=dev", f"--output_dir={out}"], args.log_dir, "benchmark")
  return read_json(os.path.join(out, "benchmark.json")), os.path.join(out, "benchmark.md")


# ---------------------------------------------------------------- report


def _f(value):
  return "n/a" if value is None else f"{value:.4f}"


def sweep_table(teacher, results, splits, best_name):
  cols = ["accuracy", "f1", "mcc"]
  header = ["Run", "alpha", "T"] + [f"{s} {c}" for s in splits for c in cols]
  lines = ["| " + " | ".join(header) + " |", "|---" * 3 + "|---:" * (len(header) - 3) + "|"]
  for r in [teacher] + results:
    name = f"**{r['name']}**" if r["name"] == best_name else r["name"]
    alpha = "-" if r.get("alpha") is None else f"{r['alpha']:g}"
    temperature = "-" if r.get("temperature") is None else f"{r['temperature']:g}"
    cells = [_f(r[s].get(c)) for s in splits for c in cols]
    lines.append("| " + " | ".join([name, alpha, temperature] + cells) + " |")
  return "\n".join(lines) + "\n"


def markdown(result, benchmark_md):
  best, base = result["best"], result["baseline"]
  split = result["report_split"]
  with open(benchmark_md, encoding="utf-8") as f:
    bench = f.read().split("\n", 2)[2]  # without its title line
  return "\n".join([
      "# Task-specific distillation: alpha x T sweep", "",
      f"Records `{result['records_dir']}`; teacher `{result['teacher']}`; student "
      f"`{result['student_config']}` (init: {result['init_checkpoint'] or 'random'}); "
      f"{result['num_train_epochs']:g} epochs, batch {result['train_batch_size']}, "
      f"learning rate {result['learning_rate']:g}, seed {result['seed']}; best checkpoint "
      f"per run by dev {result['best_metric']}. Baseline `finetuned`: the same student "
      "fine-tuned without a teacher.", "",
      sweep_table(result["teacher_metrics"], result["runs"], result["splits"], best["name"]),
      f"Best on dev {result['best_metric']}: **{best['name']}** (alpha {best['alpha']:g}, "
      f"T {best['temperature']:g}): {split} accuracy {_f(best[split]['accuracy'])} vs "
      f"{_f(base[split]['accuracy'])} without a teacher (teacher "
      f"{_f(result['teacher_metrics'][split]['accuracy'])}).", "",
      "## Teacher, baseline and best distilled student", "", bench])


def plot(result, path):
  """Dev accuracy vs T, one line per alpha; the baseline and teacher dashed."""
  # pylint: disable=import-outside-toplevel
  from matplotlib.backends.backend_agg import FigureCanvasAgg
  from matplotlib.figure import Figure
  fig = Figure(figsize=(6, 4.5), dpi=100)
  FigureCanvasAgg(fig)
  ax = fig.add_subplot()
  runs = [r for r in result["runs"] if r["alpha"] is not None]
  for alpha in sorted({r["alpha"] for r in runs}):
    mine = sorted((r for r in runs if r["alpha"] == alpha), key=lambda r: r["temperature"])
    ax.plot([r["temperature"] for r in mine], [r["dev"]["accuracy"] for r in mine],
            "o-", label=f"alpha = {alpha:g}")
  ax.axhline(result["baseline"]["dev"]["accuracy"], color="gray", ls="--",
             label="no teacher")
  ax.axhline(result["teacher_metrics"]["dev"]["accuracy"], color="black", ls=":",
             label="teacher")
  ax.set_xscale("log", base=2)
  ax.set_xlabel("temperature T")
  ax.set_ylabel("dev accuracy (best checkpoint)")
  ax.set_title("Task distillation sweep")
  ax.grid(True, alpha=0.3)
  ax.legend()
  fig.tight_layout()
  fig.savefig(path, format="png")


def main(argv=None):
  args = parse_args(argv)
  args.log_dir = os.path.join(args.work_dir, "logs")
  start = time.monotonic()
  if args.demo:
    demo_inputs(args)
  teacher, runs, labels = run_sweep(args)
  best, baseline = best_arm(runs, args.best_metric), runs[0]
  bench, bench_md = benchmark(args, teacher, baseline, best, labels)
  splits = [s for s in ("dev", "test") if s in teacher]
  result = {
      "records_dir": os.path.abspath(args.records_dir), "teacher": args.teacher,
      "student_config": args.student_config, "init_checkpoint": args.init_checkpoint,
      "num_train_epochs": args.num_train_epochs, "train_batch_size": args.train_batch_size,
      "learning_rate": args.learning_rate, "seed": args.seed,
      "best_metric": args.best_metric, "alphas": args.alphas,
      "temperatures": args.temperatures, "demo": args.demo, "splits": splits,
      "report_split": splits[-1], "teacher_metrics": teacher, "runs": runs,
      "best": best, "baseline": baseline, "benchmark": bench,
      "seconds": round(time.monotonic() - start, 1), "code_version": stage.code_version()}
  os.makedirs(os.path.dirname(os.path.abspath(args.output_json)), exist_ok=True)
  stage.atomic_write_text(args.output_json, stage.json_dumps(result))
  os.makedirs(os.path.dirname(os.path.abspath(args.output_md)), exist_ok=True)
  stage.atomic_write_text(args.output_md, markdown(result, bench_md))
  plot(result, os.path.splitext(args.output_md)[0] + ".png")
  print(sweep_table(teacher, runs, splits, best["name"]), end="")
  print(f"task_distill: best {best['name']} -> {args.output_json}, {args.output_md}")


if __name__ == "__main__":
  main()
