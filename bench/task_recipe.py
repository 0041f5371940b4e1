"""Task distillation that works: the whole recipe on Rotten Tomatoes, end to end.

  .venv/bin/python bench/task_recipe.py --plan      # the runs and their cost, measured
  .venv/bin/python bench/task_recipe.py             # the experiment (resumable)
  .venv/bin/python bench/task_recipe.py --quick     # the same on a generated tiny task

Stages, each a project tool in a child process, one at a time, skipped when
its output is complete (so a killed run continues where it stopped):
data (tools/fetch_task_data.py) -> pretrained weights (bench/fetch_pretrained.py:
MiniLM-L6 teacher init, BERT-tiny student init and masked LM) -> records
(max_seq_length 64) -> teacher: MiniLM-L6 fine-tuned --teacher_epochs (>= 2) whole
epochs, best dev checkpoint -> its logits on train/dev -> augment_task_data
(--num_variants per input; BERT-tiny's MLM head, MiniLM's embeddings) -> the
augmented records -> their teacher logits -> for each student x arm x seed the
run(s) of bench/task_recipe_runs.py -> per-example test predictions
(bench/task_recipe_predict.py) -> tools/benchmark.py (teacher + one run per arm)
-> significance and report (bench/task_recipe_report.py).

Students: BERT-tiny 2L-128 (its shipped weights) and, per --own_students entry
(LAYERS:EPOCHS; runs named own<L>l_e<epochs>_<arm>_s<seed>), that many of the
fine-tuned teacher's own layers (DistilBERT-style --init_from=teacher_layers;
its no-teacher twin starts from the same layers, its pretrained twin from the
same layers of the pretrained MiniLM: no teacher at all, the goal's twin).
--plan prints every run with
a CPU-time estimate from the seconds per step measured on the runs done so
far, or, before any, from a short calibration (--calibration_steps of the
teacher and of each student, stopped early), and checks --budget_cpu_hours.
"""

import argparse
import json
import os
import shlex
import subprocess
import sys
import time

BENCH = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH)
sys.path.insert(0, ROOT)
sys.path.insert(0, BENCH)

import fetch_pretrained  # noqa: E402  pylint: disable=wrong-import-position
import task_distill as td  # noqa: E402  pylint: disable=wrong-import-position
import task_recipe_quick as quick  # noqa: E402  pylint: disable=wrong-import-position
import task_recipe_report as report  # noqa: E402  pylint: disable=wrong-import-position
import task_recipe_runs as rr  # noqa: E402  pylint: disable=wrong-import-position
import tooling  # noqa: E402  pylint: disable=wrong-import-position
from pipeline.core import stage  # noqa: E402  pylint: disable=wrong-import-position

