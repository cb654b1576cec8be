"""The entry points' re-execution with glibc's transparent-huge-page tunable."""

import os
import platform
import subprocess
import sys

import pytest

from amdarts import hugepages
from tests.conftest import ROOT

GLIBC = ('glibc', '2.36')


def test_thp_mode_reads_the_bracketed_choice(tmp_path):
  path = tmp_path / 'enabled'
  path.write_text('always [madvise] never\n')
  assert hugepages.thp_mode(str(path)) == 'madvise'
  path.write_text('[always] madvise never\n')
  assert hugepages.thp_mode(str(path)) == 'always'
  assert hugepages.thp_mode(str(tmp_path / 'missing')) == ''


@pytest.mark.parametrize('environ, mode, libc, expected', [
    ({}, 'madvise', GLIBC, True),
    ({'GLIBC_TUNABLES': 'glibc.malloc.arena_max=2'}, 'madvise', GLIBC, True),
    ({}, 'always', GLIBC, False),  # Huge pages without asking.
    ({}, 'never', GLIBC, False),
    ({}, '', GLIBC, False),
    ({}, 'madvise', ('glibc', '2.31'), False),  # Before the tunable existed.
    ({}, 'madvise', ('', ''), False),  # Not glibc (musl, macOS).
    ({'GLIBC_TUNABLES': 'glibc.malloc.hugetlb=1'}, 'madvise', GLIBC, False),  # Done.
    ({'AMDARTS_HUGEPAGES': '0'}, 'madvise', GLIBC, False),
])
def test_wanted(environ, mode, libc, expected):
  assert hugepages.wanted(environ, mode, libc) is expected


# Starts, re-executes once, then reports the tunables and how much of a 64 MiB
# malloc'ed and written block the kernel backs with huge pages (/proc/self/smaps).
_CHILD = r'''
import ctypes, os, sys
print('start', flush=True)
from amdarts import hugepages
hugepages.reexec()
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
n = 64 << 20
p = libc.malloc(ctypes.c_size_t(n))
ctypes.memset(p, 1, n)
huge = 0
with open('/proc/self/smaps') as f:
  inside = False
  for line in f:
    head = line.split()[0]
    if '-' in head and ':' not in head:
      lo, hi = (int(a, 16) for a in head.split('-'))
      inside = lo <= p < hi
    elif inside and head == 'AnonHugePages:':
      huge = int(line.split()[1])
print('tunables', os.environ.get('GLIBC_TUNABLES', ''))
print('huge_kib', huge)
'''


def _child(**env):
  base = {k: v for k, v in os.environ.items() if k != hugepages.TUNABLES}
  out = subprocess.run([sys.executable, '-c', _CHILD], cwd=ROOT, capture_output=True,
                       text=True, timeout=60, env=dict(base, PYTHONPATH=ROOT, **env))
  assert out.returncode == 0, out.stderr
  lines = out.stdout.splitlines()
  return (lines.count('start'), lines[-2].partition(' ')[2],
          int(lines[-1].split()[1]))


@pytest.mark.skipif(not hugepages.wanted({}, hugepages.thp_mode(), platform.libc_ver()),
                    reason='needs glibc >= 2.35 and the kernel THP mode madvise')
def test_reexec_once_keeps_other_tunables_and_gets_huge_pages():
  starts, tunables, huge_kib = _child(GLIBC_TUNABLES='glibc.malloc.arena_max=2')
  assert starts == 2
  assert tunables == 'glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1'
  assert huge_kib >= 2048  # At least one 2 MiB page behind the block.
  starts, tunables, huge_kib = _child(AMDARTS_HUGEPAGES='0')
  assert (starts, huge_kib) == (1, 0)
