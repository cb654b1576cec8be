"""Primitive ops of the DARTS space, NHWC, defined as in the DARTS reference, and their registry.

`REGISTRY` is the one table of candidate ops: per op name, its builder, whether it is
parametric, and its colour in drawings. Search spaces, genotype validation and
statistics, the super-network, the discrete networks and the drawings all read it,
so adding an op is one entry (and, for a new kind of layer, its module class):

    ops_lib.REGISTRY['sep_conv_3x3'].parametric              # True
    ops_lib.build('sep_conv_3x3', c, stride, affine=False)   # a module, named by the op

Sub-modules are named by their role (`conv`, `bn`, `depthwise`, `pointwise`,
`block1`/`block2`, `conv_even`/`conv_odd`), so a parameter path reads as what it is,
e.g. `.../sep_conv_3x3/block1/depthwise/kernel`.

Order inside each op is ReLU-Conv-BN. Padding is explicit and symmetric as in
PyTorch (XLA's 'SAME' pads asymmetrically at stride 2). Batch norm uses PyTorch's
momentum 0.1 (flax momentum 0.9) and eps 1e-5; `affine=False` inside search cells.
Convolutions carry no bias and use PyTorch's default init, U(±1/√fan_in).

Depthwise convolutions and pooling run as the primitives of `amdarts.primitives`
(`auto`: compact first- and higher-order derivatives; CPU kernels on XLA:CPU, XLA's
grouped convolution on GPU). `native` (XLA's grouped convolution, differentiated by
JAX) and `shifted` (a sum of k² shifted products) are the reference formulations the
tests compare against; all three share one kernel layout, so parameters carry over.

Batch norm is PyTorch's: normalise with the biased batch variance, update the
running variance with the unbiased one (n/(n−1)), momentum 0.1, eps 1e-5.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from amdarts import primitives

DEPTHWISE_IMPLS = ('auto', 'native', 'shifted')

# PyTorch's kaiming_uniform_(a=√5) default for conv and linear weights.
torch_init = nn.initializers.variance_scaling(1 / 3, 'fan_in', 'uniform')


def float_dtype() -> jnp.dtype:
  """The configured float dtype: float64 under `jax_enable_x64`, else float32.

  Every parameter and batch-norm statistic of the networks is created in it and the
  networks cast their input to it, so no leaf changes dtype in a step (which would
  retrace a jitted step) and float64 checks run in float64 throughout.

  Returns:
    The dtype.
  """
  return jnp.dtype(jax.dtypes.canonicalize_dtype(jnp.float64))


def _pad(p: int):
  return ((p, p), (p, p))


@functools.partial(jax.custom_jvp, nondiff_argnums=(1,))
def normalize(x, epsilon):
  """(x̂, μ, σ²): x normalised by its batch statistics over all axes but the last.

  x̂ = (x − μ)·r with r = (σ² + ε)^(−1/2), σ² the biased variance. The tangent rule is
  the closed form dx̂ = r·(dx − mean(dx) − x̂·mean(x̂·dx)), two reductions at every
  order of differentiation; differentiating the statistics as traced adds reductions,
  broadcasts and per-channel kernels to each derivative (8.5% of the fusions of an
  S1 amended search step).
  """
  axes = tuple(range(x.ndim - 1))
  mean = jnp.mean(x, axes)
  var = jnp.mean(jnp.square(x - mean), axes)
  return (x - mean) * jax.lax.rsqrt(var + epsilon), mean, var


@normalize.defjvp
def _normalize_jvp(epsilon, primals, tangents):
  (x,), (dx,) = primals, tangents
  y, mean, var = normalize(x, epsilon)
  r = jax.lax.rsqrt(var + epsilon)
  axes = tuple(range(x.ndim - 1))
  d_mean = jnp.mean(dx, axes)
  y_dx = jnp.mean(y * dx, axes)  # = r · mean((x − μ)·dx), so dσ² = 2·y_dx / r.
  return (y, mean, var), (r * (dx - d_mean - y * y_dx), d_mean, 2 * y_dx / r)


class BatchNorm(nn.Module):
  """torch.nn.BatchNorm2d over the last axis, as a pure function of its statistics.

  Training normalises with the batch mean and the biased batch variance and moves
  the running statistics by `momentum` towards the batch mean and the *unbiased*
  variance (n/(n−1)), as PyTorch does; evaluation uses the running statistics.
  Statistics and the affine scale/bias live in the input's dtype.
  """

  use_running_average: bool
  affine: bool = True
  momentum: float = 0.1
  epsilon: float = 1e-5

  @nn.compact
  def __call__(self, x):
    c, dtype = x.shape[-1], x.dtype
    mean_var = self.variable('batch_stats', 'mean', lambda: jnp.zeros((c,), dtype))
    var_var = self.variable('batch_stats', 'var', lambda: jnp.ones((c,), dtype))
    if self.use_running_average:
      y = (x - mean_var.value) * jax.lax.rsqrt(var_var.value + self.epsilon)
    else:
      y, mean, var = normalize(x, self.epsilon)
      if not self.is_initializing():
        n = x.size // c
        m = self.momentum
        unbiased = var * (n / max(n - 1, 1))
        mean_var.value = (1 - m) * mean_var.value + m * jax.lax.stop_gradient(mean)
        var_var.value = (1 - m) * var_var.value + m * jax.lax.stop_gradient(unbiased)
    if self.affine:
      y = y * self.param('scale', nn.initializers.ones, (c,), dtype)
      y = y + self.param('bias', nn.initializers.zeros, (c,), dtype)
    return y


def batch_norm(train: bool, affine: bool, name: str | None = None) -> BatchNorm:
  return BatchNorm(use_running_average=not train, affine=affine, name=name)


class Conv(nn.Module):
  """k×k convolution without bias, explicit symmetric padding; a 1×1 one is a matmul.

  Laid out as flax's nn.Conv (kernel f32[k, k, C_in, C_out], same initialiser). A
  1×1 convolution at stride s is x[:, ::s, ::s] · kernel: under `nn.vmap` over the
  super-net's edges this stays a batched matmul, where `conv_general_dilated` with a
  batched kernel becomes a grouped convolution, slow on XLA:CPU.
  """

  features: int
  k: int
  stride: int = 1
  padding: int = 0
  dilation: int = 1

  @nn.compact
  def __call__(self, x_BxHxWxC):
    kernel = self.param('kernel', torch_init,
                        (self.k, self.k, x_BxHxWxC.shape[-1], self.features))
    s = self.stride
    if self.k == 1 and self.padding == 0:
      x = x_BxHxWxC[:, ::s, ::s, :] if s > 1 else x_BxHxWxC
      # As one (B·H·W) × C matmul: contracting the flattened pixels keeps XLA from
      # copying activations into a channel-major layout for the weight gradient.
      y = x.reshape(-1, x.shape[-1]) @ kernel[0, 0]
      return y.reshape(x.shape[:-1] + (self.features,))
    return jax.lax.conv_general_dilated(
        x_BxHxWxC, kernel, (s, s), _pad(self.padding),
        rhs_dilation=(self.dilation, self.dilation),
        dimension_numbers=('NHWC', 'HWIO', 'NHWC'))


def conv(features: int, k: int, stride: int = 1, padding: int = 0, dilation: int = 1,
         name: str | None = None) -> Conv:
  return Conv(features, k, stride, padding, dilation, name=name)


class DepthwiseConv(nn.Module):
  """Per-channel k×k convolution; kernel f32[k, k, 1, C] as flax's grouped conv."""

  k: int
  stride: int = 1
  padding: int = 0
  dilation: int = 1
  impl: str = 'auto'

  @nn.compact
  def __call__(self, x_BxHxWxC):
    c = x_BxHxWxC.shape[-1]
    kernel = self.param('kernel', torch_init, (self.k, self.k, 1, c))
    if self.impl == 'auto':
      return primitives.depthwise_conv(x_BxHxWxC, kernel[:, :, 0, :], self.stride,
                                       self.padding, self.dilation)
    if self.impl == 'native':
      return jax.lax.conv_general_dilated(
          x_BxHxWxC, kernel, (self.stride, self.stride), _pad(self.padding),
          rhs_dilation=(self.dilation, self.dilation),
          dimension_numbers=('NHWC', 'HWIO', 'NHWC'), feature_group_count=c)
    if self.impl != 'shifted':
      raise ValueError(f'depthwise impl must be one of {DEPTHWISE_IMPLS}, got {self.impl!r}')
    p, s, d = self.padding, self.stride, self.dilation
    x = jnp.pad(x_BxHxWxC, ((0, 0), (p, p), (p, p), (0, 0)))
    h_out = (x.shape[1] - d * (self.k - 1) - 1) // s + 1
    w_out = (x.shape[2] - d * (self.k - 1) - 1) // s + 1
    out = 0.0
    for i in range(self.k):
      for j in range(self.k):
        window = x[:, i * d: i * d + s * (h_out - 1) + 1: s,
                   j * d: j * d + s * (w_out - 1) + 1: s, :]
        out = out + window * kernel[i, j, 0]
    return out


