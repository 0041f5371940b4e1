"""Is the teacher-label cache worth it? Offline vs online distillation, end to end.

  .venv/bin/python bench/distill_experiment.py [--work_dir /tmp/distill_experiment]

On the real sample dump (../shared/data; skipped with a message when absent) the
pipeline tools run as a user runs them (subprocesses of .venv/bin/python
tools/...): extract -> shard (15% of pages held out) -> an 8,192-entry vocab ->
records (seq 64, 10 predictions; dupe 1 for distillation, dupe 5 for the
teacher) -> pretrain a 4-layer, 256-wide teacher (two phases, the second from
the first's weights) -> extract_teacher_labels
(top-k at K = 4, 16, 64 and 16 sampled ids) -> tools/distill.py trains the same
2-layer, 128-wide student with identical steps, batch, learning rate, data and
seed in every arm:
  hard      alpha = 1 (hard labels only)
  online    the teacher run on every batch, full-vocab KD (alpha 0.5)
  topK-*    cached top-K, tail renormalize / bucket / ignore (= the seed's
            unnormalised top-k), alpha 0.5 (one arm at alpha 0)
  sampled   16 ids sampled from the teacher (unbiased weights), alpha 0.5
Key arms are repeated with a second seed. Every student (and the teacher) is
scored by tools/evaluate.py on the held-out split of the K=64 cache: MLM and
top-5 accuracy, agreement with the teacher's top-1, KL to its top-64.

Speed: the arms' own step times (steady state, from the trainer's progress
lines: wall and CPU of the process between the first and last logged step),
and dedicated short runs, offline and online interleaved in rounds (online also
with a larger random teacher), each stopped after its last step; medians. The
machine is shared, so CPU seconds are reported beside wall seconds.

Resumable: every stage is a no-op when its output is complete, measurements are
kept in <work_dir>/measurements.json. Writes bench/results/distill_experiment.json,
docs/distillation_results.md and docs/distillation_results.png.
"""

import argparse
import dataclasses
import json
import os
import shutil
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402  pylint: disable=wrong-import-position

from bench.tooling import run_tool  # noqa: E402  pylint: disable=wrong-import-position
from pipeline.core import stage  # noqa: E402  pylint: disable=wrong-import-position

SAMPLE = os.path.join(ROOT, "..", "shared", "data", "enwiki-sample-pages-articles.xml.bz2")

VOCAB_SIZE, SEQ, PREDS = 8192, 64, 10
EVAL_FRACTION = 0.15
DISTILL_DUPES, TEACHER_DUPES = 1, 5
_BASE = dict(attention_probs_dropout_prob=0.1, hidden_act="gelu", hidden_dropout_prob=0.1,
             initializer_range=0.02, max_position_embeddings=128, type_vocab_size=2,
             vocab_size=VOCAB_SIZE)
MODELS = {
    "teacher": dict(_BASE, num_hidden_layers=4, hidden_size=256, num_attention_heads=4,
                    intermediate_size=1024),
    "student": dict(_BASE, num_hidden_layers=2, hidden_size=128, num_attention_heads=2,
                    intermediate_size=512),
    # Timing only (random weights): how the online cost grows with the teacher.
    "teacher_large": dict(_BASE, num_hidden_layers=4, hidden_size=512,
                          num_attention_heads=8, intermediate_size=2048),
}
OPTIMIZER = ["--optimizer=adamw", "--learning_rate=1e-3", "--weight_decay=0.01"]
# Phase 1, then phase 2 from phase 1's weights (fresh optimizer, more updates):
# 400 steps alone left the teacher at the unigram plateau (9.5% held out).
TEACHER_PHASES = (
    ("teacher", ["--train_batch_size=64", "--num_train_steps=400",
                 "--num_warmup_steps=40"], None),
    ("teacher_phase2", ["--train_batch_size=32", "--num_train_steps=800",
                        "--num_warmup_steps=40"], "teacher"),
)
STUDENT_STEPS, STUDENT_BATCH = 600, 32
STUDENT_TRAIN = [f"--train_batch_size={STUDENT_BATCH}", f"--num_train_steps={STUDENT_STEPS}",
                 "--num_warmup_steps=60", "--save_checkpoints_steps=100000"]
LABELS = {"top4": ("topk", 4), "top16": ("topk", 16), "top64": ("topk", 64),
          "sampled16": ("sampled", 16)}
EVAL_LABELS = "top64"
SEEDS = (12345, 777)
TIMING_STEPS, TIMING_LOG, TIMING_ROUNDS = 50, 10, 3


@dataclasses.dataclass(frozen=True)
class Arm:
  name: str
  labels: str = None  # A LABELS key; None: online teacher.
  alpha: float = 0.5
  kd_tail: str = None  # None: the tool's default (must be None for sampled).
  seed: int = SEEDS[0]

  @property
  def kind(self):
    if self.alpha == 1.0:
      return "hard"
    return "online" if self.labels is None else "offline"


# Most informative first; the second seed of the key arms last.
ARMS = [
    Arm("hard", "top4", alpha=1.0),
    Arm("online"),
    Arm("top16-renormalize", "top16", kd_tail="renormalize"),
    Arm("top4-renormalize", "top4", kd_tail="renormalize"),
    Arm("top64-renormalize", "top64", kd_tail="renormalize"),
    Arm("top4-bucket", "top4", kd_tail="bucket"),
    Arm("top4-ignore", "top4", kd_tail="ignore"),
    Arm("sampled16", "sampled16"),
    Arm("top16-bucket", "top16", kd_tail="bucket"),
    Arm("top16-ignore", "top16", kd_tail="ignore"),
    Arm("top16-renormalize-alpha0", "top16", alpha=0.0, kd_tail="renormalize"),
    Arm("hard", "top4", alpha=1.0, seed=SEEDS[1]),
    Arm("online", seed=SEEDS[1]),
    Arm("top16-renormalize", "top16", kd_tail="renormalize", seed=SEEDS[1]),
]
# ---------------------------------------------------------------- running tools


