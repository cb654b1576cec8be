"""The stability study (issue 9): does an α estimator keep DARTS from collapsing?

    python experiments/study.py --config=configs/study_cpu.py --workdir=W
    python experiments/study.py --config=configs/study_cpu.py --workdir=W \
        --only=amended_exact_eta0.25/seed_1          # one cell of the grid
    python experiments/study.py --config=configs/study_cpu.py --workdir=W --dry_run

A study is a grid of cells, arm × seed. A search arm names an estimator of
`hypergrad.ESTIMATORS`, optionally with its amending coefficient
(`amended_exact_eta0.25`, Fig. 5's sweep). Its cell is an ordinary resumable
search (`search.run`) in `W/runs/<arm>/seed_<s>/`; the found genotype is then
retrained from scratch with the same config (the config's short `train` budget,
`retrain.train_and_evaluate` in `.../retrain/`). The arm `random` is Table 1's
baseline: its cell `random/seed_<k>` samples the k-th genotype uniformly from the
same space (`genotypes.sample`) and evaluates it the same way. Every cell of a
study shares the config but for the seed and the estimator, so arms differ only in
how α's gradient is estimated; a cell's retrain uses the cell's seed, so arms are
compared on paired initialisations.

Resuming: searches and retrains are `loop.run`s and resume from their checkpoints
(a kill loses at most the step in flight). A finished phase leaves its file
(`genotype.json`, `retrain/result.json`) and a finished cell its `summary.json`
(the cell's numbers); a cell with a summary is never touched again, so a rerun skips
it and its files stay as they are. Each cell stores the fingerprint of its config
in `cell.json` at its start and refuses to continue under another config. Cells can
run on their own (`--only`, e.g. one per machine under the user's own scheduler);
an invocation without `--only` runs whatever is missing and assembles the report
(`amdarts.study_report`) from all summaries.

Outputs in W: `runs/`, `results.json` (every number), `report.md`, `figures/*.png`,
`toy/` (Fig. 4 of the toy problem), `study_config.json`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import statistics
import time
from typing import Any, Callable, Mapping, Sequence

import ml_collections
import numpy as np

from amdarts import config_lib
from amdarts import genotype_text
from amdarts import genotypes
from amdarts import hypergrad
from amdarts import metrics as metrics_lib

RANDOM = 'random'

# Data sets whose training-split size is known without reading them (for --dry_run).
TRAIN_EXAMPLES = {'cifar10': 50_000, 'fashion_mnist': 60_000, 'mnist': 60_000}

# Tag of the random-search stream among the seeds' streams (amdarts.data.seeds has 0-3).
_SAMPLE_TAG = 17


@dataclasses.dataclass(frozen=True)
class Arm:
  """One arm of the grid.

  Attributes:
    name: as written in `study.arms`.
    estimator: a key of `hypergrad.ESTIMATORS`; None for random search.
    eta: the amending coefficient the name sets; None keeps `search.eta`.
  """

  name: str
  estimator: str | None
  eta: float | None = None

  @property
  def is_random(self) -> bool:
    return self.estimator is None


@dataclasses.dataclass(frozen=True)
class Cell:
  """One cell of the grid: an arm at a seed.

  Attributes:
    arm: the arm.
    seed: the search seed (for `random`, the index of the sampled genotype).
  """

  arm: Arm
  seed: int

  @property
  def key(self) -> str:
    """`<arm>/seed_<s>`: the cell's name for --only and its folder under runs/."""
    return f'{self.arm.name}/seed_{self.seed}'


def parse_arm(name: str) -> Arm:
  """`random`, an estimator name, or `<estimator>_eta<η>` for one that takes η.

  Raises:
    ValueError: for a name that is none of these.
  """
  if name == RANDOM:
    return Arm(name, None)
  if name in hypergrad.ESTIMATORS:
    return Arm(name, name)
  match = re.fullmatch(r'(.+)_eta(\d+(?:\.\d*)?(?:e-?\d+)?)', name)
  if match and match.group(1) in hypergrad.ESTIMATORS:
    estimator = match.group(1)
    if 'eta' not in hypergrad.ESTIMATORS[estimator].hparams:
      raise ValueError(f'study arm {name!r}: estimator {estimator!r} takes no eta')
    return Arm(name, estimator, float(match.group(2)))
  raise ValueError(f'unknown study arm {name!r}; arms are {RANDOM!r}, an estimator '
                   f'({", ".join(sorted(hypergrad.ESTIMATORS))}) or <estimator>_eta<value>')


