"""What every config field may hold, checked before a run does any work; the run's fingerprint.

`FIELDS[task]` gives each field of configs/base.py ('image') and configs/ptb.py
('ptb') its type and range; `check(config)` tests them all and raises one
`ConfigError` with one line per bad field, naming the field and its value. Names
drawn from a registry (estimators, spaces, depthwise kinds, schedules, data sets)
are checked against it by the task's validator (`config_lib.validate_search` /
`validate_train`, `amdarts.rnn.hparams.validate`), which also holds the checks that
relate fields; here they are only required to be strings. A field added to a config
needs an entry here (tests/test_config_fields.py fails until it has one).

`fingerprint(config)` is the config without the fields in `RESUMABLE`, which may
change when a run resumes; `amdarts.loop` stores it in every checkpoint and refuses
to resume under another one.
"""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any, Iterator, Mapping

from amdarts import errors


@dataclasses.dataclass(frozen=True)
class Int:
  """An integer (not a bool) in [lo, hi]."""

  lo: int | None = None
  hi: int | None = None

  def problem(self, v: Any) -> str | None:
    if isinstance(v, bool) or not isinstance(v, int):
      return 'must be an integer'
    if self.lo is not None and v < self.lo:
      return f'must be >= {self.lo}'
    if self.hi is not None and v > self.hi:
      return f'must be <= {self.hi}'
    return None


@dataclasses.dataclass(frozen=True)
class Real:
  """A finite number in the interval from lo to hi (open at an end where said)."""

  lo: float | None = None
  hi: float | None = None
  lo_open: bool = False
  hi_open: bool = False

  def problem(self, v: Any) -> str | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
      return 'must be a finite number'
    too_low = self.lo is not None and (v <= self.lo if self.lo_open else v < self.lo)
    too_high = self.hi is not None and (v >= self.hi if self.hi_open else v > self.hi)
    if not (too_low or too_high):
      return None
    if self.hi is None:
      return f'must be {">" if self.lo_open else ">="} {self.lo:g}'
    if self.lo is None:
      return f'must be {"<" if self.hi_open else "<="} {self.hi:g}'
    return (f'must lie in {"(" if self.lo_open else "["}{self.lo:g}, '
            f'{self.hi:g}{")" if self.hi_open else "]"}')


@dataclasses.dataclass(frozen=True)
class Flag:
  """True or False."""

  def problem(self, v: Any) -> str | None:
    return None if isinstance(v, bool) else 'must be True or False'


@dataclasses.dataclass(frozen=True)
class Text:
  """A string; one of `choices` when given."""

  choices: tuple[str, ...] = ()

  def problem(self, v: Any) -> str | None:
    if not isinstance(v, str):
      return 'must be a string'
    if self.choices and v not in self.choices:
      return f'must be one of {self.choices}'
    return None


@dataclasses.dataclass(frozen=True)
class Texts:
  """A tuple (or list) of strings."""

  def problem(self, v: Any) -> str | None:
    ok = isinstance(v, (tuple, list)) and all(isinstance(x, str) for x in v)
    return None if ok else 'must be a tuple of strings'


@dataclasses.dataclass(frozen=True)
class Shape:
  """`n` positive integers."""

  n: int

  def problem(self, v: Any) -> str | None:
    ok = (isinstance(v, (tuple, list)) and len(v) == self.n and
          all(isinstance(x, int) and not isinstance(x, bool) and x > 0 for x in v))
    return None if ok else f'must be {self.n} positive integers'


@dataclasses.dataclass(frozen=True)
class Reals:
  """len(hi) finite numbers, the i-th in [0, hi[i]]."""

  hi: tuple[float, ...]

  def problem(self, v: Any) -> str | None:
    ok = (isinstance(v, (tuple, list)) and len(v) == len(self.hi) and
          all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)
              and 0 <= x <= h for x, h in zip(v, self.hi)))
    bounds = ', '.join(f'[0, {h:g}]' for h in self.hi)
    return None if ok else f'must be {len(self.hi)} numbers in {bounds}'


_POSITIVE = Real(0, lo_open=True)  # Learning rates, ε scales.
_NON_NEGATIVE = Real(0)  # Weight decays, penalties, η, ridges, clips where 0 = off.
_RATE = Real(0, 1, hi_open=True)  # Dropout / drop-path rates, label smoothing, momenta.
_PROBABILITY = Real(0, 1)