def steady_rate(steps):
  """Wall and CPU seconds per step between the first and last logged step."""
  if len(steps) < 2 or steps[0][2] is None or steps[-1][2] is None:
    return None
  (s0, w0, c0), (s1, w1, c1) = steps[0], steps[-1]
  if s1 <= s0:
    return None
  return {"from_step": s0, "to_step": s1, "wall_seconds_per_step": (w1 - w0) / (s1 - s0),
          "cpu_seconds_per_step": (c1 - c0) / (s1 - s0)}


def completed(directory):
  return os.path.exists(os.path.join(directory, stage.COMPLETED))


def read_json(path):
  with open(path) as f:
    return json.load(f)


class Measurements:
  """Per-stage measurements kept across reruns (a no-op rerun measures nothing)."""

  def __init__(self, path):
    self.path = path
    self.data = read_json(path) if os.path.exists(path) else {}

  def get(self, key):
    return self.data.get(key)

  def put(self, key, value):
    self.data[key] = value
    stage.atomic_write_text(self.path, json.dumps(self.data, indent=1, sort_keys=True) + "\n")


def staged(meas, key, output, tool, args, log_dir):
  """Runs a stage unless its output is complete and measured; its measurement."""
  if completed(output) and meas.get(key):
    return meas.get(key)
  result = run_tool(tool, args, os.path.join(log_dir, key + ".log"))
  result.pop("steps")
  meas.put(key, result)
  return result


# ---------------------------------------------------------------- the pipeline


def prepare(w, meas):
  """Extract, shard, vocab, records (distill and teacher); paths."""
  d = {k: os.path.join(w, k) for k in ("extract", "shards", "records", "records_teacher")}
  d["vocab"] = os.path.join(w, "vocab", "vocab.txt")
  logs = os.path.join(w, "logs")
  staged(meas, "extract", d["extract"], "extract_wiki",
         [f"--input={SAMPLE}", f"--output_dir={d['extract']}"], logs)
  staged(meas, "shard", d["shards"], "shard_text",
         [f"--input_dir={d['extract']}", f"--output_dir={d['shards']}", "--num_shards=8",
          f"--eval_fraction={EVAL_FRACTION}"], logs)
  if not os.path.exists(d["vocab"]):
    run_tool("build_vocab", [f"--input_dir={d['shards']}", f"--output_file={d['vocab']}",
                             f"--vocab_size={VOCAB_SIZE}"], os.path.join(logs, "vocab.log"))
  for key, dupes in (("records", DISTILL_DUPES), ("records_teacher", TEACHER_DUPES)):
    staged(meas, key, d[key], "create_pretraining_data",
           [f"--input_dir={d['shards']}", f"--output_dir={d[key]}",
            f"--vocab_file={d['vocab']}", f"--max_seq_length={SEQ}",
            f"--max_predictions_per_seq={PREDS}", f"--dupe_factor={dupes}",
            "--log_examples=0"], logs)
  for name, config in MODELS.items():
    d[name + "_config"] = os.path.join(w, name + ".json")
    stage.atomic_write_text(d[name + "_config"], json.dumps(config, indent=1) + "\n")
  return d


def train_teacher(w, d, meas):
  """Pretrains the teacher in TEACHER_PHASES; each phase's trainer stats."""
  phases = {}
  for name, flags, init in TEACHER_PHASES:
    out = os.path.join(w, name)
    args = [f"--bert_config_file={d['teacher_config']}", f"--input_dir={d['records_teacher']}",
            f"--output_dir={out}", *flags, *OPTIMIZER, "--log_every_steps=50",
            "--save_checkpoints_steps=100"]
    if init:
      args.append(f"--init_checkpoint={os.path.join(w, init)}")
    staged(meas, name, out, "pretrain", args, os.path.join(w, "logs"))
    stats = read_json(os.path.join(out, "stats.json"))
    phases[name] = {"flags": flags, "init_checkpoint": init, "seconds": stats["seconds"],
                    "steps_per_second": stats["steps_per_second"], "eval": stats["eval"]}
  d["teacher"] = out  # The last phase.
  return {"phases": phases, "seconds": sum(p["seconds"] for p in phases.values())}


def extract_labels(w, d, meas):
  """Every LABELS cache; {name: tool stats + process wall/CPU}."""
  out = {}
  for name, (method, k) in LABELS.items():
    d[name] = os.path.join(w, "labels_" + name)
    result = staged(meas, "labels_" + name, d[name], "extract_teacher_labels",
                    [f"--bert_config_file={d['teacher_config']}",
                     f"--init_checkpoint={d['teacher']}", f"--vocab_file={d['vocab']}",
                     f"--input_dir={d['records']}", f"--output_dir={d[name]}",
                     f"--truncation_factor={k}", f"--label_method={method}",
                     "--log_examples=0"], os.path.join(w, "logs"))
    stats = read_json(os.path.join(d[name], "stats.json"))
    keep = ("cache_bytes_per_entry", "cache_entries", "distill_bytes",
            "distill_bytes_per_instance", "source_bytes", "instances", "masked_positions",
            "seconds", "instances_per_second", "full_f32_bytes_per_instance")
    out[name] = dict({k_: stats.get(k_) for k_ in keep}, label_method=method,
                     truncation_factor=k, process=result,
                     cache_bytes_per_instance=round(
                         (stats["distill_bytes"] - stats["source_bytes"]) /
                         stats["instances"], 1))
  return out


def arm_key(arm):
  return f"{arm.name}-seed{arm.seed}"


