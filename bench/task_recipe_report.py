"""bench/task_recipe.py's plan printout, statistics, Markdown report and plot."""

import os

import numpy as np

import significance
import task_distill as td
import task_recipe_runs as rr
from pipeline.core import stage


def print_plan(ctx, rows, timings):
  """rows: (name, kind, steps, done, rate or None). Prints and returns the plan."""
  todo_cpu = todo_wall = 0.0
  lines = [f"{'run':28} {'kind':16} {'steps':>6} {'CPU s/step':>10} {'est. CPU s':>10}  status"]
  for name, kind, steps, done, rate in rows:
    cpu = steps * rate["cpu"] if rate else None
    if not done and rate:
      todo_cpu, todo_wall = todo_cpu + cpu, todo_wall + steps * rate["wall"]
    status = "done" if done else (rate or {}).get("source", "no estimate")
    lines.append(f"{name:28} {kind:16} {steps:>6} "
                 f"{(rate['cpu'] if rate else float('nan')):>10.3f} "
                 f"{(cpu if cpu is not None else float('nan')):>10.0f}  {status}")
  spent = sum(t["cpu_seconds"] for t in timings.values())  # calibration included
  # Not measured before they run: augmentation (docs/augmentation.md: 225 CPU s for
  # RT at N=20; its cost is per input word, not per variant), test predictions
  # (~30 CPU s per run), the benchmark (~300 CPU s).
  done = {t.get("tool") for t in timings.values()}
  fixed = ((0.0 if "augment_task_data" in done else 600.0) +
           (0.0 if "benchmark" in done else 300.0 + 30.0 * sum(
               1 for r in rows if not r[0].endswith("_p1") and r[1] != "teacher forward")))
  total = spent + todo_cpu + fixed
  lines += ["", f"train rows {ctx.rows}, augmented rows {ctx.aug_rows} (N={ctx.num_variants}), "
            f"seeds {ctx.seeds}",
            f"spent so far {spent / 3600:.2f} CPU-h; to do: {todo_cpu / 3600:.2f} CPU-h of "
            f"training ({todo_wall / 3600:.2f} h wall at the measured rates) + ~{fixed / 3600:.2f}"
            f" CPU-h augmentation/scoring/benchmark = {total / 3600:.2f} CPU-h in all "
            f"(budget {ctx.budget_cpu_hours:g}: {'fits' if total <= ctx.budget_cpu_hours * 3600 else 'OVER'})"]
  print("\n".join(lines))
  return {"rows": rows, "cpu_hours": total / 3600, "todo_wall_hours": todo_wall / 3600}


# ---------------------------------------------------------------- statistics


def _stats(run):
  return td.read_json(os.path.join(run.out, "stats.json"))


def arm_results(ctx, student, runs, preds, timings):
  """{arm: {seeds, dev, test (mean, std, values), cpu_seconds, p vs the twins}}:
  vs_no_teacher (the same init, hard labels only) for every other arm, and
  vs_pretrained (no teacher at all) where the student has that arm."""
  finals = {(r.arm, r.seed): r for r in runs if r.student == student.key and r.phase != "phase1"}
  out = {}
  for arm in student.arms:
    seeds = [s for s in ctx.seeds if (arm, s) in finals]
    dev = [_stats(finals[arm, s])["best_value"] for s in seeds]
    test = [preds[finals[arm, s].name]["metrics"]["accuracy"] for s in seeds]
    cpu = sum(timings.get(n, {}).get("cpu_seconds", 0.0)
              for s in seeds for n in (finals[arm, s].name, finals[arm, s].name + "_p1"))
    entry = {"parts": dict(zip(("teacher", "intermediate", "augmentation"), rr.PARTS[arm])),
             "seeds": seeds, "dev": _ms(dev), "test": _ms(test), "cpu_seconds": cpu}
    for twin in rr.BASELINES:
      if arm != twin and twin in student.arms:
        entry["vs_" + twin] = _versus(preds, finals, arm, twin, seeds)
    out[arm] = entry
  return out


def _versus(preds, finals, arm, twin, seeds):
  """Paired tests on the test split: arm's correct vector against twin's, seed by seed."""
  a = [preds[finals[arm, s].name]["correct"] for s in seeds]
  b = [preds[finals[twin, s].name]["correct"] for s in seeds]
  return {"per_seed": [significance.paired_bootstrap(x, y, seed=s)
                       for x, y, s in zip(a, b, seeds)],
          "pooled_bootstrap": significance.paired_bootstrap(np.concatenate(a),
                                                            np.concatenate(b)),
          "pooled_mcnemar": significance.mcnemar(np.concatenate(a), np.concatenate(b))}


def _ms(values):
  mean, std = significance.mean_std(values)
  return {"mean": mean, "std": std, "values": values}


