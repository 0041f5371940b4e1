"""bench/task_recipe.py's arms without training: the pretrained twin's flags, which
arms a student may have, and which twin the issue's goal is tested against."""

import os
import sys
import types

import numpy as np
import pytest

from tests.conftest import ROOT

sys.path.insert(0, os.path.join(ROOT, "bench"))
import task_recipe  # noqa: E402  pylint: disable=wrong-import-position
import task_recipe_report as report  # noqa: E402  pylint: disable=wrong-import-position
import task_recipe_runs as rr  # noqa: E402  pylint: disable=wrong-import-position

TEACHER = ("--init_from=teacher_layers", "--teacher_config=ft/bert_config.json",
           "--teacher_checkpoint=ft/best")
PRETRAINED = ("--init_from=teacher_layers", "--teacher_config=pre/bert_config.json",
              "--teacher_checkpoint=pre")


def _ctx(tmp_path):
  return types.SimpleNamespace(
      work_dir=str(tmp_path), vocab_file="vocab.txt", labels="labels", rows=100,
      aug_labels="aug_labels", aug_rows=500, batch_size=10, student_lr=1e-4, alpha=0.5,
      temperature=2.0, seeds=[1, 2, 3], phase1_passes=1.0, teacher_config="ft/bert_config.json",
      teacher="ft/best")


def _student(arms):
  return rr.Student("own3l_e1", "own3l", "3 layers", "own_3l.json", TEACHER, 1.0, 0.4, arms,
                    PRETRAINED)


def test_the_pretrained_twin_starts_from_the_pretrained_layers_with_hard_labels(tmp_path):
  ctx = _ctx(tmp_path)
  runs = {r.arm: r for r in rr.planned_runs(ctx, [_student(("no_teacher", "pretrained", "kd"))])
          if r.seed == 1}
  twin, same_init, kd = runs["pretrained"], runs["no_teacher"], runs["kd"]
  assert twin.name == "own3l_e1_pretrained_s1" and twin.steps == 10
  assert "--alpha=1" in twin.flags and "--teacher_checkpoint=pre" in twin.flags
  assert not any(f.startswith("--teacher_checkpoint=ft") for f in twin.flags)
  assert "--teacher_checkpoint=ft/best" in same_init.flags and "--alpha=1" in same_init.flags
  assert "--alpha=0.5" in kd.flags and "--teacher_checkpoint=ft/best" in kd.flags
  # Every other flag is the same: the init is the only difference between the twins.
  strip = lambda r: [f for f in r.flags if not f.startswith("--teacher_")]
  assert strip(twin) == strip(same_init)


def test_a_pretrained_arm_without_its_pretrained_start_is_refused(tmp_path):
  student = rr.Student("own3l_e1", "own3l", "3 layers", "own_3l.json", TEACHER, 1.0, 0.4,
                       ("no_teacher", "pretrained"))
  with pytest.raises(ValueError, match="pretrained start"):
    rr.planned_runs(_ctx(tmp_path), [student])


@pytest.mark.parametrize("argv, message", [
    (["--tiny_arms=no_teacher,pretrained"], "--tiny_arms"),
    (["--quick", "--own_students=2:1:no_teacher+pretrained"], "--quick"),
])
def test_arms_that_cannot_exist_are_refused(argv, message, capsys):
  with pytest.raises(SystemExit):
    task_recipe.parse_args(argv)
  assert message in capsys.readouterr().err


def test_defaults_give_own_students_the_pretrained_twin_and_tiny_none():
  args = task_recipe.parse_args([])
  assert "pretrained" not in args.tiny_arms
  assert all("pretrained" in arms for _, _, arms in args.own_students)


def _arm(correct, kept, p=None):
  e = {"test": {"mean": float(np.mean(correct))}, "kept": kept,
       "latency_ms": {"mean": 2.0}, "dev": {"mean": kept}}
  for twin, value in (p or {}).items():
    e["vs_" + twin] = {"pooled_bootstrap": {"p_value": value}}
  return e


def test_the_goal_is_tested_against_the_student_with_no_teacher_at_all():
  teacher = {"latency_ms": {"mean": 8.0}}
  own = {"no_teacher": _arm([1, 1, 0], 0.99, {"pretrained": 0.2}),
         "pretrained": _arm([1, 0, 0], 0.97, {"no_teacher": 0.9}),
         "kd": _arm([1, 1, 1], 0.995, {"no_teacher": 0.3, "pretrained": 0.01})}
  goal = report._goal(_student(tuple(own)), own, "kd", teacher)  # pylint: disable=protected-access
  assert (goal["twin"], goal["p_value"], goal["significant"], goal["p_same_init"]) == (
      "pretrained", 0.01, True, 0.3)
  assert goal["keeps"] and goal["speedup"] == 4.0
  tiny = {"no_teacher": _arm([1, 0], 0.9), "kd": _arm([1, 1], 0.95, {"no_teacher": 0.2})}
  goal = report._goal(  # pylint: disable=protected-access
      types.SimpleNamespace(key="tiny"), tiny, "kd", teacher)
  assert (goal["twin"], goal["p_value"], goal["significant"], goal["need"]) == (
      "no_teacher", 0.2, False, 0.97)