QUICK = dict(work_dir="/tmp/task_recipe_quick", seeds="1,2", num_variants=8, teacher_epochs=6,
             teacher_lr=2e-3, student_lr=2e-3, alpha=0.5, temperature=2, tiny_epochs=12,
             tiny_aug_epochs=4, own_students="2:4", own_aug_epochs=2, phase1_passes=18,
             own_arms="no_teacher,kd,all", calibration_steps=10, repeats=5)


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--work_dir", default="/tmp/task_recipe")
  p.add_argument("--quick", action="store_true", help="generated tiny task and models")
  p.add_argument("--plan", action="store_true", help="print the runs and their cost; no training")
  p.add_argument("--seeds", default="1,2,3")
  p.add_argument("--max_seq_length", type=int, default=64)
  p.add_argument("--batch_size", type=int, default=32)
  p.add_argument("--teacher_epochs", type=float, default=3.0)
  p.add_argument("--teacher_lr", type=float, default=5e-5)
  p.add_argument("--num_variants", type=int, default=4, help="augmentation N per input")
  p.add_argument("--student_lr", type=float, default=1e-4)
  p.add_argument("--alpha", type=float, default=0.5)
  p.add_argument("--temperature", type=float, default=1.0)
  p.add_argument("--phase1_passes", type=float, default=1.0,
                 help="phase-1 steps, in passes over the original train rows")
  p.add_argument("--tiny_epochs", type=float, default=3.0)
  p.add_argument("--tiny_aug_epochs", type=float, default=1.0)
  p.add_argument("--tiny_arms", default=",".join(a for a in rr.ARMS if a != "pretrained"))
  p.add_argument("--own_students", default="3:1",
                 help="students made from the teacher's own layers: LAYERS:EPOCHS[:ARM+ARM"
                      "...],... (arms default to --own_arms)")
  p.add_argument("--own_aug_epochs", type=float, default=0.4)
  p.add_argument("--own_arms", default="no_teacher,pretrained,kd,inter")
  p.add_argument("--budget_cpu_hours", type=float, default=6.0)
  p.add_argument("--calibration_steps", type=int, default=30)
  p.add_argument("--repeats", type=int, default=20, help="benchmark timed calls")
  p.add_argument("--output_json", default=os.path.join(BENCH, "results", "task_recipe.json"))
  p.add_argument("--output_md", default=os.path.join(ROOT, "docs",
                                                     "task_distillation_results.md"))
  args = p.parse_args(argv)
  if args.quick:
    for name, value in QUICK.items():
      if getattr(args, name) == p.get_default(name):
        setattr(args, name, value)
    if args.output_json == p.get_default("output_json"):
      args.output_json = os.path.join(args.work_dir, "task_recipe.json")
      args.output_md = os.path.join(args.work_dir, "task_distillation_results.md")
  if args.teacher_epochs < 2:
    p.error("--teacher_epochs: the issue asks for >= 2 (fine-tuned to convergence)")
  args.seeds = [int(s) for s in args.seeds.split(",")]
  for name in ("tiny_arms", "own_arms"):
    setattr(args, name, _arms(p, name, getattr(args, name).split(",")))
  args.own_students = _own_students(p, args.own_students, args.own_arms)
  if "pretrained" in args.tiny_arms:
    p.error("--tiny_arms: pretrained is for own-layer students (BERT-tiny's no_teacher "
            "already starts from its pretrained weights)")
  if args.quick and any("pretrained" in arms for _, _, arms in args.own_students):
    p.error("--quick: its teacher starts from random weights, so there is no pretrained arm")
  args.log_dir = os.path.join(args.work_dir, "logs")
  return args


def _arms(parser, name, items):
  arms = tuple(a for a in items if a)
  if set(arms) - set(rr.ARMS) or "no_teacher" not in arms:
    parser.error(f"--{name}: a subset of {rr.ARMS} with no_teacher")
  return arms


def _own_students(parser, spec, default_arms):
  """"3:1,4:2:no_teacher+kd" -> ((3, 1.0, default_arms), (4, 2.0, ("no_teacher", "kd")))."""
  out = []
  for item in filter(None, spec.split(",")):
    fields = item.split(":")
    try:
      layers, epochs = int(fields[0]), float(fields[1])
    except (ValueError, IndexError):
      parser.error(f"--own_students: {item!r} is not LAYERS:EPOCHS[:ARMS]")
    if len(fields) > 3 or layers < 1 or epochs <= 0:
      parser.error(f"--own_students: {item!r}: LAYERS >= 1, EPOCHS > 0, then ARMS")
    arms = _arms(parser, "own_students", fields[2].split("+")) if len(fields) == 3 \
        else default_arms
    out.append((layers, epochs, arms))
  if len({(l, e) for l, e, _ in out}) != len(out):
    parser.error("--own_students: a student is listed twice")
  return tuple(out)


def _path(ctx, *parts):
  return os.path.join(ctx.work_dir, *parts)


def _tool(ctx, tool, flags, name, kind=None, steps=None, stop_at_step=None):
  """tools/<tool>.py in a child process; its wall/CPU seconds kept in timings/."""
  result = tooling.run_tool(tool, flags, os.path.join(ctx.log_dir, name + ".log"),
                            stop_at_step=stop_at_step)
  record = {k: result[k] for k in ("wall_seconds", "cpu_seconds", "max_rss_mb")}
  record.update(tool=tool, kind=kind, train_steps=steps, steps=result["steps"])
  os.makedirs(_path(ctx, "timings"), exist_ok=True)
  stage.atomic_write_text(_path(ctx, "timings", name + ".json"), stage.json_dumps(record))
  print(f"[task_recipe] {name}: {record['wall_seconds']:.0f}s wall, "
        f"{record['cpu_seconds']:.0f}s CPU", flush=True)
  return record


def _done(directory):
  return td.stage_complete(directory)


# ---------------------------------------------------------------- data stages


