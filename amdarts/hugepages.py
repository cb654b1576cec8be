"""Transparent huge pages for XLA:CPU's buffers: the entry points re-execute once.

XLA:CPU allocates an executable's buffers afresh at every execution
(`posix_memalign` from a worker thread's glibc arena, which maps anything that large
with a new `mmap` and unmaps it on free), so every step faults all of its working
memory in again, 4 KiB at a time. glibc ≥ 2.35 can ask the kernel for transparent
huge pages on those mappings (the tunable `glibc.malloc.hugetlb=1`), which the
common kernel setting `madvise` grants only on request. Measured on the paper's
search net (S1, C=16, 8 cells, batch 32, 2 cores), amended exact α step: 2.3 M page
faults, 7 s of kernel time and 11.4 s per step without, 5 thousand faults, 1.7 s
and 8.1-9.1 s with it.

glibc reads its tunables only when a process starts, hence `reexec`: called first
thing by an entry point, it replaces the process by the same command line with the
tunable added, once. `AMDARTS_HUGEPAGES=0` opts out. This module imports nothing
heavy, so the re-execution costs only the interpreter's start.
"""

from __future__ import annotations

import os
import platform
import sys

TUNABLES = 'GLIBC_TUNABLES'
HUGETLB = 'glibc.malloc.hugetlb=1'
OPT_OUT = 'AMDARTS_HUGEPAGES'
THP_MODE = '/sys/kernel/mm/transparent_hugepage/enabled'


def thp_mode(path: str = THP_MODE) -> str:
  """The kernel's transparent-huge-page mode ('always', 'madvise', 'never'), '' if unknown."""
  try:
    with open(path) as f:
      text = f.read()
  except OSError:
    return ''
  start, end = text.find('['), text.find(']')
  return text[start + 1:end] if 0 <= start < end else ''


def wanted(environ, mode: str, libc: tuple[str, str]) -> bool:
  """Whether re-executing with `HUGETLB` would change anything.

  Args:
    environ: the process environment.
    mode: `thp_mode()`: only 'madvise' grants huge pages on request ('always' gives
      them anyway, 'never' not at all).
    libc: `platform.libc_ver()`; the tunable exists from glibc 2.35.
  """
  if environ.get(OPT_OUT, '1') == '0' or HUGETLB in environ.get(TUNABLES, ''):
    return False
  name, version = libc
  try:
    known = name == 'glibc' and tuple(int(p) for p in version.split('.')[:2]) >= (2, 35)
  except ValueError:
    known = False
  return known and mode == 'madvise'


def reexec() -> None:
  """Replaces the process by its own command line with `HUGETLB` set, if `wanted`.

  Off Linux the mode file is absent, so `thp_mode()` is '' and nothing happens.
  """
  if not wanted(os.environ, thp_mode(), platform.libc_ver()):
    return
  env = dict(os.environ)
  env[TUNABLES] = ':'.join(filter(None, (env.get(TUNABLES), HUGETLB)))
  sys.stdout.flush()
  sys.stderr.flush()
  os.execve(sys.executable, [sys.executable] + sys.orig_argv[1:], env)
