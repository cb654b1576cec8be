"""Reads the one PTB config (configs/ptb.py) into model specs for search and evaluation.

Hyper-parameter consistency for the recurrent space (Section 3.3, change (ii)): with
`search.consistency` the search network uses the evaluation network's weight decay
and dropout rates (`config.reg`); otherwise the DARTS reference's search values
(weight decay 5e-7, no word dropout). Widths differ in both cases (300 vs 850), as in
the paper, which unifies only the regularisers.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

from amdarts import config_fields
from amdarts import config_lib
from amdarts.rnn import genotype as genotype_lib
from amdarts.rnn import model as model_lib


@dataclasses.dataclass(frozen=True)
class Regularisers:
  """What regularises ω.

  Attributes:
    wd: L2 weight decay added to the clipped gradient (torch SGD's weight_decay).
    dropouts: the model's dropout rates.
    ar: activation-regularisation weight.
    tar: temporal-activation-regularisation weight.
  """

  wd: float
  dropouts: model_lib.Dropouts
  ar: float
  tar: float


@dataclasses.dataclass(frozen=True)
class TrainHParams:
  """The weight step's hyper-parameters, hashable so compiled steps can be reused.

  Field meanings are those of `config.train` in configs/ptb.py (of `config.search`
  for `SearchHParams`); `reg` holds the regularisers in force.
  """

  batch_size: int
  bptt: int
  w_lr: float
  grad_clip: float
  reg: Regularisers

  _section: ClassVar[str] = 'train'

  @classmethod
  def from_config(cls, config):
    section = config[cls._section]
    values = {f.name: section[f.name] for f in dataclasses.fields(cls) if f.name != 'reg'}
    return cls(**values, reg=regularisers(config, search=cls._section == 'search'))


@dataclasses.dataclass(frozen=True)
class SearchHParams(TrainHParams):
  """The search step's: the weight step's fields of `config.search`, α's and the estimator's.

  `reg` is consistent with evaluation or DARTS's search values (`regularisers`). The
  estimator fields are read by `config_lib.make_estimator`, as a config section's.
  """

  estimator: str
  eta: float
  eps_scale: float
  a_lr: float
  a_b1: float
  a_b2: float
  a_wd: float
  alpha_init_scale: float
  implicit_solver: str
  implicit_maxiter: int
  implicit_ridge: float

  _section: ClassVar[str] = 'search'


def regularisers(config, *, search: bool) -> Regularisers:
  r = config.reg
  wd, dropoute = r.w_wd, r.dropoute
  if search and not config.search.consistency:
    wd, dropoute = config.search.w_wd, config.search.dropoute
  dropouts = model_lib.Dropouts(output=r.dropout, hidden=r.dropouth, x=r.dropoutx,
                                input=r.dropouti, embed=dropoute)
  return Regularisers(float(wd), dropouts, float(r.ar), float(r.tar))


def search_spec(config, vocab_size: int) -> model_lib.RNNSpec:
  """The search network: mixed cell of `model.steps` nodes, `search.nhid` units."""
  return model_lib.RNNSpec(vocab_size=vocab_size, nhid=config.search.nhid,
                           steps=config.model.steps, ops=tuple(config.model.ops),
                           dropouts=regularisers(config, search=True).dropouts)


def eval_spec(config, vocab_size: int, genotype: genotype_lib.Genotype) -> model_lib.RNNSpec:
  """The evaluation network: the discrete `genotype`, `model.nhid` units."""
  return model_lib.RNNSpec(vocab_size=vocab_size, nhid=config.model.nhid, genotype=genotype,
                           dropouts=regularisers(config, search=False).dropouts)


def validate(config, *, search: bool) -> None:
  """Checks the fields a search (or an evaluation) reads, before anything compiles.

  Every field's type and range first (`config_fields.check`), then names and the
  fields that relate to each other.

  Raises:
    ValueError: naming the bad field (one line per field).
  """
  if config.task != 'ptb':
    raise ValueError(f"amdarts.rnn needs task='ptb', got {config.task!r}")
  config_fields.check(config)
  config_lib.check_choice(config.data.name, ('ptb', 'fortunes'), 'data.name')
  if config.data.name == 'ptb' and not config.data.data_dir:
    raise ValueError('data.data_dir is empty: point it at the directory with '
                     'ptb.train.txt, ptb.valid.txt and ptb.test.txt')
  regularisers(config, search=search)  # Raises on dropout rates outside [0, 1).
  if search:
    config_lib.check_estimator(config.search)
    config_lib.check_stop_after_unchanged(config.search)
    if not any(o != 'none' for o in config.model.ops):
      raise ValueError(f'model.ops needs an op other than none, got {tuple(config.model.ops)}')
    search_spec(config, vocab_size=1)  # Raises on unknown ops.
  elif not config.train.genotype:
    raise ValueError('train.genotype is empty: give the genotype.json a search wrote, a '
                     f'DARTS-string file, or a name from {sorted(genotype_lib.NAMED)}')
