"""Parameter and multiply-add counts of discrete networks, and the mobile-setting width.

Multiply-adds are counted analytically from the traced evaluation forward pass
(`jax.make_jaxpr`, no compilation), by the convention of the counters DARTS-family
papers use (ptflops, and the flops_benchmark.py it grew from, which the DARTS issue
tracker points to), per layer kind:

  * conv_fc:    |output| · k_h · k_w · C_in/groups of every convolution, |input| ·
                outputs of every matrix product (the classifier, and the 1×1
                convolutions traced as one), plus the classifier's bias;
  * batch_norm: |input|, twice with the affine scale and shift;
  * relu:       |output|;
  * pool:       |input| of every 3×3 max / average pool and of the global average.

Element-wise sums (cell nodes, skip connections) and concatenations count nothing,
as in those counters. By this count DARTS_V2 at C=48 (ImageNet, 14 cells, 224²) has
544.59M multiply-adds, the figure ptflops gives for DARTS's own PyTorch model
(quark0/darts issue #46); its conv + fc part alone is 529.9M. DARTS published 574M
with a counter it never released, which no public convention reproduces. The
evaluation pass has no auxiliary head, so it is not counted; parameters exclude it
too, as DARTS's `count_parameters_in_MB` does.

    profile(genotypes.DARTS_V2, kind='imagenet', c=48, num_cells=14,
            num_classes=1000, image_size=224)   # Profile(c=48, params=..., macs=...)
    choose_width(genotype)                      # largest even C with MACs <= 600M
"""

from __future__ import annotations

import collections
import functools
import math
from typing import Any, Callable, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.extend import core as jax_core
import numpy as np

from amdarts import genotypes
from amdarts import network as network_lib
from amdarts import ops as ops_lib

MOBILE_BUDGET = 600e6  # The ImageNet mobile setting: at most 600M multiply-adds.


class Profile(NamedTuple):
  """Size of a network.

  Attributes:
    c: base channel count.
    params: trainable parameters without the auxiliary head.
    macs: multiply-adds of one 1-image evaluation forward pass.
  """

  c: int
  params: int
  macs: int


def count_params(params: Any, exclude: tuple[str, ...] = (ops_lib.AUX_HEAD,)) -> int:
  """Number of parameters, leaving out subtrees whose path contains an `exclude` name.

  Args:
    params: parameter pytree (arrays or `jax.ShapeDtypeStruct`s).
    exclude: key names whose subtrees are not counted.

  Returns:
    The count.
  """
  total = 0
  for path, leaf in jax.tree_util.tree_leaves_with_path(params):
    keys = {str(getattr(k, 'key', getattr(k, 'name', k))) for k in path}
    if not keys & set(exclude):
      total += math.prod(leaf.shape)
  return total


def _sub_jaxprs(params: dict):
  """Jaxprs nested in an equation's params (jit, custom_jvp, ...).

  All branches of a `cond` would be counted; the networks here have none.
  """
  for value in params.values():
    for v in value if isinstance(value, (tuple, list)) else (value,):
      if isinstance(v, jax_core.ClosedJaxpr):
        yield v.jaxpr
      elif isinstance(v, jax_core.Jaxpr):
        yield v


LAYER_KINDS = ('conv_fc', 'batch_norm', 'relu', 'pool')


