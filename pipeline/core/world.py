"""The processes of one job: a single process, MPI ranks, or Horovod ranks.

Every stage and every training run talks to one `World`: rank and size, the
rank's index on its machine (to pick a GPU or a share of the cores), and the
collectives they use. Three backends behind the same methods:

  single   one process; every collective is the identity.
  mpi      mpi4py's COMM_WORLD: the data and label stages under mpirun.
  horovod  horovod.tensorflow: training under mpirun (its collectives run over
           MPI too). `horovod.tensorflow` is used, not its Keras binding, which
           does not support Keras 3; Keras 3 variables wrap a tf.Variable, so
           every Horovod call gets the underlying `.value`.

mpi4py, Horovod and TensorFlow are imported only by the backend that needs
them, so a plain `python tools/x.py` never initialises MPI and the data
stages' worker processes never import TensorFlow.
"""

import os
import sys

import numpy as np

# Set by mpirun / srun / hydra in every rank of a job of more than one process.
_LAUNCHER_VARS = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE", "MV2_COMM_WORLD_SIZE")


def launched_by_mpi():
  """True when an MPI launcher started this process as one of several ranks."""
  for var in _LAUNCHER_VARS:
    if int(os.environ.get(var, "1") or 1) > 1:
      return True
  return False


def tf_variables(variables):
  """Keras 3 variables -> their tf.Variable (others pass through)."""
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  return [v if isinstance(v, tf.Variable) else v.value for v in variables]


def cpu_count():
  """Cores this process may run on (the affinity mask, not the machine's)."""
  if hasattr(os, "sched_getaffinity"):
    return len(os.sched_getaffinity(0))
  return os.cpu_count() or 1


class _Single:
  """Rank 0 of 1."""
  rank, size, local_rank, local_size = 0, 1, 0, 1

  def barrier(self):
    pass

  def broadcast_object(self, obj):
    return obj

  def allreduce_sum(self, values):
    return np.asarray(values, np.float64)


class _Mpi:
  """mpi4py's COMM_WORLD; the local ranks share a machine (COMM_TYPE_SHARED)."""

  def __init__(self):
    from mpi4py import MPI  # pylint: disable=import-outside-toplevel
    self.comm = MPI.COMM_WORLD
    self.rank, self.size = self.comm.Get_rank(), self.comm.Get_size()
    local = self.comm.Split_type(MPI.COMM_TYPE_SHARED)
    self.local_rank, self.local_size = local.Get_rank(), local.Get_size()

  def barrier(self):
    self.comm.Barrier()

  def broadcast_object(self, obj):
    return self.comm.bcast(obj, root=0)

  def allreduce_sum(self, values):
    return self.comm.allreduce(np.asarray(values, np.float64))


class _Horovod:
  """hvd.init() and Horovod's collectives (all ranks must call them alike)."""

  def __init__(self):
    import horovod.tensorflow as hvd  # pylint: disable=import-outside-toplevel
    hvd.init()
    self.hvd = hvd
    self.rank, self.size = hvd.rank(), hvd.size()
    self.local_rank, self.local_size = hvd.local_rank(), hvd.local_size()

  def barrier(self):
    # horovod.tensorflow 0.28 has no barrier(): a tiny allreduce is one.
    self.allreduce_sum([0.0])

  def broadcast_object(self, obj):
    return self.hvd.broadcast_object(obj, root_rank=0)

  def allreduce_sum(self, values):
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    tensor = tf.constant(np.asarray(values, np.float64))
    return self.hvd.allreduce(tensor, op=self.hvd.Sum).numpy()


class World:
  """rank/size, the local rank, and the collectives of the job's backend."""

  def __init__(self, backend="single"):
    if backend not in BACKENDS:
      raise ValueError(f"unknown world backend {backend!r}; one of {sorted(BACKENDS)}")
    self.backend = backend
    self._impl = BACKENDS[backend]()
    self.rank, self.size = self._impl.rank, self._impl.size
    self.local_rank, self.local_size = self._impl.local_rank, self._impl.local_size

  @property
  def is_chief(self):
    return self.rank == 0

  def describe(self):
    """'1 process' or 'rank 0 of 8 (horovod)', for a run's first line."""
    if self.size == 1:
      return "1 process"
    return f"rank {self.rank} of {self.size} ({self.backend})"

  def barrier(self):
    self._impl.barrier()

  def broadcast_object(self, obj):
    """Rank 0's `obj` on every rank (a picklable Python object)."""
    return self._impl.broadcast_object(obj)

  def allreduce_sum(self, values):
    """Element-wise sum over ranks of a small float vector (metrics), float64."""
    return self._impl.allreduce_sum(values)

  def all_ok(self, ok):
    """True when every rank reports ok: lets ranks fail together, not hang."""
    if self.size == 1:
      return bool(ok)
    return float(self.allreduce_sum([0.0 if ok else 1.0])[0]) == 0.0

  def my_items(self, items):
    """Round-robin share of `items` for this rank (deterministic)."""
    return list(items)[self.rank::self.size]

  # Training collectives: the identity in one process, Horovod's otherwise.

  def broadcast_variables(self, variables):
    """Rank 0's values into every rank's copy (initial model + optimizer)."""
    if self.size > 1:
      self._horovod().broadcast_variables(tf_variables(variables), root_rank=0)

  def wrap_tape(self, tape):
    if self.size == 1:
      return tape
    # Dense allreduce: the word-embedding gradient is dense anyway (tied MLM
    # output weights) and the token-type table is tiny.
    return self._horovod().DistributedGradientTape(tape, sparse_as_dense=True)

  def allreduce_gradients(self, gradients):
    """Mean over ranks of a list of dense gradients, in one fused group."""
    if self.size == 1:
      return gradients
    hvd = self._horovod()
    return hvd.grouped_allreduce(list(gradients), op=hvd.Average)

  def _horovod(self):
    if self.backend != "horovod":
      raise RuntimeError(f"training collectives need the horovod backend, not {self.backend}")
    return self._impl.hvd


BACKENDS = {"single": _Single, "mpi": _Mpi, "horovod": _Horovod}


def job_world(use_horovod=False):
  """The world of this process without touching devices (the data stages)."""
  if use_horovod:
    return World("horovod")
  return World("mpi" if launched_by_mpi() else "single")


def initialize(use_horovod=False, intra_op_threads=0):
  """The world of this process, with its devices set; call before any TF op.

  Args:
    use_horovod: Horovod ranks (training); otherwise MPI ranks when an MPI
      launcher started the process, else a single process.
    intra_op_threads: TF threads per process; 0 = TF's default, except that
      CPU-only ranks sharing a machine split its cores between them (each rank
      would otherwise start one thread per core).
  """
  world = job_world(use_horovod)
  configure_devices(world, intra_op_threads)
  return world


def configure_devices(world, intra_op_threads=0):
  """One GPU per rank (by local rank) when there are GPUs; on CPU, the cores
  split between the ranks of this machine unless `intra_op_threads` says."""
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  gpus = tf.config.list_physical_devices("GPU")
  if gpus and world.size > 1:
    mine = gpus[world.local_rank % len(gpus)]
    tf.config.set_visible_devices(mine, "GPU")
    tf.config.experimental.set_memory_growth(mine, True)
  if not intra_op_threads and not gpus and world.local_size > 1:
    intra_op_threads = max(1, cpu_count() // world.local_size)
  if intra_op_threads:
    tf.config.threading.set_intra_op_parallelism_threads(intra_op_threads)


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
