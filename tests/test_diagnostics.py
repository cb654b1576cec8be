"""amdarts.diagnostics: power iteration, and λ_max of ∇²α L_val against jax.hessian."""

import jax
from jax.flatten_util import ravel_pytree
import jax.numpy as jnp
import numpy as np
import pytest

from amdarts import data as data_lib
from amdarts import diagnostics
from amdarts import search
from configs import synthetic_tiny


@pytest.mark.parametrize('spectrum', [(3.0, 1.0, -0.5, 0.2), (-4.0, 2.0, 1.0, -1.0)])
def test_power_iteration_finds_the_largest_magnitude_eigenvalue(spectrum):
  """A symmetric matrix of known spectrum as a pytree operator; the sign is kept."""
  q, _ = np.linalg.qr(np.random.default_rng(0).normal(size=(4, 4)))
  a = jnp.asarray(q @ np.diag(spectrum) @ q.T, jnp.float32)

  def matvec(v):  # {'x': 3 entries, 'y': 1}: the operator sees a pytree, as α is.
    out = a @ jnp.concatenate([v['x'], v['y']])
    return {'x': out[:3], 'y': out[3:]}

  init = {'x': jnp.ones(3), 'y': jnp.ones(1)}
  out = jax.jit(lambda v: diagnostics.power_iteration(matvec, v, iters=200))(init)
  assert float(out['eigenvalue']) == pytest.approx(spectrum[0], rel=1e-4)
  assert float(out['residual']) < 1e-3
  vec = np.concatenate([out['eigenvector']['x'], out['eigenvector']['y']])
  assert abs(float(vec @ q[:, 0])) == pytest.approx(1.0, abs=1e-4)
  with pytest.raises(ValueError, match='iters'):
    diagnostics.power_iteration(matvec, init, iters=0)


@pytest.fixture(scope='module')
def tiny_supernet():
  """S3, 3 cells of 1 node, C=4, 8×8 images: α has 2 × (2 edges × 3 ops) = 12 entries."""
  config = synthetic_tiny.get_config()
  config.space.name = 's3'
  config.space.steps = 1
  config.search.hessian_iters = 300
  config.search.alpha_init_scale = 1.0  # Away from uniform α, the spectrum spreads out.
  train, val = search.load_search_data(config)
  searcher = search.Searcher(config, train.image_shape, train.num_classes, 3)
  state = searcher.init(0)
  batch = jax.device_put(data_lib.batch_at(val, 0, 0, batch_size=16, seed=0, shuffle=False))
  loss_fn = search.make_loss_fn(searcher.net, state.rng, 0.0)
  flat, unravel = ravel_pytree(state.alpha)
  # Jitted: eager forward-over-reverse dispatches thousands of small ops.
  hessian = jax.jit(jax.hessian(lambda a: loss_fn(state.params, unravel(a), batch,
                                                  state.model_state)[0]))(flat)
  return searcher, state, batch, loss_fn, unravel, np.asarray(hessian, np.float64)


def test_alpha_hvp_is_the_hessian_times_the_vector(tiny_supernet):
  _, state, batch, loss_fn, unravel, hessian = tiny_supernet
  v = np.random.default_rng(1).normal(size=hessian.shape[0]).astype(np.float32)

  @jax.jit
  def product(v):
    hvp = diagnostics.alpha_hvp(loss_fn, state.params, state.alpha, state.model_state, batch)
    return ravel_pytree(hvp(unravel(v)))[0]

  got = product(jnp.asarray(v))
  np.testing.assert_allclose(got, hessian @ v, rtol=1e-4, atol=1e-6 * np.abs(hessian).max())


def test_alpha_hessian_eigenvalue_matches_jax_hessian(tiny_supernet):
  """The search's λ_max (Searcher.alpha_hessian) is the top-|λ| eigenvalue of ∇²α L_val."""
  searcher, state, batch, _, _, hessian = tiny_supernet
  eigenvalues = np.linalg.eigvalsh(0.5 * (hessian + hessian.T))
  order = np.argsort(-np.abs(eigenvalues))
  top, second = eigenvalues[order[0]], eigenvalues[order[1]]
  assert abs(second / top) < 0.95  # A gap power iteration resolves in 300 products.
  out = jax.device_get(searcher.hessian_fn(state, batch))
  assert float(out['eigenvalue']) == pytest.approx(top, rel=1e-3)
  assert float(out['residual']) < 1e-2