def distill_args(d, arm, output_dir, seed=None):
  args = [f"--student_config={d['student_config']}", f"--vocab_file={d['vocab']}",
          f"--output_dir={output_dir}", *STUDENT_TRAIN, *OPTIMIZER,
          f"--alpha={arm.alpha}", f"--seed={seed or arm.seed}"]
  if arm.labels is None:
    args += ["--online_teacher", f"--teacher_config={d['teacher_config']}",
             f"--teacher_checkpoint={d['teacher']}", f"--records_dir={d['records']}"]
  else:
    args.append(f"--teacher_labels_dir={d[arm.labels]}")
  if arm.kd_tail:
    args.append(f"--kd_tail={arm.kd_tail}")
  return args


def run_arm(w, d, meas, arm):
  """Trains one student and scores it on the held-out split."""
  key = arm_key(arm)
  out = os.path.join(w, "students", key)
  logs = os.path.join(w, "logs")
  train = meas.get("train/" + key)
  if not (completed(out) and train):
    train = run_tool("distill", distill_args(d, arm, out) + ["--log_every_steps=50"],
                     os.path.join(logs, f"distill-{key}.log"))
    train["steady"] = steady_rate(train.pop("steps"))
    meas.put("train/" + key, train)
  metrics = evaluate(w, d, out, key, meas)["metrics"]
  stats = read_json(os.path.join(out, "stats.json"))
  return dict(dataclasses.asdict(arm), key=key, kind=arm.kind, eval=metrics, train=train,
              trainer={k: stats[k] for k in ("seconds", "steps_per_second", "step")})


def evaluate(w, d, checkpoint, key, meas, config=None):
  """tools/evaluate.py on the held-out split of the EVAL_LABELS cache."""
  if not meas.get("eval/" + key):
    path = os.path.join(w, "eval", key + ".json")
    args = [f"--checkpoint={checkpoint}", f"--input_dir={d[EVAL_LABELS]}",
            f"--output_json={path}", "--batch_size=64"]
    if config:
      args.append(f"--bert_config_file={config}")
    run_tool("evaluate", args, os.path.join(w, "logs", f"eval-{key}.log"))
    result = read_json(path)
    meas.put("eval/" + key, {k: result[k] for k in ("metrics", "counts")})
  return meas.get("eval/" + key)


# ---------------------------------------------------------------- timing


def large_teacher(w, d):
  """A random teacher_large checkpoint (timing only): pretrain, 1 step."""
  out = os.path.join(w, "teacher_large")
  if not completed(out):
    run_tool("pretrain", [f"--bert_config_file={d['teacher_large_config']}",
                          f"--input_dir={d['records']}", f"--output_dir={out}",
                          "--train_batch_size=8", "--num_train_steps=1",
                          "--num_warmup_steps=0", *OPTIMIZER, "--eval_batch_size=64"],
             os.path.join(w, "logs", "teacher_large.log"))
  return out


def timing_cases(d, large):
  offline = Arm("timing-offline", "top16", kd_tail="renormalize")
  online = Arm("timing-online")
  return {"offline_top16": (offline, {}), "online_teacher": (online, {}),
          "online_teacher_large": (online, {"teacher_config": d["teacher_large_config"],
                                            "teacher": large})}


def timing(w, d, meas):
  """Short runs, interleaved in rounds (the case order rotates per round)."""
  large = large_teacher(w, d)
  cases = timing_cases(d, large)
  names = list(cases)
  for rnd in range(TIMING_ROUNDS):
    order = names[rnd % len(names):] + names[:rnd % len(names)]
    for name in order:
      key = f"timing/{name}/{rnd}"
      if meas.get(key):
        continue
      arm, override = cases[name]
      out = os.path.join(w, "timing", name)
      shutil.rmtree(out, ignore_errors=True)
      args = distill_args(dict(d, **override), arm, out)
      args = [a for a in args if not a.startswith(("--num_train_steps", "--num_warmup"))]
      args += [f"--num_train_steps={TIMING_STEPS}", f"--num_warmup_steps={TIMING_LOG}",
               f"--log_every_steps={TIMING_LOG}"]
      load = os.getloadavg()[0]
      result = run_tool("distill", args, os.path.join(w, "logs", f"timing-{name}-{rnd}.log"),
                        stop_at_step=TIMING_STEPS)
      result = dict(steady_rate(result["steps"]), load_average_1min=round(load, 2))
      meas.put(key, result)
      shutil.rmtree(out, ignore_errors=True)
  return summarize_timing(meas, names)


def summarize_timing(meas, names):
  samples = {n: [meas.get(f"timing/{n}/{r}") for r in range(TIMING_ROUNDS)] for n in names}
  out = {"samples": samples, "median": {}, "ratio_over_offline": {}}
  for n in names:
    out["median"][n] = {k: float(np.median([s[k] for s in samples[n]]))
                        for k in ("wall_seconds_per_step", "cpu_seconds_per_step")}
  base = samples["offline_top16"]
  for n in names[1:]:
    # Per-round ratios (the two runs of a round saw similar load), then the median.
    out["ratio_over_offline"][n] = {
        k: float(np.median([s[k] / b[k] for s, b in zip(samples[n], base)]))
        for k in ("wall_seconds_per_step", "cpu_seconds_per_step")}
  return out


# ---------------------------------------------------------------- FLOPs


FLOPS_FORMULA = (
    "forward FLOPs/sequence = 2*S*L*(4H^2 + 2HI) + 2*L*2*S^2*H + 2*P*(H^2 + H*V) + "
    "2*(H^2 + 2H) (as bench/train_throughput.py, at S=64, P=10); training = 3 x "
    "forward; an online step = student training + teacher forward")


