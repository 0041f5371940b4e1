"""Puts the repository root on sys.path so `python tools/<stage>.py` works from
any directory, and quiets TensorFlow's C++ start-up logging for tools that load it."""

import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
  sys.path.insert(0, ROOT)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
