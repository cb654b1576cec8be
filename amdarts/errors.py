"""Errors a user can fix (a config, a file, a workdir), told apart from bugs.

The entry points print a `UserError` as one line and exit with status 1; anything
else is a bug and keeps its traceback (`--debug` shows tracebacks for both). Each
type also derives from the builtin a caller would catch anyway (`ValueError`,
`FloatingPointError`, ...), so library callers and tests need not know them.

Checks of what the user gave run first in every driver, inside `user_input()`:
there a `ValueError` or a missing file can only be about the input, so it becomes
a `ConfigError` with the same one-line message. After that phase a `ValueError`
is a bug, and stays one.
"""

from __future__ import annotations

import contextlib
import sys
from typing import Callable, Iterator


class UserError(Exception):
  """Something the user can fix; its message is one line (or one line per field)."""


class ConfigError(UserError, ValueError):
  """A config field, genotype, data set or other input that cannot be used."""


class NonFiniteError(UserError, FloatingPointError):
  """A run diverged: a loss, a gradient norm or the state stopped being finite."""


class WorkdirBusy(UserError, RuntimeError):
  """Another live process holds the workdir."""


@contextlib.contextmanager
def user_input() -> Iterator[None]:
  """Within: `ValueError`s and missing files are about the input (`ConfigError`)."""
  try:
    yield
  except UserError:
    raise
  except (ValueError, FileNotFoundError, NotADirectoryError) as e:
    raise ConfigError(str(e)) from e


def exit_on_user_error(fn: Callable[[], object], *, debug: bool = False) -> None:
  """Runs `fn`; a `UserError` ends the process with its message and status 1.

  Args:
    fn: the entry point's work.
    debug: re-raise instead, so the traceback shows (the `--debug` flag).
  """
  try:
    fn()
  except UserError as e:
    if debug:
      raise
    sys.stdout.flush()
    print(f'error: {e}', file=sys.stderr, flush=True)
    sys.exit(1)
