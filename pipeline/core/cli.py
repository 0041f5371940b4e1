"""Shared entry-point plumbing for tools/: one-line errors for user errors.

Flags stay in tools/; this turns a user error into one line on stderr and an exit
status, no traceback. Other exceptions are bugs and keep their traceback.

Exit statuses of the stage tools:
  2   bad input, flags or output path (`error: <path>: <cause>`, `error: flags: ...`);
      fix it and rerun.
  4   the output's filesystem is full or over quota (ENOSPC, EDQUOT, EFBIG); what
      was published is correct: free space and rerun, it resumes. The same number
      as refresh_corpus's "a stage failed (rerun resumes)".
  75  another run is writing the output directory (EX_TEMPFAIL of sysexits.h:
      nothing is wrong, try again later); the directory was not touched.
"""

import sys

from absl import app
from absl import flags

from pipeline.core.errors import ConfigError, InputError, OutputBusyError, OutputError

EXIT_INPUT_ERROR = 2
EXIT_NO_SPACE = 4
EXIT_BUSY = 75


def exit_status(error):
  """The exit status for a user error (see the module docstring)."""
  if isinstance(error, OutputBusyError):
    return EXIT_BUSY
  if isinstance(error, OutputError) and error.no_space:
    return EXIT_NO_SPACE
  return EXIT_INPUT_ERROR


def run(main):
  """absl's app.run around `main(argv)`, with user errors reported in one line."""

  def wrapped(argv):
    try:
      return main(argv)
    except InputError as e:
      print(f"error: {e}", file=sys.stderr, flush=True)
      sys.exit(exit_status(e))
    except ConfigError as e:
      print(f"error: flags: {e}", file=sys.stderr, flush=True)
      sys.exit(EXIT_INPUT_ERROR)

  app.run(wrapped)


def given_flags(*modules):
  """Names of the flags the user gave on the command line, among those `modules`
  define (default: the tool's own, which absl files under sys.argv[0]). Commands
  that follow their input's kind refuse the given ones that do not apply to it."""
  modules = modules or (sys.argv[0],)
  return frozenset(f.name for module in modules
                   for f in flags.FLAGS.get_flags_for_module(module) if f.present)