def data_and_models(ctx):
  """Task data, vocab, the teacher's and students' starting points."""
  if ctx.quick:
    task = quick.write_task(_path(ctx, "task"), seed=0)
    ctx.vocab_file, ctx.student_data, ctx.teacher_data = (task["vocab"], task["student"],
                                                         task["teacher"])
    ctx.max_seq_length = quick.MAX_SEQ_LENGTH
    ctx.teacher_base, ctx.teacher_init, ctx.tiny_config, ctx.tiny_init = (
        "tiny_teacher", None, "tiny_student", None)
    ctx.mlm, ctx.embeddings = quick.write_mlm(_path(ctx, "mlm"), ctx.vocab_file), None
    return
  data = _path(ctx, "data")
  if not _done(data):
    _tool(ctx, "fetch_task_data", [f"--output_dir={data}",
                                   f"--download_dir={_path(ctx, 'downloads')}"], "fetch_data")
  pre = {name: fetch_pretrained.fetch(name, _path(ctx, "pretrained"), _path(ctx, "downloads"))
         for name in fetch_pretrained.MODELS}
  ctx.vocab_file = os.path.join(pre["minilm_l6"], "vocab.txt")
  ctx.student_data = ctx.teacher_data = data
  ctx.teacher_init = pre["minilm_l6"]
  ctx.teacher_base = os.path.join(pre["minilm_l6"], "bert_config.json")
  ctx.tiny_init, ctx.tiny_config = pre["bert_tiny"], os.path.join(pre["bert_tiny"],
                                                                 "bert_config.json")
  ctx.mlm, ctx.embeddings = pre["bert_tiny"], pre["minilm_l6"]


def records(ctx, src, name):
  out = _path(ctx, name)
  if not _done(out):
    _tool(ctx, "create_classification_data", [
        f"--input_dir={src}", f"--output_dir={out}", f"--vocab_file={ctx.vocab_file}",
        f"--max_seq_length={ctx.max_seq_length}", "--text_a_column=sentence",
        "--label_column=label", "--labels=0,1", "--log_examples=1"], name)
  return out


def train_rows(records_dir):
  return td.read_json(os.path.join(records_dir, stage.MANIFEST))["counts"].get(
      "train_examples") or td.read_json(os.path.join(records_dir, "stats.json"))["train"][
          "examples"]


def teacher(ctx):
  out = _path(ctx, "teacher")
  ctx.teacher_rows = train_rows(ctx.teacher_records)
  steps = int(ctx.teacher_rows * ctx.teacher_epochs / ctx.batch_size + 0.999)
  if not _done(out):
    init = [f"--init_checkpoint={ctx.teacher_init}"] if ctx.teacher_init else []
    _tool(ctx, "finetune", [
        f"--model_config={ctx.teacher_base}", *init, f"--vocab_file={ctx.vocab_file}",
        f"--data_dir={ctx.teacher_records}", f"--output_dir={out}",
        f"--num_train_epochs={ctx.teacher_epochs}", f"--train_batch_size={ctx.batch_size}",
        f"--learning_rate={ctx.teacher_lr}", "--seed=12345", "--best_metric=accuracy",
        "--eval_split=dev", "--log_every_steps=20"], "teacher", "teacher:train", steps)
  ctx.teacher = os.path.join(out, "best")
  ctx.teacher_config = os.path.join(ctx.teacher, "bert_config.json")
  ctx.own_configs = {}
  for layers in sorted({layers for layers, _, _ in ctx.own_students}):
    own = dict(td.read_json(ctx.teacher_config), num_hidden_layers=layers)
    ctx.own_configs[layers] = _path(ctx, f"own_{layers}l_config.json")
    stage.atomic_write_text(ctx.own_configs[layers],
                            json.dumps(own, indent=2, sort_keys=True))


def labels(ctx, records_dir, name):
  out = _path(ctx, name)
  if not _done(out):
    _tool(ctx, "extract_teacher_labels", [
        f"--init_checkpoint={ctx.teacher}", f"--vocab_file={ctx.vocab_file}",
        f"--input_dir={records_dir}", f"--output_dir={out}", "--splits=train,dev"], name)
  return out


def augmentation(ctx):
  out = _path(ctx, "augmented")
  if not _done(out):
    emb = [f"--embedding_checkpoint={ctx.embeddings}"] if ctx.embeddings else []
    _tool(ctx, "augment_task_data", [
        f"--input_dir={ctx.student_data}", f"--output_dir={out}",
        f"--vocab_file={ctx.vocab_file}", f"--mlm_checkpoint={ctx.mlm}", *emb,
        "--text_a_column=sentence", "--label_column=label",
        f"--num_variants={ctx.num_variants}", "--seed=0"], "augment")
  return out


