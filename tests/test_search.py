"""The search loop end to end on tiny synthetic problems: outputs, resume, devices, errors."""

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time

import jax
import numpy as np
import pytest

from amdarts import checkpoint as ckpt_lib
from amdarts import data as data_lib
from amdarts import errors
from amdarts import genotype_text
from amdarts import genotypes
from amdarts import hypergrad
from amdarts import metrics as metrics_lib
from amdarts import search
from amdarts import spaces
from configs import synthetic_tiny
from conftest import logged_warnings

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny_config(**overrides):
  """S3 (3 ops), 3 cells of 1 node, C=4, 8x8 images: second-order compiles stay short."""
  c = synthetic_tiny.get_config()
  c.space.name = 's3'
  c.space.steps = 1
  c.data.max_examples = 48  # 24 + 24: 3 steps per epoch of batch 8.
  for key, value in overrides.items():
    node = c
    *path, leaf = key.split('.')
    for p in path:
      node = node[p]
    node[leaf] = value
  return c


def final_alpha(workdir):
  state, _ = ckpt_lib.Checkpointer(workdir).restore(_abstract(tiny_config()))
  return jax.tree.map(np.asarray, state.alpha)


def _abstract(config):
  train, _ = search.load_search_data(config)
  spe = 3
  s = search.get_searcher(config, train.image_shape, train.num_classes, spe,
                          search.parallel.data_mesh())
  return s.abstract_state(config.seed)


@pytest.fixture(scope='module')
def reference_run(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp('reference'))
  genotype = search.run(tiny_config(), workdir)
  return workdir, genotype


def test_outputs(reference_run):
  workdir, genotype = reference_run
  epochs = metrics_lib.read_jsonl(os.path.join(workdir, 'metrics.jsonl'), kind='epoch')
  assert [r['epoch'] for r in epochs] == [1, 2]
  for key in ('none_weight', 'skip_ratio', 'num_parametric', 'none_weight_all',
              'skip_ratio_reduce', 'num_parametric_all', 'train_loss', 'val_loss',
              'train_acc', 'val_acc', 'eval_acc', 'alpha_grad_norm', 'genotype'):
    assert key in epochs[-1], key
  assert 0 < epochs[-1]['none_weight'] < 1
  # The paper's statistics are the normal cell's (genotypes.statistics).
  final = genotypes.statistics(search.config_lib.space_spec(tiny_config()),
                               final_alpha(workdir), genotype)
  assert {k: epochs[-1][k] for k in final} == pytest.approx(final)
  assert epochs[-1]['num_parametric'] == genotypes.num_parametric(genotype, reduction=False)
  steps = [r['step'] for r in metrics_lib.read_jsonl(os.path.join(workdir, 'metrics.jsonl'),
                                                     kind='train')]
  assert steps == list(range(1, 7))
  assert genotype_text.load(os.path.join(workdir, 'genotype.json')) == genotype
  with open(os.path.join(workdir, 'genotype.txt')) as f:
    assert genotype_text.from_darts_string(f.read()) == genotype
  assert os.path.exists(os.path.join(workdir, 'genotypes', 'epoch_002.json'))
  for png in ('search_curves.png', 'genotype.png'):
    assert os.path.getsize(os.path.join(workdir, png)) > 1000
  # The genotype is the DARTS rule applied to the final α.
  spec = search.config_lib.space_spec(tiny_config())
  assert genotypes.derive(spec, final_alpha(workdir)) == genotype


