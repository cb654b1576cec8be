"""Discrete cell genotypes: types, validation, derivation from α/β, sampling, statistics.

A cell genotype lists, node by node, the two kept inputs of every intermediate node as
`(op_name, input_state)` genes (state 0 = c_{k-2}, 1 = c_{k-1}, node j = state j+2),
plus the states the cell output concatenates. Two kinds exist:

  * `Genotype`: the DARTS form, one normal and one reduction cell shared by all
    cells of that type (space S1, α shared by cell type).
  * `PerCellGenotype`: one `CellGenotype` per cell, each flagged as a reduction
    cell or not (space S2, α per cell).

Both kinds are NamedTuples of tuples, so they hash, compare by value and are easy to
store. Everything here, in `amdarts.genotype_text` (JSON, DARTS strings, files) and
in `amdarts.plots.draw_genotype` accepts both.

The shape checks of genes (`is_gene`, `is_int`, ...), `softmax` and `candidates` also
serve the recurrent genotypes of `amdarts.rnn.genotype`.
"""

from __future__ import annotations

from typing import Any, Mapping, NamedTuple, Sequence, Union

import numpy as np

from amdarts import ops as ops_lib
from amdarts import spaces

Gene = tuple[str, int]  # (op name, input state)


class Genotype(NamedTuple):
  """DARTS genotype: shared normal and reduction cells.

  Attributes:
    normal: genes of the normal cell, 2 per intermediate node, in node order.
    normal_concat: states concatenated into the normal cell's output.
    reduce: genes of the reduction cell (empty for a space without reductions).
    reduce_concat: states concatenated into the reduction cell's output.
  """

  normal: tuple[Gene, ...]
  normal_concat: tuple[int, ...]
  reduce: tuple[Gene, ...]
  reduce_concat: tuple[int, ...]


class CellGenotype(NamedTuple):
  """One cell of a `PerCellGenotype`.

  Attributes:
    genes: 2 genes per intermediate node, in node order.
    concat: states concatenated into the cell's output.
    reduction: whether the cell halves the spatial resolution.
  """

  genes: tuple[Gene, ...]
  concat: tuple[int, ...]
  reduction: bool


class PerCellGenotype(NamedTuple):
  """Genotype of a network whose cells each have their own architecture (S2).

  Attributes:
    cells: one `CellGenotype` per cell, in network order.
  """

  cells: tuple[CellGenotype, ...]


AnyGenotype = Union[Genotype, PerCellGenotype]

_CONCAT4 = (2, 3, 4, 5)

# Reference cells of the DARTS paper (Liu et al., 2019), first- and second-order.
DARTS_V1 = Genotype(
    normal=(
        ('sep_conv_3x3', 1), ('sep_conv_3x3', 0),
        ('skip_connect', 0), ('sep_conv_3x3', 1),
        ('skip_connect', 0), ('sep_conv_3x3', 1),
        ('sep_conv_3x3', 0), ('skip_connect', 2),
    ),
    normal_concat=_CONCAT4,
    reduce=(
        ('max_pool_3x3', 0), ('max_pool_3x3', 1),
        ('skip_connect', 2), ('max_pool_3x3', 0),
        ('max_pool_3x3', 0), ('skip_connect', 2),
        ('skip_connect', 2), ('avg_pool_3x3', 0),
    ),
    reduce_concat=_CONCAT4,
)

DARTS_V2 = Genotype(
    normal=(
        ('sep_conv_3x3', 0), ('sep_conv_3x3', 1),
        ('sep_conv_3x3', 0), ('sep_conv_3x3', 1),
        ('sep_conv_3x3', 1), ('skip_connect', 0),
        ('skip_connect', 0), ('dil_conv_3x3', 2),
    ),
    normal_concat=_CONCAT4,
    reduce=(
        ('max_pool_3x3', 0), ('max_pool_3x3', 1),
        ('skip_connect', 2), ('max_pool_3x3', 1),
        ('max_pool_3x3', 0), ('skip_connect', 2),
        ('skip_connect', 2), ('max_pool_3x3', 1),
    ),
    reduce_concat=_CONCAT4,
)

NAMED: dict[str, AnyGenotype] = {
    'DARTS_V1': DARTS_V1,
    'DARTS_V2': DARTS_V2,
    'DARTS': DARTS_V2,  # the DARTS reference's default.
}


# ----------------------------------------------------------------------------------
# Validation.