def grid(config) -> list[Cell]:
  """Every cell of the study, arm by arm in config order (seeds of an arm together,
  so they share compiled steps through the compilation cache).

  Raises:
    ValueError: for an unknown or repeated arm, no seeds, or no random samples.
  """
  st = config.study
  names = list(st.arms)
  if not names or len(set(names)) != len(names):
    raise ValueError(f'study.arms must be non-empty and distinct, got {names}')
  seeds = [int(s) for s in st.seeds]
  if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0:
    raise ValueError(f'study.seeds must be distinct non-negative ints, got {seeds}')
  cells = []
  for name in names:
    arm = parse_arm(name)
    if arm.is_random:
      if st.random_samples < 1:
        raise ValueError('study.random_samples must be >= 1 with a random arm')
      cells += [Cell(arm, k) for k in range(st.random_samples)]
    else:
      cells += [Cell(arm, s) for s in seeds]
  return cells


def find_cell(config, key: str) -> Cell:
  """The grid cell named `key` (`<arm>/seed_<s>`); ValueError listing them otherwise."""
  cells = {c.key: c for c in grid(config)}
  if key not in cells:
    raise ValueError(f'--only={key!r} is not a cell of this study; cells: '
                     f'{", ".join(cells)}')
  return cells[key]


def cell_config(config, cell: Cell) -> ml_collections.ConfigDict:
  """The search-and-retrain config of one cell: the study's, but for seed and estimator.

  Returns:
    A locked ConfigDict without the `study` section (what search.run and
    retrain.train_and_evaluate read, and what `config.json` records).
  """
  c = ml_collections.ConfigDict(config.to_dict())
  del c['study']
  c.seed = cell.seed
  if not cell.arm.is_random:
    c.search.estimator = cell.arm.estimator
    if cell.arm.eta is not None:
      c.search.eta = cell.arm.eta
  c.lock()
  return c


def fingerprint(config) -> dict:
  """What must not change under a cell between invocations: its config, as a dict.

  `data.data_dir` is left out: it names a place on one machine, and a grid spread
  over machines reads the same data from different places.
  """
  d = config.to_dict()
  d['data'] = {k: v for k, v in d['data'].items() if k != 'data_dir'}
  return json.loads(json.dumps(d, sort_keys=True))


def _flatten(d: Mapping, prefix: str = '') -> dict:
  out = {}
  for k, v in d.items():
    if isinstance(v, Mapping):
      out.update(_flatten(v, f'{prefix}{k}.'))
    else:
      out[f'{prefix}{k}'] = v
  return out


def _read_json(path: str) -> Any:
  with open(path) as f:
    return json.load(f)


def write_json(path: str, value: Any) -> None:
  """Writes `value` atomically: a reader sees the old file or the whole new one."""
  tmp = os.path.join(os.path.dirname(path), f'.{os.path.basename(path)}.tmp')
  with open(tmp, 'w') as f:
    json.dump(value, f, indent=1)
  os.replace(tmp, path)


def cell_dir(workdir: str, cell: Cell) -> str:
  return os.path.join(workdir, 'runs', cell.arm.name, f'seed_{cell.seed}')


def _check_claim(directory: str, fp: dict) -> None:
  """Checks the cell's fingerprint against the one stored before, if any.

  Raises:
    ValueError: naming the fields that differ, when the cell holds another config.
  """
  path = os.path.join(directory, 'cell.json')
  if not os.path.exists(path):
    return
  old = _read_json(path)['fingerprint']
  if old != fp:
    a, b = _flatten(old), _flatten(fp)
    diff = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
    raise ValueError(f'{directory} holds a cell of another config (differs in '
                     f'{", ".join(diff[:8])}); use a new --workdir')


