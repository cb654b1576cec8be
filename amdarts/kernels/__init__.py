"""The CPU kernels of `cpu_kernels.cc`: built once per machine, registered with XLA.

`available()` compiles the C++ source with the system compiler into a user cache
directory (`amdarts.cache_dir('kernels')`, default `~/.cache/amdarts/kernels`) the first time it
is called with a new source, jaxlib or compiler, loads it and registers its XLA FFI
handlers for the CPU platform. A failed build (no compiler, say) is a warning, not an
error: the primitives then lower to pure-XLA formulations. `AMDARTS_KERNELS=xla`
turns the kernels off (tests compare both paths).
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import subprocess
import sys
import sysconfig
import tempfile
import warnings

import jax

import amdarts

SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'cpu_kernels.cc')
TARGETS = (
    'AmdartsDepthwiseForward', 'AmdartsDepthwiseInputGrad', 'AmdartsDepthwiseKernelGrad',
    'AmdartsMaxPoolForward', 'AmdartsMaxPoolGather', 'AmdartsMaxPoolScatter',
)


def _compile(path: str, cxx: str, flags: list[str]) -> None:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  fd, tmp = tempfile.mkstemp(suffix='.so', dir=os.path.dirname(path))
  os.close(fd)
  try:
    subprocess.run([cxx, *flags, SOURCE, '-o', tmp], check=True, capture_output=True,
                   text=True, timeout=600)
    os.replace(tmp, path)  # Atomic: a concurrent run never loads half a library.
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


@functools.lru_cache(maxsize=None)
def available() -> bool:
  """Whether the CPU kernels are built, loaded and registered (builds them if needed)."""
  if os.environ.get('AMDARTS_KERNELS', '') == 'xla':
    return False
  import jaxlib
  include = os.path.join(os.path.dirname(jaxlib.__file__), 'include')
  cxx = (os.environ.get('CXX') or sysconfig.get_config_var('CXX') or 'c++').split()[0]
  # -march=native: built where it runs (the cache key holds the machine's name).
  flags = ['-O3', '-march=native', '-std=c++17', '-shared', '-fPIC', '-w', f'-I{include}']
  with open(SOURCE, 'rb') as f:
    key = hashlib.sha256(f.read() + repr((cxx, flags, jaxlib.__version__, sys.platform,
                                          os.uname().machine)).encode()).hexdigest()[:16]
  path = amdarts.cache_dir('kernels', f'libamdarts_cpu_{key}.so')
  if not os.path.exists(path):
    try:
      _compile(path, cxx, flags)
    except (OSError, subprocess.SubprocessError) as e:
      detail = (getattr(e, 'stderr', None) or str(e)).strip().splitlines()
      warnings.warn(f'amdarts: the CPU kernels did not build ({detail[-1] if detail else e}); '
                    'using the slower pure-XLA formulations', stacklevel=2)
      return False
  lib = ctypes.cdll.LoadLibrary(path)
  for name in TARGETS:
    jax.ffi.register_ffi_target(name, jax.ffi.pycapsule(getattr(lib, name)), platform='cpu')
  return True
