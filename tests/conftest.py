"""Test setup: the repository root on sys.path, fast XLA compiles, shared fixtures.

Tests check math on tiny networks; XLA:CPU spends most of their time in LLVM
optimisation of large second-order graphs, so tests compile at backend optimisation
level 0 (identical results up to float rounding, several times faster to compile).
Set before JAX initialises its backend; a test subprocess inherits the environment.
"""

import contextlib
import logging
import os
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
if '--xla_backend_optimization_level' not in os.environ.get('XLA_FLAGS', ''):
  os.environ['XLA_FLAGS'] = (
      os.environ.get('XLA_FLAGS', '') + ' --xla_backend_optimization_level=0').strip()
# Entry points run by tests compile afresh: no persistent cache (amdarts.compile_cache).
os.environ['AMDARTS_COMPILATION_CACHE'] = ''


@pytest.fixture
def run_with_devices():
  """Runs a Python script in a subprocess that sees `n` emulated CPU devices.

  `run_with_devices(script, n, timeout=900)` returns the `CompletedProcess` (text
  output). Multi-device tests need a process of their own: JAX fixes the device
  count when it starts.
  """

  def run(script, n, timeout=900):
    env = dict(os.environ, JAX_PLATFORMS='cpu')
    env['XLA_FLAGS'] = (env.get('XLA_FLAGS', '') +
                        f' --xla_force_host_platform_device_count={n}').strip()
    return subprocess.run([sys.executable, '-c', script], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)

  return run


@pytest.fixture
def indexed_dataset():
  """Factory of datasets whose label is the example's index, so batches reveal which examples.

  `indexed_dataset(n, image_shape=(4, 4, 3))` gives n random u8 images, labels 0..n-1,
  n classes and stats (0.5, 0.25) per channel.
  """
  from amdarts import data as data_lib

  def make(n, image_shape=(4, 4, 3)):
    images = np.random.default_rng(0).integers(0, 256, (n, *image_shape), dtype=np.uint8)
    c = image_shape[-1]
    return data_lib.ArrayDataset(images, np.arange(n), n, (0.5,) * c, (0.25,) * c)

  return make


@pytest.fixture
def per_cell_genotype():
  """A two-cell `PerCellGenotype` of two nodes per cell; the second is a reduction cell."""
  from amdarts import genotypes

  return genotypes.PerCellGenotype((
      genotypes.CellGenotype((('skip_connect', 0), ('sep_conv_3x3', 1),
                              ('sep_conv_3x3', 0), ('skip_connect', 2)), (2, 3), False),
      genotypes.CellGenotype((('sep_conv_3x3', 1), ('sep_conv_3x3', 0),
                              ('skip_connect', 2), ('sep_conv_3x3', 1)), (2, 3), True),
  ))


@contextlib.contextmanager
def logged_warnings():
  """Collects the messages of absl warnings (and worse) logged within."""
  from absl import logging as absl_logging
  messages = []

  class Collect(logging.Handler):
    def emit(self, record):
      messages.append(record.getMessage())

  handler = Collect(logging.WARNING)
  absl_logging.get_absl_logger().addHandler(handler)
  try:
    yield messages
  finally:
    absl_logging.get_absl_logger().removeHandler(handler)