def _claim(directory: str, fp: dict) -> None:
  """Stores the cell's fingerprint in its folder (after `_check_claim`)."""
  os.makedirs(directory, exist_ok=True)
  path = os.path.join(directory, 'cell.json')
  if not os.path.exists(path):
    write_json(path, {'fingerprint': fp})


# ------------------------------------------------------------------ one cell


def _timing(directory: str) -> dict:
  path = os.path.join(directory, 'timing.json')
  return _read_json(path) if os.path.exists(path) else {'search_s': 0.0, 'retrain_s': 0.0}


def _add_time(directory: str, phase: str, seconds: float) -> None:
  """Accumulates wall seconds of a finished phase call (a killed call is not counted)."""
  timing = _timing(directory)
  timing[phase] = timing.get(phase, 0.0) + seconds
  write_json(os.path.join(directory, 'timing.json'), timing)


def sample_genotype(config, seed: int) -> genotypes.AnyGenotype:
  """The `seed`-th genotype of random search: uniform over the search space."""
  rng = np.random.default_rng(np.random.SeedSequence([seed, _SAMPLE_TAG]))
  return genotypes.sample(config_lib.space_spec(config), rng)


def run_cell(config, workdir: str, cell: Cell, *,
             print_fn: Callable[[str], None] = print) -> dict:
  """Runs (or resumes, or skips) one cell: search or sample, retrain, summary.

  Args:
    config: the study config.
    workdir: the study's workdir.
    cell: the cell.
    print_fn: where progress lines go.

  Returns:
    The cell's summary (`summary.json`; see `summarise_cell`).
  """
  # Imported here: the drivers pull in the networks and data; the report does not.
  from amdarts import retrain
  from amdarts import search

  directory = cell_dir(workdir, cell)
  cfg = cell_config(config, cell)
  _check_claim(directory, fingerprint(cfg))
  _claim(directory, fingerprint(cfg))
  summary_path = os.path.join(directory, 'summary.json')
  if os.path.exists(summary_path):
    print_fn(f'{cell.key}: done before, skipped')
    return _read_json(summary_path)

  genotype_path = os.path.join(directory, 'genotype.json')
  if not os.path.exists(genotype_path):
    t = time.time()
    if cell.arm.is_random:
      genotype = sample_genotype(cfg, cell.seed)
      search.write_genotype(directory, genotype, None)
    else:
      print_fn(f'{cell.key}: searching ({cfg.search.estimator}, eta={cfg.search.eta})')
      search.run(cfg, directory)
    _add_time(directory, 'search_s', time.time() - t)

  result_path = os.path.join(directory, 'retrain', 'result.json')
  if not os.path.exists(result_path):
    print_fn(f'{cell.key}: retraining its genotype')
    t = time.time()
    rcfg = ml_collections.ConfigDict(cfg.to_dict())
    rcfg.train.genotype = genotype_path
    rcfg.lock()
    retrain.train_and_evaluate(rcfg, os.path.join(directory, 'retrain'))
    _add_time(directory, 'retrain_s', time.time() - t)

  summary = summarise_cell(directory, cell, None if cell.arm.is_random else cfg.search.eta)
  write_json(summary_path, summary)
  print_fn(f'{cell.key}: test error {100 * summary["eval"]["test_error"]:.2f}%, '
           f'normal cell {summary["final"]["skip_count"]}/{summary["final"]["num_ops"]} '
           f'skip_connect, #P {summary["final"]["num_parametric"]}')
  return summary


# ------------------------------------------------------------------ reading a cell


def genotype_statistics(genotype: genotypes.AnyGenotype) -> dict:
  """Table 1's counts of a genotype's normal cell(s).

  Returns:
    {'skip_ratio': skip_connect among the preserved normal-cell ops, 'skip_count',
    'num_parametric': #P, parametric ops in the normal cell(s), 'num_ops': preserved
    normal-cell ops}. A per-cell genotype (S2) counts all its normal cells.
  """
  ops = [op for _, c in genotypes.named_cells(genotype) if not c.reduction
         for op, _ in c.genes]
  return {'skip_ratio': genotypes.skip_ratio(genotype, reduction=False),
          'skip_count': sum(op == 'skip_connect' for op in ops),
          'num_parametric': genotypes.num_parametric(genotype, reduction=False),
          'num_ops': len(ops)}


