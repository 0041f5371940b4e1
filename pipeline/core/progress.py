"""Progress lines with rate and ETA for long stages, and the end-of-stage summary."""

import sys
import time


def format_duration(seconds):
  seconds = int(max(0, seconds))
  h, rem = divmod(seconds, 3600)
  m, s = divmod(rem, 60)
  return f"{h}h{m:02d}m{s:02d}s" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


def _human(n):
  if isinstance(n, float) and n < 1000:
    return f"{n:.1f}"
  for unit in ("", "k", "M", "G"):
    if abs(n) < 1000:
      return f"{n:.0f}{unit}" if unit == "" else f"{n:.1f}{unit}"
    n /= 1000.0
  return f"{n:.1f}T"


class Progress:
  """Prints `[stage] done/total unit  rate unit/s  ETA` at most every `interval` s.

  `total` may be None (rate only). Output goes to stderr so stdout stays clean
  for the one-line summary.
  """

  def __init__(self, stage, total=None, unit="items", interval=5.0, enabled=True,
               stream=None):
    self.stage, self.total, self.unit = stage, total, unit
    self.interval, self.enabled = interval, enabled
    self.stream = stream or sys.stderr
    self.done = 0
    self.start = self._last = time.monotonic()

  def update(self, n=1):
    self.done += n
    now = time.monotonic()
    if self.enabled and now - self._last >= self.interval:
      self._last = now
      self._print(now)

  def _print(self, now):
    elapsed = max(now - self.start, 1e-9)
    rate = self.done / elapsed
    line = f"[{self.stage}] {_human(self.done)}"
    if self.total:
      line += f"/{_human(self.total)} {self.unit} ({100.0 * self.done / self.total:.1f}%)"
      eta = (self.total - self.done) / rate if rate > 0 else float("inf")
      line += f"  {_human(rate)} {self.unit}/s  ETA {format_duration(eta) if eta != float('inf') else '?'}"
    else:
      line += f" {self.unit}  {_human(rate)} {self.unit}/s  elapsed {format_duration(elapsed)}"
    print(line, file=self.stream, flush=True)

  def elapsed(self):
    return time.monotonic() - self.start