class ReLUConvBN(nn.Module):
  c_out: int
  k: int
  stride: int = 1
  padding: int = 0
  affine: bool = True

  @nn.compact
  def __call__(self, x, train: bool):
    x = conv(self.c_out, self.k, self.stride, self.padding, name='conv')(nn.relu(x))
    return batch_norm(train, self.affine, name='bn')(x)


class DilConv(nn.Module):
  """ReLU, depthwise dilated k×k, pointwise 1×1, BN."""

  c_out: int
  k: int
  stride: int
  padding: int
  dilation: int
  affine: bool = True
  depthwise: str = 'auto'

  @nn.compact
  def __call__(self, x, train: bool):
    x = DepthwiseConv(self.k, self.stride, self.padding, self.dilation, self.depthwise,
                      name='depthwise')(nn.relu(x))
    x = conv(self.c_out, 1, name='pointwise')(x)
    return batch_norm(train, self.affine, name='bn')(x)


class SepConv(nn.Module):
  """Two stacked DilConv blocks with dilation 1; only the first is strided."""

  c_out: int
  k: int
  stride: int
  padding: int
  affine: bool = True
  depthwise: str = 'auto'

  @nn.compact
  def __call__(self, x, train: bool):
    c_in = x.shape[-1]
    x = DilConv(c_in, self.k, self.stride, self.padding, 1, self.affine, self.depthwise,
                name='block1')(x, train)
    return DilConv(self.c_out, self.k, 1, self.padding, 1, self.affine, self.depthwise,
                   name='block2')(x, train)


