"""Discrete cell genotypes: derivation from α/β, serialisation, statistics and drawing.

A cell genotype lists, node by node, the two kept inputs of every intermediate node as
`(op_name, input_state)` genes (state 0 = c_{k-2}, 1 = c_{k-1}, node j = state j+2),
plus the states the cell output concatenates. Two kinds exist:

  * `Genotype`: the DARTS form, one normal and one reduction cell shared by all
    cells of that type (space S1, α shared by cell type).
  * `PerCellGenotype`: one `CellGenotype` per cell, each flagged as a reduction
    cell or not (space S2, α per cell).

Both kinds are NamedTuples of tuples, so they hash, compare by value and are easy to
store. Everything below (derive, JSON, DARTS strings, statistics, drawing) accepts both.

Text forms:
  * `to_json` / `from_json`: `{"kind": "genotype", "normal": [[op, input], ...],
    "normal_concat": [...], "reduce": [...], "reduce_concat": [...]}` or
    `{"kind": "per_cell", "cells": [{"genes": [...], "concat": [...],
    "reduction": bool}, ...]}`.
  * `to_darts_string` / `from_darts_string`: the repr printed by the DARTS reference,
    `Genotype(normal=[('sep_conv_3x3', 0), ...], normal_concat=[2, 3, 4, 5], ...)`;
    per-cell genotypes print as `PerCellGenotype(cells=[CellGenotype(genes=[...],
    concat=[2, 3, 4, 5], reduction=False), ...])`. Parsing walks the syntax tree
    and never evaluates the text.

The text, file and validation helpers (`parse_call`, `json_object`, `load_from`,
`is_gene`, ...) also serve the recurrent genotypes of `amdarts.rnn.genotype`, so both
families accept the same syntax and fail the same way.
"""

from __future__ import annotations

import ast
import json
import math
import os
from typing import Any, Callable, Mapping, NamedTuple, Sequence, Union

import numpy as np

from amdarts import spaces

Gene = tuple[str, int]  # (op name, input state)

# Ops a genotype may name. Validation uses the space definitions rather than
# `amdarts.ops` so that genotypes can be read without building any layer.
KNOWN_OPS = spaces.DARTS_OPS

# Ops that carry trainable weights (counted by `num_parametric`).
_PARAMETRIC_PREFIXES = ('sep_conv_', 'dil_conv_')

# A `range(...)` in genotype text longer than this is malformed, not a cell.
_MAX_RANGE = 64


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
    if op not in KNOWN_OPS:
      raise ValueError(f'{where}: gene {k} has unknown op {op!r}; known: {list(KNOWN_OPS)}')
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


# ----------------------------------------------------------------------------------
# Statistics for the search logs.


def _kept_ops(genotype: AnyGenotype, reduction: bool | None) -> list[str]:
  return [op for _, cell in named_cells(genotype)
          if reduction is None or cell.reduction == reduction for op, _ in cell.genes]


def skip_share(genotype: AnyGenotype, reduction: bool | None = None) -> float:
  """Fraction of kept ops that are skip_connect (the collapse signal of Fig. 1).

  Args:
    genotype: either kind; a `Genotype` counts its normal and reduction cell once.
    reduction: None for all cells, True/False for reduction/normal cells only.

  Returns:
    The fraction in [0, 1]; 0.0 when no op is kept.
  """
  ops = _kept_ops(genotype, reduction)
  return sum(op == 'skip_connect' for op in ops) / len(ops) if ops else 0.0


def num_parametric(genotype: AnyGenotype, reduction: bool | None = None) -> int:
  """Number of kept convolutions (sep_conv_*, dil_conv_*).

  Args:
    genotype: either kind.
    reduction: None for all cells, True/False for reduction/normal cells only.

  Returns:
    The count.
  """
  return sum(op.startswith(_PARAMETRIC_PREFIXES) for op in _kept_ops(genotype, reduction))


def none_weight(spec: spaces.SpaceSpec, arch: Mapping[str, Any]) -> float:
  """Mean softmax weight of `none` over all edges of all cell keys (Fig. 1, red).

  Args:
    spec: the search space.
    arch: architecture pytree.

  Returns:
    The mean weight; 0.0 when the space has no `none` op.
  """
  if 'none' not in spec.ops:
    return 0.0
  k = spec.ops.index('none')
  weights = np.concatenate([_alpha_weights(spec, arch, key)[:, k] for key in spec.cell_keys])
  return float(weights.mean())


