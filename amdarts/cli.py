"""What the entry points share: multi-host, --debug and compilation-cache flags, and how
a run ends.

    python experiments/search.py --config=configs/cifar_s1.py --workdir=/tmp/s1 \
        --coordinator=host0:1234 --num_processes=2 --process_id=0   # on host 0
    ... --process_id=1                                                # on host 1

A `UserError` (a bad config field, a busy workdir, a diverged run) ends the process
with one line on stderr and status 1; `--debug` shows its traceback instead. Bugs
always keep theirs.
"""

from __future__ import annotations

from typing import Callable

from absl import flags
from absl import logging

from amdarts import compile_cache
from amdarts import errors
from amdarts import parallel

_COORDINATOR = flags.DEFINE_string(
    'coordinator', '', 'Multi-host: address:port of process 0 (jax.distributed).')
_NUM_PROCESSES = flags.DEFINE_integer('num_processes', 0, 'Multi-host: number of processes.')
_PROCESS_ID = flags.DEFINE_integer('process_id', -1, 'Multi-host: this process.')
_DEBUG = flags.DEFINE_bool('debug', False, 'Show tracebacks of config and input errors too.')
_COMPILATION_CACHE = flags.DEFINE_string(
    'compilation_cache', None, "JAX's persistent compilation cache: a restart with the same "
    "shapes skips compiling. Default $AMDARTS_COMPILATION_CACHE, else "
    f"{compile_cache.DEFAULT_DIR}; '' = off.")


def run(driver: Callable[..., object], config, workdir: str) -> None:
  """Joins a multi-host run if asked, then `driver(config, workdir)`.

  Logs at WARNING (orbax is chatty at INFO); what a user must see (the resumed
  step, the result) the library prints itself.
  """
  logging.set_verbosity(logging.WARNING)
  compile_cache.enable(_COMPILATION_CACHE.value)

  def work():
    with errors.user_input():  # Flags naming impossible processes are input too.
      parallel.initialize_distributed(_COORDINATOR.value, _NUM_PROCESSES.value,
                                      _PROCESS_ID.value)
    driver(config, workdir)

  errors.exit_on_user_error(work, debug=_DEBUG.value)