def build(ctx, students, runs, preds, bench, command):
  timings = rr.read_timings(os.path.join(ctx.work_dir, "timings"))
  models = {m["name"]: m for m in bench["models"]}
  teacher_acc = preds["teacher"]["metrics"]["accuracy"]
  result = {"command": command, "quick": ctx.quick, "code_version": stage.code_version(),
            "config": {k: getattr(ctx, k) for k in (
                "seeds", "max_seq_length", "batch_size", "teacher_epochs", "teacher_lr",
                "num_variants", "student_lr", "alpha", "temperature", "phase1_passes",
                "tiny_epochs", "tiny_aug_epochs", "own_students", "own_aug_epochs")},
            "rows": {"train": ctx.rows, "augmented": ctx.aug_rows},
            "teacher": {"test_accuracy": teacher_acc,
                        "dev_accuracy": _stats_dir(ctx.teacher)["best_value"],
                        "latency_ms": models["teacher"]["latency_ms"]},
            "cpu_seconds_total": sum(t["cpu_seconds"] for t in timings.values()),
            "students": [], "goals": []}
  for s in students:
    arms = arm_results(ctx, s, runs, preds, timings)
    for arm, entry in arms.items():
      m = models[f"{s.key}_{arm}"]
      entry.update(latency_ms=m["latency_ms"], speedup=m.get("speedup"),
                   kept=entry["test"]["mean"] / teacher_acc)
    distilled = [a for a in arms if a not in rr.BASELINES]
    best = max(distilled, key=lambda a: arms[a]["dev"]["mean"]) if distilled else None
    result["students"].append({"key": s.key, "title": s.title, "arms": arms, "best": best})
    if best:
      result["goals"].append(_goal(s, arms, best, models["teacher"]))
  return result


def _goal(student, arms, best, teacher):
  """The issue's goal row. The twin is the student trained with no teacher at all:
  the pretrained arm where there is one (an own-layer student's no_teacher arm
  starts from the fine-tuned teacher's layers), else no_teacher."""
  e = arms[best]
  twin = "pretrained" if "pretrained" in arms else "no_teacher"
  p = e["vs_" + twin]["pooled_bootstrap"]["p_value"]
  need = 0.97 if student.key == "tiny" else 0.99
  return {"student": student.key, "arm": best, "kept": e["kept"], "need": need,
          "keeps": e["kept"] >= need,
          "speedup": teacher["latency_ms"]["mean"] / e["latency_ms"]["mean"],
          "twin": twin, "p_value": p, "significant": p < 0.05,
          "p_same_init": e["vs_no_teacher"]["pooled_bootstrap"]["p_value"]}


def _stats_dir(best_dir):
  return td.read_json(os.path.join(os.path.dirname(best_dir), "stats.json"))


# ---------------------------------------------------------------- report


def _pm(d):
  return f"{d['mean']:.4f} ± {d['std']:.4f}"


def _yes(flag):
  return "**yes**" if flag else "**no**"


def ablation(student, teacher_acc):
  """The student's arms; Δ and p against each twin it has (no_teacher: the same
  init with hard labels; pretrained: no teacher at all)."""
  twins = [t for t in rr.BASELINES if t in student["arms"]]
  head = {"no_teacher": "no-teacher", "pretrained": "no teacher at all (pretrained)"}
  cols = [c for t in twins for c in (f"Δ test vs {head[t]}", "p (pooled bootstrap)",
                                     "p (McNemar)")]
  lines = [f"### {student['title']}", "",
           "| arm | KD | intermediate | augmentation | dev acc | test acc | kept | " +
           " | ".join(cols) + " | CPU s |",
           "|---|---|---|---|---:|---:|---:|" + "---:|" * len(cols) + "---:|"]
  for arm, e in student["arms"].items():
    marks = ["✓" if e["parts"][k] else "" for k in ("teacher", "intermediate", "augmentation")]
    name = f"**{arm}**" if arm == student["best"] else arm
    cells = [name, *marks, _pm(e["dev"]), _pm(e["test"]), f"{e['kept']:.1%}"]
    for t in twins:
      sig = e.get("vs_" + t)
      base = student["arms"][t]["test"]["mean"]
      cells += (["-"] * 3 if not sig else [
          f"{e['test']['mean'] - base:+.4f}", f"{sig['pooled_bootstrap']['p_value']:.4f}",
          f"{sig['pooled_mcnemar']['p_value']:.4f}"])
    lines.append("| " + " | ".join(cells + [f"{e['cpu_seconds']:.0f}"]) + " |")
  return "\n".join(lines) + "\n"