# ----------------------------------------------------------------------------------
# JSON.


def _genes_json(genes: Sequence[Gene]) -> list[list]:
  return [[op, src] for op, src in genes]


def to_json(genotype: AnyGenotype, indent: int | None = None) -> str:
  """Serialises a genotype to JSON (format in the module docstring).

  Args:
    genotype: either kind.
    indent: passed to `json.dumps`.

  Returns:
    The JSON text.
  """
  genotype = validate(genotype)
  if isinstance(genotype, Genotype):
    obj = {
        'kind': 'genotype',
        'normal': _genes_json(genotype.normal),
        'normal_concat': list(genotype.normal_concat),
        'reduce': _genes_json(genotype.reduce),
        'reduce_concat': list(genotype.reduce_concat),
    }
  else:
    obj = {
        'kind': 'per_cell',
        'cells': [{'genes': _genes_json(c.genes), 'concat': list(c.concat),
                   'reduction': c.reduction} for c in genotype.cells],
    }
  return json.dumps(obj, indent=indent)


def _from_fields(fields: Mapping[str, Any], kind: str) -> AnyGenotype:
  """Builds and validates a genotype from decoded (JSON or literal) fields."""
  try:
    if kind == 'genotype':
      g = Genotype(*(fields[f] for f in Genotype._fields))
    else:
      cells = fields['cells']
      if not is_sequence(cells):
        raise ValueError(f'cells must be a list, got {cells!r}')
      g = PerCellGenotype(tuple(
          CellGenotype(*(c[f] for f in CellGenotype._fields)) for c in cells))
  except (KeyError, TypeError) as e:
    raise ValueError(f'malformed {kind} fields: missing or bad entry {e}') from None
  return validate(g)


def json_object(text: str) -> dict[str, Any]:
  """Decodes genotype JSON text that must hold one object.

  Args:
    text: JSON text.

  Returns:
    The decoded object.

  Raises:
    ValueError: `malformed genotype JSON: <reason>` when the text is not JSON or its
      top level is not an object.
  """
  try:
    obj = json.loads(text)
  except json.JSONDecodeError as e:
    raise ValueError(f'malformed genotype JSON: {e}') from None
  if not isinstance(obj, dict):
    raise ValueError(f'malformed genotype JSON: expected an object, got {type(obj).__name__}')
  return obj


def from_json(text: str) -> AnyGenotype:
  """Parses the output of `to_json`.

  Args:
    text: JSON text.

  Returns:
    The validated genotype.

  Raises:
    ValueError: on malformed JSON or an invalid genotype.
  """
  obj = json_object(text)
  kind = obj.get('kind', 'per_cell' if 'cells' in obj else 'genotype')
  if kind not in ('genotype', 'per_cell'):
    raise ValueError(f"malformed genotype JSON: kind must be 'genotype' or 'per_cell', "
                     f'got {kind!r}')
  return _from_fields(obj, kind)


# ----------------------------------------------------------------------------------
# DARTS strings.


def _genes_str(genes: Sequence[Gene]) -> str:
  return '[' + ', '.join(f'({op!r}, {src})' for op, src in genes) + ']'


def _ints_str(xs: Sequence[int]) -> str:
  return '[' + ', '.join(str(x) for x in xs) + ']'


def to_darts_string(genotype: AnyGenotype) -> str:
  """The DARTS repr of a genotype (concat printed as a list), one line.

  Args:
    genotype: either kind.

  Returns:
    `Genotype(normal=[...], normal_concat=[...], reduce=[...], reduce_concat=[...])`
    or `PerCellGenotype(cells=[CellGenotype(genes=[...], concat=[...],
    reduction=False), ...])`.
  """
  genotype = validate(genotype)
  if isinstance(genotype, Genotype):
    return (f'Genotype(normal={_genes_str(genotype.normal)}, '
            f'normal_concat={_ints_str(genotype.normal_concat)}, '
            f'reduce={_genes_str(genotype.reduce)}, '
            f'reduce_concat={_ints_str(genotype.reduce_concat)})')
  cells = ', '.join(
      f'CellGenotype(genes={_genes_str(c.genes)}, concat={_ints_str(c.concat)}, '
      f'reduction={c.reduction})' for c in genotype.cells)
  return f'PerCellGenotype(cells=[{cells}])'


class _Malformed(Exception):
  """Internal: the text is not a genotype literal."""


