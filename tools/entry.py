"""Console scripts (pyproject.toml's [project.scripts]) that run a tool as a script.

`bert-distill-<stage> FLAGS` does exactly what `python tools/<stage>.py FLAGS`
does: the tool's file runs as `__main__` (runpy), with tools/ first on
sys.path and argv[0] the tool's path, as Python sets them for a script. So the
flags, the help, the one-line errors and the exit status are the tool's own;
spawned pool workers re-import the same file, as they do for the script.

`tools.entry.<stage>` is the entry function of tools/<stage>.py for any
stage that has a script main (module __getattr__), so a new tool only needs its
line in pyproject.toml.
"""

import functools
import os
import runpy
import sys

TOOLS_DIR = os.path.dirname(os.path.abspath(__file__))


def tool_path(stage):
  """tools/<stage>.py, if it is a tool (a script with a main block), else None."""
  path = os.path.join(TOOLS_DIR, f"{stage}.py")
  if stage.startswith("_") or not os.path.isfile(path):
    return None
  with open(path, encoding="utf-8") as f:
    is_script = any(line.startswith('if __name__ == "__main__":') for line in f)
  return path if is_script else None


def run(stage):
  """Runs tools/<stage>.py as `python tools/<stage>.py` would; returns its exit status."""
  path = tool_path(stage)
  if path is None:
    raise ValueError(f"no tool named {stage!r} in {TOOLS_DIR}")
  if sys.path[:1] != [TOOLS_DIR]:
    sys.path.insert(0, TOOLS_DIR)  # the script's directory: `import _bootstrap` etc.
  runpy.run_path(path, run_name="__main__")  # sets argv[0] = path while it runs
  return 0  # absl's app.run exits itself; a tool that returns succeeded


def __getattr__(name):  # `from tools.entry import pretrain`, as a console script does
  if tool_path(name) is None:
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
  return functools.partial(run, name)
