r"""amdarts against PyTorch DARTS: the same super-net, batch and estimators, one machine.

    python bench/compare.py --space=s3 --cells=3 --nodes=2 --c=8 --batch=16   # S3-small
    python bench/compare.py --space=s1 --cells=5 --c=8 --batch=16
    python bench/compare.py --space=s1 --cells=8 --c=16 --batch=32 --repeats=3

Every measurement runs in its own subprocess, so each reports its own peak RSS and
compiles from scratch: the forward pass (train mode), the weight step, the α step of
each estimator, and the full search step (α step + weight step) of each estimator.
PyTorch runs `bench/torch_darts.py` (the DARTS search network written from its
definitions; `pip install -r requirements-bench.txt`, or --torch_python pointing at an
interpreter that has torch), with as many threads as the process may use cores
(`taskset -c 1 python bench/compare.py ...` pins both sides to one). The table gives
medians over --repeats timed runs after one warm-up, the amdarts/PyTorch ratio and
each side's ratio of a second-order search step to the first-order one (DARTS's own
is 2.5: 1.0 against 0.4 GPU-days). Ratios are measured in one run, so they compare;
absolute times do not travel. Run it on an otherwise idle machine. Run it twice with
the same --compilation_cache=DIR and the second run shows what a restarted search
pays: executables loaded from disk, peak RSS without compilation.
"""

import json
import os
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from amdarts import hugepages  # noqa: E402

hugepages.reexec()  # Before anything else: the process may be replaced.

from absl import app  # noqa: E402
from absl import flags  # noqa: E402

_SPACE = flags.DEFINE_string('space', 's3', 'Search space.')
_CELLS = flags.DEFINE_integer('cells', 3, 'Cells of the super-net.')
_NODES = flags.DEFINE_integer('nodes', 2, 'Intermediate nodes per cell.')
_C = flags.DEFINE_integer('c', 8, 'Base width.')
_BATCH = flags.DEFINE_integer('batch', 16, 'Batch size (train and val batch each).')
_IMAGE = flags.DEFINE_integer('image', 32, 'Image side (3 channels).')
_ESTIMATORS = flags.DEFINE_list(
    'estimators', ['first_order', 'darts_second_order', 'amended_fd', 'amended_exact'],
    'α estimators.')
_STEPS = flags.DEFINE_list('steps', ['forward', 'weight', 'alpha', 'search'],
                           'Rows to measure: forward, weight (step), alpha (step of each '
                           'estimator), search (α step + weight step of each estimator).')
_REPEATS = flags.DEFINE_integer('repeats', 5, 'Timed runs after one warm-up.')
_FRAMEWORKS = flags.DEFINE_list('frameworks', ['torch', 'jax'], 'Columns to measure.')
_TORCH_PYTHON = flags.DEFINE_string('torch_python', '', 'Interpreter with torch installed '
                                    '(default: this one).')
_CACHE = flags.DEFINE_string(
    'compilation_cache', '', 'JAX persistent compilation cache directory (default off). '
    'Run twice with the same directory: the second run loads every executable, so its '
    'compile column is the load time and its RSS that of a restarted search.')
_OUT = flags.DEFINE_string('out', '', 'Optional JSON output path.')
_RUN = flags.DEFINE_string('run', '', 'Internal: framework:what to measure in this process.')

_SPACE_OPS = {
    's1': ('none', 'max_pool_3x3', 'avg_pool_3x3', 'skip_connect', 'sep_conv_3x3',
           'sep_conv_5x5', 'dil_conv_3x3', 'dil_conv_5x5'),
    's2': ('skip_connect', 'sep_conv_3x3'),
    's3': ('sep_conv_3x3', 'skip_connect', 'none'),
}


def _peak_rss_gib() -> float:
  import resource
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def _median_time(fn, repeats):
  fn()  # Warm-up (and, for JAX, the first execution after compiling).
  times = []
  for _ in range(repeats):
    t = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t)
  return statistics.median(times), min(times), max(times)