def students(ctx):
  """BERT-tiny, then each --own_students entry (key own<L>l_e<epochs>)."""
  teacher = (f"--teacher_config={ctx.teacher_config}", f"--teacher_checkpoint={ctx.teacher}")
  # The same layers before the teacher's fine-tuning (its pretrained start).
  pretrained = (("--init_from=teacher_layers", f"--teacher_config={ctx.teacher_base}",
                 f"--teacher_checkpoint={ctx.teacher_init}") if ctx.teacher_init else ())
  tiny_init = ("--init_from=checkpoint", f"--init_checkpoint={ctx.tiny_init}") \
      if ctx.tiny_init else ()
  out = [rr.Student("tiny", "tiny", "BERT-tiny 2L-128" + (" (shipped weights)" if ctx.tiny_init
                                                  else " (tiny_student, random)"),
                    ctx.tiny_config, tiny_init, ctx.tiny_epochs, ctx.tiny_aug_epochs,
                    ctx.tiny_arms)]
  for layers, epochs, arms in ctx.own_students:
    out.append(rr.Student(
        f"own{layers}l_e{epochs:g}", f"own{layers}l",
        f"{layers} of the teacher's layers (DistilBERT-style), {epochs:g} epoch(s)",
        ctx.own_configs.get(layers, "(after the teacher)"),
        ("--init_from=teacher_layers",) + teacher, epochs, ctx.own_aug_epochs, arms,
        pretrained))
  return out


def prepare(ctx):
  """Every stage before the student runs."""
  data_and_models(ctx)
  ctx.records = records(ctx, ctx.student_data, "records")
  ctx.teacher_records = (records(ctx, ctx.teacher_data, "teacher_records")
                         if ctx.teacher_data != ctx.student_data else ctx.records)
  ctx.rows = train_rows(ctx.records)
  teacher(ctx)
  ctx.labels = labels(ctx, ctx.records, "labels")
  ctx.aug_records = records(ctx, augmentation(ctx), "aug_records")
  ctx.aug_labels = labels(ctx, ctx.aug_records, "aug_labels")
  ctx.aug_rows = train_rows(ctx.aug_records)


# ---------------------------------------------------------------- runs and plan


def train_all(ctx, runs):
  for run in runs:
    if not _done(run.out):
      _tool(ctx, "distill", rr.tool_flags(run), run.name, run.kind, run.steps)


def predictions(ctx, runs):
  models = [("teacher", ctx.teacher)] + [(r.name, os.path.join(r.out, "best"))
                                         for r in runs if r.phase != "phase1"]
  out = _path(ctx, "predictions")
  todo = [f"{n}={c}" for n, c in models if not os.path.exists(os.path.join(out, n + ".json"))]
  if todo:
    cmd = [tooling.PY, os.path.join(BENCH, "task_recipe_predict.py"), ctx.records,
           ctx.vocab_file, "test", out, *todo]
    with open(os.path.join(ctx.log_dir, "predict.log"), "w", encoding="utf-8") as log:
      subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, check=True, cwd=ROOT,
                     env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
  return {n: td.read_json(os.path.join(out, n + ".json")) for n, _ in models}


def benchmark(ctx, runs):
  first = min(ctx.seeds)
  models = [("teacher", ctx.teacher)] + [
      (f"{r.student}_{r.arm}", os.path.join(r.out, "best")) for r in runs
      if r.phase != "phase1" and r.seed == first]
  out = _path(ctx, "benchmark")
  done = os.path.join(out, "benchmark.json")
  have = ([m["name"] for m in td.read_json(done)["models"]] if os.path.exists(done) else None)
  if have != [n for n, _ in models]:
    # Another set of rows (a student added): every row is timed again in one
    # run, so the speed ratios stay comparable.
    _tool(ctx, "benchmark", [
        "--models=" + ",".join(f"{n}=:{c}" for n, c in models),
        f"--input_dir={ctx.records}", "--split=test", f"--vocab_file={ctx.vocab_file}",
        f"--repeats={ctx.repeats}", "--throughput_batch=32", f"--output_dir={out}"],
          "benchmark")  # a report directory: rewritten
  return td.read_json(os.path.join(out, "benchmark.json")), out