class _Grammar(NamedTuple):
  """What `_literal` accepts besides plain literals (see `parse_call`)."""

  nested: Mapping[str, Sequence[str]]
  max_range: int


def _call_name(node: ast.AST) -> str | None:
  # `Genotype(...)` or `genotypes.Genotype(...)`.
  if isinstance(node, ast.Name):
    return node.id
  if isinstance(node, ast.Attribute):
    return node.attr
  return None


def _bind(call: ast.Call, fields: Sequence[str], grammar: _Grammar) -> dict[str, Any]:
  """Maps a call's positional and keyword arguments to `fields` as literals."""
  if len(call.args) > len(fields):
    raise _Malformed(f'{_call_name(call.func)} takes {len(fields)} fields')
  out = {f: _literal(a, grammar) for f, a in zip(fields, call.args)}
  for kw in call.keywords:
    if kw.arg not in fields or kw.arg in out:
      raise _Malformed(f'unexpected or repeated field {kw.arg!r}')
    out[kw.arg] = _literal(kw.value, grammar)
  missing = [f for f in fields if f not in out]
  if missing:
    raise _Malformed(f'missing field(s) {missing}')
  return out


def _literal(node: ast.AST, grammar: _Grammar) -> Any:
  """Converts the restricted literal syntax of genotype text to python values."""
  if isinstance(node, ast.Constant) and isinstance(node.value, (str, int, bool)):
    return node.value
  if (isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub)
      and isinstance(node.operand, ast.Constant) and is_int(node.operand.value)):
    return -node.operand.value  # let validation report a negative input index.
  if isinstance(node, (ast.List, ast.Tuple)):
    return [_literal(e, grammar) for e in node.elts]
  if isinstance(node, ast.Call):
    name = _call_name(node.func)
    if name == 'range':
      args = [_literal(a, grammar) for a in node.args]
      if node.keywords or not 1 <= len(args) <= 3 or not all(is_int(a) for a in args):
        raise _Malformed('range() needs 1 to 3 integer arguments')
      r = range(*args)
      if len(r) > grammar.max_range:
        raise _Malformed(f'range of {len(r)} states is too long for a cell')
      return list(r)
    if name in grammar.nested:
      return _bind(node, grammar.nested[name], grammar)
  raise _Malformed(f'unsupported syntax {ast.dump(node)[:60]}')


def parse_call(text: str, calls: Mapping[str, Sequence[str]], *,
               nested: Mapping[str, Sequence[str]] | None = None,
               max_range: int = _MAX_RANGE) -> tuple[str, dict[str, Any]]:
  """Reads genotype text of the form `Name(field=value, ...)` without evaluating it.

  Fields may be given by keyword or position. Values are str, int and bool literals
  (an int may be negated), lists or tuples of values, `range(...)` of 1 to 3 int
  literals (read as a list) and calls named in `nested` (read as dicts of their
  fields). Calls may be qualified (`genotypes.Genotype(...)`), and an optional
  `NAME = ` prefix, as in the DARTS reference's genotypes.py, is skipped.

  Args:
    text: the genotype text.
    calls: the accepted outer call names, each with its fields in positional order.
    nested: call names accepted inside values, each with its fields.
    max_range: the longest `range(...)` accepted; a longer one is malformed text,
      not a cell, and is refused before it is expanded.

  Returns:
    The outer call's name and its fields as python values, not yet validated.

  Raises:
    ValueError: `malformed genotype text: <reason>`, on one line.
  """
  try:
    body = ast.parse(text.strip(), mode='exec').body
  except (SyntaxError, ValueError, RecursionError, MemoryError) as e:
    raise ValueError(f'malformed genotype text: {type(e).__name__}: {e}') from None
  expected = ' or '.join(f'{name}(...)' for name in calls)
  if len(body) != 1 or not isinstance(body[0], (ast.Expr, ast.Assign)):
    raise ValueError(f'malformed genotype text: expected one {expected} expression')
  call = body[0].value
  name = _call_name(call.func) if isinstance(call, ast.Call) else None
  if name not in calls:
    raise ValueError(f'malformed genotype text: expected {expected}')
  try:
    return name, _bind(call, calls[name], _Grammar(nested or {}, max_range))
  except (_Malformed, RecursionError) as e:
    raise ValueError(f'malformed genotype text: {e}') from None


