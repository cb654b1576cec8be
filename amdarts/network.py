"""Discrete networks built from a genotype, as DARTS's NetworkCIFAR / NetworkImageNet.

    net = Network.create(genotypes.DARTS_V2, kind='cifar', num_cells=20, c=36)
    params, state = net.init(rng, x_BxHxWxC)
    (logits_BxK, aux_logits), state = net.apply(
        params, state, x, train=True, drop_path_rate=0.1, rng=rng)

Every cell preprocesses its two inputs (FactorizedReduce after a reduction cell,
otherwise ReLU-1x1 conv-BN), applies the genotype's op to each gene's input (stride 2
on the cell inputs 0/1 of a reduction cell), sums the two genes of each node and
concatenates the states listed in the cell's concat. All batch norms are affine.

A `Genotype` (one normal and one reduction cell, space S1) places the reduction cell
at 1/3 and 2/3 depth, the rule of the search network (`spaces.SpaceSpec`). A
`PerCellGenotype` (space S2) gives every position its own cell and reduction flag.
Genes may read any earlier state (pruned, fixed or searched edges alike).

Drop-path (training only, never on an identity op) takes its rate as an argument of
`apply`, so a rate that changes every epoch does not retrace a jitted step. The
auxiliary head sits after cell 2·num_cells//3 and runs only in training; its
parameters are always created by `init`.

Parameter (and batch-norm state) names say what each part is, and the stem,
preprocessing, auxiliary head and classifier are named as in the super-network:

    stem/...                                  CIFAR: {conv,bn}; ImageNet: stem0_*, stem1_*
    cell_XX/preprocess/{pre0,pre1}/...
    cell_XX/edge_K/<op>/...                   gene K of the cell, e.g.
                                              cell_05/edge_3/sep_conv_3x3/block1/depthwise
    auxiliary_head/..., classifier/{kernel,bias}

Ops without weights (pools, identity, none) have no entry in the parameter tree.

`apply(..., capture=True)` also returns the output of every cell, for diagnostics.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from amdarts import genotypes
from amdarts import ops as ops_lib
from amdarts import spaces

KINDS = ('cifar', 'imagenet')

# Both auxiliary heads start with a 5×5 average pool without padding.
_AUX_POOL = 5


def reduction_cells(num_cells: int) -> tuple[int, ...]:
  """Positions of the reduction cells of an S1 network: those of the search network."""
  return spaces.SpaceSpec(num_cells=num_cells).reduction_cells


def aux_position(num_cells: int) -> int:
  """Index of the cell whose output feeds the auxiliary head (DARTS: 2·layers//3)."""
  return 2 * num_cells // 3


def cell_layout(genotype: genotypes.AnyGenotype,
                num_cells: int | None = None) -> tuple[genotypes.CellGenotype, ...]:
  """The cell of every position of the network, in order.

  Args:
    genotype: a `Genotype` (shared cells) or a `PerCellGenotype` (one per cell).
    num_cells: depth; required for a `Genotype`, and for a `PerCellGenotype` it must
      equal its number of cells when given.

  Returns:
    One validated `CellGenotype` per position; `reduction` marks reduction cells.

  Raises:
    ValueError: for an invalid genotype, a depth that does not match, or a network
      that needs reduction cells when the genotype has none.
  """
  genotype = genotypes.validate(genotype)
  if isinstance(genotype, genotypes.PerCellGenotype):
    if num_cells is not None and num_cells != len(genotype.cells):
      raise ValueError(f'per-cell genotype has {len(genotype.cells)} cells, the network '
                       f'needs {num_cells}; set model.cells={len(genotype.cells)}')
    return genotype.cells
  if num_cells is None or num_cells < 1:
    raise ValueError(f'a shared-cell genotype needs num_cells >= 1, got {num_cells}')
  reductions = reduction_cells(num_cells)
  if reductions and not genotype.reduce:
    raise ValueError(f'a {num_cells}-cell network has reduction cells at {reductions} '
                     'but the genotype has no reduction cell')
  normal = genotypes.CellGenotype(genotype.normal, genotype.normal_concat, False)
  reduce = genotypes.CellGenotype(genotype.reduce, genotype.reduce_concat, True)
  return tuple(reduce if i in reductions else normal for i in range(num_cells))


class Edge(nn.Module):
  """One gene of a discrete cell: its op, named by the op, then drop-path.

  Attributes:
    op: the op's name, a key of `ops.REGISTRY`.
    c: channels in and out.
    stride: 2 on the cell inputs of a reduction cell, else 1.
    depthwise: depthwise convolution implementation.
  """

  op: str
  c: int
  stride: int
  depthwise: str = 'auto'

  @nn.compact
  def __call__(self, x, train: bool, drop_path_rate=0.0):
    op = ops_lib.build(self.op, self.c, self.stride, affine=True, depthwise=self.depthwise)
    y = op(x, train)
    # As in DARTS, identity ops (stride-1 skips) are never dropped.
    if ops_lib.uses_drop_path(train, drop_path_rate) and not isinstance(op, ops_lib.Identity):
      y = ops_lib.drop_path(y, drop_path_rate, self.make_rng('drop_path'))
    return y


class Cell(nn.Module):
  """One discrete cell (DARTS `Cell`), with affine batch norms.

  Attributes:
    genotype: the cell's genes, concat and reduction flag.
    c: channels of every node (the cell outputs len(concat)·c).
    reduction_prev: whether the previous cell halved the resolution, so input 0 is
      twice as large as input 1 and goes through FactorizedReduce.
    depthwise: depthwise convolution implementation, see `ops.DEPTHWISE_IMPLS`.
  """

  genotype: genotypes.CellGenotype
  c: int
  reduction_prev: bool
  depthwise: str = 'auto'

  @nn.compact
  def __call__(self, s0, s1, train: bool, drop_path_rate=0.0):
    s0, s1 = ops_lib.Preprocess(self.c, self.reduction_prev, affine=True,
                                name='preprocess')(s0, s1, train)
    states = [s0, s1]
    genes = self.genotype.genes
    for node in range(len(genes) // 2):
      total = 0.0
      for k in (2 * node, 2 * node + 1):
        op_name, src = genes[k]
        stride = 2 if self.genotype.reduction and src < 2 else 1
        edge = Edge(op_name, self.c, stride, self.depthwise, name=f'edge_{k}')
        total = total + edge(states[src], train, drop_path_rate)
      states.append(total)
    return jnp.concatenate([states[i] for i in self.genotype.concat], axis=-1)


class AuxiliaryHeadImageNet(nn.Module):
  """Auxiliary classifier of DARTS's ImageNet network (after the second reduction).

  ReLU, 5×5 average pool stride 2, 1×1 conv to 128, BN, ReLU, 2×2 conv to 768, ReLU,
  linear. The reference has no batch norm after the 768-channel conv (a typo it kept
  "for consistency with the experiments in the paper"); so has this one, so that
  parameter counts match its published ones.
  """

  num_classes: int

  @nn.compact
  def __call__(self, x, train: bool):
    x = nn.relu(x)
    x = nn.avg_pool(x, (_AUX_POOL, _AUX_POOL), strides=(2, 2), padding='VALID')
    x = nn.relu(ops_lib.batch_norm(train, True, name='bn1')(ops_lib.conv(128, 1, name='conv1')(x)))
    x = nn.relu(ops_lib.conv(768, 2, name='conv2')(x))
    x = x.reshape(x.shape[0], -1)
    return nn.Dense(self.num_classes, kernel_init=ops_lib.torch_init,
                    param_dtype=ops_lib.float_dtype(), name='classifier')(x)


class StemImageNet(nn.Module):
  """DARTS's two ImageNet stems: 224² -> 56² (stem0) -> 28² (stem1).

  stem0: 3×3 conv stride 2 to C/2, BN, ReLU, 3×3 conv stride 2 to C, BN.
  stem1: ReLU, 3×3 conv stride 2 to C, BN. Returns both outputs (the first two cell
  inputs). Sub-modules are named after DARTS's two stems: `stem0_conv1`, `stem0_bn1`,
  `stem0_conv2`, `stem0_bn2`, `stem1_conv`, `stem1_bn`.
  """

  c: int

  @nn.compact
  def __call__(self, x, train: bool):
    bn = lambda name: ops_lib.batch_norm(train, True, name=name)
    s0 = bn('stem0_bn1')(ops_lib.conv(self.c // 2, 3, 2, 1, name='stem0_conv1')(x))
    s0 = bn('stem0_bn2')(ops_lib.conv(self.c, 3, 2, 1, name='stem0_conv2')(nn.relu(s0)))
    s1 = bn('stem1_bn')(ops_lib.conv(self.c, 3, 2, 1, name='stem1_conv')(nn.relu(s0)))
    return s0, s1


class NetworkModule(nn.Module):
  """Linen module of both DARTS networks; use `Network` for the functional interface.

  Attributes:
    layout: one `CellGenotype` per cell (see `cell_layout`).
    kind: 'cifar' (one 3×3 stem at full resolution, reduction_prev=False for the
      first cell) or 'imagenet' (stride-8 stems, reduction_prev=True).
    c: base channel count C; doubled at every reduction cell.
    num_classes: classifier outputs.
    auxiliary: build the auxiliary head (used in training only).
    stem_multiplier: CIFAR stem width = stem_multiplier·C.
    depthwise: depthwise convolution implementation for every op.
  """

  layout: tuple[genotypes.CellGenotype, ...]
  kind: str = 'cifar'
  c: int = 36
  num_classes: int = 10
  auxiliary: bool = False
  stem_multiplier: int = 3
  depthwise: str = 'auto'

  @nn.compact
  def __call__(self, x_BxHxWxC, train: bool, drop_path_rate=0.0):
    x_BxHxWxC = jnp.asarray(x_BxHxWxC, ops_lib.float_dtype())  # f32 batches, f64 params.
    if self.kind == 'cifar':
      s0 = s1 = ops_lib.StemCIFAR(self.stem_multiplier * self.c, name='stem')(x_BxHxWxC, train)
      reduction_prev = False
    else:
      s0, s1 = StemImageNet(self.c, name='stem')(x_BxHxWxC, train)
      reduction_prev = True  # The stems halve the resolution just before cell 0.
    c_curr, aux_logits = self.c, None
    aux_at = aux_position(len(self.layout))
    for i, cell in enumerate(self.layout):
      c_curr = c_curr * 2 if cell.reduction else c_curr
      s0, s1 = s1, Cell(cell, c_curr, reduction_prev, self.depthwise, name=f'cell_{i:02d}')(
          s0, s1, train, drop_path_rate)
      reduction_prev = cell.reduction
      # Built at init too, so a model initialised in eval mode can train with it.
      if self.auxiliary and i == aux_at and (train or self.is_initializing()):
        if min(s1.shape[1:3]) < _AUX_POOL:
          raise ValueError(
              f'the auxiliary head needs at least {_AUX_POOL}x{_AUX_POOL} features after cell '
              f'{i}, got {s1.shape[1]}x{s1.shape[2]}; use larger images or no auxiliary head')
        head = (ops_lib.AuxiliaryHeadCIFAR if self.kind == 'cifar' else AuxiliaryHeadImageNet)
        aux_logits = head(self.num_classes, name=ops_lib.AUX_HEAD)(s1, train)
    # Global average pooling: DARTS's AvgPool2d(7) on ImageNet's 7×7 output is the same.
    x = jnp.mean(s1, axis=(1, 2))
    logits = nn.Dense(self.num_classes, kernel_init=ops_lib.torch_init,
                      param_dtype=ops_lib.float_dtype(), name='classifier')(x)
    return logits, (aux_logits if train else None)


@dataclasses.dataclass(frozen=True)
class Network:
  """Functional wrapper around `NetworkModule`: parameters and BN state as pytrees."""

  module: NetworkModule

  @classmethod
  def create(cls, genotype: genotypes.AnyGenotype, *, kind: str = 'cifar',
             num_cells: int | None = None, c: int = 36, num_classes: int = 10,
             auxiliary: bool = False, stem_multiplier: int = 3,
             depthwise: str = 'auto') -> 'Network':
    """Builds the network of `genotype`.

    Args:
      genotype: `Genotype` or `PerCellGenotype` (validated here).
      kind: one of KINDS.
      num_cells: depth; defaults to the number of cells of a `PerCellGenotype`.
      c: base channel count (even for ImageNet, whose FactorizedReduce and stem
        split it in two).
      num_classes: classifier outputs.
      auxiliary: build the auxiliary head.
      stem_multiplier: CIFAR stem width factor.
      depthwise: one of `ops.DEPTHWISE_IMPLS`.

    Returns:
      The network.

    Raises:
      ValueError: on any invalid argument, before anything is traced.
    """
    if kind not in KINDS:
      raise ValueError(f'kind must be one of {KINDS}, got {kind!r}')
    if depthwise not in ops_lib.DEPTHWISE_IMPLS:
      raise ValueError(f'depthwise must be one of {ops_lib.DEPTHWISE_IMPLS}, got {depthwise!r}')
    if c < 1:
      raise ValueError(f'c must be positive, got {c}')
    if kind == 'imagenet' and c % 2:
      # The C/2 stem and the first cell's FactorizedReduce split C in two halves.
      raise ValueError(f'c must be even for imagenet, got {c}')
    layout = cell_layout(genotype, num_cells)
    return cls(NetworkModule(layout, kind, c, num_classes, auxiliary, stem_multiplier,
                             depthwise))

  @property
  def num_cells(self) -> int:
    return len(self.module.layout)

  def cell_channels(self) -> tuple[int, ...]:
    """Output channels of every cell: len(concat) times the cell's node width."""
    out, c = [], self.module.c
    for cell in self.module.layout:
      c = c * 2 if cell.reduction else c
      out.append(len(cell.concat) * c)
    return tuple(out)

  def init(self, rng: jax.Array, x_BxHxWxC: jax.Array) -> tuple[Any, Any]:
    """Returns (params, state) for inputs shaped like `x_BxHxWxC`.

    The auxiliary head (when enabled) is part of `params`.
    """
    k_params, k_drop = jax.random.split(rng)
    variables = ops_lib.init_variables(
        self.module, {'params': k_params, 'drop_path': k_drop}, x_BxHxWxC, train=False)
    return variables['params'], variables.get('batch_stats', {})

  def apply(self, params, state, x_BxHxWxC, *, train: bool, drop_path_rate=0.0,
            rng: jax.Array | None = None, capture: bool = False):
    """Returns ((logits, aux_logits or None), new_state).

    Args:
      params: parameters from `init`.
      state: batch-norm statistics.
      x_BxHxWxC: images.
      train: batch statistics (and their running update), drop-path and the
        auxiliary head; otherwise running statistics, no drop-path, aux None.
      drop_path_rate: drop probability of every non-identity op (python float or a
        traced scalar); ignored when not training.
      rng: key for drop-path; required when training with a rate that is not the
        python number 0.
      capture: also return the output of every cell.

    Returns:
      ((logits f32[B, K], aux_logits f32[B, K] or None), new batch-norm state),
      followed by `{'cell_00': f32[B, H, W, C], ...}` when `capture`.
    """
    if rng is None and ops_lib.uses_drop_path(train, drop_path_rate):
      raise ValueError('training with drop-path needs an rng')
    rngs = {'drop_path': rng} if rng is not None else {}
    kwargs = {'drop_path_rate': drop_path_rate, 'rngs': rngs} if train else {}
    mutable = (['batch_stats'] if train else []) + (['intermediates'] if capture else [])
    out = self.module.apply(
        {'params': params, 'batch_stats': state}, x_BxHxWxC, train=train,
        mutable=mutable or False,
        capture_intermediates=ops_lib.capture_cells if capture else False, **kwargs)
    out, mutated = out if mutable else (out, {})
    new_state = mutated['batch_stats'] if train else state
    if capture:
      return out, new_state, ops_lib.cell_outputs(mutated['intermediates'])
    return out, new_state
