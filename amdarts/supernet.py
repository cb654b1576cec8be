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

Edges that leave the same states (see `edge_groups`) see inputs of one shape, so each
such group runs as a single `nn.vmap`-ed MixedOp with parameters stacked over its
edges: the same function as one MixedOp per edge, with several times fewer HLO ops,
which set compile time and per-op overhead on XLA:CPU.

Parameter (and batch-norm state) names:

    stem/{conv,bn}                                  as the discrete networks
    cell_XX/preprocess/{pre0,pre1}/...              as the discrete networks
    cell_XX/from_0_1/<op>/...                       the edges leaving the cell inputs
    cell_XX/from_<s>/<op>/...                       the edges leaving state s >= 2
    auxiliary_head/..., classifier/{kernel,bias}    as the discrete networks

Every leaf under a `from_*` group is stacked over the group's edges on its leading
axis, in `spec.edges(key)` order, by design: that is what lets the group run as one
batched op. Inside an op, sub-modules are named by role (`ops.py`), e.g.
`from_0_1/sep_conv_3x3/block1/depthwise/kernel`; a pool's batch norm is
`from_0_1/max_pool_3x3/bn`.

`apply(..., capture=True)` also returns the output of every cell, for diagnostics;
capturing adds outputs to the traced function, no computation.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from amdarts import ops as ops_lib
from amdarts import spaces


class MixedOp(nn.Module):
  """Σ_o softmax(α)_o · o(x) over the space's candidate ops on one edge.

  `none` contributes exactly zero, so it is left out of the sum; its weight still
  takes its share of the softmax (and α_none its gradient) because `w_O` is computed
  by the caller from the whole α row.
  """

  ops: tuple[str, ...]
  c: int
  stride: int
  depthwise: str

  @nn.compact
  def __call__(self, x, w_O, train: bool, drop_path_rate=0.0):
    out = None
    keep_OxB = None
    if ops_lib.uses_drop_path(train, drop_path_rate):  # One draw for all the ops.
      keep_OxB = ops_lib.drop_path_keep(self.make_rng('drop_path'), drop_path_rate,
                                        (len(self.ops), x.shape[0]))
    for k, name in enumerate(self.ops):
      if name == 'none':
        continue
      op = ops_lib.build(name, self.c, self.stride, affine=False, depthwise=self.depthwise,
                         mixture=True)
      y = op(x, train)
      if keep_OxB is not None and not isinstance(op, ops_lib.Identity):  # As DARTS.
        y = ops_lib.drop_path(y, drop_path_rate, keep_B=keep_OxB[k])
      out = w_O[k] * y if out is None else out + w_O[k] * y
    if out is None:  # Only `none`: a zero edge of the output's shape.
      out = jnp.zeros_like(x[:, ::self.stride, ::self.stride, :])
    return out


def _vmap_edges(x_axis):
  # One MixedOp per edge along a leading edge axis: parameters, BN statistics and
  # drop-path masks are per edge (each instance normalises its own slice).
  return nn.vmap(MixedOp, in_axes=(x_axis, 0, None, None), out_axes=0,
                 variable_axes={'params': 0, 'batch_stats': 0},
                 split_rngs={'params': True, 'drop_path': True})


EdgeMixedOps = _vmap_edges(0)  # (x_ExBxHxWxC, w_ExO, train, rate) -> y_ExBxHxWxC
SharedInputMixedOps = _vmap_edges(None)  # (x_BxHxWxC, w_ExO, train, rate): one source.


def edge_groups(edges: tuple[tuple[int, int], ...]) -> tuple[tuple[int, ...], ...]:
  """Edges that run as one batched MixedOp, in execution order.

  The first group holds the edges leaving the cell inputs (states 0 and 1): all
  ready at once, all of one shape and stride (2 in a reduction cell). Then one group
  per intermediate state s ≥ 2 holds the edges leaving it, ready once node s − 2 is
  complete, which happens after the groups of sources < s. Four groups for the
  14-edge cell instead of 14 MixedOps: far fewer HLO ops (the cost on XLA:CPU).

  Returns:
    Per group, indices into `edges`, in `edges` order (so by target node).
  """
  groups = {}
  for e, (src, _) in enumerate(edges):
    groups.setdefault(max(src, 1), []).append(e)
  return tuple(tuple(g) for _, g in sorted(groups.items()))


def group_name(edges, group: tuple[int, ...]) -> str:
  srcs = sorted({edges[e][0] for e in group})
  return 'from_' + '_'.join(map(str, srcs))


def _split_ops(ops: tuple[str, ...], stride: int) -> tuple[tuple[str, ...], tuple[str, ...]]:
  """(ops with weights at `stride`, weightless ops other than `none`), space order."""
  weighted = tuple(o for o in ops if stride in ops_lib.lookup(o).weighted_at)
  shared = tuple(o for o in ops if o != 'none' and o not in weighted)
  return weighted, shared


