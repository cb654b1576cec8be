"""Depthwise convolution as three bilinear primitives, closed under transposition.

    y = depthwise_conv(x_BxHxWxC, kernel_KxKxC, stride, padding, dilation)

computes, per channel c, y[b, ho, wo, c] = Σ_ij x[b, ho·s − p + i·d, wo·s − p + j·d, c]
· k[i, j, c] with zeros outside x (PyTorch's explicit symmetric padding). Leading
axes batch independent convolutions (the super-net's edges), broadcasting like
numpy, so `nn.vmap` over edges stays one call.

Why primitives: the map (x, k, g) ↦ ⟨dw(x, k), g⟩ is trilinear, and its three partial
maps — the forward `dw(x, k)`, the input gradient `dx(g, k)` and the kernel gradient
`dk(x, g)` — are each other's transposes. Defining them as primitives with those
transposes (`ad.defbilinear`) makes every order of forward and reverse mode (H·v,
∇²αω L·u, the unrolled DARTS step) run through the same three compact operations.
Autodiff of a k²-term shifted sum instead produces k² pads, slices and reductions per
derivative, the bulk of the super-net's graph and of its step time on XLA:CPU.

Lowerings:
  * CPU: hand-written loops (`kernels/depthwise.cc`, called through the XLA FFI),
    compiled once per machine into a user cache directory. When no C++ compiler is
    available, or with `AMDARTS_DEPTHWISE=xla`, a pure-XLA formulation (shifted
    products) is used instead; both are tested against each other.
  * GPU and other platforms: XLA's grouped convolution and its transposes.
"""

from __future__ import annotations

import functools
import hashlib
import math
import os
import subprocess
import sys
import sysconfig
import tempfile
import warnings

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.extend import core
from jax.interpreters import ad, batching, mlir

_SOURCE = os.path.join(os.path.dirname(__file__), 'kernels', 'depthwise.cc')
_TARGETS = {'fwd': 'AmdartsDepthwiseForward', 'dx': 'AmdartsDepthwiseInputGrad',
            'dk': 'AmdartsDepthwiseKernelGrad'}


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


def _cache_dir() -> str:
  root = os.environ.get('AMDARTS_CACHE_DIR') or os.path.join(
      os.environ.get('XDG_CACHE_HOME') or os.path.expanduser('~/.cache'), 'amdarts')
  return os.path.join(root, 'kernels')


@functools.lru_cache(maxsize=None)
def _native_library():
  """Builds (once per source, jaxlib and machine) and registers the CPU kernels.

  Returns:
    True when the FFI targets are registered, False when they cannot be built (no
    compiler, a failed build, or AMDARTS_DEPTHWISE=xla); then the XLA formulation
    is used and a warning says why.
  """
  if os.environ.get('AMDARTS_DEPTHWISE', '') == 'xla':
    return False
  import ctypes

  import jaxlib
  include = os.path.join(os.path.dirname(jaxlib.__file__), 'include')
  cxx = os.environ.get('CXX') or sysconfig.get_config_var('CXX') or 'c++'
  cxx = cxx.split()[0]
  flags = ['-O3', '-march=native', '-std=c++17', '-shared', '-fPIC', '-w', f'-I{include}']
  with open(_SOURCE, 'rb') as f:
    key = hashlib.sha256(f.read() + ' '.join([cxx, *flags, jaxlib.__version__,
                                               sys.platform]).encode()).hexdigest()[:16]
  path = os.path.join(_cache_dir(), f'libamdarts_depthwise_{key}.so')
  if not os.path.exists(path):
    os.makedirs(_cache_dir(), exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix='.so', dir=_cache_dir())
    os.close(fd)
    try:
      subprocess.run([cxx, *flags, _SOURCE, '-o', tmp], check=True, capture_output=True,
                     text=True, timeout=300)
      os.replace(tmp, path)  # Atomic: concurrent builders never see half a file.
    except (OSError, subprocess.SubprocessError) as e:
      if os.path.exists(tmp):
        os.remove(tmp)
      detail = getattr(e, 'stderr', '') or str(e)
      warnings.warn('amdarts: could not build the CPU depthwise kernels '
                    f'({detail.strip().splitlines()[-1] if detail.strip() else e}); '
                    'using the slower XLA formulation')
      return False
  lib = ctypes.cdll.LoadLibrary(path)
  for name in _TARGETS.values():
    jax.ffi.register_ffi_target(name, jax.ffi.pycapsule(getattr(lib, name)), platform='cpu')
  return True


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


def _ffi_fwd(x, k, *, stride, padding, dilation):
  lead = tuple(np.broadcast_shapes(x.shape[:-4], k.shape[:-3]))
  x5, k4 = _flat_lead(x, 4, lead), _flat_lead(k, 3, lead)
  b, h, w, c = x.shape[-4:]
  n = k.shape[-2]
  out = (math.prod(lead), b, out_size(h, n, stride, padding, dilation),
         out_size(w, n, stride, padding, dilation), c)
  y = jax.ffi.ffi_call(_TARGETS['fwd'], jax.ShapeDtypeStruct(out, x.dtype))(
      x5, k4, **_attrs(stride, padding, dilation))
  return y.reshape(lead + out[1:])


def _ffi_dx(g, k, *, stride, padding, dilation, x_shape):
  lead = tuple(np.broadcast_shapes(g.shape[:-4], k.shape[:-3], x_shape[:-4]))
  g5, k4 = _flat_lead(g, 4, lead), _flat_lead(k, 3, lead)
  own = tuple(x_shape[:-4])
  lx = 1 if math.prod(own) == 1 else math.prod(lead)
  dx = jax.ffi.ffi_call(_TARGETS['dx'], jax.ShapeDtypeStruct((lx,) + tuple(x_shape[-4:]),
                                                             g.dtype))(
      g5, k4, **_attrs(stride, padding, dilation))
  if lx == 1 or own == lead:
    return dx.reshape(x_shape)
  return sum_to(dx.reshape(lead + tuple(x_shape[-4:])), x_shape)


def _ffi_dk(x, g, *, stride, padding, dilation, k_shape):
  lead = tuple(np.broadcast_shapes(x.shape[:-4], g.shape[:-4], k_shape[:-3]))
  x5, g5 = _flat_lead(x, 4, lead), _flat_lead(g, 4, lead)
  own = tuple(k_shape[:-3])
  lk = 1 if math.prod(own) == 1 else math.prod(lead)
  dk = jax.ffi.ffi_call(_TARGETS['dk'], jax.ShapeDtypeStruct((lk,) + tuple(k_shape[-3:]),
                                                             x.dtype))(
      x5, g5, **_attrs(stride, padding, dilation))
  if lk == 1 or own == lead:
    return dk.reshape(k_shape)
  return sum_to(dk.reshape(lead + tuple(k_shape[-3:])), k_shape)


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
    impl = ffi_impl if _native_library() else xla_impl
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