def test_resume_after_crash_gives_the_same_alpha(reference_run, tmp_path, monkeypatch):
  workdir = str(tmp_path)
  real_batch_at = data_lib.batch_at
  calls = {'n': 0}

  def crashing_batch_at(*args, **kwargs):
    calls['n'] += kwargs.get('augment') is not None  # Search batches, not evaluation.
    if calls['n'] == 2 * 4 + 1:  # Dies fetching step 5's batch; checkpoint at step 4.
      raise KeyboardInterrupt
    return real_batch_at(*args, **kwargs)

  monkeypatch.setattr(data_lib, 'batch_at', crashing_batch_at)
  with pytest.raises(KeyboardInterrupt):
    search.run(tiny_config(), workdir)
  monkeypatch.setattr(data_lib, 'batch_at', real_batch_at)
  assert ckpt_lib.Checkpointer(workdir).latest_step() == 4
  search.run(tiny_config(), workdir)
  want = final_alpha(reference_run[0])
  jax.tree.map(np.testing.assert_array_equal, final_alpha(workdir), want)
  # Steps repeated after the resume are not duplicated in the record.
  steps = [r['step'] for r in metrics_lib.read_jsonl(os.path.join(workdir, 'metrics.jsonl'),
                                                     kind='train')]
  assert steps == list(range(1, 7))


_KILLABLE = textwrap.dedent("""
    import sys; sys.path.insert(0, {root!r}); sys.path.insert(0, {root!r} + '/tests')
    import time
    from amdarts import data, loop, search
    import test_search
    real = data.batch_at
    def slow(*a, **k):  # Slow steps so the kill lands at the step it aims at.
      time.sleep(0.3)
      return real(*a, **k)
    data.batch_at = slow
    log = loop.LogMetrics.after_step
    def tell(self, run, state, metrics):  # Each recorded step, as it is recorded.
      log(self, run, state, metrics)
      print(run.step, flush=True)
    loop.LogMetrics.after_step = tell
    search.run(test_search.tiny_config(), {workdir!r})
""")


def _train_steps(workdir):
  return [r['step'] for r in metrics_lib.read_jsonl(os.path.join(workdir, 'metrics.jsonl'),
                                                    kind='train')]


