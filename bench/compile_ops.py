r"""Size of the compiled search step: HLO op counts, compile time, step time.

    python bench/compile_ops.py --space=s3 --cells=5 --estimator=amended_exact
    XLA_FLAGS=--xla_backend_optimization_level=0 python bench/compile_ops.py ...

On XLA:CPU the super-net's search step is dominated by per-op overhead and by
compile time, both roughly proportional to the number of HLO ops, so this prints,
for one configuration of `Searcher.step_fn` (α step + ω step):

  * `stablehlo`: ops in the lowered module (what JAX emits, before XLA);
  * `hlo`: instructions in the optimised HLO module, all computations;
  * `entry`: instructions of the optimised ENTRY computation (fusions count once:
    roughly the kernels executed per step);
  * compile seconds, and the median of --repeats timed steps after one warm-up.

The default configuration is the offline Fashion-MNIST search (S3, 5 cells of 4
nodes, C=8, 28x28x1) at batch 32. Run one configuration per process, on an otherwise
idle machine: times are only comparable between runs on the same machine.
"""

import os
import re
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app  # noqa: E402
from absl import flags  # noqa: E402
import jax  # noqa: E402
import numpy as np  # noqa: E402

from amdarts import parallel  # noqa: E402
from amdarts import search  # noqa: E402
from configs import base  # noqa: E402

_SPACE = flags.DEFINE_string('space', 's3', 'Search space.')
_EDGE_MODE = flags.DEFINE_string('edge_mode', 'pruned', 'Edge mode.')
_CELLS = flags.DEFINE_integer('cells', 5, 'Cells of the super-net.')
_NODES = flags.DEFINE_integer('nodes', 4, 'Intermediate nodes per cell.')
_C = flags.DEFINE_integer('c', 8, 'Base width.')
_BATCH = flags.DEFINE_integer('batch', 32, 'Batch size (train and val batch each).')
_IMAGE = flags.DEFINE_list('image', ['28', '28', '1'], 'Image shape H,W,C.')
_ESTIMATOR = flags.DEFINE_string('estimator', 'amended_exact', 'α estimator.')
_DEPTHWISE = flags.DEFINE_string('depthwise', 'shifted', "'shifted' or 'native'.")
_REPEATS = flags.DEFINE_integer('repeats', 5, 'Timed steps after one warm-up.')

# An HLO instruction line: `[ROOT ]%name = type op(...)`; StableHLO: `%x = stablehlo.op`.
_HLO_INSTR = re.compile(r'^\s*(ROOT\s+)?%?[\w.\-]+\s*=\s')
_STABLEHLO_OP = re.compile(r'^\s*(%[\w#:, ]+=\s*)?"?(stablehlo|chlo|mhlo)\.')


def count_stablehlo(text: str) -> int:
  return sum(bool(_STABLEHLO_OP.match(line)) for line in text.splitlines())


def count_hlo(text: str) -> tuple[int, int]:
  """(instructions in all computations, instructions in ENTRY) of an HLO module."""
  total = entry = 0
  in_entry = False
  for line in text.splitlines():
    if line.startswith('ENTRY'):
      in_entry = True
    elif line.startswith('}'):
      in_entry = False
    elif _HLO_INSTR.match(line):
      total += 1
      entry += in_entry
  return total, entry


def make_config():
  config = base.get_config()
  config.space.name = _SPACE.value
  config.space.edge_mode = _EDGE_MODE.value
  config.space.steps = _NODES.value
  config.search.cells = _CELLS.value
  config.search.c = _C.value
  config.search.batch_size = _BATCH.value
  config.search.estimator = _ESTIMATOR.value
  config.model.depthwise = _DEPTHWISE.value
  return config


def main(argv):
  del argv
  config = make_config()
  shape = tuple(int(d) for d in _IMAGE.value)
  searcher = search.Searcher(config, shape, 10, steps_per_epoch=100)
  rng = np.random.default_rng(0)

  def batch():
    return parallel.put_batch(
        {'image': rng.standard_normal((_BATCH.value,) + shape, np.float32),
         'label': rng.integers(0, 10, _BATCH.value).astype(np.int32)}, searcher.mesh)

  state = parallel.put_replicated(searcher.init(0), searcher.mesh)
  train_batch, val_batch = batch(), batch()
  t = time.perf_counter()
  lowered = searcher.step_fn.lower(state, train_batch, val_batch)
  lower_s = time.perf_counter() - t
  t = time.perf_counter()
  compiled = lowered.compile()
  compile_s = time.perf_counter() - t
  n_stablehlo = count_stablehlo(lowered.as_text())
  n_hlo, n_entry = count_hlo(compiled.as_text())

  state, metrics = compiled(state, train_batch, val_batch)  # Warm-up; donates `state`.
  jax.block_until_ready(metrics)
  times = []
  for _ in range(_REPEATS.value):
    t = time.perf_counter()
    state, metrics = compiled(state, train_batch, val_batch)
    jax.block_until_ready((state, metrics))
    times.append(time.perf_counter() - t)
  metrics = jax.device_get(metrics)
  if not all(np.isfinite(v).all() for v in metrics.values()):
    raise FloatingPointError(f'non-finite metrics: {metrics}')

  print(f'space={_SPACE.value} edge_mode={_EDGE_MODE.value} cells={_CELLS.value} '
        f'nodes={_NODES.value} C={_C.value} batch={_BATCH.value} image={shape} '
        f'estimator={_ESTIMATOR.value} depthwise={_DEPTHWISE.value} '
        f'XLA_FLAGS={os.environ.get("XLA_FLAGS", "")!r}')
  print('| stablehlo ops | hlo instrs | entry instrs | lower (s) | compile (s) '
        '| median step (s) |')
  print('|---|---|---|---|---|---|')
  print(f'| {n_stablehlo} | {n_hlo} | {n_entry} | {lower_s:.1f} | {compile_s:.1f} '
        f'| {statistics.median(times):.3f} |', flush=True)


if __name__ == '__main__':
  app.run(main)
