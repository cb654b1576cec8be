"""JAX's persistent compilation cache, so that a restarted run skips its compiles.

A search compiles a weight step and an α step (tens of seconds to minutes on CPU for
second-order estimators); with the cache on, a resumed or repeated run with the same
shapes, code and flags loads the executables from disk instead. The entry points
turn it on (`amdarts.cli`); library calls and tests leave JAX's own setting alone.
"""

from __future__ import annotations

import os

import jax

import amdarts

# Where the entry points keep compiled executables unless told otherwise.
DEFAULT_DIR = amdarts.cache_dir('jax')
# Overrides DEFAULT_DIR for every entry point; '' turns the cache off.
ENV = 'AMDARTS_COMPILATION_CACHE'


def enable(directory: str | None = None) -> str | None:
  """Turns the persistent cache on in `directory` and returns it (None: left off).

  Args:
    directory: the cache directory; None = $AMDARTS_COMPILATION_CACHE if set, else
      DEFAULT_DIR; '' = off. A cache directory set through JAX itself
      (JAX_COMPILATION_CACHE_DIR or jax.config) wins over all of these.

  Must run before the first compilation. Only executables that took at least a
  second to compile are stored (JAX's default threshold), so small helper
  computations do not fill the disk.
  """
  if jax.config.jax_compilation_cache_dir:
    return jax.config.jax_compilation_cache_dir
  if directory is None:
    directory = os.environ.get(ENV, DEFAULT_DIR)
  if not directory:
    return None
  os.makedirs(directory, exist_ok=True)
  jax.config.update('jax_compilation_cache_dir', directory)
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 1.0)
  return directory