def from_darts_string(text: str) -> AnyGenotype:
  """Parses a DARTS genotype repr (or our per-cell form) without evaluating it.

  Accepts `Genotype(...)` with keyword or positional fields, concat as a list or as
  `range(a, b)`, tuples or lists, an optional `NAME = ` prefix as in the reference's
  genotypes.py, and `PerCellGenotype(cells=[CellGenotype(...), ...])`.

  Args:
    text: the genotype text.

  Returns:
    The validated genotype.

  Raises:
    ValueError: on malformed text or an invalid genotype.
  """
  name, values = parse_call(
      text, {'Genotype': Genotype._fields, 'PerCellGenotype': PerCellGenotype._fields},
      nested={'CellGenotype': CellGenotype._fields})
  return _from_fields(values, 'genotype' if name == 'Genotype' else 'per_cell')


def load_from(path_or_name: str | os.PathLike, named: Mapping[str, Any],
              parse_json: Callable[[str], Any], parse_text: Callable[[str], Any]) -> Any:
  """Looks a genotype up by name, or reads it from a JSON or genotype-text file.

  Args:
    path_or_name: a key of `named`, or the path of a file holding JSON (`.json`
      suffix, or text starting with '{') or genotype text.
    named: the known genotypes by name.
    parse_json: reads the JSON form, raising ValueError when it is invalid.
    parse_text: reads the text form, raising ValueError when it is invalid.

  Returns:
    What `named` or the parser gives.

  Raises:
    ValueError: for an unknown name, an unreadable file or an invalid genotype,
      naming the file.
  """
  name = os.fspath(path_or_name)
  if name in named:
    return named[name]
  if not os.path.isfile(name):
    raise ValueError(f'unknown genotype {name!r}: neither a file nor one of {sorted(named)}')
  try:
    with open(name, encoding='utf-8') as f:
      text = f.read()
  except (OSError, UnicodeDecodeError) as e:
    raise ValueError(f'cannot read genotype file {name!r}: {e}') from None
  try:
    if name.endswith('.json') or text.lstrip().startswith('{'):
      return parse_json(text)
    return parse_text(text)
  except ValueError as e:
    raise ValueError(f'{name}: {e}') from None


def load(path_or_name: str | os.PathLike) -> AnyGenotype:
  """Loads a genotype by name (`NAMED`), from a .json file or a DARTS-string file.

  Args:
    path_or_name: a key of `NAMED`, or the path of a file holding JSON (`.json`
      suffix, or text starting with '{') or a DARTS genotype string.

  Returns:
    The validated genotype.

  Raises:
    ValueError: for an unknown name, an unreadable file or an invalid genotype.
  """
  return load_from(path_or_name, NAMED, from_json, from_darts_string)


# ----------------------------------------------------------------------------------
# Drawing.

# Colours follow the paper's figures where they name one (skip red, sep_conv_3x3 blue).
OP_COLORS = {
    'none': 'tab:gray',
    'max_pool_3x3': 'tab:purple',
    'avg_pool_3x3': 'tab:orange',
    'skip_connect': 'tab:red',
    'sep_conv_3x3': 'tab:blue',
    'sep_conv_5x5': 'tab:cyan',
    'dil_conv_3x3': 'tab:green',
    'dil_conv_5x5': 'tab:olive',
}

_NODE_R = 0.38     # node radius, data units.
_ROW = 1.5         # vertical distance between intermediate nodes.
_X_NODE = 3.0      # column of the intermediate nodes; inputs sit at x = 0.
_X_OUT = 6.0       # column of the cell output.


