"""Genotype text and files, for convolutional and recurrent cells alike.

Text forms of a convolutional genotype (`amdarts.genotypes`):
  * `to_json` / `from_json`: `{"kind": "genotype", "normal": [[op, input], ...],
    "normal_concat": [...], "reduce": [...], "reduce_concat": [...]}` or
    `{"kind": "per_cell", "cells": [{"genes": [...], "concat": [...],
    "reduction": bool}, ...]}`.
  * `to_darts_string` / `from_darts_string`: the repr printed by the DARTS reference,
    `Genotype(normal=[('sep_conv_3x3', 0), ...], normal_concat=[2, 3, 4, 5], ...)`;
    per-cell genotypes print as `PerCellGenotype(cells=[CellGenotype(genes=[...],
    concat=[2, 3, 4, 5], reduction=False), ...])`.
  * `load(path_or_name)`: a name of `genotypes.NAMED`, or a file in either form.

The reader of genotype text (`parse_call`), of JSON objects (`json_object`) and of
files (`load_from`) also serve the recurrent genotypes of `amdarts.rnn.genotype`, so
both families accept the same syntax and fail the same way. Parsing walks the syntax
tree and never evaluates the text.
"""

from __future__ import annotations

import ast
import json
import os
from typing import Any, Callable, Mapping, NamedTuple, Sequence

from amdarts import genotypes

# A `range(...)` in genotype text longer than this is malformed, not a cell.
_MAX_RANGE = 64

# ----------------------------------------------------------------------------------
# Reading genotype text, JSON objects and files (both families).


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
      and isinstance(node.operand, ast.Constant) and genotypes.is_int(node.operand.value)):
    return -node.operand.value  # let validation report a negative input index.
  if isinstance(node, (ast.List, ast.Tuple)):
    return [_literal(e, grammar) for e in node.elts]
  if isinstance(node, ast.Call):
    name = _call_name(node.func)
    if name == 'range':
      args = [_literal(a, grammar) for a in node.args]
      if node.keywords or not 1 <= len(args) <= 3 or not all(genotypes.is_int(a) for a in args):
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


# ----------------------------------------------------------------------------------
# JSON of convolutional genotypes.


def _genes_json(genes: Sequence[genotypes.Gene]) -> list[list]:
  return [[op, src] for op, src in genes]


def to_json(genotype: genotypes.AnyGenotype, indent: int | None = None) -> str:
  """Serialises a genotype to JSON (format in the module docstring).

  Args:
    genotype: either kind.
    indent: passed to `json.dumps`.

  Returns:
    The JSON text.
  """
  genotype = genotypes.validate(genotype)
  if isinstance(genotype, genotypes.Genotype):
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
      g = genotypes.Genotype(*(fields[f] for f in genotypes.Genotype._fields))
    else:
      cells = fields['cells']
      if not genotypes.is_sequence(cells):
        raise ValueError(f'cells must be a list, got {cells!r}')
      fields_of = genotypes.CellGenotype._fields
      g = genotypes.PerCellGenotype(tuple(
          genotypes.CellGenotype(*(c[f] for f in fields_of)) for c in cells))
  except (KeyError, TypeError) as e:
    raise ValueError(f'malformed {kind} fields: missing or bad entry {e}') from None
  return genotypes.validate(g)


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
# DARTS strings of convolutional genotypes.


def _genes_str(genes: Sequence[genotypes.Gene]) -> str:
  return '[' + ', '.join(f'({op!r}, {src})' for op, src in genes) + ']'


def _ints_str(xs: Sequence[int]) -> str:
  return '[' + ', '.join(str(x) for x in xs) + ']'


def to_darts_string(genotype: genotypes.AnyGenotype) -> str:
  """The DARTS repr of a genotype (concat printed as a list), one line.

  Args:
    genotype: either kind.

  Returns:
    `Genotype(normal=[...], normal_concat=[...], reduce=[...], reduce_concat=[...])`
    or `PerCellGenotype(cells=[CellGenotype(genes=[...], concat=[...],
    reduction=False), ...])`.
  """
  genotype = genotypes.validate(genotype)
  if isinstance(genotype, genotypes.Genotype):
    return (f'Genotype(normal={_genes_str(genotype.normal)}, '
            f'normal_concat={_ints_str(genotype.normal_concat)}, '
            f'reduce={_genes_str(genotype.reduce)}, '
            f'reduce_concat={_ints_str(genotype.reduce_concat)})')
  cells = ', '.join(
      f'CellGenotype(genes={_genes_str(c.genes)}, concat={_ints_str(c.concat)}, '
      f'reduction={c.reduction})' for c in genotype.cells)
  return f'PerCellGenotype(cells=[{cells}])'


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
      text, {'Genotype': genotypes.Genotype._fields,
             'PerCellGenotype': genotypes.PerCellGenotype._fields},
      nested={'CellGenotype': genotypes.CellGenotype._fields})
  return _from_fields(values, 'genotype' if name == 'Genotype' else 'per_cell')


# ----------------------------------------------------------------------------------
# Files.


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
  return load_from(path_or_name, genotypes.NAMED, from_json, from_darts_string)
