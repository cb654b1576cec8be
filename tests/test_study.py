"""amdarts.study: the grid, a tiny study end to end, a killed study's resume, the report."""

import hashlib
import json
import os

import pytest

from amdarts import retrain
from amdarts import search
from amdarts import study
from amdarts import study_report
from configs import study_tiny

# The tiny synthetic grid: the amended arm (searched, diagnosed, λ_max) and random search.
ARMS = ('amended_exact_eta0.5', 'random')


def _config():
  config = study_tiny.get_config()
  config.study.arms = ARMS
  return config


def _snapshot(folder):
  """{path: (mtime_ns, sha1)} of every file under `folder`."""
  out = {}
  for root, _, files in os.walk(folder):
    for name in files:
      path = os.path.join(root, name)
      with open(path, 'rb') as f:
        out[path] = (os.stat(path).st_mtime_ns, hashlib.sha1(f.read()).hexdigest())
  return out


def _forbid(monkeypatch, *names):
  """Makes search.run / retrain.train_and_evaluate fail the test if they are called."""
  def fail(*args, **kwargs):
    raise AssertionError(f'called again: {args[1] if len(args) > 1 else args}')
  if 'search' in names:
    monkeypatch.setattr(search, 'run', fail)
  if 'retrain' in names:
    monkeypatch.setattr(retrain, 'train_and_evaluate', fail)


@pytest.fixture(scope='module')
def killed_then_resumed(tmp_path_factory):
  """The tiny study killed during its second retrain (one step done), then rerun.

  Returns (workdir, snapshot of the finished first cell before the resume, snapshot
  of the killed cell's genotype before the resume, printed lines of the resume).
  """
  workdir = str(tmp_path_factory.mktemp('study'))
  config = _config()
  real = retrain.train_and_evaluate
  calls = []

  def killed(cfg, wd, **kwargs):
    calls.append(wd)
    if len(calls) == 2:  # random/seed_0: one step, its checkpoint, then the "kill".
      assert real(cfg, wd, stop_after=1) is None
      raise KeyboardInterrupt
    return real(cfg, wd, **kwargs)

  with pytest.MonkeyPatch.context() as mp:
    mp.setattr(retrain, 'train_and_evaluate', killed)
    with pytest.raises(KeyboardInterrupt):
      study.run(config, workdir, print_fn=lambda s: None)
  first = os.path.join(workdir, 'runs', ARMS[0], 'seed_0')
  second = os.path.join(workdir, 'runs', 'random', 'seed_0')
  assert os.path.exists(os.path.join(first, 'summary.json'))
  assert not os.path.exists(os.path.join(second, 'summary.json'))
  assert not os.path.exists(os.path.join(workdir, 'report.md'))
  before_first = _snapshot(first)
  before_genotype = _snapshot(os.path.join(second, 'genotype.json'))
  lines = []
  with pytest.MonkeyPatch.context() as mp:
    _forbid(mp, 'search')  # Nothing is searched again.
    study.run(config, workdir, print_fn=lines.append)
  return workdir, before_first, before_genotype, lines


def test_killed_study_resumes_without_redoing_finished_runs(killed_then_resumed):
  workdir, before_first, before_genotype, lines = killed_then_resumed
  first = os.path.join(workdir, 'runs', ARMS[0], 'seed_0')
  assert _snapshot(first) == before_first  # The finished cell: not a byte, not a touch.
  assert f'{ARMS[0]}/seed_0: done before, skipped' in lines
  second = os.path.join(workdir, 'runs', 'random', 'seed_0')
  assert _snapshot(os.path.join(second, 'genotype.json')) == before_genotype
  result = json.load(open(os.path.join(second, 'retrain', 'result.json')))
  assert result['steps'] == 3  # 48 images, batch 16, 1 epoch: resumed from step 1.
  records = [json.loads(line) for line in open(os.path.join(second, 'retrain',
                                                              'metrics.jsonl'))]
  train_steps = [r['step'] for r in records if r['kind'] == 'train']
  assert sorted(train_steps) == [1, 2, 3] and len(train_steps) == 3  # Step 1 ran once.


def test_tiny_study_report_has_every_column_filled(killed_then_resumed):
  workdir = killed_then_resumed[0]
  report = open(os.path.join(workdir, 'report.md')).read()
  assert study_report.missing_columns(report, ARMS) == {arm: [] for arm in ARMS}
  results = json.load(open(os.path.join(workdir, 'results.json')))
  assert results['missing'] == []
  amended = results['arms'][ARMS[0]]
  assert amended['diag_points'] == 2  # Diagnosed at steps 0 and 3 of 6.
  assert len(results['cells'][f'{ARMS[0]}/seed_0']['hessian']) == 3  # Epochs 0, 1, 2.
  assert [e['epoch'] for e in results['cells'][f'{ARMS[0]}/seed_0']['epochs']] == [1, 2]
  assert 0 <= amended['test_error_mean'] <= 1
  assert results['arms']['random']['g2_over_g1_median'] is None
  for name in ('curves', 'grad_norms', 'hypergradient', 'hessian', 'eta_sweep'):
    assert os.path.getsize(os.path.join(workdir, results['figures'][name])) > 1000


