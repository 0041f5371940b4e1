"""Significance tests for "arm A beats arm B" on the same test items (paired).

paired_bootstrap: per-item scores of two systems on the same items (accuracy
0/1, SQuAD F1 per question, ...), resampled with replacement; the p-value is
the share of resamples where A's mean does not exceed B's (one-sided,
Koehn 2004 / Berg-Kirkpatrick et al. 2012 style). mcnemar: the exact binomial
test on the discordant pairs of two classifiers' correct/incorrect outcomes.
Deterministic given the seed.
"""

import math

import numpy as np


def paired_bootstrap(a, b, samples=10000, seed=0):
  """{"mean_a", "mean_b", "diff", "p_value", "samples"}: H1 mean(a) > mean(b)."""
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  if a.shape != b.shape or a.ndim != 1 or not len(a):
    raise ValueError("paired_bootstrap needs two equal-length 1-D score arrays")
  rng = np.random.default_rng(seed)
  idx = rng.integers(0, len(a), (samples, len(a)))
  diffs = a[idx].mean(1) - b[idx].mean(1)
  return {"mean_a": float(a.mean()), "mean_b": float(b.mean()),
          "diff": float(a.mean() - b.mean()),
          "p_value": float((np.sum(diffs <= 0) + 1) / (samples + 1)), "samples": samples}


def mcnemar(correct_a, correct_b):
  """{"a_only", "b_only", "p_value"}: exact one-sided test that A is right more often."""
  a, b = np.asarray(correct_a, bool), np.asarray(correct_b, bool)
  a_only, b_only = int(np.sum(a & ~b)), int(np.sum(~a & b))
  n = a_only + b_only
  # P(X >= a_only) for X ~ Binomial(n, 1/2).
  p = sum(math.comb(n, k) for k in range(a_only, n + 1)) / 2 ** n if n else 1.0
  return {"a_only": a_only, "b_only": b_only, "p_value": float(p)}


def mean_std(values):
  values = np.asarray(values, np.float64)
  return float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else 0.0
