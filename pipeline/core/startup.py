"""A quiet start for programs that load TensorFlow (every tool imports this first).

* TensorFlow 2.18's start-up noise is dropped. Its XLA plugins print "Unable
  to register cuDNN/cuFFT/cuBLAS factory" while `import tensorflow` loads them,
  before absl logging reads TF_CPP_MIN_LOG_LEVEL, so the variable cannot hide
  them; and a machine without a CUDA driver logs "failed call to cuInit" as an
  error at the first device query. So the first `import tensorflow` (and, on
  such a machine, the GPU query) runs with fd 2 captured; afterwards every
  captured line that is not a known start-up notice is written back, so real
  warnings and errors of the import still show, in order.
* `--helpfull` lists no absl *testing* flags: `import tensorflow` itself
  imports absl.testing.absltest (through tf.distribute's test helpers), which
  defines --test_srcdir, --test_tmpdir, --xml_output_file, ... at import. A
  tool never runs tests, so those flags are removed right after that import.

Both happen through an import hook, only when (and if) the modules are
imported: programs that never load TensorFlow stay as light as before. The
spawned workers of a process pool re-import the tool's module, hence this one,
so they are quiet too (and inherit the environment set here).
"""


import contextlib
import ctypes
import os
import sys
import tempfile


# Substrings of TensorFlow's start-up lines that say nothing about this run.
_NOISE = (
    "Unable to register cuDNN factory",
    "Unable to register cuFFT factory",
    "Unable to register cuBLAS factory",
    "All log messages before absl::InitializeLog() is called are written to STDERR",
    "Could not find cuda drivers on your machine",
    "TF-TRT Warning: Could not find TensorRT",
    "oneDNN custom operations are on",
)
# Only noise where no CUDA driver is installed; elsewhere it is a real error.
_NO_DRIVER_NOISE = ("failed call to cuInit",)


def _has_cuda_driver():
  try:
    ctypes.CDLL("libcuda.so.1")
    return True
  except OSError:
    return False


@contextlib.contextmanager
def _stderr_without(noise):
  """Captures fd 2 (C++ logs bypass sys.stderr) and replays all but `noise` lines."""
  try:
    sys.stderr.flush()
    saved = os.dup(2)
  except (AttributeError, OSError, ValueError):  # no usable stderr: nothing to quiet
    yield
    return
  with tempfile.TemporaryFile() as captured:
    os.dup2(captured.fileno(), 2)
    try:
      yield
    finally:
      sys.stderr.flush()
      os.dup2(saved, 2)
      os.close(saved)
      captured.seek(0)
      lines = captured.read().decode("utf-8", "replace").splitlines(keepends=True)
      sys.stderr.write("".join(l for l in lines if not any(n in l for n in noise)))
      sys.stderr.flush()


def _quiet_tensorflow(exec_module, module):
  cpu_only = not _has_cuda_driver()
  with _stderr_without(_NOISE + (_NO_DRIVER_NOISE if cpu_only else ())):
    exec_module(module)
    if cpu_only:  # the cuInit error comes at the first device query: make it now
      module.config.list_physical_devices("GPU")


def _drop_testing_flags(exec_module, module):
  exec_module(module)
  from absl import flags  # pylint: disable=import-outside-toplevel
  for flag in list(flags.FLAGS.flags_by_module_dict().get(module.__name__, ())):
    if flag.name in flags.FLAGS:
      delattr(flags.FLAGS, flag.name)


class _AroundImport:
  """A meta-path finder that wraps the first execution of a few modules.

  `around[name](exec_module, module)` runs in place of the loader's
  exec_module; the loader itself is the module's usual one.
  """

  def __init__(self, around):
    self.around = dict(around)

  def find_spec(self, name, path=None, target=None):
    around = self.around.pop(name, None)
    if around is None:
      return None
    for finder in sys.meta_path:
      spec = None if finder is self else finder.find_spec(name, path, target)
      if spec is not None and spec.loader is not None:
        exec_module = spec.loader.exec_module
        spec.loader.exec_module = lambda module: around(exec_module, module)
        return spec
    return None


def quiet_tensorflow():
  """Installs the import hook (before TensorFlow is imported; later: a no-op)."""
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  if "tensorflow" not in sys.modules and not any(
      isinstance(f, _AroundImport) for f in sys.meta_path):
    sys.meta_path.insert(0, _AroundImport({"tensorflow": _quiet_tensorflow,
                                           "absl.testing.absltest": _drop_testing_flags}))