def _cell(genes: Any, concat: Any, reduction: bool, where: str) -> CellGenotype:
  """Checks one cell and returns it with canonical (tuple, int) types.

  Args:
    genes: sequence of (op, input) pairs, 2 per intermediate node.
    concat: sequence of output states.
    reduction: reduction flag.
    where: name of the cell for error messages.

  Returns:
    The validated `CellGenotype`.

  Raises:
    ValueError: on a malformed gene, unknown op, odd gene count, input state not
      yet computed, or concat state outside the cell.
  """
  if not is_sequence(genes):
    raise ValueError(f'{where}: genes must be a list of (op, input) pairs, got {genes!r}')
  if len(genes) % 2:
    raise ValueError(
        f'{where}: expected 2 genes per node, got {len(genes)} genes (an odd count)')
  canon = []
  for k, gene in enumerate(genes):
    if not is_gene(gene):
      raise ValueError(f'{where}: gene {k} must be an (op name, input index) pair, got {gene!r}')
    op, src = gene[0], int(gene[1])
    # Any registered op: the ones every space may search, so a derived genotype
    # always validates. Reading the registry builds no layer.
    if op not in ops_lib.REGISTRY:
      raise ValueError(
          f'{where}: gene {k} has unknown op {op!r}; known: {sorted(ops_lib.REGISTRY)}')
    node = k // 2
    # Node j may read the two cell inputs and the nodes before it: states < j + 2.
    if not 0 <= src < node + 2:
      raise ValueError(
          f'{where}: gene {k} (node {node}) input index {src} out of range [0, {node + 2})')
    canon.append((op, src))
  if not is_sequence(concat):
    raise ValueError(f'{where}: concat must be a list of states, got {concat!r}')
  if not all(is_int(c) for c in concat):
    raise ValueError(f'{where}: concat must hold integers, got {list(concat)!r}')
  steps = len(genes) // 2
  concat = tuple(int(c) for c in concat)
  if len(set(concat)) != len(concat) or (steps and not concat):
    raise ValueError(f'{where}: concat must be non-empty and distinct, got {list(concat)}')
  bad = [c for c in concat if not 2 <= c < steps + 2]
  if bad:
    raise ValueError(
        f'{where}: concat index {bad[0]} out of range [2, {steps + 2}) for {steps} nodes')
  if not isinstance(reduction, (bool, np.bool_)):
    raise ValueError(f'{where}: reduction flag must be a bool, got {reduction!r}')
  return CellGenotype(tuple(canon), concat, bool(reduction))


def is_int(x: Any) -> bool:
  """Whether `x` is a python or numpy integer, bools excluded."""
  # bool is an int subclass, but True as an input index is a typo, not a state.
  return isinstance(x, (int, np.integer)) and not isinstance(x, (bool, np.bool_))


def is_sequence(x: Any) -> bool:
  """Whether `x` is a list-like sequence; a string is one value, not a list."""
  return not isinstance(x, (str, bytes)) and isinstance(x, Sequence)


def is_gene(x: Any) -> bool:
  """Whether `x` has the form of a gene, an (op name, input index) pair."""
  return is_sequence(x) and len(x) == 2 and isinstance(x[0], str) and is_int(x[1])


def validate(genotype: AnyGenotype) -> AnyGenotype:
  """Checks a genotype and returns it in canonical form (tuples, python ints).

  Args:
    genotype: a `Genotype` or `PerCellGenotype`; lists in place of tuples are fine.

  Returns:
    An equal genotype of the same kind built from tuples only.

  Raises:
    ValueError: with a one-line reason when any cell is invalid.
  """
  if isinstance(genotype, Genotype):
    normal = _cell(genotype.normal, genotype.normal_concat, False, 'normal')
    reduce = _cell(genotype.reduce, genotype.reduce_concat, True, 'reduce')
    return Genotype(normal.genes, normal.concat, reduce.genes, reduce.concat)
  if isinstance(genotype, PerCellGenotype):
    if not genotype.cells:
      raise ValueError('per-cell genotype has no cells')
    return PerCellGenotype(tuple(
        _cell(c.genes, c.concat, c.reduction, f'cell_{i:02d}')
        for i, c in enumerate(genotype.cells)))
  raise ValueError(f'not a genotype: {type(genotype).__name__}')


