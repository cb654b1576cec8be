r"""Cost of one search step, per estimator and depthwise implementation.

    python bench/search_step.py                       # C=16, 8 cells, batch 16, 32x32x3
    python bench/search_step.py --cells=3 --c=8 --space=s3 --depthwise=shifted,native

For each depthwise implementation it compiles, separately, the weight step and the
α step of every estimator, and prints compile seconds, the median step time over
--repeats runs, the ratio to the first-order α step, and XLA's memory estimate of
the compiled step (arguments + outputs + temporaries; on GPU also the device's peak).
Ratios are measured in one run, on one machine, so they compare; absolute times do
not travel. The default configuration is the issue's; on XLA:CPU second-order graphs
of the 8-cell S1 super-net take many minutes to compile, so use a smaller one there.
"""

import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app  # noqa: E402
from absl import flags  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from amdarts import search  # noqa: E402
from configs import base  # noqa: E402

_CELLS = flags.DEFINE_integer('cells', 8, 'Cells of the super-net.')
_C = flags.DEFINE_integer('c', 16, 'Base width.')
_STEPS = flags.DEFINE_integer('nodes', 4, 'Intermediate nodes per cell.')
_BATCH = flags.DEFINE_integer('batch', 16, 'Batch size (train and val batch each).')
_IMAGE = flags.DEFINE_integer('image', 32, 'Image side (3 channels).')
_SPACE = flags.DEFINE_string('space', 's1', 'Search space.')
_DEPTHWISE = flags.DEFINE_list('depthwise', ['shifted', 'native'], 'Implementations.')
_ESTIMATORS = flags.DEFINE_list(
    'estimators', ['first_order', 'amended_exact', 'amended_fd', 'darts_second_order'],
    'α estimators to time (first_order first: it is the ratio base).')
_REPEATS = flags.DEFINE_integer('repeats', 5, 'Timed runs per step (after one warm-up).')
_OUT = flags.DEFINE_string('out', '', 'Optional JSON output path.')


def _time(fn, *args):
  jax.block_until_ready(fn(*args))  # Warm-up (compiled already).
  times = []
  for _ in range(_REPEATS.value):
    t = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - t)
  return statistics.median(times)


def _memory(compiled):
  m = compiled.memory_analysis()
  if m is None:
    return float('nan')
  return (m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes) / 2**20


def measure(depthwise: str, estimator: str, kind: str):
  config = base.get_config()
  config.space.name = _SPACE.value
  config.space.steps = _STEPS.value
  config.search.cells = _CELLS.value
  config.search.c = _C.value
  config.search.estimator = estimator
  config.model.depthwise = depthwise
  shape = (_IMAGE.value, _IMAGE.value, 3)
  searcher = search.Searcher(config, shape, 10, steps_per_epoch=100)
  state = searcher.init(0)
  batch = {'image': jax.random.normal(jax.random.PRNGKey(0), (_BATCH.value,) + shape),
           'label': jnp.arange(_BATCH.value, dtype=jnp.int32) % 10}
  if kind == 'weight':
    fn, args = jax.jit(searcher.weight_step), (state, state.alpha, batch)
  else:
    fn, args = jax.jit(searcher.alpha_step), (state, batch, batch)
  t = time.perf_counter()
  compiled = fn.lower(*args).compile()
  compile_s = time.perf_counter() - t
  return {'compile_s': compile_s, 'step_s': _time(compiled, *args),
          'memory_mib': _memory(compiled)}


def main(argv):
  del argv
  rows = []
  for depthwise in _DEPTHWISE.value:
    steps = [('weight step', 'weight', 'first_order')]
    steps += [(f'{e} α step', 'alpha', e) for e in _ESTIMATORS.value]
    base_time = None
    for name, kind, estimator in steps:
      r = measure(depthwise, estimator, kind)
      if kind == 'alpha' and estimator == 'first_order':
        base_time = r['step_s']
      r.update(depthwise=depthwise, step=name)
      rows.append(r)
      print(f'{depthwise:8s} {name:28s} compile {r["compile_s"]:7.1f}s  '
            f'step {r["step_s"] * 1e3:9.1f} ms  mem {r["memory_mib"]:8.1f} MiB', flush=True)
    for r in rows:
      if r['depthwise'] == depthwise:
        r['ratio'] = r['step_s'] / base_time if base_time else float('nan')
  dev = jax.devices()[0]
  print(f'\nS={_SPACE.value} cells={_CELLS.value} C={_C.value} nodes={_STEPS.value} '
        f'batch={_BATCH.value} image={_IMAGE.value} device={dev.platform} '
        f'XLA_FLAGS={os.environ.get("XLA_FLAGS", "")!r}')
  print('| depthwise | step | compile (s) | median step (ms) | × first-order α | memory (MiB) |')
  print('|---|---|---|---|---|---|')
  for r in rows:
    print(f'| {r["depthwise"]} | {r["step"]} | {r["compile_s"]:.1f} | '
          f'{r["step_s"] * 1e3:.1f} | {r["ratio"]:.2f} | {r["memory_mib"]:.1f} |')
  if len(_DEPTHWISE.value) > 1:
    by = {(r['depthwise'], r['step']): r['step_s'] for r in rows}
    a, b = _DEPTHWISE.value[:2]
    for step in dict.fromkeys(r['step'] for r in rows):
      print(f'{step}: {a}/{b} time ratio {by[(a, step)] / by[(b, step)]:.2f}')
  stats = getattr(dev, 'memory_stats', lambda: None)()
  if stats:
    print(f'device peak bytes in use: {stats.get("peak_bytes_in_use", 0) / 2**20:.1f} MiB')
  if _OUT.value:
    with open(_OUT.value, 'w') as f:
      json.dump(rows, f, indent=1)


if __name__ == '__main__':
  app.run(main)
