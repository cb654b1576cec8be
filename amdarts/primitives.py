"""The super-net's hot ops as JAX primitives: depthwise convolution and 3×3 pooling.

    y = depthwise_conv(x_BxHxWxC, kernel_KxKxC, stride, padding, dilation)
    y = max_pool_3x3(x_BxHxWxC, stride);  y = avg_pool_3x3(x_BxHxWxC, stride)

Depthwise convolution: per channel c, y[b, ho, wo, c] = Σ_ij x[b, ho·s − p + i·d,
wo·s − p + j·d, c] · k[i, j, c] with zeros outside x (PyTorch's explicit symmetric
padding). The map (x, k, g) ↦ ⟨dw(x, k), g⟩ is trilinear, and its three partial maps —
the forward `dw(x, k)`, the input gradient `dx(g, k)` and the kernel gradient
`dk(x, g)` — are each other's transposes, so three primitives related by
`ad.defbilinear` give every order of forward and reverse mode (H·v, ∇²αω L·u, the
unrolled DARTS step) through the same three compact operations. Autodiff of a
k²-term sum of shifted products instead emits k² pads, slices and reductions per
derivative: most of the super-net's graph, compile time and step time on XLA:CPU.

Max pooling (window 3, padding 1, PyTorch's first-maximum argmax): the forward, the
gather of a tangent at each window's argmax (its Jacobian) and the scatter (the
Jacobian's transpose) are primitives; the argmax has zero derivative, so these
three close under differentiation too. Average pooling without the padding in its
count is a depthwise convolution with a ones kernel divided by the window counts.

Leading axes batch independent ops (the super-net's edges) and broadcast like numpy,
so `nn.vmap` over edges stays one call per op.

Lowerings: on CPU the hand-written loops of `amdarts/kernels` through the XLA FFI
(pure-XLA formulations when they cannot be built, or with AMDARTS_KERNELS=xla); on
GPU and other platforms XLA's grouped convolution, reduce-window and their
derivatives.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.extend import core
from jax.interpreters import ad, batching, mlir

from amdarts import kernels

def out_size(n: int, k: int, stride: int, padding: int, dilation: int) -> int:
  return (n + 2 * padding - dilation * (k - 1) - 1) // stride + 1


def sum_to(x, shape):
  """Sums `x` over the leading axes that `shape` broadcasts (size 1 there)."""
  shape = tuple(shape)
  if x.shape == shape:
    return x
  axes = tuple(i for i, (a, b) in enumerate(zip(x.shape, shape)) if b == 1 and a != 1)
  return jnp.sum(x, axis=axes, keepdims=True).reshape(shape)


# ------------------------------------------------------------- pure-XLA formulation


def _window(xp, i, j, stride, dilation, ho, wo):
  return xp[..., i * dilation: i * dilation + stride * (ho - 1) + 1: stride,
            j * dilation: j * dilation + stride * (wo - 1) + 1: stride, :]


def _tap(k, i, j):
  return k[..., i, j, :][..., None, None, None, :]  # (..., 1, 1, 1, C)


def _pad_spatial(x, lo, hi, interior=0):
  cfg = [(0, 0, 0)] * (x.ndim - 3) + [(lo[0], hi[0], interior), (lo[1], hi[1], interior),
                                      (0, 0, 0)]
  return lax.pad(x, jnp.zeros((), x.dtype), cfg)


def _xla_fwd(x, k, *, stride, padding, dilation):
  n = k.shape[-2]
  xp = _pad_spatial(x, (padding, padding), (padding, padding))
  ho = out_size(x.shape[-3], n, stride, padding, dilation)
  wo = out_size(x.shape[-2], n, stride, padding, dilation)
  return sum(_window(xp, i, j, stride, dilation, ho, wo) * _tap(k, i, j)
             for i in range(n) for j in range(n))


def _xla_dx(g, k, *, stride, padding, dilation, x_shape):
  # The transpose of the strided sum: dilate g by the stride, pad it for a full
  # correlation and apply the flipped kernel at stride 1.
  n = k.shape[-2]
  h, w = x_shape[-3], x_shape[-2]
  ho, wo = g.shape[-3], g.shape[-2]
  lo = dilation * (n - 1) - padding
  gp = _pad_spatial(g, (lo, lo), (h + padding - stride * (ho - 1) - 1,
                                  w + padding - stride * (wo - 1) - 1), stride - 1)
  out = sum(_window(gp, i, j, 1, dilation, h, w) * _tap(k, n - 1 - i, n - 1 - j)
            for i in range(n) for j in range(n))
  return sum_to(out, x_shape)


def _xla_dk(x, g, *, stride, padding, dilation, k_shape):
  n = k_shape[-2]
  xp = _pad_spatial(x, (padding, padding), (padding, padding))
  ho, wo = g.shape[-3], g.shape[-2]
  taps = [jnp.sum(_window(xp, i, j, stride, dilation, ho, wo) * g, axis=(-4, -3, -2))
          for i in range(n) for j in range(n)]
  out = jnp.stack(taps, axis=-2).reshape(taps[0].shape[:-1] + (n, n, g.shape[-1]))
  return sum_to(out, k_shape)


# ------------------------------------------------------------ XLA's grouped convolution


def _grouped(x, k, stride, padding, dilation):
  return lax.conv_general_dilated(
      x, k[:, :, None, :], (stride, stride), ((padding, padding), (padding, padding)),
      rhs_dilation=(dilation, dilation), dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
      feature_group_count=x.shape[-1])


def _vmapped_grouped(x, k, stride, padding, dilation):
  # Leading axes (equal rank, broadcasting) by nested vmaps of the 4-D convolution.
  fn = functools.partial(_grouped, stride=stride, padding=padding, dilation=dilation)
  for ax in range(x.ndim - 4):
    fn = jax.vmap(fn, in_axes=(0 if x.shape[ax] > 1 else None, 0 if k.shape[ax] > 1 else None))
  xs = x.reshape(tuple(s for i, s in enumerate(x.shape) if i >= x.ndim - 4 or s > 1))
  ks = k.reshape(tuple(s for i, s in enumerate(k.shape) if i >= k.ndim - 3 or s > 1))
  out = fn(xs, ks)
  lead = np.broadcast_shapes(x.shape[:-4], k.shape[:-3])
  return out.reshape(tuple(lead) + out.shape[-4:])


def _native_fwd(x, k, *, stride, padding, dilation):
  return _vmapped_grouped(x, k, stride, padding, dilation)


def _native_dx(g, k, *, stride, padding, dilation, x_shape):
  lead = np.broadcast_shapes(x_shape[:-4], k.shape[:-3])
  x0 = jnp.zeros(tuple(lead) + tuple(x_shape[-4:]), g.dtype)
  _, vjp = jax.vjp(lambda x: _vmapped_grouped(x, k, stride, padding, dilation), x0)
  return sum_to(vjp(g)[0], x_shape)


def _native_dk(x, g, *, stride, padding, dilation, k_shape):
  lead = np.broadcast_shapes(x.shape[:-4], k_shape[:-3])
  k0 = jnp.zeros(tuple(lead) + tuple(k_shape[-3:]), g.dtype)
  _, vjp = jax.vjp(lambda k: _vmapped_grouped(x, k, stride, padding, dilation), k0)
  return sum_to(vjp(g)[0], k_shape)


# ------------------------------------------------------------------- the C++ kernels


def _flat_lead(a, n_minor, lead):
  """`a` as (L or 1, *minor) for the kernels; broadcasts a partially broadcast lead."""
  minor = a.shape[a.ndim - n_minor:]
  own = a.shape[:a.ndim - n_minor]
  if math.prod(own) in (1, math.prod(lead)) and (math.prod(own) == 1 or own == lead):
    return a.reshape((math.prod(own),) + minor)
  return jnp.broadcast_to(a, lead + minor).reshape((math.prod(lead),) + minor)


def _attrs(stride, padding, dilation):
  return {'stride': np.int64(stride), 'padding': np.int64(padding),
          'dilation': np.int64(dilation)}


def _reachable(k_size: int, padding: int, dilation: int) -> bool:
  # The kernels assume every padded row/column is reachable by some tap.
  return padding <= dilation * (k_size - 1)


def _ffi_fwd(x, k, *, stride, padding, dilation):
  if not _reachable(k.shape[-2], padding, dilation):
    return _xla_fwd(x, k, stride=stride, padding=padding, dilation=dilation)
  lead = tuple(np.broadcast_shapes(x.shape[:-4], k.shape[:-3]))
  x5, k4 = _flat_lead(x, 4, lead), _flat_lead(k, 3, lead)
  b, h, w, c = x.shape[-4:]
  n = k.shape[-2]
  out = (math.prod(lead), b, out_size(h, n, stride, padding, dilation),
         out_size(w, n, stride, padding, dilation), c)
  y = jax.ffi.ffi_call('AmdartsDepthwiseForward', jax.ShapeDtypeStruct(out, x.dtype))(
      x5, k4, **_attrs(stride, padding, dilation))
  return y.reshape(lead + out[1:])


def _ffi_transpose(target, a, a_core, b, b_core, out_shape, out_core, attrs):
  """The FFI kernel `target` on (a, b): a cotangent of `out_shape`.

  The operands' lead (vmapped) axes broadcast together; the kernel gives one result
  per lead index, summed down to `out_shape`'s own lead axes (a shared operand).
  """
  lead = tuple(np.broadcast_shapes(a.shape[:-a_core], b.shape[:-b_core],
                                   out_shape[:-out_core]))
  own, core = tuple(out_shape[:-out_core]), tuple(out_shape[-out_core:])
  n = 1 if math.prod(own) == 1 else math.prod(lead)
  out = jax.ffi.ffi_call(target, jax.ShapeDtypeStruct((n,) + core, a.dtype))(
      _flat_lead(a, a_core, lead), _flat_lead(b, b_core, lead), **attrs)
  if n == 1 or own == lead:
    return out.reshape(out_shape)
  return sum_to(out.reshape(lead + core), out_shape)


def _ffi_dx(g, k, *, stride, padding, dilation, x_shape):
  if not _reachable(k.shape[-2], padding, dilation):
    return _xla_dx(g, k, stride=stride, padding=padding, dilation=dilation, x_shape=x_shape)
  return _ffi_transpose('AmdartsDepthwiseInputGrad', g, 4, k, 3, x_shape, 4,
                        _attrs(stride, padding, dilation))


def _ffi_dk(x, g, *, stride, padding, dilation, k_shape):
  if not _reachable(k_shape[-2], padding, dilation):
    return _xla_dk(x, g, stride=stride, padding=padding, dilation=dilation, k_shape=k_shape)
  return _ffi_transpose('AmdartsDepthwiseKernelGrad', x, 4, g, 4, k_shape, 3,
                        _attrs(stride, padding, dilation))


# ----------------------------------------------------------------------- primitives

dw_p = core.Primitive('amdarts_depthwise_conv')
dx_p = core.Primitive('amdarts_depthwise_conv_input_grad')
dk_p = core.Primitive('amdarts_depthwise_conv_kernel_grad')


def _dw_abstract(x, k, *, stride, padding, dilation):
  n = k.shape[-2]
  lead = tuple(np.broadcast_shapes(x.shape[:-4], k.shape[:-3]))
  b, h, w, c = x.shape[-4:]
  return jax.core.ShapedArray(lead + (b, out_size(h, n, stride, padding, dilation),
                                      out_size(w, n, stride, padding, dilation), c), x.dtype)


dw_p.def_abstract_eval(_dw_abstract)
dx_p.def_abstract_eval(lambda g, k, *, x_shape, **_: jax.core.ShapedArray(x_shape, g.dtype))
dk_p.def_abstract_eval(lambda x, g, *, k_shape, **_: jax.core.ShapedArray(k_shape, x.dtype))

_IMPLS = {dw_p: (_xla_fwd, _native_fwd, _ffi_fwd), dx_p: (_xla_dx, _native_dx, _ffi_dx),
          dk_p: (_xla_dk, _native_dk, _ffi_dk)}


def _cpu_lowering(xla_impl, ffi_impl):
  def lower(ctx, *args, **params):
    impl = ffi_impl if kernels.available() else xla_impl
    return mlir.lower_fun(impl, multiple_results=False)(ctx, *args, **params)
  return lower


@functools.lru_cache(maxsize=None)
def _jitted_bind(prim, items):
  return jax.jit(lambda *args: prim.bind(*args, **dict(items)))


for _prim, (_xla, _native, _ffi) in _IMPLS.items():
  # Eager calls compile the primitive alone, through the same lowerings.
  _prim.def_impl(lambda *args, _p=_prim, **params: _jitted_bind(
      _p, tuple(sorted(params.items())))(*args))
  mlir.register_lowering(_prim, mlir.lower_fun(_native, multiple_results=False))
  mlir.register_lowering(_prim, _cpu_lowering(_xla, _ffi), platform='cpu')


def _aval_shape(a):
  return a.aval.shape


# ⟨u, dw(x, k)⟩ = ⟨dx(u, k), x⟩ = ⟨dk(x, u), k⟩ and the same identities for dx, dk.
ad.defbilinear(
    dw_p,
    lambda ct, x, k, **p: dx_p.bind(ct, k, x_shape=_aval_shape(x), **p),
    lambda ct, x, k, **p: dk_p.bind(x, ct, k_shape=_aval_shape(k), **p))
ad.defbilinear(
    dx_p,
    lambda ct, g, k, *, x_shape, **p: sum_to(dw_p.bind(ct, k, **p), _aval_shape(g)),
    lambda ct, g, k, *, x_shape, **p: dk_p.bind(ct, g, k_shape=_aval_shape(k), **p))
ad.defbilinear(
    dk_p,
    lambda ct, x, g, *, k_shape, **p: dx_p.bind(g, ct, x_shape=_aval_shape(x), **p),
    lambda ct, x, g, *, k_shape, **p: sum_to(dw_p.bind(x, ct, **p), _aval_shape(g)))


def _batching_rule(prim, shape_param=None):
  """vmap: the mapped axis becomes a new leading (edge) axis of every operand."""

  def rule(args, dims, **params):
    size = next(a.shape[d] for a, d in zip(args, dims) if d is not None)
    args = [jnp.expand_dims(a, 0) if d is None else jnp.moveaxis(a, d, 0)
            for a, d in zip(args, dims)]
    if shape_param:
      params = dict(params, **{shape_param: (size,) + tuple(params[shape_param])})
    return prim.bind(*args, **params), 0

  batching.primitive_batchers[prim] = rule


_batching_rule(dw_p)
_batching_rule(dx_p, 'x_shape')
_batching_rule(dk_p, 'k_shape')


def depthwise_conv(x, kernel, stride: int = 1, padding: int = 0, dilation: int = 1):
  """Per-channel 2-D convolution with explicit symmetric zero padding.

  Args:
    x: f[..., B, H, W, C] inputs.
    kernel: f[..., K, K, C] per-channel kernels; leading axes broadcast against x's.
    stride, padding, dilation: as in torch.nn.Conv2d(groups=C).

  Returns:
    f[..., B, Ho, Wo, C] with Ho = (H + 2·padding − dilation·(K − 1) − 1) // stride + 1.
  """
  nx, nk = x.ndim - 4, kernel.ndim - 3
  if nx < 0 or nk < 0 or kernel.shape[-2] != kernel.shape[-3] or kernel.shape[-1] != x.shape[-1]:
    raise ValueError(f'depthwise_conv: x {x.shape} and kernel {kernel.shape} do not match')
  x = x.reshape((1,) * max(nk - nx, 0) + x.shape)
  kernel = kernel.reshape((1,) * max(nx - nk, 0) + kernel.shape)
  return dw_p.bind(x, kernel.astype(x.dtype), stride=int(stride), padding=int(padding),
                   dilation=int(dilation))


# ------------------------------------------------------------------------ pooling


def _pool_out(n: int, stride: int) -> int:
  return (n - 1) // stride + 1  # Window 3, padding 1.


def _xla_max_pool(x, stride):
  nd = x.ndim
  return lax.reduce_window(x, -jnp.inf, lax.max, (1,) * (nd - 3) + (3, 3, 1),
                           (1,) * (nd - 3) + (stride, stride, 1),
                           [(0, 0)] * (nd - 3) + [(1, 1), (1, 1), (0, 0)])


def _xla_pool_gather(t, x, *, stride):
  return jax.jvp(lambda u: _xla_max_pool(u, stride), (x,), (t,))[1]


def _xla_pool_scatter(ct, x, *, stride):
  return jax.vjp(lambda u: _xla_max_pool(u, stride), x)[1](ct)[0]


def _pool_ffi(target, out_like):
  def impl(*args, stride):
    x = args[-1]
    lead = x.shape[:-4] if x.ndim > 4 else ()
    flat = [a.reshape((math.prod(lead),) + a.shape[a.ndim - 4:]) if a.ndim > 4
            else a[None] for a in args]
    b, h, w, c = x.shape[-4:]
    shape = ((math.prod(lead), b, _pool_out(h, stride), _pool_out(w, stride), c)
             if out_like == 'y' else flat[-1].shape)
    out = jax.ffi.ffi_call(target, jax.ShapeDtypeStruct(shape, x.dtype))(
        *flat, stride=np.int64(stride))
    return out.reshape(tuple(lead) + shape[1:])
  return impl


max_pool_p = core.Primitive('amdarts_max_pool_3x3')
pool_gather_p = core.Primitive('amdarts_max_pool_3x3_gather')
pool_scatter_p = core.Primitive('amdarts_max_pool_3x3_scatter')


def _pooled_aval(x, *, stride):
  b, h, w, c = x.shape[-4:]
  return jax.core.ShapedArray(x.shape[:-4] + (b, _pool_out(h, stride), _pool_out(w, stride), c),
                              x.dtype)


max_pool_p.def_abstract_eval(_pooled_aval)
pool_gather_p.def_abstract_eval(lambda t, x, *, stride: _pooled_aval(x, stride=stride))
pool_scatter_p.def_abstract_eval(lambda ct, x, *, stride: jax.core.ShapedArray(x.shape, x.dtype))

for _prim, _xla, _target, _like in (
    (max_pool_p, lambda x, *, stride: _xla_max_pool(x, stride), 'AmdartsMaxPoolForward', 'y'),
    (pool_gather_p, _xla_pool_gather, 'AmdartsMaxPoolGather', 'y'),
    (pool_scatter_p, _xla_pool_scatter, 'AmdartsMaxPoolScatter', 'x')):
  _prim.def_impl(lambda *args, _p=_prim, **params: _jitted_bind(
      _p, tuple(sorted(params.items())))(*args))
  mlir.register_lowering(_prim, mlir.lower_fun(_xla, multiple_results=False))
  mlir.register_lowering(_prim, _cpu_lowering(_xla, _pool_ffi(_target, _like)), platform='cpu')


def _max_pool_jvp(primals, tangents, *, stride):
  (x,), (t,) = primals, tangents
  y = max_pool_p.bind(x, stride=stride)
  if type(t) is ad.Zero:
    return y, ad.Zero.from_primal_value(y)
  return y, pool_gather_p.bind(t, x, stride=stride)


def _linear_in_first(prim, transpose_prim):
  """`prim(u, x)` is linear in u; x (the argmax selector) has zero derivative."""

  def jvp(primals, tangents, **params):
    (u, x), (du, _) = primals, tangents
    out = prim.bind(u, x, **params)
    if type(du) is ad.Zero:
      return out, ad.Zero.from_primal_value(out)
    return out, prim.bind(du, x, **params)

  def transpose(ct, u, x, **params):
    assert ad.is_undefined_primal(u) and not ad.is_undefined_primal(x)
    if type(ct) is ad.Zero:
      return ad.Zero(u.aval), None
    return transpose_prim.bind(ct, x, **params), None

  ad.primitive_jvps[prim] = jvp
  ad.primitive_transposes[prim] = transpose


ad.primitive_jvps[max_pool_p] = _max_pool_jvp
_linear_in_first(pool_gather_p, pool_scatter_p)
_linear_in_first(pool_scatter_p, pool_gather_p)


def _pool_batching_rule(prim):
  # Every operand gets the mapped axis in front (an unbatched one is broadcast: the
  # kernels read one selector per tangent).
  def rule(args, dims, **params):
    size = next(a.shape[d] for a, d in zip(args, dims) if d is not None)
    args = [jnp.broadcast_to(a, (size,) + a.shape) if d is None else jnp.moveaxis(a, d, 0)
            for a, d in zip(args, dims)]
    return prim.bind(*args, **params), 0
  batching.primitive_batchers[prim] = rule


for _prim in (max_pool_p, pool_gather_p, pool_scatter_p):
  _pool_batching_rule(_prim)


def max_pool_3x3(x, stride: int = 1):
  """3×3 max pooling, padding 1 (never selected), as torch.nn.MaxPool2d(3, stride, 1).

  Args:
    x: f[..., B, H, W, C].
    stride: 1 or 2.

  Returns:
    f[..., B, (H − 1) // stride + 1, (W − 1) // stride + 1, C].
  """
  return max_pool_p.bind(x, stride=int(stride))


def _window_counts(n: int, stride: int) -> np.ndarray:
  start = np.arange(_pool_out(n, stride)) * stride - 1
  return np.minimum(start + 3, n) - np.maximum(start, 0)


def avg_pool_3x3(x, stride: int = 1):
  """3×3 average pooling, padding 1 left out of the count (count_include_pad=False).

  The sum is a depthwise convolution with a constant ones kernel; the counts are
  constants of the input size, so nothing is evaluated at compile time.
  """
  h, w, c = x.shape[-3:]
  inv = 1.0 / (_window_counts(h, stride)[:, None] * _window_counts(w, stride)[None, :])
  total = depthwise_conv(x, jnp.ones((3, 3, c), x.dtype), stride, 1)
  return total * jnp.asarray(inv[:, :, None], x.dtype)