def named_cells(genotype: AnyGenotype) -> tuple[tuple[str, CellGenotype], ...]:
  """The distinct cells of a genotype with their names.

  Args:
    genotype: either kind.

  Returns:
    `(('normal', cell), ('reduce', cell))` for a `Genotype` (the reduction cell left
    out when it is empty), `(('cell_00', cell), ...)` for a `PerCellGenotype`; the
    names are the architecture pytree's cell keys.
  """
  if isinstance(genotype, Genotype):
    cells = [('normal', CellGenotype(genotype.normal, genotype.normal_concat, False))]
    if genotype.reduce:
      cells.append(('reduce', CellGenotype(genotype.reduce, genotype.reduce_concat, True)))
    return tuple(cells)
  if isinstance(genotype, PerCellGenotype):
    return tuple((f'cell_{i:02d}', c) for i, c in enumerate(genotype.cells))
  raise ValueError(f'not a genotype: {type(genotype).__name__}')


# ----------------------------------------------------------------------------------
# Derivation from architecture parameters.


def softmax(x: np.ndarray) -> np.ndarray:
  """Softmax over the last axis, in float64."""
  x = np.asarray(x, np.float64)
  e = np.exp(x - x.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def candidates(ops: Sequence[str]) -> np.ndarray:
  """Indices of the ops a genotype may keep: all but `none` (a zero edge)."""
  cand = np.array([k for k, op in enumerate(ops) if op != 'none'])
  if cand.size == 0:
    raise ValueError(f'no op other than none to keep among {tuple(ops)}')
  return cand


def _entry(spec: spaces.SpaceSpec, arch: Mapping[str, Any], key: str, name: str,
           shape: tuple[int, ...]) -> np.ndarray:
  """`arch[key][name]` as a numpy array, checked against the spec's shape."""
  if key not in arch or name not in arch[key]:
    raise ValueError(f'architecture lacks {key!r}/{name!r}; has {sorted(arch)}')
  value = np.asarray(arch[key][name])
  if value.shape != shape:
    raise ValueError(f'{key}/{name} has shape {value.shape}, the space needs {shape}')
  return value


def _alpha_weights(spec: spaces.SpaceSpec, arch: Mapping[str, Any], key: str) -> np.ndarray:
  """softmax(α) over ops, f64[E, O] aligned with `spec.edges(key)`."""
  shape = (len(spec.edges(key)), len(spec.ops))
  return softmax(_entry(spec, arch, key, 'alpha', shape))


def derive_topology(spec: spaces.SpaceSpec,
                    arch: Mapping[str, Any]) -> dict[str, spaces.Pairs]:
  """Stage 1 of the two-stage search: the input pair each node keeps (eq. 16).

  Every node j weighs its candidate pairs E_j by softmax_j(β); the pair with the
  largest weight is kept (the first one on ties, in `spec.pairs()` order).

  Args:
    spec: a `searched`-mode space.
    arch: architecture pytree with a `beta` entry per cell key.

  Returns:
    `{cell_key: ((i1, i2), ...)}` with one pair per node, ready for
    `SpaceSpec(edge_mode='fixed', inputs=...)` in stage 2.
  """
  if not spec.has_beta:
    raise ValueError(f'derive_topology needs a searched-mode space, got {spec.edge_mode!r}')
  pairs = spec.pairs()
  nodes = np.array([node for node, _ in pairs])
  topology = {}
  for key in spec.cell_keys:
    beta = _entry(spec, arch, key, 'beta', (len(pairs),))
    kept = []
    for node in range(spec.steps):
      idx = np.flatnonzero(nodes == node)
      # Softmax is monotone, so the arg-max of β within the node is the arg-max of
      # its normalised weights; computing them keeps the code aligned with eq. 16.
      best = idx[int(np.argmax(softmax(beta[idx])))]
      kept.append(tuple(int(i) for i in pairs[best][1]))
    topology[key] = tuple(kept)
  return topology


def _pruned_genes(w: np.ndarray, steps: int, cand: np.ndarray,
                  ops: Sequence[str]) -> tuple[Gene, ...]:
  """The DARTS rule: per node the 2 incoming edges with the strongest non-none op.

  Genes of a node are ordered by decreasing edge strength; ties keep the lower
  source first (a stable sort, as the reference's `sorted`).
  """
  genes = []
  row = 0
  for node in range(steps):
    w_node = w[row:row + node + 2][:, cand]  # sources 0 .. node+1, in edge order.
    strength = w_node.max(-1)
    for src in np.argsort(-strength, kind='stable')[:2]:
      genes.append((ops[cand[int(np.argmax(w_node[src]))]], int(src)))
    row += node + 2
  return tuple(genes)


def _kept_genes(w: np.ndarray, edges: Sequence[tuple[int, int]], kept: Sequence[tuple[int, int]],
                cand: np.ndarray, ops: Sequence[str]) -> tuple[Gene, ...]:
  """Genes on the given kept (src, node) edges, op = arg-max over non-none ops."""
  row = {edge: k for k, edge in enumerate(edges)}
  return tuple(
      (ops[cand[int(np.argmax(w[row[edge]][cand]))]], int(edge[0])) for edge in kept)


def _cell_genes(spec: spaces.SpaceSpec, arch: Mapping[str, Any], key: str,
                topology: Mapping[str, spaces.Pairs] | None) -> tuple[Gene, ...]:
  w = _alpha_weights(spec, arch, key)
  cand = candidates(spec.ops)
  if spec.edge_mode == 'pruned':
    return _pruned_genes(w, spec.steps, cand, spec.ops)
  edges = spec.edges(key)
  if spec.edge_mode == 'fixed':
    return _kept_genes(w, edges, edges, cand, spec.ops)
  kept = [(src, node) for node, pair in enumerate(topology[key]) for src in pair]
  return _kept_genes(w, edges, kept, cand, spec.ops)


def derive(spec: spaces.SpaceSpec, arch: Mapping[str, Any]) -> AnyGenotype:
  """Discretises an architecture into a genotype following `spec.edge_mode`.

  * `pruned`: DARTS' rule on w = softmax(α): each node keeps the 2 incoming edges
    whose largest non-none weight is highest, ordered by that weight.
  * `fixed`: every edge of `spec.edges(key)` is kept, in edge order.
  * `searched`: each node keeps the input pair of `derive_topology` (eq. 16),
    sources ascending.

  The op of a kept edge is the arg-max of w over the non-`none` ops (all ops when the
  space has no `none`). The output concatenates all intermediate nodes.

  Args:
    spec: the search space.
    arch: architecture pytree `{key: {'alpha': [E, O], 'beta': [P]}}`.

  Returns:
    A `Genotype` when α is shared by cell type, else a `PerCellGenotype` with the
    spec's reduction cells flagged.
  """
  topology = derive_topology(spec, arch) if spec.edge_mode == 'searched' else None
  concat = tuple(range(2, 2 + spec.steps))
  if spec.shared:
    genes = {key: _cell_genes(spec, arch, key, topology) for key in spec.cell_keys}
    # A network too shallow for reduction cells has no 'reduce' key.
    reduce = genes.get('reduce', ())
    return Genotype(genes['normal'], concat, reduce, concat if reduce else ())
  return PerCellGenotype(tuple(
      CellGenotype(_cell_genes(spec, arch, spec.cell_key(i), topology), concat,
                   spec.is_reduction(i))
      for i in range(spec.num_cells)))


def _sampled_genes(spec: spaces.SpaceSpec, key: str, rng: np.random.Generator,
                   cand: np.ndarray) -> tuple[Gene, ...]:
  """One cell's genes for `sample`: inputs as `derive` keeps them, ops uniform."""
  if spec.edge_mode == 'fixed':
    kept = spec.edges(key)
  else:  # pruned and searched: one of the node's C(node + 2, 2) input pairs.
    kept = [(int(src), node) for node in range(spec.steps)
            for src in np.sort(rng.choice(node + 2, size=2, replace=False))]
  return tuple((spec.ops[int(rng.choice(cand))], int(src)) for src, _ in kept)


def sample(spec: spaces.SpaceSpec, rng: np.random.Generator) -> AnyGenotype:
  """A genotype drawn uniformly from those `derive` can return for `spec`.

  The random-search baseline of Table 1: every network of the space is equally
  likely. Each node's two inputs are a uniform pair of distinct earlier states (in
  `pruned` and `searched` mode, the pairs DARTS's rule and eq. 16 can keep; `fixed`
  mode keeps the spec's edges), and every kept edge's op is uniform over the
  non-`none` ops, as `derive` never keeps `none`. Genes of a node are listed sources
  ascending (the order of a node's two inputs does not change the network).

  Args:
    spec: the search space.
    rng: the host random generator (sampling draws no device randomness).

  Returns:
    A validated `Genotype` when α is shared by cell type, else a `PerCellGenotype`.
  """
  cand = candidates(spec.ops)
  concat = tuple(range(2, 2 + spec.steps))
  if spec.shared:
    genes = {key: _sampled_genes(spec, key, rng, cand) for key in spec.cell_keys}
    reduce = genes.get('reduce', ())
    return validate(Genotype(genes['normal'], concat, reduce, concat if reduce else ()))
  return validate(PerCellGenotype(tuple(
      CellGenotype(_sampled_genes(spec, spec.cell_key(i), rng, cand), concat,
                   spec.is_reduction(i))
      for i in range(spec.num_cells))))


# ----------------------------------------------------------------------------------
# Statistics for the search logs.
#
# The paper's Fig. 1 / Fig. 8 curves and Table 1's #P are statistics of the *normal*
# cell: `statistics` logs them under plain names and the pooled (normal and
# reduction cells) and reduction-cell versions under explicit suffixes.

# Which cells a statistic covers: the normal cells only (the paper's), the reduction
# cells only, or all cells (a `Genotype`'s two cells each once).
CELLS = {'normal': False, 'reduce': True, 'all': None}


def _kept_ops(genotype: AnyGenotype, reduction: bool | None) -> list[str]:
  return [op for _, cell in named_cells(genotype)
          if reduction is None or cell.reduction == reduction for op, _ in cell.genes]


def skip_ratio(genotype: AnyGenotype, reduction: bool | None = None) -> float:
  """Fraction of kept ops that are skip_connect (Fig. 1, green, on normal cells).

  Args:
    genotype: either kind; a `Genotype` counts its normal and reduction cell once.
    reduction: None for all cells, True/False for reduction/normal cells only.

  Returns:
    The fraction in [0, 1]; 0.0 when no op is kept.
  """
  ops = _kept_ops(genotype, reduction)
  return sum(op == 'skip_connect' for op in ops) / len(ops) if ops else 0.0


def num_parametric(genotype: AnyGenotype, reduction: bool | None = None) -> int:
  """Number of kept parametric ops (`ops.REGISTRY[op].parametric`: the convolutions).

  Table 1's #P is this count on the normal cell (`reduction=False`) of a `Genotype`;
  a `PerCellGenotype` sums over all of its cells of the kind.

  Args:
    genotype: either kind.
    reduction: None for all cells, True/False for reduction/normal cells only.

  Returns:
    The count.
  """
  return sum(ops_lib.REGISTRY[op].parametric for op in _kept_ops(genotype, reduction))


def none_weight(spec: spaces.SpaceSpec, arch: Mapping[str, Any],
                reduction: bool | None = None) -> float:
  """Mean softmax weight of `none` over the edges of the chosen cells (Fig. 1, red).

  Args:
    spec: the search space.
    arch: architecture pytree.
    reduction: None for all cell keys, True/False for the keys of reduction/normal
      cells only (with α shared by cell type, 'reduce' / 'normal').

  Returns:
    The mean weight; 0.0 when the space has no `none` op or no such cell.
  """
  if 'none' not in spec.ops:
    return 0.0
  kind = {spec.cell_key(i): spec.is_reduction(i) for i in range(spec.num_cells)}
  keys = [key for key in spec.cell_keys if reduction is None or kind[key] == reduction]
  if not keys:
    return 0.0
  k = spec.ops.index('none')
  weights = np.concatenate([_alpha_weights(spec, arch, key)[:, k] for key in keys])
  return float(weights.mean())


def statistics(spec: spaces.SpaceSpec, arch: Mapping[str, Any],
               genotype: AnyGenotype) -> dict[str, float]:
  """The search-log statistics of an architecture and its derived genotype.

  Names (the metric names of `metrics.jsonl`'s epoch records):

    none_weight      average weight of `none` over the normal-cell edges (Fig. 1, 8)
    skip_ratio       ratio of skip_connect among the kept normal-cell ops (Fig. 1, 8)
    num_parametric   #P: parametric ops (convolutions) kept in the normal cell
                     (Table 1; a per-cell genotype: summed over its normal cells)

  and the same with `_reduce` (reduction cells only) and `_all` (normal and
  reduction cells pooled; a `Genotype`'s two cells each once).

  Args:
    spec: the search space.
    arch: architecture pytree (host or device arrays).
    genotype: `derive(spec, arch)`.

  Returns:
    {name: value}, nine entries.
  """
  out = {}
  for cells, reduction in CELLS.items():
    suffix = '' if cells == 'normal' else f'_{cells}'
    out['none_weight' + suffix] = none_weight(spec, arch, reduction)
    out['skip_ratio' + suffix] = skip_ratio(genotype, reduction)
    out['num_parametric' + suffix] = float(num_parametric(genotype, reduction))
  return out