def shared_op_name(op: str, src: int) -> str:
  """Module name of weightless op `op` applied to state `src` (one per state)."""
  return f'{op}_from_{src}'


class SearchCell(nn.Module):
  """One search cell.

  The edges of each of `edge_groups` run as one vmapped MixedOp over the ops with
  weights (parameters stacked over the group's edges, in `spec.edges(key)` order,
  under `from_<sources>`). Weightless ops — pools with their batch norm, identity —
  are the same function on every edge leaving one state, so each runs once per
  state (`<op>_from_<state>`) and enters every such edge's sum with that edge's
  weight (and, with drop-path, the edge's own mask). A per-edge pool batch norm of
  the reference sees the same batch as its siblings and so holds the same running
  statistics; `edge_variables` rebuilds the reference's per-edge variables.
  """

  spec: spaces.SpaceSpec
  key: str
  c: int
  reduction: bool
  reduction_prev: bool
  depthwise: str

  @nn.compact
  def __call__(self, s0, s1, arch, train: bool, drop_path_rate=0.0):
    s0, s1 = ops_lib.Preprocess(self.c, self.reduction_prev, affine=False,
                                name='preprocess')(s0, s1, train)
    edges = self.spec.edges(self.key)
    ops = self.spec.ops
    w_ExO = jax.nn.softmax(arch['alpha'], axis=-1)
    coef_E = spaces.edge_coefficients(self.spec, arch['beta']) if self.spec.has_beta else None
    states = [s0, s1]
    # Per node, the terms of its sum so far; a node is complete once the groups of
    # all its sources have run.
    parts = [[] for _ in range(self.spec.steps)]

    def complete_states(upto):
      while len(states) <= upto:
        terms = parts[len(states) - 2]
        states.append(sum(terms[1:], terms[0]))

    def edge_scale(e):  # The edge's weight in its node's sum: 1, or eq. 16's c_e.
      return 1.0 if coef_E is None else coef_E[e]

    for group in edge_groups(edges):
      srcs = [edges[e][0] for e in group]
      complete_states(max(srcs))
      stride = 2 if self.reduction and srcs[0] < 2 else 1
      weighted, shared = _split_ops(ops, stride)
      if weighted:
        mixed = (SharedInputMixedOps if len(set(srcs)) == 1 else EdgeMixedOps)(
            weighted, self.c, stride, self.depthwise, name=group_name(edges, group))
        x = states[srcs[0]] if len(set(srcs)) == 1 else jnp.stack([states[s] for s in srcs])
        cols = np.array([ops.index(o) for o in weighted])
        y_ExBxHxWxC = mixed(x, w_ExO[np.array(group)][:, cols], train, drop_path_rate)
        for k, e in enumerate(group):
          parts[edges[e][1]].append(edge_scale(e) * y_ExBxHxWxC[k])
      keep_ExSxB = None  # Per edge and weightless op, its own mask: one draw for all.
      if shared and ops_lib.uses_drop_path(train, drop_path_rate):
        keep_ExSxB = ops_lib.drop_path_keep(self.make_rng('drop_path'), drop_path_rate,
                                            (len(group), len(shared), s0.shape[0]))
      for src in sorted(set(srcs)):
        for j, o in enumerate(shared):
          op = ops_lib.build(o, self.c, stride, affine=False, depthwise=self.depthwise,
                             mixture=True, name=shared_op_name(o, src))
          y = op(states[src], train)
          droppable = keep_ExSxB is not None and not isinstance(op, ops_lib.Identity)
          for k, e in enumerate(group):
            if edges[e][0] != src:
              continue
            term = y if not droppable else ops_lib.drop_path(
                y, drop_path_rate, keep_B=keep_ExSxB[k, j])
            parts[edges[e][1]].append((edge_scale(e) * w_ExO[e, ops.index(o)]) * term)
    complete_states(self.spec.steps + 1)
    return jnp.concatenate(states[2:], axis=-1)


def edge_variables(cell: SearchCell, variables: dict, e: int) -> dict:
  """The variables of edge `e` of `cell` as one `MixedOp(cell.spec.ops, ...)` holds them.

  Args:
    cell: the search cell.
    variables: its `{'params': ..., 'batch_stats': ...}`.
    e: an index into `cell.spec.edges(cell.key)`.

  Returns:
    `{'params': ..., 'batch_stats': ...}` for `MixedOp(spec.ops, c, stride, ...)` on
    that edge: its slice of the group's stacked weights, and the weightless ops'
    statistics of its source state.
  """
  edges = cell.spec.edges(cell.key)
  group = next(g for g in edge_groups(edges) if e in g)
  src = edges[e][0]
  stride = 2 if cell.reduction and src < 2 else 1
  _, shared = _split_ops(cell.spec.ops, stride)
  out = {}
  for kind in ('params', 'batch_stats'):
    tree = variables.get(kind, {})
    edge = jax.tree.map(lambda a: a[group.index(e)], tree.get(group_name(edges, group), {}))
    edge = dict(edge)
    for o in shared:
      if shared_op_name(o, src) in tree:
        edge[o] = tree[shared_op_name(o, src)]
    out[kind] = edge
  return out