class FactorizedReduce(nn.Module):
  """ReLU, two 1×1 stride-2 convs on x and on x shifted by one pixel, concat, BN.

  `conv_even` sees the pixels at even rows and columns, `conv_odd` the odd ones.
  """

  c_out: int
  affine: bool = True

  @nn.compact
  def __call__(self, x, train: bool):
    if self.c_out % 2:
      raise ValueError(f'FactorizedReduce needs an even channel count, got {self.c_out}')
    x = nn.relu(x)
    a = conv(self.c_out // 2, 1, stride=2, name='conv_even')(x)
    b = conv(self.c_out // 2, 1, stride=2, name='conv_odd')(x[:, 1:, 1:, :])
    return batch_norm(train, self.affine, name='bn')(jnp.concatenate([a, b], axis=-1))


class Zero(nn.Module):
  stride: int = 1

  def __call__(self, x, train: bool):
    del train
    return x[:, ::self.stride, ::self.stride, :] * 0.0


class Identity(nn.Module):

  def __call__(self, x, train: bool):
    del train
    return x


class Pool(nn.Module):
  """3×3 pooling, padding 1; average excludes the padding (count_include_pad=False).

  Attributes:
    kind: 'max' or 'avg'.
    stride: 1 or 2.
    bn: batch-normalise the output without affine (sub-module `bn`). DARTS does so
      inside the super-net's mixed ops, where pooling would otherwise enter the
      weighted sum unnormalised beside the batch-normalised convolutions.
  """

  kind: str
  stride: int = 1
  bn: bool = False

  @nn.compact
  def __call__(self, x, train: bool):
    pool = primitives.max_pool_3x3 if self.kind == 'max' else primitives.avg_pool_3x3
    y = pool(x, self.stride)
    return batch_norm(train, affine=False, name='bn')(y) if self.bn else y


class OpArgs(NamedTuple):
  """What an op builder gets.

  Attributes:
    c: channels in and out.
    stride: 1, or 2 on the edges that leave the inputs of a reduction cell.
    affine: batch norms with scale and bias (DARTS: False in search cells only).
    depthwise: depthwise convolution implementation, one of DEPTHWISE_IMPLS.
    mixture: the op is a term of a super-net mixed op (see `Pool.bn`).
    name: the module name.
  """

  c: int
  stride: int
  affine: bool
  depthwise: str
  mixture: bool
  name: str


@dataclasses.dataclass(frozen=True)
class OpDef:
  """One candidate op of the search spaces.

  Attributes:
    build: `build(OpArgs) -> module` whose `__call__(x, train)` maps C channels to C
      channels at 1/stride the resolution.
    parametric: a convolution, what the paper counts as a parametric op
      (`genotypes.num_parametric`, the search curves). A stride-2 skip_connect
      carries 1×1 convolutions too, but is a skip, not a parametric op.
    colour: matplotlib colour of the op's edges in cell drawings.
    weighted_at: the strides at which the op has weights. An op without weights at
      a stride (a pool, identity, none) is the same function on every edge leaving
      one state, so the super-net computes it once per state, not once per edge.
  """

  build: Callable[[OpArgs], nn.Module]
  parametric: bool
  colour: str
  weighted_at: tuple[int, ...] = (1, 2)


def _sep_conv(k: int) -> Callable[[OpArgs], nn.Module]:
  # Padding k // 2 keeps the resolution at stride 1.
  return lambda a: SepConv(a.c, k, a.stride, k // 2, a.affine, a.depthwise, name=a.name)


def _dil_conv(k: int) -> Callable[[OpArgs], nn.Module]:
  # Dilation 2 spans 2k - 1 pixels; padding k - 1 keeps the resolution at stride 1.
  return lambda a: DilConv(a.c, k, a.stride, k - 1, 2, a.affine, a.depthwise, name=a.name)


def _skip(a: OpArgs) -> nn.Module:
  # A stride-2 skip must halve the resolution: FactorizedReduce, as DARTS.
  if a.stride == 1:
    return Identity(name=a.name)
  return FactorizedReduce(a.c, a.affine, name=a.name)


# Colours follow the paper's figures where they name one (skip red, sep_conv_3x3 blue).
REGISTRY: dict[str, OpDef] = {
    'none': OpDef(lambda a: Zero(a.stride, name=a.name), False, 'tab:gray', ()),
    'max_pool_3x3': OpDef(lambda a: Pool('max', a.stride, a.mixture, name=a.name), False,
                          'tab:purple', ()),
    'avg_pool_3x3': OpDef(lambda a: Pool('avg', a.stride, a.mixture, name=a.name), False,
                          'tab:orange', ()),
    'skip_connect': OpDef(_skip, False, 'tab:red', (2,)),
    'sep_conv_3x3': OpDef(_sep_conv(3), True, 'tab:blue'),
    'sep_conv_5x5': OpDef(_sep_conv(5), True, 'tab:cyan'),
    'sep_conv_7x7': OpDef(_sep_conv(7), True, 'tab:brown'),
    'dil_conv_3x3': OpDef(_dil_conv(3), True, 'tab:green'),
    'dil_conv_5x5': OpDef(_dil_conv(5), True, 'tab:olive'),
}


def lookup(op: str) -> OpDef:
  """The registry entry of `op`.

  Args:
    op: an op name.

  Returns:
    `REGISTRY[op]`.

  Raises:
    ValueError: for an op not in `REGISTRY`, naming the known ones.
  """
  if op not in REGISTRY:
    raise ValueError(f'unknown op {op!r}; known: {sorted(REGISTRY)}')
  return REGISTRY[op]


def build(op: str, c: int, stride: int, *, affine: bool, depthwise: str = 'auto',
          mixture: bool = False, name: str | None = None) -> nn.Module:
  """Builds candidate op `op` (see `OpArgs` for the arguments).

  Args:
    op: a key of `REGISTRY`.
    c: channels in and out.
    stride: 1 or 2.
    affine: batch norms with scale and bias.
    depthwise: depthwise convolution implementation.
    mixture: the op is a term of a super-net mixed op.
    name: module name; the op's name by default, so parameters read
      `.../sep_conv_3x3/...`.

  Returns:
    The unbound module, called as `module(x, train)`.
  """
  return lookup(op).build(OpArgs(c, stride, affine, depthwise, mixture, name or op))


def uses_drop_path(train: bool, rate) -> bool:
  """Whether a call applies drop-path: training with a rate not known to be 0.

  A python 0 skips it at trace time; a traced rate (a schedule inside a jitted step)
  always takes the drop-path path, which is the identity at rate 0.
  """
  return train and not (isinstance(rate, (int, float)) and rate == 0)


def drop_path(x, rate: float, rng: jax.Array | None = None, keep_B: jax.Array | None = None):
  """Drops whole samples with probability `rate`, scaling survivors by 1/(1-rate).

  Args:
    x: f[B, ...].
    rate: the drop probability.
    rng: key to draw the samples' keep mask from, when `keep_B` is not given.
    keep_B: bool[B], the samples kept, drawn beforehand with `drop_path_keep` (the
      super-net draws all the masks of a mixed op in one call: each draw is several
      HLO fusions, and a search cell has dozens of dropped terms).

  Returns:
    x with the dropped samples zeroed.
  """
  keep = 1.0 - rate
  if keep_B is None:
    keep_B = drop_path_keep(rng, rate, (x.shape[0],))
  return jnp.where(keep_B.reshape((-1,) + (1,) * (x.ndim - 1)), x / keep, 0.0)


def drop_path_keep(rng: jax.Array, rate: float, shape: tuple[int, ...]) -> jax.Array:
  """bool[shape], each entry kept with probability 1 − `rate`."""
  return jax.random.bernoulli(rng, 1.0 - rate, shape)


# ------------------------------------------------------------------------------------
# Parts both networks share. The super-network and the discrete networks give them the
# same module names (`stem`, `cell_XX/preprocess`, `auxiliary_head`, `classifier`), so
# their parameter trees line up.

# Name of the auxiliary head; DARTS leaves every parameter whose name contains
# 'auxiliary' out of its reported size (utils.count_parameters_in_MB).
AUX_HEAD = 'auxiliary_head'


def init_variables(module: nn.Module, rngs: dict, *args, train: bool) -> dict:
  """`module.init(rngs, *args, train=train)`, the same values, compiled cheaply.

  Run eagerly, a super-net's init dispatches thousands of ops one by one (93 s and
  1 GiB of RSS for S1 with C=8, 5 cells); compiled at XLA's usual optimisation level
  it takes about as long, its graph being hundreds of threefry initialisers and a
  forward pass. Init runs once, so it is compiled without LLVM optimisation (3.5× less
  compile time, bit-identical values: integer hashing and exact float ops) and
  reused for every call on the same module and shapes.
  """
  leaves, treedef = jax.tree.flatten((rngs, args))
  if any(isinstance(x, jax.core.Tracer) for x in leaves):  # Under jit or eval_shape.
    return module.init(rngs, *args, train=train)
  specs = tuple(jax.ShapeDtypeStruct(jnp.shape(x), jnp.result_type(x)) for x in leaves)
  try:
    hash(module)
    compile_init = _compiled_init
  except TypeError:  # An unhashable module (a spec holding dicts): not reused.
    compile_init = _compiled_init.__wrapped__
  return compile_init(module, train, treedef, specs)(rngs, *args)


@functools.lru_cache(maxsize=16)
def _compiled_init(module, train, treedef, specs):
  rngs, args = jax.tree.unflatten(treedef, specs)
  init = jax.jit(functools.partial(module.init, train=train))
  return init.lower(rngs, *args).compile({'xla_backend_optimization_level': 0})


def capture_cells(module: nn.Module, method: str) -> bool:
  """A `capture_intermediates` filter that keeps the output of every `cell_XX`.

  Args:
    module: the module flax asks about.
    method: the method being called.

  Returns:
    Whether to record the call's output: top-level `cell_XX` modules' `__call__`.
  """
  return (method == '__call__' and len(module.path) == 1
          and module.path[0].startswith('cell_'))


def cell_outputs(intermediates: dict) -> dict[str, jax.Array]:
  """`{'cell_00': f32[B, H, W, C], ...}` from what `capture_cells` recorded."""
  return {name: calls['__call__'][0] for name, calls in intermediates.items()}


class Preprocess(nn.Module):
  """Brings the two cell inputs to C channels and a common resolution."""

  c: int
  reduction_prev: bool
  affine: bool

  @nn.compact
  def __call__(self, s0, s1, train: bool):
    if self.reduction_prev:
      s0 = FactorizedReduce(self.c, self.affine, name='pre0')(s0, train)
    else:
      s0 = ReLUConvBN(self.c, 1, affine=self.affine, name='pre0')(s0, train)
    s1 = ReLUConvBN(self.c, 1, affine=self.affine, name='pre1')(s1, train)
    return s0, s1


class StemCIFAR(nn.Module):
  """3×3 conv to stem_multiplier·C channels, then BN (affine)."""

  c: int

  @nn.compact
  def __call__(self, x, train: bool):
    return batch_norm(train, True, name='bn')(conv(self.c, 3, padding=1, name='conv')(x))


class AuxiliaryHeadCIFAR(nn.Module):
  """Auxiliary classifier at 2/3 depth, for 8×8 inputs (DARTS reference)."""

  num_classes: int

  @nn.compact
  def __call__(self, x, train: bool):
    x = nn.relu(x)
    x = nn.avg_pool(x, (5, 5), strides=(3, 3), padding='VALID')
    x = nn.relu(batch_norm(train, True, name='bn1')(conv(128, 1, name='conv1')(x)))
    x = nn.relu(batch_norm(train, True, name='bn2')(conv(768, 2, name='conv2')(x)))
    x = x.reshape(x.shape[0], -1)
    return nn.Dense(self.num_classes, kernel_init=torch_init, param_dtype=float_dtype(),
                    name='classifier')(x)