def _measure_jax(what: str) -> dict:
  import jax
  import jax.numpy as jnp

  from amdarts import compile_cache
  from amdarts import search
  from configs import base

  compile_cache.enable(_CACHE.value)
  config = base.get_config()
  config.search.consistent_regularisers = False  # DARTS's search net: no aux head, drop-path.
  config.space.name, config.space.steps = _SPACE.value, _NODES.value
  config.search.cells, config.search.c = _CELLS.value, _C.value
  config.search.estimator = what.split(':')[-1] if ':' in what else 'first_order'
  shape = (_IMAGE.value, _IMAGE.value, 3)
  searcher = search.Searcher(config, shape, 10, steps_per_epoch=100)
  state = searcher.init(0)
  keys = jax.random.split(jax.random.PRNGKey(0), 2)
  batches = [{'image': jax.random.normal(k, (_BATCH.value,) + shape),
              'label': jnp.arange(_BATCH.value, dtype=jnp.int32) % 10} for k in keys]
  kind = what.split(':')[0]
  if kind == 'forward':
    loss_fn = search.make_loss_fn(searcher.net, state.rng, 0.0)
    fn = jax.jit(lambda s, b: loss_fn(s.params, s.alpha, b, s.model_state)[0])
    args = (state, batches[0])
  elif kind == 'weight':
    fn, args = jax.jit(searcher.weight_step), (state, state.alpha, batches[0])
  elif kind == 'alpha':
    fn, args = jax.jit(searcher.alpha_step), (state, batches[0], batches[1])
  else:  # The full search step, as the search loop runs it (state not donated here).
    fn, args = jax.jit(searcher.search_step), (state, batches[0], batches[1])
  t = time.perf_counter()
  lowered = fn.lower(*args)
  compiled = lowered.compile()
  compile_s = time.perf_counter() - t
  hlo_ops = sum(1 for line in compiled.as_text().splitlines() if ' = ' in line)
  med, lo, hi = _median_time(lambda: jax.block_until_ready(compiled(*args)), _REPEATS.value)
  stats = jax.devices()[0].memory_stats() or {}  # None on CPU.
  return {'compile_s': compile_s, 'step_s': med, 'min_s': lo, 'max_s': hi,
          'hlo_ops': hlo_ops, 'rss_gib': _peak_rss_gib(),
          'device_peak_gib': stats.get('peak_bytes_in_use', 0) / 2**30}


def _measure_torch(what: str) -> dict:
  import torch

  import torch_darts
  threads = int(os.environ.get('BENCH_THREADS', len(os.sched_getaffinity(0))))
  torch.set_num_threads(threads)
  torch.manual_seed(0)
  net = torch_darts.Network(_SPACE_OPS[_SPACE.value], c=_C.value, layers=_CELLS.value,
                            steps=_NODES.value)
  s = torch_darts.Search(net)
  xs = [torch.randn(_BATCH.value, 3, _IMAGE.value, _IMAGE.value) for _ in range(2)]
  y = torch.arange(_BATCH.value) % 10
  s.weight_step(xs[0], y)  # A momentum buffer exists, as mid-search.
  kind, est = (what.split(':') + ['first_order'])[:2]
  if kind == 'forward':
    fn = lambda: net.loss(xs[0], y).item()
  elif kind == 'weight':
    fn = lambda: s.weight_step(xs[0], y)
  elif kind == 'alpha':
    fn = lambda: s.alpha_step(est, xs[0], y, xs[1], y)
  else:
    fn = lambda: s.search_step(est, xs[0], y, xs[1], y).item()
  med, lo, hi = _median_time(fn, _REPEATS.value)
  return {'compile_s': 0.0, 'step_s': med, 'min_s': lo, 'max_s': hi, 'hlo_ops': 0,
          'rss_gib': _peak_rss_gib()}


def _child(framework: str, what: str) -> dict:
  python = (_TORCH_PYTHON.value or sys.executable) if framework == 'torch' else sys.executable
  argv = [python, os.path.abspath(__file__), f'--run={framework}/{what}'] + [
      f'--{name}={flags.FLAGS[name].serialize().split("=", 1)[1]}'
      for name in ('space', 'cells', 'nodes', 'c', 'batch', 'image', 'repeats',
                   'compilation_cache')]
  env = dict(os.environ, PYTHONPATH=os.pathsep.join(
      [os.path.dirname(os.path.abspath(__file__)),
       os.path.dirname(os.path.dirname(os.path.abspath(__file__)))]))
  proc = subprocess.run(argv, capture_output=True, text=True, env=env)
  lines = [l for l in proc.stdout.splitlines() if l.startswith('RESULT ')]
  if proc.returncode or not lines:
    tail = (proc.stderr.strip().splitlines() or ['?'])[-1]
    return {'error': f'exit {proc.returncode}: {tail[:200]}'}
  return json.loads(lines[-1][len('RESULT '):])