def epoch_statistics(record: Mapping) -> dict:
  """The Fig. 1 / Fig. 8 statistics of one epoch record of `search.run`.

  The one place the study reads them, so it follows the search's names
  (`genotypes.statistics`): `none_weight` is the paper's, the mean `none` weight over
  the normal-cell edges; skip ratio, skip count and #P are counted here in the
  normal cell of the epoch's genotype (the record's DARTS string).

  Args:
    record: a kind='epoch' record of metrics.jsonl.

  Returns:
    {'epoch', 'none_weight', 'skip_ratio', 'skip_count', 'num_parametric', 'num_ops',
    'train_acc', 'val_acc' (training-mode, α-step batches), 'eval_acc' (the
    super-net in eval mode on search-val), 'genotype'}.
  """
  genotype = genotype_text.from_darts_string(record['genotype'])
  return {'epoch': record['epoch'], 'none_weight': record['none_weight'],
          **genotype_statistics(genotype),
          'train_acc': record['train_acc'], 'val_acc': record['val_acc'],
          'eval_acc': record['eval_acc'], 'genotype': record['genotype']}


def _dedupe(rows: Sequence[dict]) -> list[dict]:
  """One record per step, the last one written, in step order.

  A hook that records before a step (the diagnostics) can record a step twice when
  a run is killed after it and resumes from the checkpoint of that step.
  """
  return sorted({r['step']: r for r in rows}.values(), key=lambda r: r['step'])


def _median(values: Sequence[float]) -> float | None:
  values = [v for v in values if v is not None and math.isfinite(v)]
  return statistics.median(values) if values else None


def summarise_cell(directory: str, cell: Cell, eta: float | None) -> dict:
  """Every number of a finished cell, from its files.

  Args:
    directory: the cell's folder.
    cell: the cell.
    eta: the search's amending coefficient (None for random search).

  Returns:
    {'cell', 'arm', 'seed', 'estimator', 'eta',
     'epochs': per epoch `epoch_statistics` + median ‖g1‖, ‖g2‖ and ‖g2‖/‖g1‖ of the
       epoch's logged steps,
     'diagnostics': per diagnosed step cos(g2′, g2), cos(g2_DARTS, g2), ⟨g2′, g2⟩ and
       the norms, with its (fractional) epoch,
     'hessian': per epoch λ_max of ∇²α L_val and its power-iteration residual,
     'final': the final genotype and its statistics, the super-net's last accuracies,
     'eval': test error, accuracy, parameters and multiply-adds of the retrained
       genotype, 'timing': search and retrain wall seconds, median step seconds}.
    Search-only entries are empty for random search.
  """
  genotype = genotype_text.load(os.path.join(directory, 'genotype.json'))
  result = _read_json(os.path.join(directory, 'retrain', 'result.json'))
  timing = _timing(directory)
  records = metrics_lib.read_jsonl(os.path.join(directory, 'metrics.jsonl'))
  by_kind: dict[str, list[dict]] = {}
  for r in records:
    by_kind.setdefault(r['kind'], []).append(r)
  epochs = [epoch_statistics(r) for r in _dedupe(by_kind.get('epoch', []))]
  train = _dedupe(by_kind.get('train', []))
  steps_per_epoch = _dedupe(by_kind['epoch'])[0]['step'] if epochs else 0
  for e in epochs:  # train records carry the loop's 0-based epoch.
    rows = [r for r in train if r['epoch'] == e['epoch'] - 1]
    e['g1_norm'] = _median([r['g1_norm'] for r in rows])
    e['g2_norm'] = _median([r['g2_norm'] for r in rows])
    e['g2_over_g1'] = _median([r['g2_norm'] / r['g1_norm'] for r in rows if r['g1_norm'] > 0])
  diagnostics = [
      {'step': r['step'], 'epoch': r['step'] / steps_per_epoch,
       **{k: r[k] for k in ('cos_amended', 'cos_darts', 'inner_amended', 'norm_g2',
                            'norm_g2_amended', 'norm_g2_darts')}}
      for r in _dedupe(by_kind.get('diagnostic', []))]
  hessian = [{'step': r['step'], 'epoch': r['epoch'], 'eigenvalue': r['eigenvalue'],
              'residual': r['residual']} for r in _dedupe(by_kind.get('hessian', []))]
  final = {'genotype': json.loads(genotype_text.to_json(genotype)),
           'genotype_text': genotype_text.to_darts_string(genotype),
           **genotype_statistics(genotype)}
  if epochs:
    last = epochs[-1]
    final.update(none_weight=last['none_weight'], supernet_val_acc=last['eval_acc'],
                 supernet_train_acc=last['train_acc'])
  step_s = _median([1.0 / r['steps_per_sec'] for r in train[1:] if r.get('steps_per_sec')])
  return {
      'cell': cell.key, 'arm': cell.arm.name, 'seed': cell.seed,
      'estimator': cell.arm.estimator, 'eta': eta,
      'epochs': epochs, 'diagnostics': diagnostics, 'hessian': hessian, 'final': final,
      'eval': {'test_error': 1.0 - result['test_accuracy'],
               'test_accuracy': result['test_accuracy'], 'params': result['params'],
               'macs': result['macs'], 'epochs': result['epochs'], 'steps': result['steps']},
      'timing': {**timing, 'search_steps': train[-1]['step'] if train else 0,
                 'search_step_s': step_s},
  }


