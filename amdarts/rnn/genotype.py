"""Recurrent-cell genotypes: derivation from α, named cells, JSON and DARTS strings.

A recurrent genotype lists, node by node, one gene `(activation, input_state)` per
intermediate node, plus the states the cell output averages. State 0 is the
initial state s0 computed from (x_t, h_{t-1}); node i (0-based) is state i + 1 and
may read any of the states 0..i. The DARTS search cell has 8 nodes and averages
states 1..8, so its genotypes end in `concat=range(1, 9)`.

Text forms:
  * `to_json` / `from_json`: `{"kind": "recurrent", "recurrent": [[op, input], ...],
    "concat": [1, ..., 8]}`.
  * `to_darts_string` / `from_darts_string`: the repr the DARTS reference prints,
    `Genotype(recurrent=[('sigmoid', 0), ('relu', 1), ...], concat=range(1, 9))`.
    Parsing walks the syntax tree and never evaluates the text.

Parsing and file loading are those of the convolutional genotypes
(`amdarts.genotype_text`), and so are the shape checks of genes (`amdarts.genotypes`);
only the cell's rules live here.
"""

from __future__ import annotations

import json
import os
from typing import Any, NamedTuple, Sequence

import numpy as np

from amdarts import genotype_text
from amdarts import genotypes

# Candidate ops of the DARTS recurrent space in α column order; 'none' is the zero
# edge, which a derived genotype never keeps.
PRIMITIVES = ('none', 'tanh', 'relu', 'sigmoid', 'identity')
ACTIVATIONS = PRIMITIVES[1:]

# A `range(...)` in genotype text longer than this is malformed, not a cell.
_MAX_RANGE = 256

Gene = tuple[str, int]  # (activation name, input state)


class Genotype(NamedTuple):
  """A discrete recurrent cell.

  Attributes:
    recurrent: one (activation, input state) gene per intermediate node.
    concat: states averaged into the cell output.
  """

  recurrent: tuple[Gene, ...]
  concat: tuple[int, ...]

  @property
  def steps(self) -> int:
    return len(self.recurrent)


# Cells from the DARTS paper (Liu et al., 2019), first- and second-order search.
DARTS_V1 = Genotype(
    recurrent=(('relu', 0), ('relu', 1), ('tanh', 2), ('relu', 3), ('relu', 4),
               ('identity', 1), ('relu', 5), ('relu', 1)),
    concat=tuple(range(1, 9)),
)
DARTS_V2 = Genotype(
    recurrent=(('sigmoid', 0), ('relu', 1), ('relu', 1), ('identity', 1), ('tanh', 2),
               ('sigmoid', 5), ('tanh', 3), ('relu', 5)),
    concat=tuple(range(1, 9)),
)
# The ENAS cell in DARTS's notation (11 nodes, a sparse output set).
ENAS = Genotype(
    recurrent=(('tanh', 0), ('tanh', 1), ('relu', 1), ('tanh', 3), ('tanh', 3), ('relu', 3),
               ('relu', 4), ('relu', 7), ('relu', 8), ('relu', 8), ('relu', 8)),
    concat=(2, 5, 6, 9, 10, 11),
)

NAMED: dict[str, Genotype] = {
    'DARTS_V1': DARTS_V1,
    'DARTS_V2': DARTS_V2,
    'DARTS': DARTS_V2,  # The DARTS reference's default cell.
    'ENAS': ENAS,
}


def validate(genotype: Any) -> Genotype:
  """Checks a recurrent genotype and returns it in canonical form (tuples, ints).

  Args:
    genotype: a `Genotype`, or any (recurrent, concat) pair of sequences.

  Returns:
    An equal `Genotype` built from tuples and python ints.

  Raises:
    ValueError: with a one-line reason on a malformed gene, an unknown activation,
      an input state not yet computed, or a concat state outside the cell.
  """
  try:
    recurrent, concat = genotype
  except (TypeError, ValueError):
    raise ValueError(f'not a recurrent genotype: {genotype!r}') from None
  if not genotypes.is_sequence(recurrent) or not recurrent:
    raise ValueError(f'recurrent must be a non-empty list of (op, input) pairs, got {recurrent!r}')
  genes = []
  for i, gene in enumerate(recurrent):
    if not genotypes.is_gene(gene):
      raise ValueError(f'gene {i} must be an (op name, input index) pair, got {gene!r}')
    op, src = gene[0], int(gene[1])
    if op not in ACTIVATIONS:
      raise ValueError(f'gene {i} has unknown op {op!r}; known: {list(ACTIVATIONS)}')
    # Node i is state i + 1 and reads an earlier state: 0..i.
    if not 0 <= src <= i:
      raise ValueError(f'gene {i} (node {i}) input index {src} out of range [0, {i}]')
    genes.append((op, src))
  if isinstance(concat, range):
    concat = list(concat)
  if not genotypes.is_sequence(concat):
    raise ValueError(f'concat must be a list of states, got {concat!r}')
  if not concat or not all(genotypes.is_int(c) for c in concat):
    raise ValueError(f'concat must be a non-empty list of integers, got {list(concat)!r}')
  concat = tuple(int(c) for c in concat)
  if len(set(concat)) != len(concat):
    raise ValueError(f'concat states must be distinct, got {list(concat)}')
  bad = [c for c in concat if not 0 <= c <= len(genes)]
  if bad:
    raise ValueError(f'concat index {bad[0]} out of range [0, {len(genes)}] for '
                     f'{len(genes)} nodes')
  return Genotype(tuple(genes), concat)


