"""What a user sees of every tool before it does anything: a start without
TensorFlow's C++ notices, a `--helpfull` without absl's testing flags
(tools/_bootstrap.py), and console scripts that are the tools themselves
(pyproject.toml, tools/entry.py)."""

import functools
import os
import re
import subprocess
import sys
import textwrap
import tomllib

import pytest

from tests.conftest import ROOT, tool_env

TOOLS_DIR = os.path.join(ROOT, "tools")
TOOLS = sorted(name[:-3] for name in os.listdir(TOOLS_DIR)
               if name.endswith(".py") and not name.startswith("_")
               and re.search(r'^if __name__ == "__main__":', open(os.path.join(TOOLS_DIR, name)
                                                                   ).read(), re.M))
# TensorFlow 2.18's start-up lines on a CPU-only machine.
NOISE = ("Unable to register", "cuDNN", "cuFFT", "cuBLAS", "CUDA error", "cuda_dnn.cc",
         "cuInit", "could not find cuda drivers", "TF-TRT", "oneDNN", "absl::InitializeLog")
TESTING_FLAGS = ("absl.testing", "--test_srcdir", "--test_tmpdir", "--test_random_seed",
                 "--test_randomize_ordering_seed", "--xml_output_file")


def _env():
  """The tools' environment without the suite's TF_CPP_MIN_LOG_LEVEL=3: a user's."""
  env = tool_env()
  env.pop("TF_CPP_MIN_LOG_LEVEL")
  return env


def _run(cmd, **kwargs):
  return subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=300, **kwargs)


@functools.cache
def _helpfull(tool):
  return _run([sys.executable, os.path.join(TOOLS_DIR, f"{tool}.py"), "--helpfull"])


def _assert_quiet(stderr):
  found = [n for n in NOISE if n.lower() in stderr.lower()]
  assert not found, stderr


def test_every_tool_is_found():
  assert {"pretrain", "evaluate", "fetch_task_data", "extract_wiki"} <= set(TOOLS)


@pytest.mark.parametrize("tool", TOOLS)
def test_helpfull_is_quiet_and_lists_no_testing_flags(tool):
  proc = _helpfull(tool)
  assert f"tools/{tool}.py:" in proc.stdout, proc.stderr  # the tool's own flags are listed
  _assert_quiet(proc.stderr)
  assert not [f for f in TESTING_FLAGS if f in proc.stdout], proc.stdout


def test_a_real_tensorflow_run_is_quiet_and_its_error_still_shows(tmp_path):
  """evaluate loads TensorFlow, queries devices, then refuses the missing input."""
  proc = _run([sys.executable, os.path.join(TOOLS_DIR, "evaluate.py"),
               f"--checkpoint={tmp_path / 'none'}", f"--input_dir={tmp_path / 'none'}",
               f"--output_json={tmp_path / 'eval.json'}"])
  assert proc.returncode != 0
  _assert_quiet(proc.stderr)
  assert proc.stderr.strip().splitlines()[-1].startswith("error: "), proc.stderr


_FAKE_TENSORFLOW = '''
import os, sys, types
os.write(2, b"E0000 cuda_dnn.cc:8310] Unable to register cuDNN factory: already registered\\n")
os.write(2, b"W a real C++ warning\\n")
print("a Python warning", file=sys.stderr)
config = types.SimpleNamespace(list_physical_devices=lambda kind: [])
if os.environ.get("FAKE_TF_BROKEN"):
  raise ImportError("a broken build")
'''
_IMPORT_IT = textwrap.dedent("""
    import sys
    sys.path[:0] = [{fake!r}, {tools!r}]
    import _bootstrap
    import tensorflow
    print("after the import", file=sys.stderr)
""")


@pytest.mark.parametrize("broken", [False, True])
def test_the_import_window_drops_only_the_notices(tmp_path, broken):
  """Real warnings and errors raised while TensorFlow loads still reach stderr, in order."""
  (tmp_path / "tensorflow").mkdir()
  (tmp_path / "tensorflow" / "__init__.py").write_text(_FAKE_TENSORFLOW)
  env = dict(_env(), FAKE_TF_BROKEN="1" if broken else "")
  proc = subprocess.run(
      [sys.executable, "-c", _IMPORT_IT.format(fake=str(tmp_path), tools=TOOLS_DIR)],
      capture_output=True, text=True, env=env, timeout=60)
  lines = proc.stderr.splitlines()
  assert lines[:2] == ["W a real C++ warning", "a Python warning"], proc.stderr
  _assert_quiet(proc.stderr)
  if broken:
    assert proc.returncode == 1 and lines[-1] == "ImportError: a broken build", proc.stderr
  else:
    assert proc.returncode == 0 and lines[2:] == ["after the import"], proc.stderr


def _console_scripts():
  with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
    return tomllib.load(f)["project"]["scripts"]


def test_one_console_script_per_tool_pointing_at_it():
  scripts = _console_scripts()
  targets = {}
  for script, target in scripts.items():
    module, _, attr = target.partition(":")
    assert module == "tools.entry" and script == "bert-distill-" + attr.replace("_", "-")
    targets[attr] = script
  assert sorted(targets) == TOOLS
  from tools import entry  # pylint: disable=import-outside-toplevel
  for attr in targets:
    assert entry.tool_path(attr) == os.path.join(TOOLS_DIR, f"{attr}.py")
    assert callable(getattr(entry, attr))
  with pytest.raises(AttributeError):
    getattr(entry, "_bootstrap")


_CONSOLE_SCRIPT = textwrap.dedent("""
    import sys
    sys.path.insert(0, {root!r})
    from tools.entry import {attr}
    sys.argv[0] = {script!r}  # what pip's wrapper leaves there
    sys.exit({attr}())
""")


@pytest.mark.parametrize("args", [["--helpfull"], [], ["--output_dir=/dev/null/x"]])
def test_console_script_behaves_like_the_tool(args, tmp_path):
  """Same stdout, stderr and exit status as `python tools/fetch_task_data.py`
  (help, an absl flag error, one of the tool's own one-line errors)."""
  code = _CONSOLE_SCRIPT.format(root=ROOT, attr="fetch_task_data",
                                script="bert-distill-fetch-task-data")
  via_entry = _run([sys.executable, "-c", code, *args], cwd=tmp_path)
  direct = _run([sys.executable, os.path.join(TOOLS_DIR, "fetch_task_data.py"), *args],
                cwd=tmp_path)
  assert (via_entry.returncode, via_entry.stdout, via_entry.stderr) == \
      (direct.returncode, direct.stdout, direct.stderr)
  assert direct.returncode != 0 and (direct.stdout or direct.stderr)