# ------------------------------------------------------------------ the arms


def _mean_std(values: Sequence[float]) -> tuple[float | None, float | None]:
  """Mean and sample standard deviation (None for fewer than 2 values)."""
  values = [v for v in values if v is not None]
  if not values:
    return None, None
  std = statistics.stdev(values) if len(values) > 1 else None
  return statistics.fmean(values), std


def aggregate(arm: Arm, summaries: Sequence[dict]) -> dict:
  """An arm's row of the table: means over its finished cells, medians over diagnostics.

  Returns:
    Test error mean / std / values, #P, skip count, none weight, super-net accuracy,
    median cos(g2′, g2) and cos(g2_DARTS, g2), the share of diagnosed steps with
    ⟨g2′, g2⟩ ≥ 0, the median ‖g2‖/‖g1‖, λ_max at the start and end, parameters,
    wall seconds; None where the arm has no such number (random search).
  """
  errors = [s['eval']['test_error'] for s in summaries]
  err_mean, err_std = _mean_std(errors)
  finals = [s['final'] for s in summaries]
  diag = [d for s in summaries for d in s['diagnostics']]
  hess = [s['hessian'] for s in summaries if s['hessian']]
  ratios = [e['g2_over_g1'] for s in summaries for e in s['epochs']]

  def mean_of(key, rows=finals):
    return _mean_std([r.get(key) for r in rows])[0]

  return {
      'arm': arm.name, 'estimator': arm.estimator, 'cells': len(summaries),
      'eta': summaries[0]['eta'] if summaries else arm.eta,
      'test_error_mean': err_mean, 'test_error_std': err_std, 'test_errors': errors,
      'num_parametric_mean': mean_of('num_parametric'), 'skip_count_mean': mean_of('skip_count'),
      'num_ops': finals[0]['num_ops'] if finals else None,
      'none_weight_mean': mean_of('none_weight'),
      'supernet_val_acc_mean': mean_of('supernet_val_acc'),
      'cos_amended_median': _median([d['cos_amended'] for d in diag]),
      'cos_darts_median': _median([d['cos_darts'] for d in diag]),
      'inner_nonnegative': (sum(d['inner_amended'] >= 0 for d in diag) / len(diag)
                            if diag else None),
      'cos_darts_negative': (sum(d['cos_darts'] < 0 for d in diag) / len(diag)
                             if diag else None),
      'diag_points': len(diag),
      'g2_over_g1_median': _median(ratios) if not arm.is_random else None,
      'hessian_first_mean': _mean_std([h[0]['eigenvalue'] for h in hess])[0],
      'hessian_last_mean': _mean_std([h[-1]['eigenvalue'] for h in hess])[0],
      'params_mean': _mean_std([s['eval']['params'] for s in summaries])[0],
      'search_s_mean': _mean_std([s['timing']['search_s'] for s in summaries])[0],
      'retrain_s_mean': _mean_std([s['timing']['retrain_s'] for s in summaries])[0],
  }