# The run loop's fields (amdarts.loop), alike in every task.
_LOOP = {
    'seed': Int(0),
    'task': Text(('image', 'ptb')),
    'log_every_steps': Int(1),
    # 0 is documented: checkpoints only at epoch ends (and at a stop).
    'checkpoint_every_steps': Int(0),
    # orbax would delete every checkpoint at 0, leaving a run nothing to resume.
    'keep_checkpoints': Int(1),
}

FIELDS: dict[str, dict[str, Any]] = {
    'image': {
        **_LOOP,
        'data.name': Text(),
        'data.data_dir': Text(),
        'data.train_portion': Real(0, 1, lo_open=True, hi_open=True),
        'data.flip': Flag(),
        'data.max_examples': Int(0),
        'data.image_size': Int(0),
        'data.image_shape': Shape(3),
        'data.num_classes': Int(2),  # One class has nothing to learn.
        'space.name': Text(),
        'space.ops': Texts(),
        'space.shared': Flag(),
        'space.edge_mode': Text(),
        'space.topology': Text(),
        'space.steps': Int(1),
        'model.kind': Text(),
        'model.cells': Int(1),
        'model.c': Int(0),  # 0 only for ImageNet (the width is chosen): validate_train.
        'model.stem_multiplier': Int(1),
        'model.depthwise': Text(),
        'search.consistent_regularisers': Flag(),
        'search.consistent_size': Flag(),
        'search.cells': Int(1),
        'search.c': Int(1),
        'search.epochs': Int(1),
        'search.stop_after_unchanged': Int(0),  # 0 = off.
        'search.batch_size': Int(1),
        'search.estimator': Text(),
        'search.eta': _NON_NEGATIVE,
        'search.eps_scale': _POSITIVE,
        'search.w_lr': _POSITIVE,
        'search.w_lr_min': _NON_NEGATIVE,
        'search.w_momentum': _RATE,
        'search.w_wd': _NON_NEGATIVE,
        'search.grad_clip': _NON_NEGATIVE,
        'search.a_lr': _POSITIVE,
        'search.a_b1': _RATE,
        'search.a_b2': _RATE,
        'search.a_wd': _NON_NEGATIVE,
        'search.alpha_init_scale': _NON_NEGATIVE,
        'search.eval_batches': Int(0),
        'search.diag_every': Int(0),
        'search.hessian_every': Int(0),  # 0 = off.
        'search.hessian_iters': Int(1),
        'search.implicit_solver': Text(),
        'search.implicit_maxiter': Int(1),
        'search.implicit_ridge': _NON_NEGATIVE,
        'train.genotype': Text(),
        'train.epochs': Int(1),
        'train.batch_size': Int(1),
        'train.w_lr': _POSITIVE,
        'train.w_lr_min': _NON_NEGATIVE,
        'train.w_lr_schedule': Text(),
        'train.w_lr_gamma': Real(0, 1, lo_open=True),
        'train.warmup_epochs': Int(0),
        'train.eval_batch_size': Int(0),
        'train.w_momentum': _RATE,
        'train.w_wd': _NON_NEGATIVE,
        'train.grad_clip': _NON_NEGATIVE,
        'train.cutout': Int(0),
        'train.resized_crop': Flag(),
        # Brightness, contrast, saturation (factors in [1 - b, 1 + b]), hue (turns).
        'train.color_jitter': Reals((math.inf, math.inf, math.inf, 0.5)),
        'train.drop_path': _RATE,
        'train.auxiliary': Flag(),
        'train.aux_weight': _NON_NEGATIVE,
        'train.label_smoothing': _RATE,
    },
    'ptb': {
        **_LOOP,
        'data.name': Text(),
        'data.data_dir': Text(),
        'data.fortunes_dir': Text(),
        'data.vocab_size': Int(2),
        'data.max_train_tokens': Int(0),
        'model.steps': Int(1),
        'model.ops': Texts(),
        'model.nhid': Int(1),
        'reg.w_wd': _NON_NEGATIVE,
        'reg.dropout': _RATE,
        'reg.dropouth': _RATE,
        'reg.dropoutx': _RATE,
        'reg.dropouti': _RATE,
        'reg.dropoute': _RATE,
        'reg.ar': _NON_NEGATIVE,
        'reg.tar': _NON_NEGATIVE,
        'search.consistency': Flag(),
        'search.w_wd': _NON_NEGATIVE,
        'search.dropoute': _RATE,
        'search.nhid': Int(1),
        'search.epochs': Int(1),
        'search.stop_after_unchanged': Int(0),  # 0 = off.
        'search.batch_size': Int(1),
        'search.bptt': Int(1),
        'search.half_bptt_prob': _PROBABILITY,
        'search.w_lr': _POSITIVE,
        'search.grad_clip': _POSITIVE,  # The reference always clips (0.25).
        'search.estimator': Text(),
        'search.eta': _NON_NEGATIVE,
        'search.eps_scale': _POSITIVE,
        'search.a_lr': _POSITIVE,
        'search.a_b1': _RATE,
        'search.a_b2': _RATE,
        'search.a_wd': _NON_NEGATIVE,
        'search.alpha_init_scale': _NON_NEGATIVE,
        'search.implicit_solver': Text(),
        'search.implicit_maxiter': Int(1),
        'search.implicit_ridge': _NON_NEGATIVE,
        'search.eval_batch_size': Int(1),
        'train.genotype': Text(),
        'train.epochs': Int(1),
        'train.batch_size': Int(1),
        'train.bptt': Int(1),
        'train.half_bptt_prob': _PROBABILITY,
        'train.seq_len_std': _NON_NEGATIVE,
        'train.max_seq_len_delta': Int(0),
        'train.seq_len_bucket': Int(1),
        'train.w_lr': _POSITIVE,
        'train.grad_clip': _POSITIVE,
        'train.nonmono': Int(1),
        'train.eval_batch_size': Int(1),
        'train.test_batch_size': Int(1),
    },
}