def test_three_kills_in_a_row_resume_to_the_uninterrupted_result(reference_run, tmp_path):
  """kill -9 at three random steps, resuming each time, possibly mid-save; then finish.

  The killed runs share one persistent compilation cache, so only the first compiles.
  """
  workdir = str(tmp_path / 'w')
  kills = sorted(np.random.default_rng(int(time.time())).choice(np.arange(1, 6), 3,
                                                                replace=False))
  env = dict(os.environ, JAX_PLATFORMS='cpu',
             JAX_COMPILATION_CACHE_DIR=str(tmp_path / 'compilation_cache'),
             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='0',
             JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES='-1')
  for kill_at in kills:
    proc = subprocess.Popen(
        [sys.executable, '-c', _KILLABLE.format(root=ROOT, workdir=workdir)], env=env,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # Killed as soon as step `kill_at` is recorded: before, during or after its save.
    killer = threading.Timer(600, proc.kill)  # Bounds a hung run.
    killer.start()
    line = proc.stdout.readline()
    while line and int(line) < kill_at:
      line = proc.stdout.readline()
    killer.cancel()
    assert line and proc.poll() is None, (kills, proc.stderr.read()[-2000:])
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    proc.stdout.close()
    proc.stderr.close()
  ckpt = ckpt_lib.Checkpointer(workdir)
  assert ckpt.latest_step() is None or ckpt.latest_step() < 6, kills
  ckpt.close()
  genotype = search.run(tiny_config(), workdir)
  assert genotype == reference_run[1], kills
  jax.tree.map(np.testing.assert_array_equal, final_alpha(workdir),
               final_alpha(reference_run[0]))
  assert _train_steps(workdir) == list(range(1, 7)), kills  # Each step recorded once.


@pytest.mark.parametrize('estimator', sorted(hypergrad.ESTIMATORS))
def test_every_estimator_takes_a_search_step(estimator):
  config = tiny_config(**{'search.estimator': estimator})
  train, val = search.load_search_data(config)
  searcher = search.Searcher(config, train.image_shape, train.num_classes, 3)
  state = searcher.init(0)
  before = jax.tree.map(np.asarray, state.alpha)
  batch = lambda ds: data_lib.batch_at(ds, 0, 0, batch_size=8, seed=0)
  state, metrics = searcher.step_fn(state, batch(train), batch(val))
  metrics = jax.device_get(metrics)
  assert all(np.isfinite(v) for v in metrics.values())
  assert (metrics['g2_norm'] == 0) == (estimator == 'first_order')
  moved = jax.tree.map(lambda a, b: float(np.abs(np.asarray(a) - b).max()), state.alpha, before)
  assert min(jax.tree.leaves(moved)) > 0


def test_drop_path_ramps_over_the_search_epochs_without_retracing():
  """With the retraining regularisers the rate is train.drop_path · epoch / epochs."""
  config = tiny_config(**{'search.consistent_regularisers': True, 'train.auxiliary': False,
                          'train.cutout': 4, 'train.drop_path': 0.3, 'search.epochs': 3,
                          'search.estimator': 'first_order'})
  train, val = search.load_search_data(config)
  searcher = search.Searcher(config, train.image_shape, train.num_classes, 2)
  # Placed as the loop places it, so that the first call sees the layout of the rest.
  state = search.parallel.put_replicated(searcher.init(0), searcher.mesh)
  rates = []
  for step in range(6):  # Epochs 0, 0, 1, 1, 2, 2 at 2 steps per epoch.
    batch = lambda ds: data_lib.batch_at(ds, 0, step % 3, batch_size=8, seed=0)
    state, metrics = searcher.step_fn(state, batch(train), batch(val))
    rates.append(float(metrics['drop_path']))
    assert np.isfinite(float(metrics['train_loss']))
  np.testing.assert_allclose(rates, [0, 0, 0.1, 0.1, 0.2, 0.2], rtol=1e-6)
  assert searcher.step_fn._cache_size() == 1  # One compilation for every rate.
  assert search.search_augment(config).cutout_length == 4


def test_search_stops_once_the_genotype_is_unchanged_and_resumes_so(tmp_path):
  """search.stop_after_unchanged=2: finished after the 2nd epoch without a change."""
  # α ~ 5·N(0, 1) fixes the genotype: a few Adam steps of 3e-4 cannot reorder it.
  config = tiny_config(**{'search.epochs': 6, 'search.stop_after_unchanged': 2,
                          'search.alpha_init_scale': 5.0, 'search.estimator': 'first_order'})
  workdir = str(tmp_path)
  metrics_path = os.path.join(workdir, 'metrics.jsonl')
  # Interrupted inside epoch 2: the unchanged count of epoch 1 must survive the restart.
  search.run(config, workdir, stop_after=4)
  genotype = search.run(config, workdir)
  assert [r['epoch'] for r in metrics_lib.read_jsonl(metrics_path, kind='epoch')] == [1, 2, 3]
  stops = metrics_lib.read_jsonl(metrics_path, kind='stop')
  assert [(r['epoch'], r['unchanged_epochs']) for r in stops] == [(3, 2)]
  assert stops[0]['value'] == genotype_text.to_darts_string(genotype)
  assert genotype_text.load(os.path.join(workdir, 'genotype.json')) == genotype  # Finished.
  assert ckpt_lib.Checkpointer(workdir).latest_step() == 9  # 3 epochs of 3 steps.
  # A finished search stays finished.
  assert search.run(config, workdir) == genotype
  assert ckpt_lib.Checkpointer(workdir).latest_step() == 9
  assert len(metrics_lib.read_jsonl(metrics_path, kind='epoch')) == 3


@pytest.mark.parametrize('space,edge_mode,shared', [
    ('s1', 'pruned', True), ('s2', 'fixed', False), ('s2', 'searched', False)])
def test_spaces_and_edge_modes_run_a_step(space, edge_mode, shared):
  config = tiny_config(**{'space.name': space, 'space.edge_mode': edge_mode,
                          'space.shared': shared, 'search.estimator': 'first_order',
                          'space.steps': 1 if space == 's1' else 2})
  train, val = search.load_search_data(config)
  searcher = search.Searcher(config, train.image_shape, train.num_classes, 3)
  state = searcher.init(0)
  batch = lambda ds: data_lib.batch_at(ds, 0, 0, batch_size=8, seed=0)
  state, metrics = searcher.step_fn(state, batch(train), batch(val))
  assert np.isfinite(jax.device_get(metrics['train_loss']))
  keys = set(state.alpha)
  assert keys == ({'normal', 'reduce'} if shared else {'cell_00', 'cell_01', 'cell_02'})
  assert all(('beta' in v) == (edge_mode == 'searched') for v in state.alpha.values())
  genotype = searcher.genotype(state.alpha)
  assert genotypes.validate(genotype) == genotype


def test_two_stage_search_runs_stage_2_on_the_stage_1_edges_and_resumes_there(
    tmp_path, monkeypatch):
  """space.edge_mode=two_stage: edge search, then operator search on its topology."""
  config = tiny_config(**{'space.edge_mode': 'two_stage', 'space.steps': 2,
                          'search.epochs': 1, 'search.estimator': 'first_order'})
  workdir = str(tmp_path)
  runs = []  # The workdir of every loop.run, i.e. of every stage (re)started.
  loop_run = search.loop.run
  def recording_run(*args, **kwargs):
    runs.append(os.path.relpath(args[4], workdir))
    return loop_run(*args, **kwargs)
  monkeypatch.setattr(search.loop, 'run', recording_run)
  search.run(config, workdir, stop_after=4)  # Stage 1's 3 steps, then 1 of stage 2.
  assert runs == ['stage1', 'stage2']
  assert ckpt_lib.Checkpointer(os.path.join(workdir, 'stage2')).latest_step() == 1
  assert not os.path.exists(os.path.join(workdir, 'genotype.json'))
  genotype = search.run(config, workdir)  # Resumed: stage 2 only.
  assert runs == ['stage1', 'stage2', 'stage2']
  assert ckpt_lib.Checkpointer(os.path.join(workdir, 'stage2')).latest_step() == 3
  topology = search.config_lib.load_topology(os.path.join(workdir, 'stage1', 'topology.json'))
  assert search.config_lib.load_topology(os.path.join(workdir, 'topology.json')) == topology
  # Not the default edges of `fixed` mode, so stage 2 must have read the topology.
  assert topology != {k: spaces.fixed_pairs(2) for k in topology}
  # Stage 2 searched the ops of exactly the kept edges (sources per node, ascending).
  for key, genes in (('normal', genotype.normal), ('reduce', genotype.reduce)):
    assert [src for _, src in genes] == [i for pair in topology[key] for i in pair]
  assert genotype_text.load(os.path.join(workdir, 'genotype.json')) == genotype
  assert genotype_text.load(os.path.join(workdir, 'stage2', 'genotype.json')) == genotype


def test_multi_device_step_equals_single_device(run_with_devices):
  """4 emulated CPU devices: sharded batch, same α update as one device."""
  script = textwrap.dedent(f"""
      import sys; sys.path.insert(0, {ROOT!r}); sys.path.insert(0, {ROOT + '/tests'!r})
      import jax, numpy as np
      from amdarts import data, parallel, search
      import test_search
      assert jax.device_count() == 4
      config = test_search.tiny_config(**{{'search.estimator': 'amended_exact'}})
      train, val = search.load_search_data(config)
      out = {{}}
      for n in (1, 4):
        mesh = parallel.data_mesh(jax.devices()[:n])
        s = search.Searcher(config, train.image_shape, train.num_classes, 3, mesh)
        state = parallel.put_replicated(s.init(0), mesh)
        for i in range(2):
          b = lambda ds: parallel.put_batch(
              data.batch_at(ds, 0, i, batch_size=8, seed=0), mesh)
          state, m = s.step_fn(state, b(train), b(val))
        out[n] = jax.tree.map(np.asarray, jax.device_get((state.alpha, state.params, m)))
        if n == 4:
          assert len(state.alpha['normal']['alpha'].sharding.device_set) == 4
      a1, p1, m1 = out[1]; a4, p4, m4 = out[4]
      err = max(float(np.abs(x - y).max() / (np.abs(x).max() + 1e-12))
                for x, y in zip(jax.tree.leaves(a1), jax.tree.leaves(a4)))
      errp = max(float(np.abs(x - y).max() / (np.abs(x).max() + 1e-12))
                 for x, y in zip(jax.tree.leaves(p1), jax.tree.leaves(p4)))
      print('RELERR', err, errp, m1['g2_norm'], m4['g2_norm'])
      assert err < 1e-5 and errp < 1e-5, (err, errp)
      assert abs(m1['g2_norm'] - m4['g2_norm']) <= 1e-5 * m1['g2_norm']
      try:
        search.run(test_search.tiny_config(**{{'search.batch_size': 6}}), '/tmp/unused')
      except ValueError as e:
        assert 'not divisible by the 4 devices' in str(e), e
      else:
        raise AssertionError('batch 6 on 4 devices accepted')
      print('OK')
  """)
  out = run_with_devices(script, 4)
  assert out.returncode == 0 and 'OK' in out.stdout, out.stdout[-2000:] + out.stderr[-3000:]


@pytest.mark.parametrize('overrides,match', [
    ({'search.estimator': 'third_order'}, 'search.estimator'),
    ({'search.eta': -0.1}, 'eta must be >= 0'),
    ({'space.name': 's9'}, 'space.name'),
    ({'space.ops': ('sep_conv_3x3', 'conv_9x9')}, 'unknown op'),
    ({'space.edge_mode': 'random'}, 'edge_mode'),
    ({'model.depthwise': 'fft'}, 'depthwise'),
    ({'data.name': 'fashion_mnist', 'data.data_dir': '/nonexistent'}, 'fashion'),
    ({'space.topology': '/nonexistent.json', 'space.edge_mode': 'fixed'}, 'topology'),
    ({'space.topology': '/x.json', 'space.edge_mode': 'two_stage'}, 'written by stage 1'),
    ({'search.batch_size': 4096}, 'exceeds the search split'),
    # Issue 11's probes: each failed inside JAX or after a compiled step, or ran on.
    ({'search.c': 0}, 'search.c must be >= 1, got 0'),
    ({'search.c': -4}, 'search.c must be >= 1, got -4'),
    ({'data.num_classes': 0}, 'data.num_classes must be >= 2, got 0'),
    ({'keep_checkpoints': 0}, 'keep_checkpoints must be >= 1, got 0'),
    ({'log_every_steps': 0}, 'log_every_steps must be >= 1, got 0'),
    ({'checkpoint_every_steps': -1}, 'checkpoint_every_steps must be >= 0, got -1'),
    ({'search.eval_batches': -1}, 'search.eval_batches must be >= 0, got -1'),
    ({'search.a_lr': 0.0}, 'search.a_lr must be > 0, got 0.0'),
])
def test_bad_input_fails_fast_with_one_line(tmp_path, overrides, match):
  workdir = str(tmp_path / 'w')
  with pytest.raises(errors.ConfigError, match=match) as info:
    search.run(tiny_config(**overrides), workdir)
  assert '\n' not in str(info.value)
  assert not os.path.exists(workdir)  # Nothing is created before the checks pass.


def test_entry_point_prints_user_errors_in_one_line(tmp_path):
  workdir = str(tmp_path / 'w')
  command = [sys.executable, os.path.join(ROOT, 'experiments', 'search.py'),
             '--config=' + os.path.join(ROOT, 'configs', 'synthetic_tiny.py'),
             '--config.search.c=0', f'--workdir={workdir}']
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  out = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=ROOT,
                       env=env)
  assert out.returncode == 1
  assert out.stderr.strip().splitlines()[-1] == 'error: search.c must be >= 1, got 0'
  assert 'Traceback' not in out.stderr, out.stderr[-2000:]
  assert not os.path.exists(workdir)
  debug = subprocess.run(command + ['--debug'], capture_output=True, text=True,
                         timeout=300, cwd=ROOT, env=env)
  assert debug.returncode != 0 and 'Traceback' in debug.stderr
  assert 'ConfigError: search.c must be >= 1, got 0' in debug.stderr