def num_edges(steps: int) -> int:
  """Edges of the search cell: node i has one edge from each of the states 0..i."""
  return steps * (steps + 1) // 2


def steps_for_edges(num: int) -> int:
  """Inverse of `num_edges`; raises ValueError if `num` is not triangular."""
  steps = int(round((np.sqrt(8 * num + 1) - 1) / 2))
  if steps < 1 or num_edges(steps) != num:
    raise ValueError(f'{num} edges is no search cell: need steps·(steps+1)/2 edges')
  return steps


def derive(alpha: Any, ops: Sequence[str] = PRIMITIVES) -> Genotype:
  """The DARTS rule for recurrent cells: one input and one activation per node.

  For node i the edges from states 0..i are rows `i(i+1)/2 + j` of α (DARTS's order).
  On softmax(α) the kept input is the edge whose strongest non-none op is largest,
  and the kept activation is that edge's strongest non-none op. Ties go to the lower
  index, as the reference's stable sort and strict comparison do.

  Args:
    alpha: f[E, O] architecture logits, E = steps·(steps+1)/2, columns as `ops`.
    ops: op names of α's columns; must include at least one activation.

  Returns:
    The genotype, averaging all intermediate nodes (concat = 1..steps).

  Raises:
    ValueError: when α's shape does not fit `ops` or a search cell.
  """
  a = np.asarray(alpha, np.float64)
  if a.ndim != 2 or a.shape[1] != len(ops):
    raise ValueError(f'alpha must be [edges, {len(ops)}] for ops {tuple(ops)}, got {a.shape}')
  unknown = [o for o in ops if o not in PRIMITIVES]
  if unknown:
    raise ValueError(f'unknown op {unknown[0]!r}; known: {list(PRIMITIVES)}')
  cand = genotypes.candidates(ops)
  steps = steps_for_edges(a.shape[0])
  w = genotypes.softmax(a)[:, cand]
  genes = []
  for i in range(steps):
    w_node = w[num_edges(i):num_edges(i + 1)]  # Sources 0..i.
    src = int(np.argmax(w_node.max(-1)))
    genes.append((ops[cand[int(np.argmax(w_node[src]))]], src))
  return Genotype(tuple(genes), tuple(range(1, steps + 1)))


# ----------------------------------------------------------------------------------
# JSON.


def to_json(genotype: Genotype) -> str:
  g = validate(genotype)
  return json.dumps({'kind': 'recurrent', 'recurrent': [list(x) for x in g.recurrent],
                     'concat': list(g.concat)})


def from_json(text: str) -> Genotype:
  """Parses `to_json` output; raises ValueError with a one-line reason otherwise."""
  obj = genotype_text.json_object(text)
  if obj.get('kind', 'recurrent') != 'recurrent':
    raise ValueError('genotype JSON must be an object with kind "recurrent"')
  missing = [k for k in ('recurrent', 'concat') if k not in obj]
  if missing:
    raise ValueError(f'genotype JSON lacks {missing[0]!r}')
  return validate((obj['recurrent'], obj['concat']))


# ----------------------------------------------------------------------------------
# DARTS strings.


def to_darts_string(genotype: Genotype) -> str:
  """The DARTS repr; a contiguous concat prints as `range(a, b)` as in the reference."""
  g = validate(genotype)
  genes = ', '.join(f'({op!r}, {src})' for op, src in g.recurrent)
  c = g.concat
  contiguous = c == tuple(range(c[0], c[0] + len(c)))
  concat = f'range({c[0]}, {c[-1] + 1})' if contiguous else repr(list(c))
  return f'Genotype(recurrent=[{genes}], concat={concat})'


def from_darts_string(text: str) -> Genotype:
  """Parses a DARTS recurrent genotype repr without evaluating it.

  Accepts keyword or positional fields, `range(a, b)` or a list for concat, tuples
  or lists, and an optional `NAME = ` prefix as in the reference's genotypes.py.

  Raises:
    ValueError: on malformed text or an invalid genotype.
  """
  _, values = genotype_text.parse_call(text, {'Genotype': Genotype._fields},
                                      max_range=_MAX_RANGE)
  return validate((values['recurrent'], values['concat']))


# ----------------------------------------------------------------------------------
# Files.


def load(path_or_name: str | os.PathLike) -> Genotype:
  """A genotype by name (`NAMED`), or from a JSON or DARTS-string file.

  Args:
    path_or_name: a key of `NAMED`, or a file holding JSON (`.json` suffix, or text
      starting with '{') or a DARTS genotype string.

  Returns:
    The validated genotype.

  Raises:
    ValueError: for an unknown name, a missing file or malformed content.
  """
  return genotype_text.load_from(path_or_name, NAMED, from_json, from_darts_string)


def save(genotype: Genotype, directory: str, stem: str = 'genotype') -> tuple[str, str]:
  """Writes `<stem>.json` and `<stem>.txt` (the DARTS string) atomically.

  Returns:
    The two paths.
  """
  os.makedirs(directory, exist_ok=True)
  paths = []
  for ext, text in (('json', to_json(genotype)), ('txt', to_darts_string(genotype))):
    path = os.path.join(directory, f'{stem}.{ext}')
    tmp = f'{path}.tmp'
    with open(tmp, 'w') as f:
      f.write(text + '\n')
    os.replace(tmp, path)  # A reader never sees a half-written file.
    paths.append(path)
  return tuple(paths)
