"""The training world: one process, or Horovod ranks started by mpirun.

The trainer talks only to this interface, so the single-process path has no
Horovod import and no collective at all. Horovod is imported on demand (and
works on CPU over MPI); `horovod.tensorflow` is used, not its Keras binding,
which does not support Keras 3. Keras 3 variables wrap a tf.Variable: every
Horovod call gets the underlying `.value`.
"""

import os

import numpy as np
import tensorflow as tf


def tf_variables(variables):
  """Keras 3 variables -> their tf.Variable (others pass through)."""
  return [v if isinstance(v, tf.Variable) else v.value for v in variables]


def gpus():
  return tf.config.list_physical_devices("GPU")


class SingleProcess:
  """Rank 0 of 1: every collective is the identity."""

  rank, size, local_rank, local_size = 0, 1, 0, 1
  is_chief = True

  def broadcast_variables(self, variables):
    del variables

  def wrap_tape(self, tape):
    return tape

  def allreduce_gradients(self, gradients):
    return gradients

  def allreduce_sum(self, values):
    return np.asarray(values, np.float64)

  def broadcast_object(self, obj):
    return obj

  def barrier(self):
    pass


class HorovodWorld:
  """hvd.init() and Horovod collectives (all ranks must call them alike)."""

  def __init__(self):
    import horovod.tensorflow as hvd  # pylint: disable=import-outside-toplevel
    hvd.init()
    self._hvd = hvd
    self.rank, self.size = hvd.rank(), hvd.size()
    self.local_rank, self.local_size = hvd.local_rank(), hvd.local_size()
    self.is_chief = self.rank == 0

  def broadcast_variables(self, variables):
    """Rank 0's values into every rank's copy (initial model + optimizer)."""
    self._hvd.broadcast_variables(tf_variables(variables), root_rank=0)

  def wrap_tape(self, tape):
    # Dense allreduce: the word-embedding gradient is dense anyway (tied MLM
    # output weights) and the token-type table is tiny.
    return self._hvd.DistributedGradientTape(tape, sparse_as_dense=True)

  def allreduce_gradients(self, gradients):
    """Mean over ranks of a list of dense gradients, in one fused group."""
    return self._hvd.grouped_allreduce(list(gradients), op=self._hvd.Average)

  def allreduce_sum(self, values):
    """Element-wise sum over ranks of a small float vector (metrics)."""
    tensor = tf.constant(np.asarray(values, np.float64))
    return self._hvd.allreduce(tensor, op=self._hvd.Sum).numpy()

  def broadcast_object(self, obj):
    return self._hvd.broadcast_object(obj, root_rank=0)

  def barrier(self):
    # horovod.tensorflow 0.28 has no barrier(): a tiny allreduce is one.
    self.allreduce_sum([0.0])


def initialize(use_horovod, intra_op_threads=0):
  """Creates the world; call before TensorFlow runs any op.

  Args:
    use_horovod: start Horovod (the caller decides, e.g. from mpirun's
      environment or a flag).
    intra_op_threads: TF threads per process; 0 = TF's default, except that
      CPU-only Horovod ranks sharing a machine split its cores between them
      (each rank would otherwise start one thread per core).
  """
  world = HorovodWorld() if use_horovod else SingleProcess()
  devices = gpus()
  if devices and world.size > 1:
    # One GPU per rank, chosen by the rank's index on its machine.
    mine = devices[world.local_rank % len(devices)]
    tf.config.set_visible_devices(mine, "GPU")
    tf.config.experimental.set_memory_growth(mine, True)
  if not intra_op_threads and not devices and world.local_size > 1:
    intra_op_threads = max(1, _cpu_count() // world.local_size)
  if intra_op_threads:
    tf.config.threading.set_intra_op_parallelism_threads(intra_op_threads)
  return world


def _cpu_count():
  if hasattr(os, "sched_getaffinity"):
    return len(os.sched_getaffinity(0))
  return os.cpu_count() or 1