def forward_flops(c, s=SEQ, p=PREDS):
  h, i, v, n = (c["hidden_size"], c["intermediate_size"], c["vocab_size"],
                c["num_hidden_layers"])
  return (2 * s * n * (4 * h * h + 2 * h * i) + 2 * n * 2 * s * s * h +
          2 * p * (h * h + h * v) + 2 * (h * h + 2 * h))


def flops_summary():
  fwd = {name: forward_flops(c) for name, c in MODELS.items()}
  student_train = 3 * fwd["student"]
  return {"formula": FLOPS_FORMULA, "forward_per_sequence": fwd,
          "teacher_over_student_forward": round(fwd["teacher"] / fwd["student"], 2),
          "teacher_large_over_student_forward": round(
              fwd["teacher_large"] / fwd["student"], 2),
          "predicted_online_over_offline_step": {
              n: round((student_train + fwd[n]) / student_train, 2)
              for n in ("teacher", "teacher_large")}}


# ---------------------------------------------------------------- analysis


def _mean(values):
  return float(np.mean(values)) if values else None


def group_arms(arms):
  """{arm name: {"arms": [...], mean metrics, seed spread}} in ARMS order."""
  groups = {}
  for arm in arms:
    groups.setdefault(arm["name"], {"arms": []})["arms"].append(arm)
  for group in groups.values():
    first = group["arms"][0]
    accs = [a["eval"]["mlm_accuracy"] for a in group["arms"]]
    group.update(kind=first["kind"], labels=first["labels"], alpha=first["alpha"],
                 kd_tail=first["kd_tail"], seeds=[a["seed"] for a in group["arms"]],
                 mlm_accuracy=_mean(accs),
                 seed_spread=max(accs) - min(accs) if len(accs) > 1 else None)
    for metric in ("mlm_top5_accuracy", "teacher_agreement", "teacher_kl_topk", "mlm_loss"):
      group[metric] = _mean([a["eval"][metric] for a in group["arms"]])
    steady = [a["train"]["steady"] for a in group["arms"] if a["train"].get("steady")]
    group["wall_seconds_per_step"] = _mean([s["wall_seconds_per_step"] for s in steady])
    group["cpu_seconds_per_step"] = _mean([s["cpu_seconds_per_step"] for s in steady])
    group["train_wall_seconds"] = _mean([a["train"]["wall_seconds"] for a in group["arms"]])
  return groups


def _paired(groups, a, b):
  """Mean over the seeds both groups ran of acc(a) - acc(b)."""
  acc = {name: {arm["seed"]: arm["eval"]["mlm_accuracy"] for arm in groups[name]["arms"]}
         for name in (a, b)}
  seeds = sorted(set(acc[a]) & set(acc[b]))
  return _mean([acc[a][s] - acc[b][s] for s in seeds]), seeds


def goals(groups, timing_summary, flops):
  """The issue's goals, checked on these numbers."""
  online, hard = groups["online"]["mlm_accuracy"], groups["hard"]["mlm_accuracy"]
  offline = {n: g for n, g in groups.items() if g["kind"] == "offline"}
  ratio = timing_summary["ratio_over_offline"]["online_teacher"]
  return {
      "offline_over_online_accuracy": {n: g["mlm_accuracy"] / online
                                       for n, g in offline.items()},
      "offline_reaching_99pct_of_online": sorted(
          n for n, g in offline.items() if g["mlm_accuracy"] >= 0.99 * online),
      "offline_beating_hard": sorted(n for n, g in offline.items()
                                     if g["mlm_accuracy"] > hard),
      "online_over_hard_accuracy": online / hard,
      "step_speedup_offline_vs_online": ratio,
      "step_speedup_goal_3x_met": ratio["wall_seconds_per_step"] >= 3.0,
      "teacher_over_student_forward_flops": flops["teacher_over_student_forward"],
  }


def tail_comparison(groups):
  """{K: {tail: mean acc}} for the K with all three tails."""
  out = {}
  for g in groups.values():
    if g["kind"] == "offline" and g["kd_tail"] and g["alpha"] == 0.5:
      out.setdefault(g["labels"], {})[g["kd_tail"]] = g["mlm_accuracy"]
  return {k: v for k, v in out.items() if len(v) == 3}


# ---------------------------------------------------------------- report


def _pct(x):
  return "-" if x is None else f"{100 * x:.2f}"


def _f(x, spec=".3f"):
  return "-" if x is None else format(x, spec)


def arms_table(groups, labels):
  rows = ["| arm | labels | kd_tail | alpha | seeds | MLM acc % | per seed | top-5 % | "
          "MLM loss | agree % | KL top-64 | cache B/inst | s/step | CPU s/step |",
          "|" + "---|" * 14]
  for name, g in groups.items():
    lab = labels.get(g["labels"]) if g["kind"] != "hard" else None
    per_seed = " / ".join(_pct(a["eval"]["mlm_accuracy"]) for a in g["arms"])
    desc = ("online (full vocab)" if g["kind"] == "online" else
            "none (hard labels)" if g["kind"] == "hard" else
            f"{lab['label_method']} K={lab['truncation_factor']}")
    rows.append(
        f"| {name} | {desc} | {g['kd_tail'] or '-'} | {g['alpha']} | {len(g['seeds'])} | "
        f"{_pct(g['mlm_accuracy'])} | {per_seed} | {_pct(g['mlm_top5_accuracy'])} | "
        f"{_f(g['mlm_loss'])} | {_pct(g['teacher_agreement'])} | {_f(g['teacher_kl_topk'])} | "
        f"{_f(lab['cache_bytes_per_instance'], '.0f') if lab else '-'} | "
        f"{_f(g['wall_seconds_per_step'])} | {_f(g['cpu_seconds_per_step'])} |")
  return "\n".join(rows)


