"""Cell search spaces as data: candidate ops, edge topology and the α pytree layout.

A cell has two inputs (states 0 = c_{k-2} and 1 = c_{k-1}) and `steps` intermediate
nodes (states 2 .. steps+1); its output concatenates the intermediate nodes. An edge
is a pair `(src, node)`: state `src` feeds intermediate node `node` (0-based), so its
target state is `node + 2`. Edges are ordered node by node, sources ascending, the
order of the DARTS reference (14 edges for 4 nodes in the full topology).

Edge modes:
  * `pruned`:   all edges searched; the genotype keeps the top-2 inputs per node.
  * `fixed`:    node j <- c_{k-2} (state 0) and its predecessor (state j+1), or the
                input pairs given in `SpaceSpec.inputs` (operator search after an edge
                search, second stage of Appendix B.2).
  * `searched`: first stage of Appendix B.2: all edges, plus β over input pairs per
                node (eq. 16).

The architecture pytree holds one entry per cell key (`normal`/`reduce` when α is
shared by cell type, `cell_00`, `cell_01`, ... when each cell has its own):
`{key: {'alpha': f32[E, O], 'beta': f32[P]}}`, `beta` only in `searched` mode.
"""

from __future__ import annotations

import dataclasses
import itertools
from typing import Mapping, Sequence

import jax
import jax.numpy as jnp

from amdarts import ops as ops_lib

# Candidate ops of space S1, in α column order; every op is a key of `ops.REGISTRY`.
DARTS_OPS = (
    'none',
    'max_pool_3x3',
    'avg_pool_3x3',
    'skip_connect',
    'sep_conv_3x3',
    'sep_conv_5x5',
    'dil_conv_3x3',
    'dil_conv_5x5',
)

# Candidate ops of the paper's spaces (Section 3.1.2 and Appendix C.2).
SPACE_OPS = {
    's1': DARTS_OPS,
    's2': ('skip_connect', 'sep_conv_3x3'),
    's3': ('sep_conv_3x3', 'skip_connect', 'none'),
}

EDGE_MODES = ('pruned', 'fixed', 'searched')

Pairs = tuple[tuple[int, int], ...]  # one input pair (i1 < i2) per node


