"""Reads configs: the image task's (configs/base.py) and helpers every task's checks use.

Hyper-parameter consistency (Sections 2.4, 3.1.1-3.1.2, Appendix B.1) lives here, as
two switches (`search_hparams`): `search.consistent_regularisers` searches with the
retraining regularisers (cutout, the drop-path schedule, the auxiliary head and its
weight; Table 1's method, where turning it off is the "w/o consistency" row), and
`search.consistent_size` searches at the retraining depth and width (S2: 20 cells,
C=36) instead of `search.cells` / `search.c` (S1, S3: 8 cells, C=16). DARTS used
neither.

Each task validates its config in one place before any data is read or anything
compiles: `validate_search` / `validate_train` for the image task here,
`amdarts.rnn.hparams.validate` for the recurrent one. Both first check every field's
type and range (`amdarts.config_fields`), then what relates fields or names a
registry entry, with the `check_*` helpers below, so a field is checked, and worded,
the same way in every task.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Sequence

import numpy as np

from amdarts import config_fields
from amdarts import data as data_lib
from amdarts import hypergrad
from amdarts import ops as ops_lib
from amdarts import optim
from amdarts import spaces

# Synthetic data: train examples when data.max_examples is 0.
_SYNTHETIC_EXAMPLES = 512


# ------------------------------------------------------------------ shared checks


def check_choice(value: Any, choices: Sequence[Any], name: str) -> None:
  """Raises ValueError unless `value` is one of `choices`."""
  if value not in choices:
    raise ValueError(f'{name} must be one of {tuple(choices)}, got {value!r}')


def check_estimator(section, prefix: str = 'search') -> None:
  """The estimator fields a search section shares across tasks (see `make_estimator`).

  Their ranges (η >= 0, ε scale > 0, ...) are `config_fields.check`'s.
  """
  if section.estimator not in hypergrad.ESTIMATORS:
    raise ValueError(f'{prefix}.estimator must be one of {sorted(hypergrad.ESTIMATORS)}, '
                     f'got {section.estimator!r}')
  check_choice(section.implicit_solver, sorted(hypergrad.SOLVERS),
               f'{prefix}.implicit_solver')


def check_stop_after_unchanged(section, prefix: str = 'search') -> None:
  """`stop_after_unchanged` is a number of epochs, 0 for off (`loop.StopWhenUnchanged`)."""
  k = section.stop_after_unchanged
  if not isinstance(k, int) or k < 0:
    raise ValueError(f'{prefix}.stop_after_unchanged must be an integer >= 0 (0 = off), '
                     f'got {k!r}')


def make_estimator(section, *, weight_decay: float, momentum: float = 0.0):
  """The configured estimator with those of the section's values it declares bound.

  Args:
    section: a search config section (estimator, eta, eps_scale, implicit_*).
    weight_decay: the weight optimizer's L2 coefficient (DARTS's unrolled step).
    momentum: the weight optimizer's momentum (0 for plain SGD).

  Returns:
    `estimator(loss_fn, params, alpha, model_state, train_batch, val_batch, ctx)`.
  """
  offered = {'eta': section.eta, 'eps_scale': section.eps_scale,
             'weight_decay': weight_decay, 'momentum': momentum,
             'solver': section.implicit_solver, 'maxiter': section.implicit_maxiter,
             'ridge': section.implicit_ridge}
  return hypergrad.make(section.estimator,
                        **hypergrad.select_hparams(section.estimator, offered))


# ------------------------------------------------------------------ the image task


@dataclasses.dataclass(frozen=True)
class NetworkHParams:
  """A network's size and the regularisers it is trained with.

  Attributes:
    cells: depth.
    c: base width.
    cutout: cutout length of the training batches (0 = none).
    drop_path: final rate of the drop-path ramp over the run's epochs (0 = none).
    auxiliary: whether the auxiliary head is built and trained.
    aux_weight: weight of its loss (0 without the head).
  """

  cells: int
  c: int
  cutout: int
  drop_path: float
  auxiliary: bool
  aux_weight: float


def retrain_hparams(config) -> NetworkHParams:
  """The retrain network's: `model.cells`, `model.c` and the `train` regularisers."""
  t = config.train
  return NetworkHParams(int(config.model.cells), int(config.model.c), int(t.cutout),
                        float(t.drop_path), bool(t.auxiliary),
                        float(t.aux_weight) if t.auxiliary else 0.0)


