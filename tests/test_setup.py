"""The installed environment: imports, and Horovod's allreduce under real mpirun."""

import os
import shutil
import subprocess
import sys
import textwrap

import pytest

from tests.conftest import MPIRUN, tool_env


def test_core_imports():
  code = ("import tensorflow, tensorflow_text, horovod.tensorflow, mpi4py, "
          "wikiextractor.extract, tokenizers, blingfire")
  proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                        env=tool_env(), timeout=300)
  assert proc.returncode == 0, proc.stderr[-2000:]


def test_horovod_allreduce_under_mpirun(tmp_path):
  if shutil.which("mpirun") is None:
    pytest.skip("mpirun not installed (launch/setup.sh installs Open MPI)")
  script = tmp_path / "allreduce.py"
  script.write_text(textwrap.dedent("""
      import tensorflow as tf
      import horovod.tensorflow as hvd
      hvd.init()
      total = hvd.allreduce(tf.constant([float(hvd.rank() + 1)]), op=hvd.Sum)
      print(f"rank={hvd.rank()} size={hvd.size()} sum={float(total.numpy()[0])}")
  """))
  proc = subprocess.run(MPIRUN + ["-np", "2", sys.executable, str(script)],
                        capture_output=True, text=True, env=tool_env(), timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  lines = sorted(l for l in proc.stdout.splitlines() if l.startswith("rank="))
  assert lines == ["rank=0 size=2 sum=3.0", "rank=1 size=2 sum=3.0"]