@dataclasses.dataclass(frozen=True)
class SpaceSpec:
  """Everything that fixes the shape of a super-network's architecture.

  Attributes:
    ops: candidate op names (keys of `ops.REGISTRY`), in the order of the last axis
      of α.
    num_cells: number of cells; reductions sit at num_cells//3 and 2*num_cells//3.
    shared: α shared by all normal / all reduction cells (S1), else per cell (S2).
    edge_mode: one of EDGE_MODES.
    steps: intermediate nodes per cell.
    inputs: for `fixed` mode, optional input pairs per cell key (a searched
      topology); missing keys fall back to the default fixed topology.
  """

  ops: tuple[str, ...] = DARTS_OPS
  num_cells: int = 8
  shared: bool = True
  edge_mode: str = 'pruned'
  steps: int = 4
  inputs: Mapping[str, Pairs] | None = None

  def __post_init__(self):
    # The registry is what the super-net builds and genotypes validate against, so
    # an op it lacks fails here, before anything is built.
    unknown = [o for o in self.ops if o not in ops_lib.REGISTRY]
    if unknown:
      raise ValueError(f'unknown op(s) {unknown}; known: {sorted(ops_lib.REGISTRY)}')
    if len(set(self.ops)) != len(self.ops) or not self.ops:
      raise ValueError(f'ops must be non-empty and distinct, got {self.ops}')
    if self.edge_mode not in EDGE_MODES:
      raise ValueError(f'edge_mode must be one of {EDGE_MODES}, got {self.edge_mode!r}')
    if self.num_cells < 1 or self.steps < 1:
      raise ValueError('num_cells and steps must be positive')
    if self.inputs is not None:
      for key, pairs in self.inputs.items():
        check_pairs(pairs, self.steps, where=key)

  @property
  def reduction_cells(self) -> tuple[int, ...]:
    n = self.num_cells
    return tuple(sorted({n // 3, 2 * n // 3})) if n >= 3 else ()

  def is_reduction(self, i: int) -> bool:
    return i in self.reduction_cells

  def cell_key(self, i: int) -> str:
    if self.shared:
      return 'reduce' if self.is_reduction(i) else 'normal'
    return f'cell_{i:02d}'

  @property
  def cell_keys(self) -> tuple[str, ...]:
    return tuple(dict.fromkeys(self.cell_key(i) for i in range(self.num_cells)))

  def edges(self, key: str) -> tuple[tuple[int, int], ...]:
    """The (src, node) edges of the cell(s) under `key`."""
    if self.edge_mode in ('pruned', 'searched'):
      return full_edges(self.steps)
    pairs = (self.inputs or {}).get(key) or fixed_pairs(self.steps)
    return tuple((src, node) for node, pair in enumerate(pairs) for src in pair)

  def pairs(self) -> tuple[tuple[int, int], ...]:
    """(node, (i1, i2)) order of β entries in `searched` mode."""
    return node_pairs(self.steps)

  @property
  def has_beta(self) -> bool:
    return self.edge_mode == 'searched'


def full_edges(steps: int) -> tuple[tuple[int, int], ...]:
  return tuple((src, node) for node in range(steps) for src in range(node + 2))


def fixed_pairs(steps: int) -> Pairs:
  """Node j <- c_{k-2} and its predecessor state j+1 (Section 3.1.2)."""
  return tuple((0, node + 1) for node in range(steps))


def node_pairs(steps: int) -> tuple[tuple[int, tuple[int, int]], ...]:
  """All (node, (i1, i2)) with i1 < i2 < node + 2: the index set E_j of eq. 16."""
  return tuple(
      (node, pair)
      for node in range(steps)
      for pair in itertools.combinations(range(node + 2), 2)
  )


def check_pairs(pairs: Sequence[Sequence[int]], steps: int, where: str = '') -> None:
  if len(pairs) != steps:
    raise ValueError(f'{where}: expected {steps} input pairs, got {len(pairs)}')
  for node, pair in enumerate(pairs):
    if len(pair) != 2 or not 0 <= pair[0] < pair[1] < node + 2:
      raise ValueError(f'{where}: node {node} needs inputs i1 < i2 < {node + 2}, got {pair}')


def init_alpha(spec: SpaceSpec, rng: jax.Array, scale: float = 1e-3) -> dict:
  """Architecture pytree; DARTS initialises α as 1e-3 · N(0, 1)."""
  arch = {}
  for key in spec.cell_keys:
    rng, k_a, k_b = jax.random.split(rng, 3)
    entry = {'alpha': scale * jax.random.normal(k_a, (len(spec.edges(key)), len(spec.ops)))}
    if spec.has_beta:
      entry['beta'] = scale * jax.random.normal(k_b, (len(spec.pairs()),))
    arch[key] = entry
  return arch


def edge_coefficients(spec: SpaceSpec, beta: jax.Array) -> jax.Array:
  """Per-edge weights implied by eq. 16.

  y_j = Σ_{(i1,i2)∈E_j} softmax_j(β)_{(i1,i2)} (y_i1 + y_i2) = Σ_i c_i y_i with
  c_i the total softmax weight of the pairs of node j that contain input i.

  Returns:
    f32[E] aligned with `full_edges(spec.steps)`.
  """
  pairs = spec.pairs()
  nodes = jnp.array([node for node, _ in pairs])
  # Softmax within each node's segment of β.
  seg_max = jax.ops.segment_max(beta, nodes, num_segments=spec.steps)
  e = jnp.exp(beta - seg_max[nodes])
  w = e / jax.ops.segment_sum(e, nodes, num_segments=spec.steps)[nodes]
  edges = full_edges(spec.steps)
  index = {edge: k for k, edge in enumerate(edges)}
  member = [[index[(i, node)] for i in pair] for node, pair in pairs]
  onehot = jnp.zeros((len(pairs), len(edges))).at[
      jnp.repeat(jnp.arange(len(pairs)), 2), jnp.array(member).reshape(-1)
  ].set(1.0)
  return w @ onehot
