"""The depthwise-convolution and pooling primitives against XLA's own ops, in float64.

Every lowering (the CPU kernels, the pure-XLA fallback, XLA's grouped convolution /
reduce-window) must give the same function, and the primitives' transposition rules
must give the same derivatives of every order that JAX derives for the reference
ops: gradients, forward-over-reverse (H·v), reverse-over-reverse, and all of them
under vmap with batched and shared operands (the super-net's edges).
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from amdarts import kernels
from amdarts import primitives


@pytest.fixture(autouse=True)
def x64():
  with jax.enable_x64(True):
    yield


def _rng(seed):
  return np.random.default_rng(seed)


def _grouped(x, k, stride, padding, dilation):
  return lax.conv_general_dilated(
      x, k[:, :, None, :], (stride, stride), ((padding, padding), (padding, padding)),
      rhs_dilation=(dilation, dilation), dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
      feature_group_count=x.shape[-1])


def _close(a, b, rtol=1e-11):
  jax.tree.map(lambda u, v: np.testing.assert_allclose(u, v, rtol=rtol, atol=rtol * (
      np.max(np.abs(v)) + 1e-30)), a, b)


# (H, K, stride, padding, dilation): the DARTS ops' geometries, odd sizes, no padding.
GEOMETRIES = [(8, 3, 1, 1, 1), (8, 5, 1, 2, 1), (8, 3, 2, 1, 1), (7, 5, 2, 2, 1),
              (8, 3, 1, 2, 2), (9, 5, 2, 4, 2), (6, 3, 1, 0, 1)]


@pytest.mark.parametrize('h,k,s,p,d', GEOMETRIES)
def test_depthwise_derivatives_match_grouped_convolution(h, k, s, p, d):
  rng = _rng(h * 100 + k * 10 + s)
  x, w = rng.normal(size=(2, h, h, 3)), rng.normal(size=(k, k, 3))
  vx, vw = rng.normal(size=x.shape), rng.normal(size=w.shape)
  ours = lambda x, w: primitives.depthwise_conv(x, w, s, p, d)
  ref = lambda x, w: _grouped(x, w, s, p, d)
  _close(ours(x, w), ref(x, w))
  f = lambda conv: (lambda x, w: jnp.sum(jnp.tanh(conv(x, w)) ** 2))
  _close(jax.grad(f(ours), (0, 1))(x, w), jax.grad(f(ref), (0, 1))(x, w))
  hvp = lambda conv: jax.jvp(jax.grad(f(conv), (0, 1)), (x, w), (vx, vw))[1]
  _close(hvp(ours), hvp(ref))
  rr = lambda conv: jax.vjp(jax.grad(f(conv), (0, 1)), x, w)[1]((vx, vw))
  _close(rr(ours), rr(ref))


@pytest.mark.parametrize('in_axes', [(None, 0), (0, 0), (0, None)])
def test_depthwise_under_vmap(in_axes):
  # Shared input with per-edge kernels is the super-net's case; the gradient of the
  # shared input sums over edges.
  rng = _rng(7)
  x = rng.normal(size=(4, 2, 7, 7, 3)) if in_axes[0] == 0 else rng.normal(size=(2, 7, 7, 3))
  w = rng.normal(size=(4, 5, 5, 3)) if in_axes[1] == 0 else rng.normal(size=(5, 5, 3))
  for s, p, d in ((1, 2, 1), (2, 4, 2)):
    def f(conv):
      return lambda x, w: jnp.sum(jnp.sin(jax.vmap(lambda u, v: conv(u, v, s, p, d),
                                                   in_axes)(x, w)))
    ours, ref = f(primitives.depthwise_conv), f(_grouped)
    _close(ours(x, w), ref(x, w))
    _close(jax.grad(ours, (0, 1))(x, w), jax.grad(ref, (0, 1))(x, w))
    _close(jax.jvp(jax.grad(ours, (0, 1)), (x, w), (x, w))[1],
           jax.jvp(jax.grad(ref, (0, 1)), (x, w), (x, w))[1])
    per = lambda conv: jax.vmap(jax.grad(lambda u, v: jnp.sum(jnp.sin(conv(u, v, s, p, d))),
                                         (0, 1)), in_axes)(x, w)
    _close(per(primitives.depthwise_conv), per(_grouped))


@pytest.mark.parametrize('h,k,s,p,d', GEOMETRIES[:4])
def test_every_depthwise_lowering_is_the_same_function(h, k, s, p, d):
  # The kernels, the shifted-product fallback and XLA's grouped convolution, each
  # for the forward, the input gradient and the kernel gradient, with a shared
  # (size-1) and a per-edge leading axis.
  if not kernels.available():
    pytest.skip('no C++ compiler: the CPU kernels are not built here')
  rng = _rng(3)
  x, w = rng.normal(size=(1, 2, h, h, 3)), rng.normal(size=(4, k, k, 3))
  params = dict(stride=s, padding=p, dilation=d)
  y = primitives._xla_fwd(x, w, **params)
  g = rng.normal(size=y.shape)
  impls = {'xla': (primitives._xla_fwd, primitives._xla_dx, primitives._xla_dk),
           'ffi': (primitives._ffi_fwd, primitives._ffi_dx, primitives._ffi_dk),
           'grouped': (primitives._native_fwd, primitives._native_dx, primitives._native_dk)}
  outs = {name: (jax.jit(lambda x, w: fwd(x, w, **params))(x, w),
                 jax.jit(lambda g, w: dx(g, w, x_shape=x.shape, **params))(g, w),
                 jax.jit(lambda x, g: dk(x, g, k_shape=w.shape, **params))(x, g))
          for name, (fwd, dx, dk) in impls.items()}
  for name in ('ffi', 'grouped'):
    _close(outs[name], outs['xla'])


def _flax_max(x, s):
  return nn.max_pool(x, (3, 3), (s, s), ((1, 1), (1, 1)))


def _flax_avg(x, s):
  return nn.avg_pool(x, (3, 3), (s, s), ((1, 1), (1, 1)), count_include_pad=False)


@pytest.mark.parametrize('kind', ['max', 'avg'])
@pytest.mark.parametrize('h,s', [(8, 1), (8, 2), (7, 2), (5, 1)])
def test_pools_match_flax_to_every_order(kind, h, s):
  ours = primitives.max_pool_3x3 if kind == 'max' else primitives.avg_pool_3x3
  ref = _flax_max if kind == 'max' else _flax_avg
  rng = _rng(h + s)
  x, v = rng.normal(size=(2, h, h, 3)), rng.normal(size=(2, h, h, 3))
  xb = rng.normal(size=(4, 2, h, h, 3))
  _close(ours(x, s), ref(x, s))
  f = lambda pool: (lambda x: jnp.sum(jnp.tanh(1.3 * pool(x, s)) ** 2))
  _close(jax.grad(f(ours))(x), jax.grad(f(ref))(x))
  _close(jax.jvp(jax.grad(f(ours)), (x,), (v,))[1], jax.jvp(jax.grad(f(ref)), (x,), (v,))[1])
  _close(jax.vjp(jax.grad(f(ours)), x)[1](v), jax.vjp(jax.grad(f(ref)), x)[1](v))
  fb = lambda pool: (lambda x: jnp.sum(jnp.sin(jax.vmap(lambda y: pool(y, s))(x))))
  _close(jax.grad(fb(ours))(xb), jax.grad(fb(ref))(xb))
  _close(jax.jvp(jax.grad(fb(ours)), (xb,), (xb,))[1], jax.jvp(jax.grad(fb(ref)), (xb,), (xb,))[1])
  _close(jax.vmap(jax.grad(f(ours)))(xb), jax.vmap(jax.grad(f(ref)))(xb))


def test_max_pool_gradient_goes_to_the_first_maximum():
  # PyTorch's argmax: ties (here a constant input) send the gradient to the first
  # maximum of each window in row-major order, not split it.
  x = jnp.ones((1, 3, 3, 1))
  g = jax.grad(lambda x: jnp.sum(primitives.max_pool_3x3(x, 2)))(x)
  np.testing.assert_array_equal(g[0, :, :, 0], [[1, 1, 0], [1, 1, 0], [0, 0, 0]])
  g = jax.grad(lambda x: jnp.sum(primitives.max_pool_3x3(x, 1)))(x)
  # Window of output (i, j) starts at (i-1, j-1) clipped: (0,0) wins 4 windows.
  np.testing.assert_array_equal(g[0, :, :, 0], [[4, 2, 0], [2, 1, 0], [0, 0, 0]])