def main(argv):
  del argv
  if _RUN.value:
    framework, what = _RUN.value.split('/', 1)
    result = (_measure_torch if framework == 'torch' else _measure_jax)(what)
    print('RESULT ' + json.dumps(result), flush=True)
    return
  rows = [('forward', 'forward'), ('weight step', 'weight')]
  rows += [(f'{e} α step', f'alpha:{e}') for e in _ESTIMATORS.value]
  rows += [(f'{e} search step', f'search:{e}') for e in _ESTIMATORS.value]
  rows = [r for r in rows if r[1].split(':')[0] in _STEPS.value]
  results = {}
  for label, what in rows:
    for fw in _FRAMEWORKS.value:
      r = results[(label, fw)] = _child(fw, what)
      msg = r.get('error') or (f'{r["step_s"] * 1e3:9.1f} ms (min {r["min_s"] * 1e3:.1f}, '
                               f'max {r["max_s"] * 1e3:.1f}) compile {r["compile_s"]:6.1f} s '
                               f'RSS {r["rss_gib"]:.2f} GiB' +
                               (f' device peak {r["device_peak_gib"]:.2f} GiB'
                                if r.get('device_peak_gib') else ''))
      print(f'{fw:6s} {label:32s} {msg}', flush=True)

  def cell(label, fw, key='step_s', scale=1e3, fmt='{:.1f}'):
    r = results.get((label, fw), {})
    return fmt.format(r[key] * scale) if key in r else '–'

  print(f'\nS={_SPACE.value} cells={_CELLS.value} nodes={_NODES.value} C={_C.value} '
        f'batch={_BATCH.value} image={_IMAGE.value}, median of {_REPEATS.value}; '
        f'{len(os.sched_getaffinity(0))} cores (affinity)')
  print('| step | PyTorch (ms) | amdarts (ms) | amdarts / PyTorch | amdarts compile (s) | '
        'peak RSS PyTorch / amdarts (GiB) | HLO ops |')
  print('|---|---|---|---|---|---|---|')
  for label, _ in rows:
    t, j = results.get((label, 'torch'), {}), results.get((label, 'jax'), {})
    ratio = f'{j["step_s"] / t["step_s"]:.2f}' if 'step_s' in t and 'step_s' in j else '–'
    print(f'| {label} | {cell(label, "torch")} | {cell(label, "jax")} | {ratio} | '
          f'{cell(label, "jax", "compile_s", 1)} | {cell(label, "torch", "rss_gib", 1, "{:.2f}")}'
          f' / {cell(label, "jax", "rss_gib", 1, "{:.2f}")} | '
          f'{cell(label, "jax", "hlo_ops", 1, "{:.0f}")} |')
  base = 'first_order search step'
  for fw, name in (('torch', 'PyTorch'), ('jax', 'amdarts')):
    b = results.get((base, fw), {}).get('step_s')
    if not b:
      continue
    parts = [f'{e} {results[(f"{e} search step", fw)]["step_s"] / b:.2f}'
             for e in _ESTIMATORS.value
             if e != 'first_order' and 'step_s' in results.get((f'{e} search step', fw), {})]
    print(f'{name}: search step / first-order search step: ' + ', '.join(parts))
  t = results.get(('darts_second_order search step', 'torch'), {}).get('step_s')
  j = results.get(('amended_exact search step', 'jax'), {}).get('step_s')
  if t and j:
    print(f'amdarts amended_exact search step / PyTorch DARTS second-order search step: '
          f'{j / t:.2f}')
  if _OUT.value:
    with open(_OUT.value, 'w') as f:
      json.dump({f'{k[0]}|{k[1]}': v for k, v in results.items()}, f, indent=1)


if __name__ == '__main__':
  app.run(main)
