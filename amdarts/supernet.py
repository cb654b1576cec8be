"""The DARTS super-network as a pure function of (ω, BN state, α, x).

    net = SuperNet.create(spec, c=16, num_classes=10)
    params, state = net.init(rng, x_BxHxWxC)
    alpha = spaces.init_alpha(spec, rng)
    (logits_BxK, aux_logits), state = net.apply(params, state, alpha, x, train=True, rng=rng)

α is an argument, never a Flax param, so `jax.grad` can take ω or α. Every edge mixes
its candidate ops with softmax(α_edge); in `searched` mode the node inputs are also
mixed by the pair weights of eq. 16. Cells follow the DARTS reference: stem, cells of
`steps` nodes with reductions at 1/3 and 2/3 depth, concatenated node outputs, global
average pool, linear classifier.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from amdarts import ops as ops_lib
from amdarts import spaces


class MixedOp(nn.Module):
  """Σ_o softmax(α)_o · o(x) over the space's candidate ops on one edge."""

  ops: tuple[str, ...]
  c: int
  stride: int
  depthwise: str
  drop_path: float

  @nn.compact
  def __call__(self, x, w_O, train: bool):
    out = 0.0
    for k, name in enumerate(self.ops):
      y = ops_lib.OPS[name](self.c, self.stride, False, self.depthwise, name=name)(x, train)
      if 'pool' in name:  # DARTS normalises pooling outputs inside the mixture.
        y = ops_lib.batch_norm(train, affine=False, name=f'{name}_bn')(y)
      identity = name == 'none' or (name == 'skip_connect' and self.stride == 1)
      if train and self.drop_path > 0 and not identity:  # As DARTS: never on Identity.
        y = ops_lib.drop_path(y, self.drop_path, self.make_rng('drop_path'))
      out = out + w_O[k] * y
    return out


class SearchCell(nn.Module):
  spec: spaces.SpaceSpec
  key: str
  c: int
  reduction: bool
  reduction_prev: bool
  depthwise: str
  drop_path: float

  @nn.compact
  def __call__(self, s0, s1, arch, train: bool):
    s0, s1 = ops_lib.Preprocess(self.c, self.reduction_prev, affine=False)(s0, s1, train)
    edges = self.spec.edges(self.key)
    w_ExO = jax.nn.softmax(arch['alpha'], axis=-1)
    coef_E = (spaces.edge_coefficients(self.spec, arch['beta'])
              if self.spec.has_beta else jnp.ones(len(edges)))
    states = [s0, s1]
    for node in range(self.spec.steps):
      acc = 0.0
      for e, (src, dst) in enumerate(edges):
        if dst != node:
          continue
        stride = 2 if self.reduction and src < 2 else 1
        y = MixedOp(self.spec.ops, self.c, stride, self.depthwise, self.drop_path,
                    name=f'edge_{src}_{node}')(states[src], w_ExO[e], train)
        acc = acc + coef_E[e] * y
      states.append(acc)
    return jnp.concatenate(states[2:], axis=-1)


class SuperNetModule(nn.Module):
  """Linen module; use `SuperNet` for the functional interface."""

  spec: spaces.SpaceSpec
  c: int = 16
  num_classes: int = 10
  stem_multiplier: int = 3
  depthwise: str = 'native'
  drop_path: float = 0.0
  auxiliary: bool = False

  @nn.compact
  def __call__(self, x_BxHxWxC, arch, train: bool):
    c_curr = self.stem_multiplier * self.c
    s0 = s1 = ops_lib.StemCIFAR(c_curr)(x_BxHxWxC, train)
    c_curr, reduction_prev, aux_logits = self.c, False, None
    for i in range(self.spec.num_cells):
      reduction = self.spec.is_reduction(i)
      c_curr = c_curr * 2 if reduction else c_curr
      key = self.spec.cell_key(i)
      cell = SearchCell(self.spec, key, c_curr, reduction, reduction_prev, self.depthwise,
                        self.drop_path, name=f'cell_{i:02d}')
      s0, s1 = s1, cell(s0, s1, arch[key], train)
      reduction_prev = reduction
      if self.auxiliary and train and i == 2 * self.spec.num_cells // 3:
        aux_logits = ops_lib.AuxiliaryHeadCIFAR(self.num_classes)(s1, train)
    x = jnp.mean(s1, axis=(1, 2))
    logits = nn.Dense(self.num_classes, kernel_init=ops_lib.torch_init)(x)
    return logits, aux_logits


@dataclasses.dataclass(frozen=True)
class SuperNet:
  """Functional wrapper: ω (`params`) and BN `state` are separate from α."""

  module: SuperNetModule

  @classmethod
  def create(cls, spec: spaces.SpaceSpec, **kwargs) -> 'SuperNet':
    if kwargs.get('depthwise', 'native') not in ops_lib.DEPTHWISE_IMPLS:
      raise ValueError(f"depthwise must be one of {ops_lib.DEPTHWISE_IMPLS}, got "
                       f"{kwargs['depthwise']!r}")
    return cls(SuperNetModule(spec, **kwargs))

  @property
  def spec(self) -> spaces.SpaceSpec:
    return self.module.spec

  def init(self, rng: jax.Array, x_BxHxWxC: jax.Array) -> tuple[Any, Any]:
    """Returns (params, state) for inputs shaped like `x_BxHxWxC`."""
    arch = spaces.init_alpha(self.spec, jax.random.PRNGKey(0))
    k_params, k_drop = jax.random.split(rng)
    variables = self.module.init(
        {'params': k_params, 'drop_path': k_drop}, x_BxHxWxC, arch, train=True)
    return variables['params'], variables.get('batch_stats', {})

  def apply(self, params, state, alpha, x_BxHxWxC, *, train: bool, rng=None):
    """Returns ((logits, aux_logits or None), new_state).

    In training mode batch norm uses batch statistics and updates the running ones.
    `rng` is needed only for drop-path.
    """
    rngs = {'drop_path': rng} if rng is not None else {}
    if train:
      out, mutated = self.module.apply(
          {'params': params, 'batch_stats': state}, x_BxHxWxC, alpha, train=True,
          rngs=rngs, mutable=['batch_stats'])
      return out, mutated['batch_stats']
    out = self.module.apply({'params': params, 'batch_stats': state}, x_BxHxWxC, alpha,
                            train=False, rngs=rngs)
    return out, state