def collect(config, workdir: str) -> dict:
  """Everything the report needs, from the finished cells' summaries (results.json).

  Returns:
    {'config': the study config, 'cells': {key: summary}, 'missing': keys without a
    summary, 'arms': {name: `aggregate`}, 'plan': `plan(config)`}.
  """
  cells = grid(config)
  done, missing = {}, []
  for cell in cells:
    path = os.path.join(cell_dir(workdir, cell), 'summary.json')
    if os.path.exists(path):
      done[cell.key] = _read_json(path)
    else:
      missing.append(cell.key)
  arms = {}
  for name in config.study.arms:
    arm = parse_arm(name)
    arms[name] = aggregate(arm, [done[c.key] for c in cells if c.arm == arm and c.key in done])
  return {'config': json.loads(config.to_json_best_effort()), 'cells': done,
          'missing': missing, 'arms': arms, 'plan': plan(config)}


# ------------------------------------------------------------------ cost


def train_examples(config) -> int:
  """Training examples the search splits and the retrain uses.

  Known data sets are not read (a dry run of the CIFAR study needs no CIFAR);
  others (synthetic, other tfds sets) are loaded to count them.
  """
  d = config.data
  full = TRAIN_EXAMPLES.get(d.name)
  if full is None:
    return len(config_lib.image_dataset(config, 'train'))
  return min(d.max_examples, full) if d.max_examples else full


def _search_steps_per_epoch(config) -> int:
  """Steps per search epoch as search.run computes them (search_split's halves)."""
  n = train_examples(config)
  cut = int(np.floor(config.data.train_portion * n))
  return min(cut, n - cut) // config.search.batch_size