def labels_table(labels):
  rows = ["| cache | method | K | B/entry | cache B/instance | record+cache B/instance | "
          "full f32 B/instance | extraction s (tool) | instances/s | process wall s | "
          "process CPU s |", "|" + "---|" * 11]
  for name, lab in labels.items():
    rows.append(
        f"| {name} | {lab['label_method']} | {lab['truncation_factor']} | "
        f"{lab['cache_bytes_per_entry']:.2f} | {lab['cache_bytes_per_instance']:.0f} | "
        f"{lab['distill_bytes_per_instance']:.0f} | {lab['full_f32_bytes_per_instance']:.0f} | "
        f"{lab['seconds']:.1f} | {lab['instances_per_second']:.0f} | "
        f"{lab['process']['wall_seconds']:.1f} | {lab['process']['cpu_seconds']:.1f} |")
  return "\n".join(rows)


def timing_table(timing_summary, flops):
  predicted = flops["predicted_online_over_offline_step"]
  ratio_flops = {"online_teacher": flops["teacher_over_student_forward"],
                 "online_teacher_large": flops["teacher_large_over_student_forward"]}
  rows = ["| run | teacher/student fwd FLOPs | wall s/step (median) | CPU s/step (median) | "
          "online/offline wall | online/offline CPU | FLOPs-predicted ratio | "
          "wall s/step per round |", "|" + "---|" * 8]
  for name, med in timing_summary["median"].items():
    ratio = timing_summary["ratio_over_offline"].get(name)
    pred = {"online_teacher": predicted["teacher"],
            "online_teacher_large": predicted["teacher_large"]}.get(name)
    rounds = ", ".join(f"{s['wall_seconds_per_step']:.3f}"
                       for s in timing_summary["samples"][name])
    rows.append(
        f"| {name} | {_f(ratio_flops.get(name), '.1f')} | {med['wall_seconds_per_step']:.3f} "
        f"| {med['cpu_seconds_per_step']:.3f} | "
        f"{_f(ratio and ratio['wall_seconds_per_step'], '.2f')} | "
        f"{_f(ratio and ratio['cpu_seconds_per_step'], '.2f')} | {_f(pred, '.2f')} | "
        f"{rounds} |")
  return "\n".join(rows)


def recommend(groups):
  """Defaults by held-out MLM accuracy: the best tail, then the smallest K
  within seed noise of the best K, then the best alpha tried with them."""
  spread = max([g["seed_spread"] for g in groups.values() if g["seed_spread"]] or [0.0])
  topk = {n: g for n, g in groups.items() if g["kind"] == "offline" and g["kd_tail"]}
  half = {n: g for n, g in topk.items() if g["alpha"] == 0.5}
  tail = max(half.values(), key=lambda g: g["mlm_accuracy"])["kd_tail"]
  by_k = {int(g["labels"][3:]): g["mlm_accuracy"] for g in half.values()
          if g["kd_tail"] == tail}
  k = min(k_ for k_, acc in by_k.items() if acc >= max(by_k.values()) - spread)
  alphas = {g["alpha"]: g["mlm_accuracy"] for g in topk.values()
            if g["kd_tail"] == tail and g["labels"] == f"top{k}"}
  alphas[1.0] = groups["hard"]["mlm_accuracy"]
  return {"label_method": "topk", "truncation_factor": k, "kd_tail": tail,
          "alpha": max(alphas, key=alphas.get), "seed_spread_points": 100 * spread,
          "accuracy_by_k": by_k, "accuracy_by_alpha": alphas}


def speed_fit(result):
  """(c, teacher/student FLOPs for a 3x step) of online/offline - 1 = c * r."""
  ratios = result["timing"]["ratio_over_offline"]
  f = result["flops"]
  points = [(f["teacher_over_student_forward"], ratios["online_teacher"]),
            (f["teacher_large_over_student_forward"], ratios["online_teacher_large"])]
  r = np.array([p[0] for p in points])
  y = np.array([p[1]["wall_seconds_per_step"] - 1 for p in points])
  c = float(r @ y / (r @ r))
  return c, 2.0 / c


def break_even_steps(result, cache="top16"):
  """Online steps whose extra teacher cost equals one extraction (CPU seconds)."""
  med = result["timing"]["median"]
  extra = (med["online_teacher"]["cpu_seconds_per_step"] -
           med["offline_top16"]["cpu_seconds_per_step"])
  return result["labels"][cache]["process"]["cpu_seconds"] / extra


