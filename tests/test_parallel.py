"""Multi-host data parallelism: two local processes (jax.distributed over gloo) equal one."""

import os
import socket
import subprocess
import sys
import textwrap
import time

import jax
import numpy as np

from amdarts import checkpoint as checkpoint_lib
from amdarts import genotype_text
from amdarts import metrics as metrics_lib
from amdarts import search
from conftest import ROOT
from tests import test_search

# test_search.tiny_config() on the command line: the tiny super-net (S3, 3 cells of
# 1 node, C=4), the exact amended estimator, 2 epochs of 3 steps of batch 8. This
# process runs the same config on one device with the step it compiled already.
_OVERRIDES = {'space.name': 's3', 'space.steps': 1, 'data.max_examples': 48}


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def _start(port: int, process_id: int, workdir: str) -> subprocess.Popen:
  """One host of two, as the README's commands, with 2 emulated CPU devices."""
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  env['XLA_FLAGS'] = (env.get('XLA_FLAGS', '') +
                      ' --xla_force_host_platform_device_count=2').strip()
  command = [sys.executable, os.path.join(ROOT, 'experiments', 'search.py'),
             '--config=' + os.path.join(ROOT, 'configs', 'synthetic_tiny.py'),
             *(f'--config.{k}={v}' for k, v in _OVERRIDES.items()),
             f'--coordinator=127.0.0.1:{port}', '--num_processes=2',
             f'--process_id={process_id}', f'--workdir={workdir}']
  return subprocess.Popen(command, env=env, cwd=ROOT, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)


def _run_two_hosts(tmp_path, start=_start, timeout=900):
  """Both processes to their end; retried on another port if the chosen one was taken."""
  for _ in range(3):
    port = _free_port()
    procs = [start(port, i, str(tmp_path / f'host{i}')) for i in range(2)]
    deadline = time.time() + timeout
    outs = []
    try:
      for p in procs:
        outs.append(p.communicate(timeout=max(deadline - time.time(), 1)))
    finally:
      for p in procs:
        p.kill()
        p.wait()
    codes = [p.returncode for p in procs]
    if codes == [0, 0] or not any('ddress already in use' in e for _, e in outs):
      return codes, outs
  return codes, outs


def _alpha_and_params(workdir, step):
  ckpt = checkpoint_lib.Checkpointer(workdir)
  try:
    assert ckpt.steps() == [6, 4]
    state, _ = ckpt.restore(test_search._abstract(test_search.tiny_config()), step)
  finally:
    ckpt.close()
  return jax.tree.map(np.asarray, (state.alpha, state.params))


def _max_rel_error(a, b):
  return max(float(np.abs(x - y).max() / (np.abs(x).max() + 1e-12))
             for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def test_two_processes_give_the_alpha_and_weights_of_one(tmp_path):
  """2 hosts × 2 devices, each feeding its half of every global batch, equal 1 device.

  Only process 0 writes: host1's workdir must not even exist, which also shows the
  hosts need no shared file system.
  """
  codes, outs = _run_two_hosts(tmp_path)
  assert codes == [0, 0], '\n'.join(e[-3000:] for _, e in outs)
  config = test_search.tiny_config()
  assert config.to_dict() == test_search.tiny_config(**_OVERRIDES).to_dict()
  reference = str(tmp_path / 'one_process')
  genotype = search.run(config, reference)  # This process: one device.
  assert outs[0][0].strip().splitlines()[-1] == genotype_text.to_darts_string(genotype)
  assert not os.path.exists(tmp_path / 'host1')
  steps = [r['step'] for r in metrics_lib.read_jsonl(str(tmp_path / 'host0' / 'metrics.jsonl'),
                                                     kind='train')]
  assert steps == list(range(1, 7))  # One writer: each step once.
  for step in (4, 6):
    alpha2, params2 = _alpha_and_params(str(tmp_path / 'host0'), step)
    alpha1, params1 = _alpha_and_params(reference, step)
    err_alpha, err_params = _max_rel_error(alpha1, alpha2), _max_rel_error(params1, params2)
    print(f'step {step}: max relative error alpha {err_alpha:.2e}, params {err_params:.2e}')
    # 4 devices sum the batch in another order than 1 device (as in test_search's
    # 4-device test); a wrong split of the hosts' batches would be of order 1.
    # Measured 3.1e-6 and 1.2e-6: Adam's m/√v magnifies float32 noise in α's
    # near-zero gradient components, so α gets the wider margin.
    assert err_alpha < 5e-5 and err_params < 1e-5, (step, err_alpha, err_params)


_COUNTER = textwrap.dedent("""
    import sys
    sys.path.insert(0, {root!r}); sys.path.insert(0, {root!r} + '/tests')
    from amdarts import parallel
    parallel.initialize_distributed('127.0.0.1:{port}', 2, {process_id})
    import jax
    import numpy as np
    from amdarts import errors, loop
    import test_loop
    assert jax.device_count() == 4 and jax.local_device_count() == 2
    mesh = parallel.data_mesh()
    batches = loop.Batches.fixed(
        2, 3, lambda e, i: parallel.put_batch(np.float32(10 * e + i + 1), mesh))
    config = test_loop._config(every=2)
    run = lambda: loop.run(test_loop._state(), test_loop._step, batches, [loop.LogMetrics()],
                           {workdir!r}, config=config, mesh=mesh, stop_after=stop_after)
    stop_after = 4
    r = run()
    print('stopped', r.step, float(r.state['total']), flush=True)
    stop_after = None
    r = run()  # Resumes: process 0 reads step 4 and broadcasts it.
    print('finished', r.step, float(r.state['total']), flush=True)
    config.seed = 1
    try:
      run()
    except errors.UserError as e:  # Process 0's refusal reaches both.
      print('refused', 'another config (seed absent → 1)' in str(e), flush=True)
""")


def _start_counter(port, process_id, workdir):
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  env['XLA_FLAGS'] = (env.get('XLA_FLAGS', '') +
                      ' --xla_force_host_platform_device_count=2').strip()
  script = _COUNTER.format(root=ROOT, port=port, process_id=process_id, workdir=workdir)
  return subprocess.Popen([sys.executable, '-c', script], env=env, cwd=ROOT,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_two_processes_resume_and_refuse_as_process_0_decides(tmp_path):
  """The loop's multi-host protocol on a counter: stop, resume, refuse; process 0 only writes."""
  codes, outs = _run_two_hosts(tmp_path, start=_start_counter, timeout=600)
  assert codes == [0, 0], '\n'.join(e[-3000:] for _, e in outs)
  want = sum((10 * e + i + 1) * (3 * e + i + 1) for e in range(2) for i in range(3))
  total4 = sum((10 * e + i + 1) * (3 * e + i + 1) for e, i in ((0, 0), (0, 1), (0, 2), (1, 0)))
  for out, _ in outs:
    # Only the counter's lines: gloo's two threads can interleave their connection
    # messages mid-line ('[Gloo] Rank [Gloo] Rank 0 is connected ...').
    ours = [line for line in out.splitlines()
            if line.startswith(('stopped ', 'finished ', 'refused '))]
    assert ours == [f'stopped 4 {float(total4)}', f'finished 6 {float(want)}',
                                    'refused True'], out
  assert 'resumed from step 4' in outs[0][1] and 'resumed' not in outs[1][1]
  assert not os.path.exists(tmp_path / 'host1')
  steps = [r['step'] for r in metrics_lib.read_jsonl(str(tmp_path / 'host0' / 'metrics.jsonl'))]
  assert steps == list(range(1, 7))
