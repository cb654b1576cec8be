"""Test setup: the repository root on sys.path, and fast XLA compiles.

Tests check math on tiny networks; XLA:CPU spends most of their time in LLVM
optimisation of large second-order graphs, so tests compile at backend optimisation
level 0 (identical results up to float rounding, several times faster to compile).
Set before JAX initialises its backend; a test subprocess inherits the environment.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if '--xla_backend_optimization_level' not in os.environ.get('XLA_FLAGS', ''):
  os.environ['XLA_FLAGS'] = (
      os.environ.get('XLA_FLAGS', '') + ' --xla_backend_optimization_level=0').strip()