class SuperNetModule(nn.Module):
  """Linen module; use `SuperNet` for the functional interface."""

  spec: spaces.SpaceSpec
  c: int = 16
  num_classes: int = 10
  stem_multiplier: int = 3
  depthwise: str = 'auto'
  auxiliary: bool = False

  @nn.compact
  def __call__(self, x_BxHxWxC, arch, train: bool, drop_path_rate=0.0):
    x_BxHxWxC = jnp.asarray(x_BxHxWxC, ops_lib.float_dtype())  # f32 batches, f64 params.
    c_curr = self.stem_multiplier * self.c
    s0 = s1 = ops_lib.StemCIFAR(c_curr, name='stem')(x_BxHxWxC, train)
    c_curr, reduction_prev, aux_logits = self.c, False, None
    for i in range(self.spec.num_cells):
      reduction = self.spec.is_reduction(i)
      c_curr = c_curr * 2 if reduction else c_curr
      key = self.spec.cell_key(i)
      cell = SearchCell(self.spec, key, c_curr, reduction, reduction_prev, self.depthwise,
                        name=f'cell_{i:02d}')
      s0, s1 = s1, cell(s0, s1, arch[key], train, drop_path_rate)
      reduction_prev = reduction
      if self.auxiliary and train and i == 2 * self.spec.num_cells // 3:
        # Its 5×5 valid pooling would silently give an empty feature vector.
        if min(s1.shape[1:3]) < 5:
          raise ValueError(
              f'the auxiliary head needs at least 5x5 features after cell {i}, got '
              f'{s1.shape[1]}x{s1.shape[2]}; use larger images or train.auxiliary=False')
        aux_logits = ops_lib.AuxiliaryHeadCIFAR(self.num_classes, name=ops_lib.AUX_HEAD)(
            s1, train)
    x = jnp.mean(s1, axis=(1, 2))
    logits = nn.Dense(self.num_classes, kernel_init=ops_lib.torch_init,
                      param_dtype=ops_lib.float_dtype(), name='classifier')(x)
    return logits, aux_logits


@dataclasses.dataclass(frozen=True)
class SuperNet:
  """Functional wrapper: ω (`params`) and BN `state` are separate from α."""

  module: SuperNetModule

  @classmethod
  def create(cls, spec: spaces.SpaceSpec, **kwargs) -> 'SuperNet':
    if kwargs.get('depthwise', 'auto') not in ops_lib.DEPTHWISE_IMPLS:
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
    variables = ops_lib.init_variables(
        self.module, {'params': k_params, 'drop_path': k_drop}, x_BxHxWxC, arch, train=True)
    return variables['params'], variables.get('batch_stats', {})

  def apply(self, params, state, alpha, x_BxHxWxC, *, train: bool, drop_path_rate=0.0,
            rng=None, capture: bool = False):
    """Runs the super-network.

    In training mode batch norm uses batch statistics and updates the running ones.

    Args:
      params: ω from `init`.
      state: batch-norm statistics.
      alpha: the architecture pytree (`spaces.init_alpha`).
      x_BxHxWxC: images.
      train: batch statistics and their update, drop-path, the auxiliary head.
      drop_path_rate: drop probability of every op but identity (a python float or
        a traced scalar, so a schedule does not retrace); training only.
      rng: key for drop-path; needed when training with a rate that is not 0.
      capture: also return the output of every cell.

    Returns:
      ((logits f32[B, K], aux_logits or None), new_state), followed by
      `{'cell_00': f32[B, H, W, C], ...}` when `capture`.
    """
    if rng is None and ops_lib.uses_drop_path(train, drop_path_rate):
      raise ValueError('training with drop-path needs an rng')
    rngs = {'drop_path': rng} if rng is not None else {}
    mutable = (['batch_stats'] if train else []) + (['intermediates'] if capture else [])
    out = self.module.apply(
        {'params': params, 'batch_stats': state}, x_BxHxWxC, alpha, train=train,
        drop_path_rate=drop_path_rate if train else 0.0, rngs=rngs,
        mutable=mutable or False,
        capture_intermediates=ops_lib.capture_cells if capture else False)
    out, mutated = out if mutable else (out, {})
    new_state = mutated['batch_stats'] if train else state
    if capture:
      return out, new_state, ops_lib.cell_outputs(mutated['intermediates'])
    return out, new_state
