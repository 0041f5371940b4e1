"""Imported first by every tool: the repository root on sys.path (so
`python tools/<stage>.py` works from any directory), then a quiet TensorFlow start
(no CUDA noise on CPU, no absl testing flags: pipeline/core/startup.py)."""

import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
  sys.path.insert(0, ROOT)

from pipeline.core import startup  # noqa: E402  pylint: disable=wrong-import-position

startup.quiet_tensorflow()
