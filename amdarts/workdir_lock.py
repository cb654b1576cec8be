"""One live run per workdir: an exclusive lock on `<workdir>/.lock`.

Two runs writing one workdir interleave their metrics and fight over orbax's step
folders; the second must fail at once instead. The lock is a `flock` on the file,
which the kernel drops when its holder exits, however it exits (kill -9 included),
so a lock never outlives its process. The file records who holds it (pid, host,
process start time) for the busy message. Released cleanly, the file is removed;
one that is still there when a run takes the lock therefore belongs to a process
that died, and the run says it took it over.

Where a file system ignores `flock` (some network and FUSE mounts), the record is
the fallback: a holder on this host whose pid still runs the same process is busy.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time

from absl import logging

from amdarts import errors

LOCK_NAME = '.lock'


def _start_time(pid: int) -> str | None:
  """The process's start time in clock ticks since boot (Linux), telling pids reused."""
  try:
    with open(f'/proc/{pid}/stat') as f:
      return f.read().rsplit(')', 1)[1].split()[19]
  except (OSError, IndexError):
    return None


def _running(pid: int, start: str | None) -> bool:
  if pid <= 0:  # os.kill(0, ...) would address our own process group.
    return False
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:  # Alive, another user's.
    pass
  now = _start_time(pid)
  return start is None or now is None or now == start


def _describe(holder: dict) -> str:
  since = time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(holder.get('time', 0)))
  return f'pid {holder.get("pid")} on {holder.get("host")} (since {since})'


def _read(fd: int) -> dict:
  os.lseek(fd, 0, os.SEEK_SET)
  text = os.read(fd, 4096).decode(errors='replace')
  try:
    holder = json.loads(text) if text.strip() else {}
  except ValueError:
    return {}
  return holder if isinstance(holder, dict) else {}


class WorkdirLock:
  """Holds `<workdir>/.lock` from `acquire()` to `release()` (or process exit)."""

  def __init__(self, workdir: str):
    self.path = os.path.join(os.path.abspath(workdir), LOCK_NAME)
    self._fd: int | None = None

  def acquire(self) -> 'WorkdirLock':
    """Takes the lock, or raises WorkdirBusy naming its live holder.

    Returns:
      self.
    """
    for _ in range(10):  # Retried only when the file was replaced under us.
      fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
      try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
      except BlockingIOError:
        holder = _read(fd)
        os.close(fd)
        who = _describe(holder) if holder else 'another process'
        raise errors.WorkdirBusy(
            f'{os.path.dirname(self.path)} is in use by {who}; wait for that run to end '
            f'or give another --workdir (lock: {self.path})') from None
      try:
        same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
      except FileNotFoundError:
        same = False
      if not same:  # The holder released (removed the file) between open and flock.
        os.close(fd)
        continue
      holder = _read(fd)
      if (holder.get('host') == socket.gethostname() and holder.get('pid') != os.getpid()
          and _running(int(holder.get('pid', 0)), holder.get('start'))):
        os.close(fd)
        raise errors.WorkdirBusy(
            f'{os.path.dirname(self.path)} is in use by {_describe(holder)} (this file '
            f'system ignores locks; delete {self.path} if that process is not a run)')
      if holder:
        logging.warning('took over the lock of %s: that process is gone', _describe(holder))
      record = {'pid': os.getpid(), 'host': socket.gethostname(),
                'start': _start_time(os.getpid()), 'time': time.time()}
      os.ftruncate(fd, 0)
      os.lseek(fd, 0, os.SEEK_SET)
      os.write(fd, json.dumps(record).encode())
      os.fsync(fd)
      self._fd = fd
      return self
    raise errors.WorkdirBusy(f'cannot take {self.path}: it keeps being replaced')

  def release(self) -> None:
    """Removes the file, then unlocks (removing first: see the inode check above)."""
    if self._fd is None:
      return
    try:
      os.unlink(self.path)
    except FileNotFoundError:
      pass
    os.close(self._fd)
    self._fd = None

  def __enter__(self) -> 'WorkdirLock':
    return self.acquire()

  def __exit__(self, *exc) -> None:
    self.release()