def _draw_cell(ax, cell: CellGenotype, title: str, fontsize: float) -> None:
  """Draws one cell: inputs left, intermediate nodes in a column, output right.

  Edges between intermediate nodes bulge to the right, more for longer jumps, so no
  edge runs through a node and nested arcs stay apart.
  """
  from matplotlib import patches

  steps = len(cell.genes) // 2
  top = _ROW * (steps - 1) / 2
  pos = {0: (0.0, 1.0), 1: (0.0, -1.0)}
  pos.update({j + 2: (_X_NODE, top - _ROW * j) for j in range(steps)})
  out = (_X_OUT, 0.0)
  labels = {0: '$c_{k-2}$', 1: '$c_{k-1}$', 'out': '$c_{k}$'}
  labels.update({j + 2: str(j) for j in range(steps)})
  circles = {}
  for state, xy in list(pos.items()) + [('out', out)]:
    face = ('#c1e1c1' if state in (0, 1) else '#fdf1b8' if state == 'out' else '#add8e6')
    circles[state] = patches.Circle(xy, _NODE_R, facecolor=face, edgecolor='black', lw=0.8,
                                    zorder=3)
    ax.add_patch(circles[state])
    ax.text(*xy, labels[state], ha='center', va='center', fontsize=fontsize, zorder=4)

  for k, (op, src) in enumerate(cell.genes):
    dst = k // 2 + 2
    (x0, y0), (x1, y1) = pos[src], pos[dst]
    if src < 2:
      # Input edges fan into the node column; labelling them at 70% of the way
      # keeps the 2·steps labels at distinct heights (>= 0.45 apart) instead of
      # piling them at the crossings.
      rad, lx, ly = 0.0, x0 + 0.7 * (x1 - x0), y0 + 0.7 * (y1 - y0)
    else:
      # arc3 puts its control point at mid + rad·(dy, -dx); the curve's midpoint is
      # half-way there. dy < 0 here (src is above dst), so rad < 0 bends right.
      bulge = 0.5 + 0.5 * (dst - src - 1)
      rad = -2 * bulge / abs(y1 - y0)
      lx, ly = x0 + bulge, (y0 + y1) / 2
    color = OP_COLORS.get(op, 'black')
    ax.add_patch(patches.FancyArrowPatch(
        (x0, y0), (x1, y1), patchA=circles[src], patchB=circles[dst], arrowstyle='-|>',
        mutation_scale=8, connectionstyle=f'arc3,rad={rad}', color=color, lw=1.2,
        zorder=2))
    ax.text(lx, ly, op, ha='center', va='center', fontsize=fontsize * 0.8, color=color,
            zorder=5, bbox=dict(boxstyle='round,pad=0.1', fc='white', ec='none', alpha=0.8))
  for state in cell.concat:
    ax.add_patch(patches.FancyArrowPatch(
        pos[state], out, patchA=circles[state], patchB=circles['out'], arrowstyle='-|>',
        mutation_scale=8, color='gray', lw=0.8, linestyle='--', zorder=1))

  ax.set_title(title, fontsize=fontsize * 1.1)
  ax.set_xlim(-0.6, _X_OUT + 0.6)
  half = max(top, 1.0) + 0.7
  ax.set_ylim(-half, half)
  ax.set_aspect('equal')
  ax.axis('off')


def draw(genotype: AnyGenotype, path: str | os.PathLike, dpi: int = 150) -> None:
  """Draws the cell(s) of a genotype to a PNG or SVG file (chosen by the suffix).

  Uses matplotlib's Agg canvas (no display, no graphviz). A `Genotype` gives its
  normal and reduction cells side by side; a `PerCellGenotype` gives a grid of small
  cells in network order, reduction cells marked in their titles. Text is kept as
  text in SVG so op names stay searchable.

  Args:
    genotype: either kind.
    path: output file, `.png` or `.svg`.
    dpi: resolution of a PNG.
  """
  import matplotlib
  from matplotlib.backends.backend_agg import FigureCanvasAgg
  from matplotlib.figure import Figure

  path = os.fspath(path)
  fmt = os.path.splitext(path)[1].lower().lstrip('.')
  if fmt not in ('png', 'svg'):
    raise ValueError(f'draw writes .png or .svg, got {path!r}')
  genotype = validate(genotype)
  cells = named_cells(genotype)
  if isinstance(genotype, Genotype):
    ncols, size, fontsize = len(cells), 4.5, 10
    titles = [name for name, _ in cells]
  else:
    ncols, size, fontsize = min(5, len(cells)), 3.0, 7
    titles = [f'{name}{" (reduction)" if c.reduction else ""}' for name, c in cells]
  nrows = math.ceil(len(cells) / ncols)
  with matplotlib.rc_context({'svg.fonttype': 'none'}):
    fig = Figure(figsize=(size * ncols, size * 0.9 * nrows))
    FigureCanvasAgg(fig)
    for i, ((_, cell), title) in enumerate(zip(cells, titles)):
      _draw_cell(fig.add_subplot(nrows, ncols, i + 1), cell, title, fontsize)
    fig.tight_layout()
    parent = os.path.dirname(path)
    if parent:
      os.makedirs(parent, exist_ok=True)
    fig.savefig(path, format=fmt, dpi=dpi)