def _count_jaxpr(jaxpr, counts: collections.Counter) -> None:
  for eqn in jaxpr.eqns:
    name = eqn.primitive.name
    out = eqn.outvars[0].aval.shape if eqn.outvars else ()
    if name == 'conv_general_dilated':
      rhs = eqn.invars[1].aval.shape
      out_feature_dim = eqn.params['dimension_numbers'].rhs_spec[0]
      # The kernel's input-feature dim already holds C_in / feature_group_count.
      counts['conv_fc'] += math.prod(out) * math.prod(rhs) // rhs[out_feature_dim]
    elif name == 'dot_general':
      lhs = eqn.invars[0].aval.shape
      rhs = eqn.invars[1].aval.shape
      (_, rhs_contract), (_, rhs_batch) = eqn.params['dimension_numbers']
      free = [d for d in range(len(rhs)) if d not in (*rhs_contract, *rhs_batch)]
      counts['conv_fc'] += math.prod(lhs) * math.prod(rhs[d] for d in free)
    elif name in ('jit', 'pjit') and eqn.params.get('name') == 'relu':  # jax.nn.relu
      counts['relu'] += math.prod(out)
      continue
    elif name == 'reduce_sum' and len(eqn.invars[0].aval.shape) == 4 and (
        tuple(eqn.params['axes']) == (1, 2)):  # Global average pooling (NHWC).
      counts['pool'] += math.prod(eqn.invars[0].aval.shape)
    elif name in ('scan', 'while'):
      # Loops would need their trip count; the networks here have none.
      raise ValueError(f'cannot count multiply-adds inside a {name} loop')
    for sub in _sub_jaxprs(eqn.params):
      _count_jaxpr(sub, counts)


def count_ops(fn: Callable, *args) -> dict[str, int]:
  """Multiply-adds of `fn(*args)` per layer kind (`LAYER_KINDS`; see the module doc).

  Convolutions, matrix products, ReLUs and global pooling are read off the jaxpr;
  batch norms (`ops.BatchNorm`), 3×3 pools (`ops.Pool`) and dense biases off the
  flax modules called while tracing, as the PyTorch counters hook modules. So the
  modules must run when `fn` is traced: not inside a jit traced before.

  Args:
    fn: a jax-traceable function.
    *args: its arguments (arrays or `jax.ShapeDtypeStruct`s); nothing is computed.

  Returns:
    {kind: count} for every kind, for the batch size the arguments have.
  """
  counts = collections.Counter({kind: 0 for kind in LAYER_KINDS})

  def count_module(next_fun, fun_args, kwargs, context):
    out = next_fun(*fun_args, **kwargs)
    module = context.module
    if context.method_name == '__call__':
      if isinstance(module, ops_lib.BatchNorm):
        counts['batch_norm'] += math.prod(fun_args[0].shape) * (2 if module.affine else 1)
      elif isinstance(module, ops_lib.Pool):
        counts['pool'] += math.prod(fun_args[0].shape)
      elif isinstance(module, nn.Dense) and module.use_bias:
        counts['conv_fc'] += math.prod(out.shape)
    return out

  with nn.intercept_methods(count_module):
    jaxpr = jax.make_jaxpr(fn)(*args).jaxpr
  _count_jaxpr(jaxpr, counts)
  return dict(counts)


def count_macs(fn: Callable, *args) -> int:
  """Multiply-adds of `fn(*args)`: the sum of `count_ops` over the layer kinds.

  Args:
    fn: a jax-traceable function.
    *args: its arguments (arrays or `jax.ShapeDtypeStruct`s); nothing is computed.

  Returns:
    The count, for the batch size the arguments have.
  """
  return sum(count_ops(fn, *args).values())


def network_profile(net: network_lib.Network, image_shape: tuple[int, int, int]) -> Profile:
  """Parameters and per-image multiply-adds of a network on `image_shape` inputs.

  Grouped convolutions are counted as such, so the network should use the `native`
  depthwise implementation (the `shifted` one traces to element-wise products).

  Args:
    net: the network.
    image_shape: (H, W, C) of one input image.

  Returns:
    Its `Profile`.
  """
  x = jax.ShapeDtypeStruct((1, *image_shape), jnp.float32)
  params, state = jax.eval_shape(net.init, jax.random.PRNGKey(0), x)
  forward = lambda p, s, x: net.apply(p, s, x, train=False)[0][0]
  return Profile(net.module.c, count_params(params), count_macs(forward, params, state, x))


