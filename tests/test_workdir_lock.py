"""One live run per workdir: a second process fails at once, a dead one's lock is taken over."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from amdarts import errors
from amdarts import loop
from amdarts import metrics as metrics_lib
from amdarts import workdir_lock
from conftest import ROOT, logged_warnings

_HOLD = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, {root!r})
    from amdarts import workdir_lock
    workdir_lock.WorkdirLock({workdir!r}).acquire()
    print('held', flush=True)
    time.sleep(600)
""")


def _hold(workdir):
  """A process that takes the workdir's lock and keeps it (until killed)."""
  proc = subprocess.Popen([sys.executable, '-c', _HOLD.format(root=ROOT, workdir=workdir)],
                          stdout=subprocess.PIPE, text=True)
  assert proc.stdout.readline().strip() == 'held'
  return proc


def test_a_live_holder_makes_a_second_lock_fail_at_once(tmp_path):
  proc = _hold(str(tmp_path))
  try:
    t0 = time.time()
    with pytest.raises(errors.WorkdirBusy) as info:
      workdir_lock.WorkdirLock(str(tmp_path)).acquire()
    assert time.time() - t0 < 1.0
    message = str(info.value)
    assert f'is in use by pid {proc.pid} on ' in message and '\n' not in message
  finally:
    proc.kill()
    proc.wait()


def test_the_lock_of_a_killed_process_is_taken_over(tmp_path):
  proc = _hold(str(tmp_path))
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  path = tmp_path / workdir_lock.LOCK_NAME
  assert json.loads(path.read_text())['pid'] == proc.pid  # Left behind by the kill.
  with logged_warnings() as logged:
    lock = workdir_lock.WorkdirLock(str(tmp_path)).acquire()
  assert any(f'took over the lock of pid {proc.pid}' in m for m in logged), logged
  assert json.loads(path.read_text())['pid'] == os.getpid()
  lock.release()
  assert not path.exists()  # A clean release leaves nothing to take over.
  with logged_warnings() as logged:
    workdir_lock.WorkdirLock(str(tmp_path)).acquire().release()
  assert not any('took over' in m for m in logged)


def test_a_live_pid_counts_where_the_file_system_ignores_locks(tmp_path, monkeypatch):
  proc = _hold(str(tmp_path))
  try:
    # As on a mount where flock always succeeds: the record still tells it is busy.
    monkeypatch.setattr(workdir_lock.fcntl, 'flock', lambda fd, op: None)
    with pytest.raises(errors.WorkdirBusy, match=f'pid {proc.pid} .*ignores locks'):
      workdir_lock.WorkdirLock(str(tmp_path)).acquire()
  finally:
    proc.kill()
    proc.wait()


_SLOW_RUN = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, {root!r}); sys.path.insert(0, {root!r} + '/tests')
    import numpy as np
    from amdarts import loop
    import test_loop, test_workdir_lock
    def get(e, i):
      time.sleep(0.3)  # Slow, so the second run starts while this one is running.
      return np.float32(1.0)
    loop.run(test_loop._state(), test_loop._step, loop.Batches.fixed(1, 12, get),
             [loop.LogMetrics(), test_workdir_lock.Started()], {workdir!r},
             config=test_loop._config(), mesh=test_loop.MESH)
""")


class Started(loop.Hook):
  """Says when the run holds its workdir (its first step is done)."""

  def after_step(self, run, state, metrics):
    if run.step == 1:
      print('running', flush=True)


def test_a_second_run_in_a_busy_workdir_fails_at_once_and_records_nothing(tmp_path):
  """The probe of issue 11 (two searches in one workdir), on the loop every driver uses."""
  from tests import test_loop
  workdir = str(tmp_path)
  proc = subprocess.Popen(
      [sys.executable, '-c', _SLOW_RUN.format(root=ROOT, workdir=workdir)],
      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
      env=dict(os.environ, JAX_PLATFORMS='cpu'))
  try:
    assert proc.stdout.readline().strip() == 'running', proc.stderr.read()[-2000:]
    t0 = time.time()
    with pytest.raises(errors.WorkdirBusy, match=f'in use by pid {proc.pid}'):
      loop.run(test_loop._state(), test_loop._step, test_loop._batches(),
               [loop.LogMetrics()], workdir, config=test_loop._config(), mesh=test_loop.MESH)
    assert time.time() - t0 < 5.0
    assert proc.wait(timeout=300) == 0, proc.stderr.read()[-2000:]
  finally:
    proc.kill()
    proc.wait()
  steps = [r['step'] for r in metrics_lib.read_jsonl(os.path.join(workdir, 'metrics.jsonl'))]
  assert steps == list(range(1, 13))  # The first run's record alone, each step once.
  assert not os.path.exists(os.path.join(workdir, workdir_lock.LOCK_NAME))