def markdown(result, bench_md, png_name):
  with open(bench_md, encoding="utf-8") as f:
    bench = f.read().split("\n", 2)[2]
  c, t = result["config"], result["teacher"]
  lines = ["# Task distillation that works: the recipe on " +
           ("a generated task (--quick: machinery, not findings)" if result["quick"]
            else "Rotten Tomatoes"), "",
           "Written by `bench/task_recipe.py` (figures: its JSON); command:", "",
           f"    {result['command']}", "", "## Setup", "",
           f"* Train rows {result['rows']['train']}; with {c['num_variants']} variants per "
           f"input (teacher-labelled) {result['rows']['augmented']}. Seeds {c['seeds']}, "
           f"batch {c['batch_size']}, max_seq_length {c['max_seq_length']}.",
           f"* Teacher fine-tuned {c['teacher_epochs']:g} epochs (lr {c['teacher_lr']:g}), "
           f"best dev checkpoint: dev {t['dev_accuracy']:.4f}, test {t['test_accuracy']:.4f}.",
           f"* Students: lr {c['student_lr']:g}; KD alpha {c['alpha']:g}, T "
           f"{c['temperature']:g}; phase 1 {c['phase1_passes']:g} pass(es) of the original "
           f"rows' steps; BERT-tiny {c['tiny_epochs']:g} epochs (augmented: "
           f"{c['tiny_aug_epochs']:g}); own-layer students (layers, epochs) "
           f"{', '.join(f'({l}, {e:g})' for l, e, _ in c['own_students'])} (augmented: "
           f"{c['own_aug_epochs']:g} epochs). Best dev checkpoint per run.",
           f"* CPU time of all child runs: {result['cpu_seconds_total'] / 3600:.2f} h.", "",
           "## Goals (test split, mean over seeds; arm chosen on dev)", "",
           "| student | arm | kept vs teacher | needed | speedup batch 1 | twin | "
           "p vs twin | p vs same-init no-teacher |",
           "|---|---|---:|---:|---:|---|---:|---:|"]
  for g in result["goals"]:
    lines.append(f"| {g['student']} | {g['arm']} | {g['kept']:.1%} {_yes(g['keeps'])} | "
                 f"{g['need']:.0%} | {g['speedup']:.1f}x | {g['twin']} | {g['p_value']:.4f} "
                 f"{_yes(g['significant'])} | {g['p_same_init']:.4f} |")
  lines += ["", "The twin is the same student trained on the gold labels with no teacher at "
            "all: for an own-layer student the `pretrained` arm (the same layers of the "
            "pretrained MiniLM the teacher was fine-tuned from), since its `no_teacher` arm "
            "starts from the fine-tuned teacher's layers and so already carries what the "
            "teacher learned; BERT-tiny's `no_teacher` starts from its shipped weights and "
            "is its twin. The last column tests the teacher's logits alone (same init).",
            "", "## Ablation: which part earns what", ""]
  lines += [ablation(s, t["test_accuracy"]) for s in result["students"]]
  lines += ["## tools/benchmark.py (seed " + str(min(c["seeds"])) + " of each arm)", "",
            bench, f"![accuracy vs latency]({png_name})", ""]
  return "\n".join(lines)


def plot(result, path):
  # pylint: disable=import-outside-toplevel
  from matplotlib.backends.backend_agg import FigureCanvasAgg
  from matplotlib.figure import Figure
  fig = Figure(figsize=(7, 5), dpi=100)
  FigureCanvasAgg(fig)
  ax = fig.add_subplot()
  for s, marker in zip(result["students"], "os^"):
    for arm, e in s["arms"].items():
      ax.errorbar(e["latency_ms"]["mean"], e["test"]["mean"], yerr=e["test"]["std"],
                  xerr=e["latency_ms"].get("std", 0), fmt=marker, capsize=3,
                  label=f"{s['key']} {arm}")
  t = result["teacher"]
  ax.errorbar(t["latency_ms"]["mean"], t["test_accuracy"], xerr=t["latency_ms"].get("std", 0),
              fmt="k*", markersize=12, label="teacher")
  ax.set_xscale("log")
  ax.set_xlabel("latency at batch 1 (ms, log)")
  ax.set_ylabel("test accuracy (mean ± std over seeds)")
  ax.grid(True, alpha=0.3)
  ax.legend(fontsize=7, ncol=2)
  fig.tight_layout()
  fig.savefig(path, format="png")


def write(ctx, result, bench_dir):
  for path in (ctx.output_json, ctx.output_md):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  stage.atomic_write_text(ctx.output_json, stage.json_dumps(result))
  png = os.path.splitext(ctx.output_md)[0] + ".png"
  plot(result, png)
  stage.atomic_write_text(ctx.output_md, markdown(result, os.path.join(bench_dir,
                                                                       "benchmark.md"),
                                                  os.path.basename(png)))