def test_rerun_of_a_finished_study_only_rewrites_the_report(killed_then_resumed,
                                                           monkeypatch):
  workdir = killed_then_resumed[0]
  runs = _snapshot(os.path.join(workdir, 'runs'))
  os.remove(os.path.join(workdir, 'report.md'))
  _forbid(monkeypatch, 'search', 'retrain')
  results = study.run(_config(), workdir, print_fn=lambda s: None)
  assert _snapshot(os.path.join(workdir, 'runs')) == runs
  assert os.path.exists(os.path.join(workdir, 'report.md'))
  assert sorted(results['cells']) == [f'{a}/seed_0' for a in sorted(ARMS)]


def test_a_cell_refuses_another_config(killed_then_resumed):
  workdir = killed_then_resumed[0]
  config = _config()
  config.search.a_lr = 1e-2
  with pytest.raises(ValueError, match=r'another config \(differs in search.a_lr\)'):
    study.run(config, workdir, only=[f'{ARMS[0]}/seed_0'], print_fn=lambda s: None)


def test_grid_names_and_plan():
  config = study_tiny.get_config()
  config.study.arms = ('first_order', 'amended_exact_eta0.25', 'random')
  config.study.seeds = (0, 3)
  config.study.random_samples = 2
  assert [c.key for c in study.grid(config)] == [
      'first_order/seed_0', 'first_order/seed_3', 'amended_exact_eta0.25/seed_0',
      'amended_exact_eta0.25/seed_3', 'random/seed_0', 'random/seed_1']
  assert study.parse_arm('amended_exact_eta0.25') == study.Arm(
      'amended_exact_eta0.25', 'amended_exact', 0.25)
  cfg = study.cell_config(config, study.find_cell(config, 'amended_exact_eta0.25/seed_3'))
  assert (cfg.seed, cfg.search.estimator, cfg.search.eta) == (3, 'amended_exact', 0.25)
  with pytest.raises(ValueError, match='takes no eta'):
    study.parse_arm('first_order_eta0.5')
  with pytest.raises(ValueError, match='unknown study arm'):
    study.parse_arm('amended')
  with pytest.raises(ValueError, match='not a cell of this study'):
    study.find_cell(config, 'random/seed_2')
  plan = study.plan(config)
  # 48 examples: halves of 24, 3 steps of 8 per epoch, 2 epochs; retrain 3 steps.
  assert plan['search_steps_per_epoch'] == 3
  assert [r['search_steps'] for r in plan['cells']] == [6, 6, 6, 6, 0, 0]
  assert {r['retrain_steps'] for r in plan['cells']} == {3}


def test_random_arm_samples_valid_reproducible_genotypes():
  config = study_tiny.get_config()
  config.space.steps = 4
  draws = [study.sample_genotype(config, k) for k in range(6)]
  assert draws == [study.sample_genotype(config, k) for k in range(6)]
  assert len(set(draws)) == 6
  for g in draws:  # S3 without none: sep_conv_3x3 and skip_connect only, 8 genes.
    assert len(g.normal) == 8
    assert {op for op, _ in g.normal + g.reduce} <= {'sep_conv_3x3', 'skip_connect'}


def test_plan_counts_each_compile_once():
  """study_cpu's grid: the diagnostic compiles once per η (4), λ_max once, steps per arm."""
  from configs import study_cpu
  config = study_cpu.get_config()
  for group in (config.study.cost, config.study.cost.step_s, config.study.cost.compile_s):
    for k, v in group.items():
      if isinstance(v, float):
        group[k] = 0.0
  config.study.cost.diag_compile_s = 1.0
  config.study.cost.hessian_compile_s = 10.0
  config.study.cost.compile_s.amended_exact = 100.0
  config.study.cost.cache_hit_s = 1000.0
  plan = study.plan(config)
  # 4 η diagnostics + 1 λ_max + 4 amended arms compiled + 7 second seeds traced.
  assert plan['total_s'] == pytest.approx(4 + 10 + 4 * 100 + 7 * 1000)
  assert not plan['calibrated']  # Step seconds are 0 here.
  assert study.plan(study_cpu.get_config())['calibrated']
