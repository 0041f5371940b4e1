"""The students, arms and runs of bench/task_recipe.py, and their cost model.

Arms (every student x arm x seed is one or two tools/distill.py runs on the
teacher-labelled records, with the same student, init, batch and lr):

  no_teacher  --alpha=1 (hard labels only; the twin every arm is tested against)
  pretrained  --alpha=1 from the *pretrained* model the teacher was fine-tuned
              from (own-layer students only: the same layers before the teacher's
              fine-tuning), so no teacher at all; BERT-tiny's no_teacher already is
  kd          --alpha --temperature on the originals (final layer only, as today)
  inter       phase 1 (--distill_phase=backbone: hidden MSE + attention KL to the
              fine-tuned teacher, online) then phase 2 (= kd) on the originals
  aug         kd on originals + teacher-labelled variants (CE on the originals only)
  all         phase 1 and phase 2 on originals + variants

Phase 1 always has the same number of steps (phase1_passes over the originals'
row count), whatever its data, so inter and all differ in the inputs only.
"""

import dataclasses
import json
import math
import os
import re

ARMS = ("no_teacher", "pretrained", "kd", "inter", "aug", "all")
BASELINES = ("no_teacher", "pretrained")  # Hard labels only: the twins, not distilled.
PARTS = {"no_teacher": (False, False, False), "pretrained": (False, False, False),
         "kd": (True, False, False),
         "inter": (True, True, False), "aug": (True, False, True), "all": (True, True, True)}


@dataclasses.dataclass(frozen=True)
class Student:
  key: str  # tiny | own<L>l_e<epochs>: run names
  arch: str  # tiny | own<L>l: the cost model's unit (seconds per step)
  title: str
  config: str  # bert_config.json or a bundled name
  init_flags: tuple  # distill.py flags of its init (teacher_layers: + the teacher's)
  epochs: float  # over the originals
  aug_epochs: float  # over originals + variants
  arms: tuple
  pretrained_flags: tuple = ()  # The pretrained arm's init (own-layer students).


@dataclasses.dataclass
class Run:
  name: str  # <student>_<arm>_s<seed>[_p1]
  student: str
  arch: str
  arm: str
  seed: int
  phase: str  # single | phase1 | phase2
  flags: list
  out: str
  rows: int  # train rows of its data
  epochs: float
  batch: int

  @property
  def steps(self):
    return math.ceil(self.rows * self.epochs / self.batch)

  @property
  def kind(self):
    return f"{self.arch}:{'phase1' if self.phase == 'phase1' else 'train'}"


def planned_runs(ctx, students):
  """Every training run in order (phase 1 right before its phase 2)."""
  runs = []
  for s in students:
    for seed in ctx.seeds:
      for arm in s.arms:
        runs += arm_runs(ctx, s, arm, seed)
  return runs


def arm_runs(ctx, s, arm, seed):
  uses_teacher, inter, aug = PARTS[arm]
  labels, rows = (ctx.aug_labels, ctx.aug_rows) if aug else (ctx.labels, ctx.rows)
  epochs = s.aug_epochs if aug else s.epochs
  base = [f"--student_config={s.config}", f"--vocab_file={ctx.vocab_file}",
          f"--teacher_labels_dir={labels}", f"--train_batch_size={ctx.batch_size}",
          f"--learning_rate={ctx.student_lr}", f"--seed={seed}", "--log_every_steps=20"]
  name = f"{s.key}_{arm}_s{seed}"
  out = os.path.join(ctx.work_dir, "runs", name)
  loss = ([f"--alpha={ctx.alpha:g}", f"--temperature={ctx.temperature:g}"] if uses_teacher
          else ["--alpha=1"])
  if not inter:
    if arm == "pretrained" and not s.pretrained_flags:  # else it would start from random
      raise ValueError(f"{s.key}: the pretrained arm needs its pretrained start")
    init = s.pretrained_flags if arm == "pretrained" else s.init_flags
    return [Run(name, s.key, s.arch, arm, seed, "single", base + list(init) + loss, out, rows,
                epochs, ctx.batch_size)]
  p1_out = out + "_p1"
  p1_epochs = ctx.phase1_passes * ctx.rows / rows
  teacher = [f"--teacher_config={ctx.teacher_config}", f"--teacher_checkpoint={ctx.teacher}"]
  init = [f for f in s.init_flags if not f.startswith("--teacher_")]
  phase1 = base + init + teacher + [
      "--distill_phase=backbone", "--hidden_mse_weight=1", "--attention_kl_weight=1",
      f"--num_train_epochs={p1_epochs:.6g}", f"--output_dir={p1_out}"]
  phase2 = base + loss + ["--init_from=checkpoint", f"--init_checkpoint={p1_out}"]
  return [Run(name + "_p1", s.key, s.arch, arm, seed, "phase1", phase1, p1_out, rows, p1_epochs,
              ctx.batch_size),
          Run(name, s.key, s.arch, arm, seed, "phase2", phase2, out, rows, epochs, ctx.batch_size)]