def calibrate(ctx):
  """Seconds per step of the teacher and of each student, from short fine-tunes
  stopped after --calibration_steps (before any real run measured them)."""
  path = _path(ctx, "calibration.json")
  if os.path.exists(path):
    return td.read_json(path)
  own = dict(td.read_json(ctx.teacher_base if ctx.teacher_base.endswith(".json") else
                          os.path.join(ROOT, "modeling", "configs", ctx.teacher_base + ".json")),
             num_hidden_layers=ctx.own_students[0][0])
  own_arch = f"own{ctx.own_students[0][0]}l"
  own_path = _path(ctx, "calibration_own_config.json")
  stage.atomic_write_text(own_path, json.dumps(own))
  out = {}
  for kind, config, init in (("teacher:train", ctx.teacher_base, ctx.teacher_init),
                             ("tiny:train", ctx.tiny_config, ctx.tiny_init),
                             (own_arch + ":train", own_path, None)):
    name = "calibrate_" + kind.split(":")[0]
    record = _tool(ctx, "finetune", [
        f"--model_config={config}", *([f"--init_checkpoint={init}"] if init else []),
        f"--vocab_file={ctx.vocab_file}", f"--data_dir={ctx.records}",
        f"--output_dir={_path(ctx, 'calibration', name)}", "--num_train_epochs=1",
        f"--train_batch_size={ctx.batch_size}", "--log_every_steps=5", "--eval_split=",
        "--overwrite"], name, stop_at_step=ctx.calibration_steps)
    out[kind] = rr.slope(record["steps"])
  stage.atomic_write_text(path, stage.json_dumps(out))
  return out


def plan(ctx):
  """Prints every run still to do with its estimate; returns the plan dict."""
  data_and_models(ctx)
  ctx.records = records(ctx, ctx.student_data, "records")
  ctx.rows = train_rows(ctx.records)
  ctx.teacher_records = ctx.records if ctx.teacher_data == ctx.student_data else records(
      ctx, ctx.teacher_data, "teacher_records")
  ctx.teacher_rows = train_rows(ctx.teacher_records)
  ctx.aug_records = _path(ctx, "aug_records")
  ctx.aug_rows = (train_rows(ctx.aug_records) if _done(ctx.aug_records)
                  else int(ctx.rows * (1 + 0.97 * ctx.num_variants)))  # ~3% duplicates
  for name in ("teacher", "labels", "aug_labels"):
    setattr(ctx, name, getattr(ctx, name, None) or _path(ctx, name))
  ctx.teacher_config, ctx.own_configs = "(after the teacher)", {}
  timings = rr.read_timings(_path(ctx, "timings"))
  measured = rr.rates(timings)
  needed = {"teacher:train", "tiny:train"} | {f"own{layers}l:train"
                                              for layers, _, _ in ctx.own_students}
  calibration = {} if needed <= set(measured) else calibrate(ctx)
  teacher_rate = rr.rate_for("teacher:train", measured, calibration)
  steps = int(ctx.teacher_rows * ctx.teacher_epochs / ctx.batch_size + 0.999)
  rows = [("teacher", "teacher:train", steps, _done(_path(ctx, "teacher")), teacher_rate)]
  forward = {k: teacher_rate[k] / 3 * 2 for k in ("cpu", "wall")}  # a batch of 64 rows
  for name, n in (("labels", ctx.rows), ("aug_labels", ctx.aug_rows)):
    rows.append((name, "teacher forward", (n + 1200) // 64, _done(_path(ctx, name)),
                 dict(forward, source="modelled")))
  for run in rr.planned_runs(ctx, students(ctx)):
    rows.append((run.name, run.kind, run.steps, _done(run.out),
                 rr.rate_for(run.kind, measured, calibration)))
  return report.print_plan(ctx, rows, timings)


def main(argv=None):
  ctx = parse_args(argv)
  if ctx.plan:
    plan(ctx)
    return
  start = time.monotonic()
  prepare(ctx)
  runs = rr.planned_runs(ctx, students(ctx))
  train_all(ctx, runs)
  preds = predictions(ctx, runs)
  bench, bench_dir = benchmark(ctx, runs)
  command = shlex.join([".venv/bin/python", "bench/task_recipe.py",
                        *(argv if argv is not None else sys.argv[1:])])
  result = report.build(ctx, students(ctx), runs, preds, bench, command)
  result["seconds_this_invocation"] = round(time.monotonic() - start, 1)
  report.write(ctx, result, bench_dir)
  print(f"task_recipe: -> {ctx.output_json}, {ctx.output_md}")


if __name__ == "__main__":
  main()
