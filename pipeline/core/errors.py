"""The exception types for user errors.

Tools catch them once, in `pipeline.core.cli.run`, and print a single line with a
non-zero exit and no traceback; anything else is a bug and keeps its traceback.

Every class here pickles: workers of a process pool raise them, and an error that
cannot be unpickled in the parent kills multiprocessing's result thread and
leaves the parent waiting forever (a hang instead of a one-line error).
"""


class InputError(Exception):
  """A user-facing error about one file or directory and what is wrong with it."""

  def __init__(self, path, cause):
    self.path = str(path)
    self.cause = cause
    super().__init__(f"{self.path}: {cause}")

  def __reduce__(self):
    # Exception's default pickles self.args (the message), not our two arguments.
    return self.__class__, (self.path, self.cause)


class OutputError(InputError):
  """The output path cannot be written (read-only, not a directory, ...)."""

  def __init__(self, path, cause, no_space=False):
    super().__init__(path, cause)
    self.no_space = no_space  # disk full or over quota: a distinct exit status

  def __reduce__(self):
    return self.__class__, (self.path, self.cause, self.no_space)


class OutputBusyError(InputError):
  """Another live run holds the output directory's lock."""

  def __init__(self, path, pid):
    self.pid = pid
    super().__init__(path, f"is being written by another run (pid {pid})")
    self.args = (f"{self.path} is being written by another run (pid {pid})",)

  def __str__(self):
    return self.args[0]

  def __reduce__(self):
    return self.__class__, (self.path, self.pid)


class CorruptRecordError(InputError, ValueError):
  """A TFRecord whose framing or CRC is wrong, at the record starting at `offset`.

  Also a ValueError, the type the framing reader raised before it was a user error.
  """

  def __init__(self, path, offset, what="corrupted record"):
    self.offset, self.what = offset, what
    super().__init__(path, f"{what} at byte {offset} (CRC mismatch)"
                     if what == "corrupted record" else f"{what} at byte {offset}")

  def __reduce__(self):
    return self.__class__, (self.path, self.offset, self.what)


class DivergedError(InputError):
  """A training run whose loss is no longer finite (stopped at a logging step; the
  checkpoints saved before it are kept, so a rerun with other settings can start over)."""


class ConfigError(ValueError):
  """A bad setting (flags, a config dataclass): printed as `error: flags: <cause>`.

  A ValueError, so configs validated in their constructors (Model Garden style)
  raise it where they would raise ValueError.
  """