def search_hparams(config) -> NetworkHParams:
  """The search network's size and regularisers under the two consistency switches.

  Args:
    config: an image config (configs/base.py).

  Returns:
    Depth and width: the retrain network's with `search.consistent_size`, else
    `search.cells` / `search.c`. Regularisers: the retrain network's with
    `search.consistent_regularisers` (drop-path then ramps to `train.drop_path`
    over the *search* epochs), else none, as DARTS's search.
  """
  s, retrain = config.search, retrain_hparams(config)
  size = ((retrain.cells, retrain.c) if s.consistent_size else (int(s.cells), int(s.c)))
  if s.consistent_regularisers:
    return dataclasses.replace(retrain, cells=size[0], c=size[1])
  return NetworkHParams(*size, cutout=0, drop_path=0.0, auxiliary=False, aux_weight=0.0)


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


# `space.edge_mode` of the two-stage search of Appendix B.2 in one run: edge search
# (`searched`), then operator search on the kept edges (`fixed`); see `stage_config`.
TWO_STAGE = 'two_stage'


def stage_config(config, stage: int, topology: str = ''):
  """The config of stage 1 (edge search) or 2 (operator search) of a two-stage search.

  Args:
    config: a config with `space.edge_mode='two_stage'` (left unchanged).
    stage: 1 or 2.
    topology: for stage 2, the topology.json that stage 1 wrote.

  Returns:
    A copy with `space.edge_mode` 'searched' (stage 1) or 'fixed' on `topology`.
  """
  c = config.copy_and_resolve_references()
  c.space.edge_mode = 'searched' if stage == 1 else 'fixed'
  c.space.topology = topology if stage == 2 else ''
  return c


def space_spec(config, num_cells: int | None = None) -> spaces.SpaceSpec:
  """The SpaceSpec of the search network (or of `num_cells` cells); stage 1's for two_stage."""
  s = config.space
  if s.name not in spaces.SPACE_OPS:
    raise ValueError(f'space.name must be one of {sorted(spaces.SPACE_OPS)}, got {s.name!r}')
  ops = tuple(s.ops) or spaces.SPACE_OPS[s.name]
  check_choice(s.edge_mode, spaces.EDGE_MODES + (TWO_STAGE,), 'space.edge_mode')
  if s.edge_mode == TWO_STAGE and s.topology:
    raise ValueError('space.topology is written by stage 1 of space.edge_mode=two_stage; '
                     'leave it empty')
  inputs = load_topology(s.topology) if s.topology else None
  if inputs is not None and s.edge_mode != 'fixed':
    raise ValueError('space.topology needs space.edge_mode=fixed (operator search on it)')
  cells = num_cells if num_cells is not None else search_hparams(config).cells
  edge_mode = 'searched' if s.edge_mode == TWO_STAGE else s.edge_mode
  return spaces.SpaceSpec(ops=ops, num_cells=cells, shared=s.shared,
                          edge_mode=edge_mode, steps=s.steps, inputs=inputs)


def validate_search(config) -> None:
  """Raises ValueError with one line for a search config that cannot run; no heavy work."""
  config_fields.check(config)
  s = config.search
  check_estimator(s)
  check_stop_after_unchanged(s)
  check_choice(config.model.depthwise, ops_lib.DEPTHWISE_IMPLS, 'model.depthwise')
  if s.consistent_size and config.model.c < 1:
    raise ValueError(f'search.consistent_size searches with model.c, which must be >= 1, '
                     f'got {config.model.c}')
  space_spec(config)  # Unknown space/op/edge mode/topology.


def validate_train(config) -> None:
  """Raises ValueError with one line for a retraining config that cannot run.

  What depends on the genotype (depth, per-cell layouts, ops) is checked when the
  network is built, still before any data is read.
  """
  config_fields.check(config)
  check_choice(config.train.w_lr_schedule, optim.SCHEDULES, 'train.w_lr_schedule')
  check_choice(config.model.depthwise, ops_lib.DEPTHWISE_IMPLS, 'model.depthwise')


def image_dataset(config, split: str) -> data_lib.Dataset:
  """The `split` ('train' or 'test') of `config.data`: the image task's one loader.

  Synthetic data has data.max_examples (or 512) training and a quarter as many test
  examples, shaped by data.image_shape / data.num_classes; data.max_examples also
  cuts a real training split to its first examples. tfds images other than
  Fashion-MNIST's are resized to data.image_size when it is set (ImageNet).
  """
  d = config.data
  if d.name == 'synthetic':
    n = d.max_examples or _SYNTHETIC_EXAMPLES
    return data_lib.load_dataset(
        'synthetic', split, num_examples=n if split == 'train' else max(n // 4, 1),
        image_shape=tuple(d.image_shape), num_classes=d.num_classes, seed=config.seed)
  kwargs = {'data_dir': d.data_dir or None}
  if d.name != 'fashion_mnist':  # tfds: ImageNet needs a fixed size.
    kwargs['image_size'] = int(d.image_size) or None
  dataset = data_lib.load_dataset(d.name, split, **kwargs)
  if split == 'train' and d.max_examples and len(dataset) > d.max_examples:
    dataset = dataset.subset(np.arange(d.max_examples))
  return dataset
