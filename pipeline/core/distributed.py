"""Splitting work between mpirun ranks for the data stages (mpi4py).

mpi4py is imported only when the process was started by an MPI launcher, so a
plain `python tools/x.py` never initialises MPI.
"""

import os
import sys

_LAUNCHER_VARS = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE", "MV2_COMM_WORLD_SIZE")


def launched_by_mpi():
  for var in _LAUNCHER_VARS:
    if int(os.environ.get(var, "1") or 1) > 1:
      return True
  return False


class World:
  """rank/size and collective helpers; a single-process world without MPI."""

  def __init__(self):
    self.comm = None
    self.rank, self.size = 0, 1
    if launched_by_mpi():
      from mpi4py import MPI  # pylint: disable=import-outside-toplevel
      self.comm = MPI.COMM_WORLD
      self.rank, self.size = self.comm.Get_rank(), self.comm.Get_size()

  @property
  def is_chief(self):
    return self.rank == 0

  def barrier(self):
    if self.comm is not None:
      self.comm.Barrier()

  def bcast(self, obj):
    return obj if self.comm is None else self.comm.bcast(obj, root=0)

  def all_ok(self, ok):
    """True when every rank reports ok: lets ranks fail together, not hang."""
    return ok if self.comm is None else all(self.comm.allgather(bool(ok)))

  def my_items(self, items):
    """Round-robin share of `items` for this rank (deterministic)."""
    return list(items)[self.rank::self.size]


def run_collectively(world, fn):
  """Runs fn() on every rank; if any rank fails, all ranks exit non-zero.

  The failing rank re-raises its own exception (so its one-line error or
  traceback is printed); the others exit quietly with status 1 instead of
  waiting forever at the next barrier.
  """
  error = None
  try:
    result = fn()
  except BaseException as e:  # pylint: disable=broad-except
    error, result = e, None
  if not world.all_ok(error is None):
    if error is not None:
      raise error
    sys.exit(1)
  return result
