"""The one exception type for bad user input.

Tools catch it at the top and print a single line `error: <path>: <cause>` with a
non-zero exit and no traceback; anything else is a bug and keeps its traceback.
"""


class InputError(Exception):
  """A user-facing error about one file or directory and what is wrong with it."""

  def __init__(self, path, cause):
    self.path = str(path)
    self.cause = cause
    super().__init__(f"{self.path}: {cause}")