def accuracy_findings(result):
  groups, g = result["groups"], result["goals"]
  online, hard = groups["online"], groups["hard"]
  spreads = [x["seed_spread"] for x in groups.values() if x["seed_spread"] is not None]
  by_loss = sorted(groups, key=lambda n: groups[n]["mlm_loss"])
  lines = [
      f"- Teacher (held out): MLM accuracy {_pct(result['teacher']['eval']['mlm_accuracy'])}% "
      f"vs {_pct(hard['mlm_accuracy'])}% for the student on hard labels alone; online KD: "
      f"{_pct(online['mlm_accuracy'])}% ({g['online_over_hard_accuracy']:.3f}x hard).",
      f"- Seed noise: the largest difference between two seeds of one arm is "
      f"{_pct(max(spreads) if spreads else None)} points (arms with 2 seeds: "
      f"{', '.join(n for n, x in groups.items() if x['seed_spread'] is not None)}); "
      f"differences below that are not resolved by this experiment.",
      f"- Offline arms at >= 99% of online's accuracy: "
      f"{', '.join(g['offline_reaching_99pct_of_online']) or 'none'}; offline arms above "
      f"hard-labels-only: {', '.join(g['offline_beating_hard']) or 'none'}.",
      f"- Held-out MLM loss (log-likelihood of the true token, which rewards matching the "
      f"whole distribution): lowest for {by_loss[0]} ({groups[by_loss[0]]['mlm_loss']:.3f}), "
      f"then {by_loss[1]} ({groups[by_loss[1]]['mlm_loss']:.3f}); online "
      f"{online['mlm_loss']:.3f}, hard {hard['mlm_loss']:.3f}.",
  ]
  if "sampled16" in groups:
    sam = groups["sampled16"]
    lines.append(
        f"- sampled16 (an unbiased estimate of the full KD) vs online: accuracy "
        f"{_pct(sam['mlm_accuracy'] - online['mlm_accuracy'])} points, MLM loss "
        f"{sam['mlm_loss'] - online['mlm_loss']:+.3f}, agreement "
        f"{_pct(sam['teacher_agreement'] - online['teacher_agreement'])} points.")
  for k, tails in result["tail_comparison"].items():
    best = max(tails, key=tails.get)
    lines.append(f"- Tail options at {k}: " + ", ".join(
        f"{t} {_pct(a)}%" for t, a in sorted(tails.items(), key=lambda x: -x[1])) +
        f" (best: {best}).")
  if "top16-renormalize-alpha0" in groups:
    diff, seeds = _paired(groups, "top16-renormalize", "top16-renormalize-alpha0")
    lines.append(f"- alpha: top16-renormalize at alpha 0.5 minus alpha 0 (pure KD, the "
                 f"seed's setting): {_pct(diff)} points (seed {seeds}).")
  rec = result["recommended_defaults"]
  lines.append(
      f"- Defaults these numbers favour (best tail; smallest K within the seed noise of "
      f"the best K; best alpha of those tried): `--label_method={rec['label_method']} "
      f"--truncation_factor={rec['truncation_factor']}`, `--kd_tail={rec['kd_tail']} "
      f"--alpha={rec['alpha']}`.")
  return lines


def speed_findings(result):
  g, f = result["goals"], result["flops"]
  ratio = g["step_speedup_offline_vs_online"]
  lines = [
      f"- Speed: with a teacher of {g['teacher_over_student_forward_flops']:.1f}x the "
      f"student's forward FLOPs, an online step takes {ratio['wall_seconds_per_step']:.2f}x "
      f"the wall time of an offline step ({ratio['cpu_seconds_per_step']:.2f}x the CPU "
      f"time; FLOPs predict {f['predicted_online_over_offline_step']['teacher']:.2f}x). "
      f"The 3x goal is {'met' if g['step_speedup_goal_3x_met'] else 'not met'} at this "
      f"ratio."]
  large = result["timing"]["ratio_over_offline"].get("online_teacher_large")
  if large:
    c, r3 = speed_fit(result)
    lines.append(
        f"- With the {f['teacher_large_over_student_forward']:.1f}x teacher (random weights, "
        f"timing only): {large['wall_seconds_per_step']:.2f}x wall, "
        f"{large['cpu_seconds_per_step']:.2f}x CPU (FLOPs predict "
        f"{f['predicted_online_over_offline_step']['teacher_large']:.2f}x). A line through "
        f"both (online/offline - 1 = {c:.3f} x teacher/student FLOPs) reaches 3x at a "
        f"teacher of about {r3:.0f}x the student.")
  lines.append(
      f"- The top-16 extraction cost {result['labels']['top16']['process']['cpu_seconds']:.0f} "
      f"CPU seconds, as much as the teacher's share of about "
      f"{break_even_steps(result):.0f} online steps; one student run here is "
      f"{STUDENT_STEPS} steps, and the cache served "
      f"{sum(1 for a in result['arms'] if a['labels'] == 'top16')} of them.")
  return lines


def findings(result):
  """Conclusions computed from the numbers (nothing here is typed in by hand)."""
  return "\n".join(accuracy_findings(result) + speed_findings(result))


def caveats(result):
  mass = result["teacher"]["eval"].get("teacher_topk_mass")
  return "\n".join([
      f"- The teacher is small and briefly trained, so it is uncertain: on held-out "
      f"positions its top 64 ids hold {_pct(mass)}% of its probability. A tail that large "
      f"is where the tail options differ most (as the tail mass goes to 0 all three "
      f"become the full KL).",
      "- MLM accuracy scores the argmax only (a sharp head wins); MLM loss scores the "
      "probability of the true token (matching the whole distribution wins). renormalize "
      "trains the student's ranking of the teacher's top K ids and leaves the rest to the "
      "hard labels; online, sampled and bucket fit the whole distribution.",
      "- Speed arithmetic: an online step costs the student's training (3 forwards) plus a "
      "teacher forward, so at equal efficiency online/offline = 1 + r/3 for a teacher of "
      "r times the student's forward FLOPs: 3x needs r >= 6 even then, and small students "
      "run below the matmul rate (per-step overheads), which lowers the ratio further.",
      "- One corpus (the 2.6 MB sample), tiny models, 600 steps: the ranking, not the "
      "absolute accuracy, is the result.",
  ])


REPRODUCE = """```bash
.venv/bin/python bench/distill_experiment.py            # work dir /tmp/distill_experiment
```

Resumable: rerunning skips every finished stage, arm and timing run (measurements
are kept in `<work_dir>/measurements.json`); delete the work dir to start over.
The settings are the constants at the top of `bench/distill_experiment.py`."""


def reproduce(result):
  minutes = result["environment"]["seconds_all_runs"] / 60
  return (f"{REPRODUCE}\n\nThe stages of this result took {minutes:.0f} minutes of wall "
          "time in all, on a 2-core machine shared with other jobs (the load average of "
          "each timing run is in the JSON).")