def tool_flags(run):
  flags = list(run.flags)
  if run.phase != "phase1":
    flags += [f"--num_train_epochs={run.epochs:.6g}", f"--output_dir={run.out}"]
  return flags


# ---------------------------------------------------------------- cost model


def read_timings(timing_dir):
  """{name: run_tool's record} of every finished child run."""
  out = {}
  if os.path.isdir(timing_dir):
    for f in sorted(os.listdir(timing_dir)):
      with open(os.path.join(timing_dir, f), encoding="utf-8") as fh:
        out[f[:-5]] = json.load(fh)
  return out


def rates(timings):
  """{kind: {"cpu", "wall"} seconds per step} measured on the runs done so far
  (whole runs: start-up and per-epoch evaluation included)."""
  sums = {}
  for t in timings.values():
    if t.get("kind") and t.get("train_steps"):
      acc = sums.setdefault(t["kind"], [0.0, 0.0, 0])
      acc[0] += t["cpu_seconds"]
      acc[1] += t["wall_seconds"]
      acc[2] += t["train_steps"]
  return {k: {"cpu": c / n, "wall": w / n, "source": "measured"}
          for k, (c, w, n) in sums.items()}


def slope(steps):
  """CPU and wall seconds per step between the first and last logged step."""
  (s0, w0, c0), (s1, w1, c1) = steps[0], steps[-1]
  return {"cpu": (c1 - c0) / (s1 - s0), "wall": (w1 - w0) / (s1 - s0)}


_OWN = re.compile(r"^own(\d+)l:(train|phase1)$")


def _scaled_own(kind, known):
  """own<L>l from another own<L'>l rate, times L / L' (the encoder layers are the
  step's cost; embeddings and head are small beside them)."""
  match = _OWN.match(kind)
  for other, rate in sorted(known.items()) if match else ():
    seen = _OWN.match(other)
    if seen and seen.group(2) == match.group(2):
      factor = int(match.group(1)) / int(seen.group(1))
      return {"cpu": rate["cpu"] * factor, "wall": rate["wall"] * factor,
              "source": "modelled"}
  return None


def rate_for(kind, measured, calibration):
  """Measured, else calibrated, else modelled (an own-layer student of another
  depth: scaled by its layers; phase 1 = the student's step + a teacher forward
  pass, a third of a teacher training step)."""
  if kind in measured:
    return measured[kind]
  if kind in calibration:
    return dict(calibration[kind], source="calibration")
  scaled = _scaled_own(kind, measured) or _scaled_own(kind, calibration)
  if scaled:
    return scaled
  student, what = kind.split(":")
  teacher = measured.get("teacher:train") or calibration.get("teacher:train")
  base = (measured.get(f"{student}:train") or calibration.get(f"{student}:train") or
          _scaled_own(f"{student}:train", measured))
  if what == "phase1" and teacher and base:
    return {k: base[k] + teacher[k] / 3 for k in ("cpu", "wall")} | {"source": "modelled"}
  return None