# Fields a resumed run may change: how long it runs, how it logs, checkpoints and
# evaluates, and where its inputs live. Everything else changes what the run computes.
RESUMABLE = frozenset({
    'search.epochs', 'train.epochs', 'search.stop_after_unchanged',  # Its length.
    'log_every_steps', 'checkpoint_every_steps', 'keep_checkpoints',
    # Evaluation and diagnostics read the state; they do not change it.
    'search.eval_batches', 'search.diag_every', 'search.hessian_every',
    'search.eval_batch_size',
    'train.eval_batch_size', 'train.test_batch_size',
    # Locations, not contents (a retraining also fingerprints the genotype itself).
    'data.data_dir', 'data.fortunes_dir', 'train.genotype',
    # The depthwise kernel computes the same function (e.g. moving from CPU to GPU).
    'model.depthwise',
})


def flatten(config) -> Iterator[tuple[str, Any]]:
  """(dotted name, value) of every leaf of a ConfigDict, in its order."""
  for key, value in config.items():
    if hasattr(value, 'items'):
      for sub, leaf in flatten(value):
        yield f'{key}.{sub}', leaf
    else:
      yield key, value


def check(config) -> None:
  """Raises ConfigError with one line per field whose value its spec refuses.

  Fields the task's table does not list are not checked here (a config module's
  own additions); the validators check what they read.
  """
  table = FIELDS.get(config.get('task', 'image'))
  if table is None:
    raise errors.ConfigError(
        f'task must be one of {tuple(FIELDS)}, got {config.get("task")!r}')
  bad = []
  for name, value in flatten(config):
    spec = table.get(name)
    problem = spec.problem(value) if spec is not None else None
    if problem:
      bad.append(f'{name} {problem}, got {value!r}')
  if bad:
    raise errors.ConfigError('\n'.join(bad))


def _json(value: Any) -> Any:
  return json.loads(json.dumps(value))  # Tuples as lists, as a checkpoint stores them.


def fingerprint(config) -> dict[str, Any]:
  """{dotted name: value} of every field a resumed run must keep."""
  return {k: _json(v) for k, v in flatten(config) if k not in RESUMABLE}


def diff(old: Mapping[str, Any], new: Mapping[str, Any]) -> str:
  """`name old → new` for every differing field, on one line ('' when equal)."""
  missing = object()
  parts = []
  for name in sorted(set(old) | set(new)):
    a, b = old.get(name, missing), new.get(name, missing)
    if a != b:
      show = lambda v: 'absent' if v is missing else json.dumps(v)
      parts.append(f'{name} {show(a)} → {show(b)}')
  return ', '.join(parts)
