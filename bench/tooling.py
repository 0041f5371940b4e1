"""Running a tool from a benchmark script: the one helper every bench script uses.

A benchmark measures tools as users run them (`python tools/<tool>.py`), in a
child process of their own, so its wall and CPU seconds and peak RSS are the
tool's alone (os.wait4's rusage of that child).
"""

import os
import re
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VENV_PY = os.path.join(ROOT, ".venv", "bin", "python")
PY = VENV_PY if os.path.exists(VENV_PY) else sys.executable
# The trainer's progress line: "[train] step N/M ...".
STEP_LINE = re.compile(r"\[train\] step (\d+)/(\d+)")
_TICK = os.sysconf("SC_CLK_TCK")


def _cpu_seconds(pid):
  """utime + stime of a live process (all its threads), or None."""
  try:
    with open(f"/proc/{pid}/stat") as f:
      fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK
  except (OSError, IndexError, ValueError):
    return None


def run_tool(tool, args, log_path=None, stop_at_step=None, env=None):
  """Runs tools/<tool>.py with `args`; raises RuntimeError (with the output's tail)
  when it fails.

  Args:
    log_path: where its stdout + stderr go (default: kept in memory).
    stop_at_step: terminate it once that training step is logged (timing runs:
      the final eval is not wanted).
    env: extra environment variables.
  Returns:
    {"wall_seconds", "cpu_seconds", "max_rss_mb", "steps": [(step, wall, CPU so
    far)] of the "[train] step" lines, "output": the tail of its output}.
  """
  cmd = [PY, os.path.join(ROOT, "tools", tool + ".py"), *args]
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONUNBUFFERED="1", **(env or {}))
  if log_path:
    os.makedirs(os.path.dirname(os.path.abspath(log_path)), exist_ok=True)
  start, steps, stopped, lines = time.monotonic(), [], False, []
  with open(log_path or os.devnull, "w", encoding="utf-8") as log:
    log.write(" ".join(cmd) + "\n")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env=env, cwd=ROOT)
    for line in proc.stdout:
      log.write(line)
      log.flush()  # so that a user can follow the run in its log
      lines = (lines + [line])[-200:]
      match = STEP_LINE.search(line)
      if match:
        step = int(match.group(1))
        steps.append((step, time.monotonic() - start, _cpu_seconds(proc.pid)))
        if stop_at_step is not None and step >= stop_at_step and not stopped:
          proc.terminate()  # Our own child, by its pid.
          stopped = True
    _, status, usage = os.wait4(proc.pid, 0)
  tail = "".join(lines)[-3000:]
  code = os.waitstatus_to_exitcode(status)
  if code and not stopped:
    raise RuntimeError(f"{tool} failed (exit {code}){', log ' + log_path if log_path else ''}:"
                       f"\n{tail}")
  return {"wall_seconds": round(time.monotonic() - start, 2),
          "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 2),
          "max_rss_mb": usage.ru_maxrss / 1024.0, "steps": steps, "output": tail}