def plan(config) -> dict:
  """The grid with its steps and, from `study.cost` (measured seconds), its wall time.

  The model: a search cell costs its steps at the estimator's step time, the
  super-net evaluation per epoch, its diagnostic and λ_max calls, and compilation:
  in full for the first cell of an arm, `cache_hit_s` (tracing; XLA's result comes
  from the persistent cache) for the others; the diagnostic's graph compiles once
  per η (arms without one share `search.eta`'s), λ_max's once for the study. A
  retrain costs its steps, a test evaluation per epoch and a compilation (every
  genotype is another network).

  Returns:
    {'cells': [{'cell', 'search_steps', 'retrain_steps', 'search_s', 'retrain_s'}],
     'total_s', 'calibrated': whether every needed cost is known (> 0),
     'measured': the calibration's note}.
  """
  cost, s, t = config.study.cost, config.search, config.train
  spe = _search_steps_per_epoch(config)
  search_steps = spe * s.epochs
  retrain_steps = (train_examples(config) // t.batch_size) * t.epochs
  diag_calls = -(-search_steps // s.diag_every) if s.diag_every else 0
  hess_calls = (s.epochs // s.hessian_every + 1) if s.hessian_every else 0
  rows, seen_arms, diag_etas, hessian_compiled, known = [], set(), set(), False, True
  for cell in grid(config):
    row = {'cell': cell.key, 'search_steps': 0 if cell.arm.is_random else search_steps,
           'retrain_steps': retrain_steps}
    if cell.arm.is_random:
      row['search_s'] = 0.0
    else:
      est = cell.arm.estimator
      step_s = cost.step_s.get(est, 0.0)
      compile_s = cost.compile_s.get(est, 0.0)
      known &= step_s > 0 and compile_s > 0
      first = cell.arm.name not in seen_arms
      seen_arms.add(cell.arm.name)
      secs = search_steps * step_s + s.epochs * cost.epoch_eval_s
      secs += compile_s if first else cost.cache_hit_s
      secs += diag_calls * cost.diag_s
      eta = s.eta if cell.arm.eta is None else cell.arm.eta
      if diag_calls and eta not in diag_etas:  # The diagnostic's graph depends on η only.
        secs += cost.diag_compile_s
        diag_etas.add(eta)
      secs += hess_calls * cost.hessian_s
      if hess_calls and not hessian_compiled:
        secs += cost.hessian_compile_s
        hessian_compiled = True
      row['search_s'] = secs
    row['retrain_s'] = (retrain_steps * cost.retrain_step_s + cost.retrain_compile_s
                        + t.epochs * cost.test_eval_s)
    known &= cost.retrain_step_s > 0
    rows.append(row)
  total = sum(r['search_s'] + r['retrain_s'] for r in rows)
  return {'cells': rows, 'search_steps_per_epoch': spe, 'total_s': total,
          'calibrated': bool(known), 'measured': cost.measured}


def format_plan(p: dict) -> str:
  """The grid and its estimate, one line per cell, for --dry_run."""
  lines = [f'{"cell":36s} {"search steps":>12s} {"retrain steps":>13s} '
           f'{"search":>9s} {"retrain":>9s}']
  for r in p['cells']:
    lines.append(f'{r["cell"]:36s} {r["search_steps"]:12d} {r["retrain_steps"]:13d} '
                 f'{metrics_lib.format_duration(r["search_s"]):>9s} '
                 f'{metrics_lib.format_duration(r["retrain_s"]):>9s}')
  total = metrics_lib.format_duration(p['total_s'])
  lines.append(f'{len(p["cells"])} cells, {p["search_steps_per_epoch"]} search steps per '
               f'epoch; estimated wall time {total}' +
               ('' if p['calibrated'] else ' (NOT calibrated: study.cost lacks numbers '
                'for some estimator; the estimate leaves them out)'))
  lines.append(f'calibration: {p["measured"]}')
  return '\n'.join(lines)


# ------------------------------------------------------------------ the study


def validate(config) -> None:
  """Checks a study config before anything runs (grid, search and retrain fields).

  Raises:
    ValueError: one line naming the field.
  """
  grid(config)
  for arm in {parse_arm(n) for n in config.study.arms}:
    if arm.is_random:
      continue
    cfg = cell_config(config, Cell(arm, 0))
    config_lib.validate_search(cfg)
    config_lib.validate_train(cfg)
  config_lib.validate_train(cell_config(config, Cell(parse_arm(RANDOM), 0)))


def claim_cells(config, workdir: str, only: Sequence[str] = ()) -> list[Cell]:
  """Validates the config and claims the cells to run in `workdir` (no heavy work).

  Returns:
    The cells: those `only` names, or the whole grid.

  Raises:
    ValueError: one line, for a bad config, an unknown cell, or a cell folder that
      holds another config's run (then nothing is written).
  """
  validate(config)
  cells = [find_cell(config, key) for key in only] if only else grid(config)
  fps = [fingerprint(cell_config(config, cell)) for cell in cells]
  for cell, fp in zip(cells, fps):  # Check every cell before claiming any.
    _check_claim(cell_dir(workdir, cell), fp)
  for cell, fp in zip(cells, fps):
    _claim(cell_dir(workdir, cell), fp)
  return cells


def run(config, workdir: str, *, only: Sequence[str] = (),
        print_fn: Callable[[str], None] = print) -> dict | None:
  """Runs the study (or the cells `only` names) in `workdir`, resuming what exists.

  Args:
    config: the study config (configs/study_*.py).
    workdir: the study's directory.
    only: cell keys (`<arm>/seed_<s>`) to run alone; then no report is written.
    print_fn: where progress lines go.

  Returns:
    results.json's contents after a whole run; None after `only` cells.
  """
  from amdarts import study_report  # matplotlib only when reporting.

  cells = claim_cells(config, workdir, only)
  write_json(os.path.join(workdir, 'study_config.json'),
              json.loads(config.to_json_best_effort()))
  t0 = time.time()
  for i, cell in enumerate(cells):
    print_fn(f'[{i + 1}/{len(cells)}] {cell.key}')
    run_cell(config, workdir, cell, print_fn=print_fn)
  if only:
    return None
  print_fn(f'all cells done ({metrics_lib.format_duration(time.time() - t0)} in this '
           'invocation); writing the report')
  return study_report.write(config, workdir)
