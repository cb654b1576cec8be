"""Reads the one config that describes search and retraining (configs/base.py).

Hyper-parameter consistency (Section 3.1.2, Appendix B.1) lives here: with
`search.consistency` the search network is the retrain network (depth, width,
cutout, drop-path, auxiliary head), otherwise DARTS's split (8 cells, C=16, no
regularisers in search).
"""

from __future__ import annotations

import dataclasses
import json
import os

from amdarts import spaces


@dataclasses.dataclass(frozen=True)
class NetworkHParams:
  cells: int
  c: int
  cutout: int
  drop_path: float
  auxiliary: bool
  aux_weight: float


def retrain_hparams(config) -> NetworkHParams:
  t = config.train
  return NetworkHParams(config.model.cells, config.model.c, t.cutout, t.drop_path,
                        t.auxiliary, t.aux_weight)


def search_hparams(config) -> NetworkHParams:
  if config.search.consistency:
    return retrain_hparams(config)
  return NetworkHParams(config.search.cells, config.search.c, 0, 0.0, False, 0.0)


def load_topology(path: str) -> dict:
  """{cell_key: ((i1, i2), ...)} from a JSON file written after an edge search."""
  if not os.path.exists(path):
    raise FileNotFoundError(f'space.topology: no such file {path}')
  try:
    with open(path) as f:
      raw = json.load(f)
    return {k: tuple(tuple(int(i) for i in p) for p in v) for k, v in raw.items()}
  except (ValueError, TypeError, AttributeError) as e:
    raise ValueError(f'space.topology: {path} is not a JSON map of input pairs ({e})') from e


def space_spec(config, num_cells: int | None = None) -> spaces.SpaceSpec:
  """The SpaceSpec of the search network (or of `num_cells` cells)."""
  s = config.space
  if s.name not in spaces.SPACE_OPS:
    raise ValueError(f'space.name must be one of {sorted(spaces.SPACE_OPS)}, got {s.name!r}')
  ops = tuple(s.ops) or spaces.SPACE_OPS[s.name]
  inputs = load_topology(s.topology) if s.topology else None
  if inputs is not None and s.edge_mode != 'fixed':
    raise ValueError('space.topology needs space.edge_mode=fixed (operator search on it)')
  cells = num_cells if num_cells is not None else search_hparams(config).cells
  return spaces.SpaceSpec(ops=ops, num_cells=cells, shared=s.shared,
                          edge_mode=s.edge_mode, steps=s.steps, inputs=inputs)