def test_blame_tells_the_alpha_step_from_the_weight_step():
  assert search.blame(['alpha', 'alpha_grad_norm', 'g2_norm']) == 'search.a_lr'
  assert search.blame(['alpha', 'params', 'train_loss']) == 'search.w_lr'
  assert search.blame(['model_state']) == 'search.w_lr'


def _copy_of(reference_run, tmp_path, name):
  workdir = str(tmp_path / name)
  shutil.copytree(reference_run[0], workdir)
  return workdir


def test_unreadable_checkpoint_falls_back_to_the_previous_one(reference_run, tmp_path):
  workdir = _copy_of(reference_run, tmp_path, 'w')
  ckpt = ckpt_lib.Checkpointer(workdir)
  older, latest = sorted(ckpt.steps())
  ckpt.close()
  state_dir = os.path.join(workdir, 'checkpoints', str(latest), 'state')
  for root, _, files in os.walk(state_dir):
    for name in files:
      with open(os.path.join(root, name), 'wb') as f:
        f.write(b'garbage')
  with logged_warnings() as logged:
    genotype = search.run(tiny_config(), workdir)
  assert any(f'checkpoints/{latest}' in m and f'resuming from step {older}' in m
             for m in logged), logged
  assert genotype == reference_run[1]
  jax.tree.map(np.testing.assert_array_equal, final_alpha(workdir),
               final_alpha(reference_run[0]))


