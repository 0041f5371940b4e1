"""The exception types for user errors.

Tools catch them once, in `pipeline.core.cli.run`, and print a single line with a
non-zero exit and no traceback; anything else is a bug and keeps its traceback.
"""


class InputError(Exception):
  """A user-facing error about one file or directory and what is wrong with it."""

  def __init__(self, path, cause):
    self.path = str(path)
    self.cause = cause
    super().__init__(f"{self.path}: {cause}")


class ConfigError(ValueError):
  """A bad setting (flags, a config dataclass): printed as `error: flags: <cause>`.

  A ValueError, so configs validated in their constructors (Model Garden style)
  raise it where they would raise ValueError.
  """
