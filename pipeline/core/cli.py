"""Shared entry-point plumbing for tools/: one-line errors for bad input.

Flags stay in tools/; this only turns an InputError into `error: <path>: <cause>`
on stderr with exit status 2 and no traceback. Other exceptions are bugs and keep
their traceback.
"""

import sys

from absl import app

from pipeline.core.errors import InputError

EXIT_INPUT_ERROR = 2


def run(main):
  """absl's app.run around `main(argv)`, with InputError reported in one line."""

  def wrapped(argv):
    try:
      return main(argv)
    except InputError as e:
      print(f"error: {e}", file=sys.stderr, flush=True)
      sys.exit(EXIT_INPUT_ERROR)

  app.run(wrapped)