def test_another_config_is_refused_and_config_json_kept(reference_run, tmp_path):
  workdir = _copy_of(reference_run, tmp_path, 'w')
  with open(os.path.join(workdir, 'config.json')) as f:
    before = f.read()
  for overrides, diff in [({'search.c': 8}, 'search.c 4 → 8'), ({'seed': 1}, 'seed 0 → 1'),
                          ({'search.w_lr': 0.1}, 'search.w_lr 0.025 → 0.1'),
                          ({'data.max_examples': 80}, 'data.max_examples 48 → 80')]:
    with pytest.raises(ckpt_lib.CheckpointError, match='another config') as info:
      search.run(tiny_config(**overrides), workdir)
    assert diff in str(info.value) and '\n' not in str(info.value)
  with open(os.path.join(workdir, 'config.json')) as f:
    assert f.read() == before


def test_a_failing_plot_writer_does_not_stop_the_search(reference_run, tmp_path,
                                                        monkeypatch):
  from amdarts import plots

  def full_disk(*args, **kwargs):
    raise OSError(28, 'No space left on device')

  monkeypatch.setattr(plots, 'search_curves', full_disk)
  with logged_warnings() as logged:
    genotype = search.run(tiny_config(), str(tmp_path))
  assert genotype == reference_run[1]
  assert sum('Plots.end_epoch failed' in m and 'No space left' in m for m in logged) == 2
  assert os.path.exists(tmp_path / 'genotype.json')  # The essential outputs are there.
  assert not os.path.exists(tmp_path / 'search_curves.png')


def test_locked_config_rejects_typos():
  out = subprocess.run(
      [sys.executable, os.path.join(ROOT, 'experiments', 'search.py'),
       '--config=' + os.path.join(ROOT, 'configs', 'synthetic_tiny.py'),
       '--config.search.epochz=3', '--workdir=/tmp/never'],
      capture_output=True, text=True, timeout=300, cwd=ROOT)
  assert out.returncode != 0
  assert 'epochz' in out.stderr
  assert not os.path.exists('/tmp/never')


def test_diagnostic_logs_cosines_against_the_implicit_g2(tmp_path):
  config = tiny_config(**{'search.diag_every': 3, 'search.epochs': 1,
                          'search.estimator': 'first_order'})
  search.run(config, str(tmp_path))
  rows = metrics_lib.read_jsonl(str(tmp_path / 'metrics.jsonl'), kind='diagnostic')
  assert [r['step'] for r in rows] == [0]  # Steps 0 of 3 in one epoch.
  for key in ('cos_amended', 'cos_darts'):
    assert -1.0 <= rows[0][key] <= 1.0
  assert rows[0]['norm_g2'] > 0 and rows[0]['norm_g2_amended'] > 0
