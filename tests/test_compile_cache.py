"""The persistent compilation cache: a second process loads what the first compiled."""

import json
import os
import subprocess
import sys

from tests.conftest import ROOT

# Compiles a jitted gradient through the depthwise FFI kernel (a custom call that must
# resolve again when a cached executable is loaded) and reports the cache events.
_SCRIPT = r"""
import json, sys
import jax, jax.numpy as jnp
from amdarts import compile_cache, primitives
events = []
jax.monitoring.register_event_listener(lambda name, **kw: events.append(name))
directory = compile_cache.enable(sys.argv[1])
jax.config.update('jax_persistent_cache_min_compile_time_secs', 0)  # Cache even this.
f = jax.jit(jax.grad(lambda x, k: primitives.depthwise_conv(x, k, 1, 1, 1).sum() ** 2))
g = f(jnp.ones((2, 6, 6, 3)), jnp.full((3, 3, 3), 0.1))
print(json.dumps({'dir': directory, 'grad': float(g.sum()),
                  'hits': events.count('/jax/compilation_cache/cache_hits'),
                  'misses': events.count('/jax/compilation_cache/cache_misses')}))
"""


def _run(cache_dir):
  env = dict(os.environ, JAX_PLATFORMS='cpu', PYTHONPATH=ROOT)
  env.pop('AMDARTS_COMPILATION_CACHE', None)
  proc = subprocess.run([sys.executable, '-c', _SCRIPT, cache_dir], env=env, cwd=ROOT,
                        capture_output=True, text=True, timeout=300, check=True)
  return json.loads(proc.stdout.strip().splitlines()[-1])


def test_second_process_loads_the_compiled_step_from_the_cache(tmp_path):
  cache_dir = str(tmp_path / 'cache')
  first, second = _run(cache_dir), _run(cache_dir)
  assert first['dir'] == second['dir'] == cache_dir
  assert first['misses'] >= 1 and first['hits'] == 0
  assert second['hits'] >= 1 and second['misses'] == 0
  assert second['grad'] == first['grad']  # The loaded executable computes the same.
  # '' turns it off: nothing is looked up or written.
  off = _run('')
  assert off['dir'] is None and off['hits'] == off['misses'] == 0