def setup_lines(result):
  s, t, f = result["setup"], result["teacher"], result["flops"]
  fwd = f["forward_per_sequence"]
  return "\n".join([
      f"- Data: the real sample dump (`../shared/data/enwiki-sample-pages-articles.xml.bz2`) "
      f"through the pipeline tools: {s['eval_fraction']:.0%} of pages held out, a "
      f"{s['vocab_size']}-entry WordPiece vocab from `build_vocab`, seq {s['max_seq_length']} "
      f"with {s['max_predictions_per_seq']} predictions. Distillation records (dupe "
      f"{s['distill_dupes']}): {s['records']['train_instances']} train + "
      f"{s['records']['eval_instances']} held-out instances; the teacher's records: dupe "
      f"{s['teacher_dupes']} of the same train pages.",
      f"- Teacher: {s['teacher']['num_hidden_layers']} layers, hidden "
      f"{s['teacher']['hidden_size']}, `tools/pretrain.py` "
      + ", then ".join(f"`{' '.join(p['flags'])}`" + (
          f" from {p['init_checkpoint']}'s weights" if p["init_checkpoint"] else "")
                       for p in t["phases"].values()) +
      f" (both `{' '.join(s['optimizer'])}`; {t['seconds']:.0f} s of training).",
      f"- Student (every arm): {s['student']['num_hidden_layers']} layers, hidden "
      f"{s['student']['hidden_size']}, `tools/distill.py {' '.join(s['student_train'])} "
      f"{' '.join(s['optimizer'])}`, T = 1, hard-label NSP loss; the same records, steps, "
      f"batch and seed in every arm ({s['student_steps']} steps x {s['student_batch']} = "
      f"{s['student_steps'] * s['student_batch']} sequences, about "
      f"{s['student_steps'] * s['student_batch'] / s['records']['train_instances']:.1f} "
      f"epochs).",
      f"- FLOPs per forward sequence: teacher {fwd['teacher'] / 1e6:.0f} M, student "
      f"{fwd['student'] / 1e6:.0f} M: the teacher is "
      f"**{f['teacher_over_student_forward']:.1f}x** the student.",
      f"- Held-out metrics: `tools/evaluate.py` on the held-out split of the top-64 cache "
      f"({t['eval_counts']['masked_positions']} masked positions in "
      f"{t['eval_counts']['examples']} sequences). agree = the student's argmax is the "
      f"teacher's top-1; KL = teacher_kl_topk, KL(teacher || student) over the teacher's "
      f"top 64 ids, both renormalised.",
      "- s/step: steady state of each arm's own run (first to last progress line), wall "
      "and CPU of the process. The arms ran one after another on a shared 2-core machine, "
      "so the interleaved timing runs below are the speed figures to quote.",
  ])


def markdown(result):
  t = result["teacher"]
  return f"""# Offline vs online distillation: is the label cache worth it?

Written by `bench/distill_experiment.py` (numbers: `bench/results/distill_experiment.json`).

## Setup

{setup_lines(result)}

## Results (held out)

Teacher: MLM accuracy {_pct(t['eval']['mlm_accuracy'])}%, top-5
{_pct(t['eval']['mlm_top5_accuracy'])}%.

{arms_table(result['groups'], result['labels'])}

![accuracy, cache bytes and step time](distillation_results.png)

## Label caches

{labels_table(result['labels'])}

## Step time, offline vs online

{TIMING_ROUNDS} rounds of {TIMING_STEPS}-step runs, the order rotating per round; steady
state from step {TIMING_LOG} to {TIMING_STEPS}; ratios are per round, then the median.

{timing_table(result['timing'], result['flops'])}

FLOPs: {result['flops']['formula']}.

## Conclusions

{findings(result)}

Caveats:

{caveats(result)}

## Reproduce

{reproduce(result)}
"""


def plot(result, path):
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  groups, labels = result["groups"], result["labels"]
  fig, axes = plt.subplots(1, 3, figsize=(17, 5.2), gridspec_kw={"width_ratios": [2.2, 1.3, 1]})
  ax = axes[0]
  names = list(groups)
  colors = {"hard": "tab:gray", "online": "tab:red", "offline": "tab:blue"}
  for i, name in enumerate(names):
    g = groups[name]
    ax.bar(i, 100 * g["mlm_accuracy"], color=colors[g["kind"]], alpha=0.7)
    ax.plot([i] * len(g["arms"]), [100 * a["eval"]["mlm_accuracy"] for a in g["arms"]],
            "k.", ms=5)
  for ref, style in ((groups["online"], "r--"), (groups["hard"], "k:")):
    ax.axhline(100 * ref["mlm_accuracy"], ls=style[1:], color=style[0], lw=1)
  ax.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=8)
  accs = [100 * a["eval"]["mlm_accuracy"] for g in groups.values() for a in g["arms"]]
  ax.set_ylim(min(accs) - 1.5, max(accs) + 1)
  ax.set_ylabel("held-out MLM accuracy (%)")
  ax.set_title("students (bars: mean, dots: seeds)")
  ax = axes[1]
  for tail, marker in (("renormalize", "o-"), ("bucket", "s"), ("ignore", "x")):
    pts = sorted((labels[g["labels"]]["cache_bytes_per_instance"], 100 * g["mlm_accuracy"])
                 for g in groups.values()
                 if g["kind"] == "offline" and g["kd_tail"] == tail and g["alpha"] == 0.5)
    if pts:
      ax.plot(*zip(*pts), marker, label=f"top-k, {tail}",
              color={"renormalize": "tab:blue", "bucket": "tab:orange",
                     "ignore": "tab:purple"}[tail])
  sampled = [g for g in groups.values() if g["labels"] and g["labels"].startswith("sampled")]
  for g in sampled:
    ax.plot(labels[g["labels"]]["cache_bytes_per_instance"], 100 * g["mlm_accuracy"], "D",
            color="tab:green", label=g["labels"])
  ax.axhline(100 * groups["online"]["mlm_accuracy"], color="r", ls="--", lw=1, label="online")
  ax.axhline(100 * groups["hard"]["mlm_accuracy"], color="k", ls=":", lw=1, label="hard only")
  ax.set_xscale("log")
  ax.set_xlabel("cache bytes per instance")
  ax.set_ylabel("held-out MLM accuracy (%)")
  ax.legend(fontsize=7)
  ax.set_title("accuracy vs cache size")
  ax = axes[2]
  med = result["timing"]["median"]
  cases = list(med)
  x = np.arange(len(cases))
  ax.bar(x - 0.2, [med[c]["wall_seconds_per_step"] for c in cases], 0.4, label="wall")
  ax.bar(x + 0.2, [med[c]["cpu_seconds_per_step"] for c in cases], 0.4, label="CPU")
  ax.set_xticks(x, [c.replace("_", "\n", 1) for c in cases], fontsize=8)
  ax.set_ylabel("seconds per step (median)")
  ax.legend(fontsize=8)
  ax.set_title("step time")
  fig.tight_layout()
  tmp = path + f".tmp.{os.getpid()}.png"
  fig.savefig(tmp, dpi=110)
  os.replace(tmp, path)


