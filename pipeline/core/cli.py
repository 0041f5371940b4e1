"""Shared entry-point plumbing for tools/: one-line errors for user errors.

Flags stay in tools/; this turns an InputError into `error: <path>: <cause>` and a
ConfigError into `error: flags: <cause>` on stderr, exit status 2, no traceback.
Other exceptions are bugs and keep their traceback.
"""

import sys

from absl import app

from pipeline.core.errors import ConfigError, InputError

EXIT_INPUT_ERROR = 2


def run(main):
  """absl's app.run around `main(argv)`, with user errors reported in one line."""

  def wrapped(argv):
    try:
      return main(argv)
    except InputError as e:
      print(f"error: {e}", file=sys.stderr, flush=True)
      sys.exit(EXIT_INPUT_ERROR)
    except ConfigError as e:
      print(f"error: flags: {e}", file=sys.stderr, flush=True)
      sys.exit(EXIT_INPUT_ERROR)

  app.run(wrapped)