def profile(genotype: genotypes.AnyGenotype, *, kind: str = 'imagenet', c: int,
            num_cells: int | None = None, num_classes: int = 1000,
            image_size: int = 224, in_channels: int = 3,
            stem_multiplier: int = 3) -> Profile:
  """`network_profile` of the network `genotype` describes (cached per argument set).

  Args:
    genotype: either kind of genotype.
    kind: 'cifar' or 'imagenet'.
    c: base channel count.
    num_cells: depth (defaults to a per-cell genotype's number of cells).
    num_classes: classifier outputs.
    image_size: square input side.
    in_channels: input image channels.
    stem_multiplier: CIFAR stem width factor.

  Returns:
    The `Profile`.
  """
  # Validation makes the genotype hashable (tuples only) for the cache.
  return _profile(genotypes.validate(genotype), kind, c, num_cells, num_classes, image_size,
                  in_channels, stem_multiplier)


@functools.lru_cache(maxsize=256)
def _profile(genotype, kind, c, num_cells, num_classes, image_size, in_channels,
             stem_multiplier) -> Profile:
  net = network_lib.Network.create(genotype, kind=kind, num_cells=num_cells, c=c,
                                   num_classes=num_classes, auxiliary=True,
                                   stem_multiplier=stem_multiplier, depthwise='native')
  return network_profile(net, (image_size, image_size, in_channels))


def choose_width(genotype: genotypes.AnyGenotype, budget: float = MOBILE_BUDGET, *,
                 num_cells: int | None = 14, num_classes: int = 1000,
                 image_size: int = 224, c_max: int = 1024) -> Profile:
  """The widest ImageNet network of `genotype` within a multiply-add budget.

  The paper transfers each CIFAR architecture to ImageNet with "a proper number of
  basic channels, so that the FLOPs ... does not exceed 600M" (Section 3.2). For even
  C every layer's width is proportional to C, so MACs(C) is a quadratic in C: three
  counts give the polynomial, its root gives a candidate, and exact counts at the
  candidate and its even neighbours confirm it (each count traces the network once).

  Args:
    genotype: either kind (a per-cell genotype fixes the depth itself).
    budget: maximum multiply-adds of one image.
    num_cells: depth for a shared-cell genotype (DARTS's mobile setting: 14).
    num_classes: classifier outputs.
    image_size: input side.
    c_max: largest C considered.

  Returns:
    `Profile(c, params, macs)` at the chosen (even) C.

  Raises:
    ValueError: when even C=2 exceeds the budget.
  """
  if isinstance(genotype, genotypes.PerCellGenotype):
    num_cells = None  # Its own number of cells.
  at = lambda c: profile(genotype, kind='imagenet', c=c, num_cells=num_cells,
                         num_classes=num_classes, image_size=image_size)
  if at(2).macs > budget:
    raise ValueError(f'even C=2 needs {at(2).macs / 1e6:.1f}M multiply-adds, over the '
                     f'budget of {budget / 1e6:.1f}M')
  a, b, c0 = np.polyfit([2, 4, 6], [at(2).macs, at(4).macs, at(6).macs], 2)
  if a > 0:
    guess = (-b + np.sqrt(max(b * b - 4 * a * (c0 - budget), 0.0))) / (2 * a)
  else:
    guess = (budget - c0) / b if b > 0 else c_max
  c = int(min(max(2, 2 * math.floor(guess / 2)), c_max))
  # The exact counts decide; the polynomial only saves a search.
  while c > 2 and at(c).macs > budget:
    c -= 2
  while c + 2 <= c_max and at(c + 2).macs <= budget:
    c += 2
  return at(c)


def format_profile(p: Profile) -> str:
  """'C=48: 4.72M params, 574.3M multiply-adds' for logs."""
  return f'C={p.c}: {p.params / 1e6:.2f}M params, {p.macs / 1e6:.1f}M multiply-adds'