# ---------------------------------------------------------------- main


def total_seconds(w, meas, teacher):
  """Wall seconds of every stage over all (resumed) runs: teacher training,
  tools' processes, evaluations."""
  total = teacher["seconds"]
  for key, value in meas.data.items():
    if key not in dict((p[0], 0) for p in TEACHER_PHASES) and "wall_seconds" in value:
      total += value["wall_seconds"]
    elif key.startswith("timing/"):
      total += TIMING_STEPS * value["wall_seconds_per_step"]  # Lower bound.
  eval_dir = os.path.join(w, "eval")
  for name in os.listdir(eval_dir):
    total += read_json(os.path.join(eval_dir, name)).get("seconds", 0)
  return round(total)


def setup_summary(d):
  records = read_json(os.path.join(d["records"], "stats.json"))
  manifest = read_json(os.path.join(d["records"], "manifest.json"))
  counts = manifest.get("counts", {})
  return {"vocab_size": VOCAB_SIZE, "max_seq_length": SEQ, "max_predictions_per_seq": PREDS,
          "eval_fraction": EVAL_FRACTION, "distill_dupes": DISTILL_DUPES,
          "teacher_dupes": TEACHER_DUPES, "teacher": MODELS["teacher"],
          "student": MODELS["student"], "teacher_large_timing_only": MODELS["teacher_large"],
          "optimizer": OPTIMIZER,
          "student_train": STUDENT_TRAIN, "student_steps": STUDENT_STEPS,
          "student_batch": STUDENT_BATCH, "seeds": list(SEEDS),
          "records": {"train_instances": counts.get("train_instances"),
                      "eval_instances": counts.get("eval_instances"),
                      "masked_tokens": records.get("masked_tokens")}}


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--work_dir", default="/tmp/distill_experiment")
  parser.add_argument("--output", default=os.path.join(ROOT, "bench", "results",
                                                       "distill_experiment.json"))
  parser.add_argument("--docs_dir", default=os.path.join(ROOT, "docs"))
  args = parser.parse_args()
  if not os.path.exists(SAMPLE):
    print(f"distill_experiment: skipped: {SAMPLE} not found (the sample dump, see "
          "../shared/data/README.md)", file=sys.stderr)
    return
  start, load_start = time.monotonic(), os.getloadavg()
  w = args.work_dir
  os.makedirs(w, exist_ok=True)
  meas = Measurements(os.path.join(w, "measurements.json"))
  d = prepare(w, meas)
  teacher = train_teacher(w, d, meas)
  labels = extract_labels(w, d, meas)
  held_out = evaluate(w, d, d["teacher"], "teacher", meas, config=d["teacher_config"])
  teacher.update(eval=held_out["metrics"], eval_counts=held_out["counts"])
  arms = []
  for arm in ARMS:
    arms.append(run_arm(w, d, meas, arm))
    print(f"distill_experiment: {arms[-1]['key']}: mlm_accuracy "
          f"{arms[-1]['eval']['mlm_accuracy']:.4f}", flush=True)
  timing_summary = timing(w, d, meas)
  flops = flops_summary()
  groups = group_arms(arms)
  result = {"setup": setup_summary(d), "flops": flops, "teacher": teacher, "labels": labels,
            "arms": arms, "groups": {n: {k: v for k, v in g.items() if k != "arms"}
                                     for n, g in groups.items()},
            "timing": timing_summary, "tail_comparison": tail_comparison(groups),
            "goals": goals(groups, timing_summary, flops),
            "recommended_defaults": recommend(groups),
            "environment": {"cpu_count": os.cpu_count(),
                            "load_average_this_run_start": load_start,
                            "load_average_this_run_end": os.getloadavg(),
                            "seconds_this_run": round(time.monotonic() - start, 1),
                            "seconds_all_runs": total_seconds(w, meas, teacher),
                            "code_version": stage.code_version()}}
  report = dict(result, groups=groups)
  result["findings"] = findings(report).split("\n")
  os.makedirs(os.path.dirname(args.output), exist_ok=True)
  stage.atomic_write_text(args.output, json.dumps(result, indent=1, sort_keys=True) + "\n")
  os.makedirs(args.docs_dir, exist_ok=True)
  stage.atomic_write_text(os.path.join(args.docs_dir, "distillation_results.md"),
                          markdown(report))
  plot(report, os.path.join(args.docs_dir, "distillation_results.png"))
  print("\n".join(result["findings"]))


if __name__ == "__main__":
  main()
