"""Metrics out of a run: JSONL (the record), TensorBoard events, a terminal progress bar."""

from __future__ import annotations

import json
import math
import os
import sys
import time
from typing import Mapping

from absl import logging
import numpy as np

from amdarts import errors


def _scalar(v):
  v = np.asarray(v)
  return v.item() if v.size == 1 else v.tolist()


class MetricWriter:
  """Appends one JSON object per record to `<workdir>/<name>.jsonl` and to TensorBoard.

  A resumed run first calls `truncate_after(path, step)`, so the steps it repeats are
  not recorded twice. The JSONL file is the record: failing to write it fails the
  run. TensorBoard is a view of it: a failure there is a warning and ends only the
  TensorBoard output.
  """

  def __init__(self, workdir: str, name: str = 'metrics', tensorboard: bool = True):
    os.makedirs(workdir, exist_ok=True)
    self.path = os.path.join(workdir, f'{name}.jsonl')
    self._file = open(self.path, 'a')
    self._tb = None
    if tensorboard:
      try:
        from tensorboardX import SummaryWriter
        self._tb = SummaryWriter(os.path.join(workdir, 'tensorboard'))
      except ImportError:  # TensorBoard output is optional.
        self._tb = None

  def write(self, step: int, metrics: Mapping, kind: str = 'train') -> None:
    record = {'step': int(step), 'kind': kind}
    record.update({k: _scalar(v) for k, v in metrics.items()})
    self._file.write(json.dumps(record) + '\n')
    self._file.flush()
    if self._tb is not None:
      try:
        for k, v in record.items():
          if isinstance(v, (int, float)) and k != 'step':
            self._tb.add_scalar(f'{kind}/{k}', v, step)
      except Exception as e:  # pylint: disable=broad-except
        self._drop_tensorboard(e)

  def _drop_tensorboard(self, e: Exception) -> None:
    logging.warning('TensorBoard output stopped (%s: %s); metrics.jsonl goes on',
                    type(e).__name__, e)
    tb, self._tb = self._tb, None
    try:
      tb.close()
    except Exception:  # pylint: disable=broad-except
      pass

  def close(self) -> None:
    self._file.close()
    if self._tb is not None:
      try:
        self._tb.close()
      except Exception as e:  # pylint: disable=broad-except
        self._drop_tensorboard(e)


class NullWriter:
  """A `MetricWriter` that records nothing: the other processes of a multi-host run."""

  path = None

  def write(self, step: int, metrics: Mapping, kind: str = 'train') -> None:
    del step, metrics, kind

  def close(self) -> None:
    pass


def check_finite(step: int, values: Mapping, *,
                 hint: str = 'lower the learning rate or check the data') -> None:
  """Raises NonFiniteError (a FloatingPointError) naming the step and the bad metrics.

  Args:
    step: the step the values belong to.
    values: metric name -> scalar or array.
    hint: what to change, ending the message; a driver names its own config fields.
  """
  bad = sorted(k for k, v in values.items() if not np.all(np.isfinite(v)))
  if bad:
    raise errors.NonFiniteError(f'non-finite {", ".join(bad)} at step {step}; {hint}')


def read_jsonl(path: str, kind: str | None = None) -> list[dict]:
  if not os.path.exists(path):
    return []
  with open(path) as f:
    rows = [json.loads(line) for line in f if line.strip()]
  return [r for r in rows if kind is None or r.get('kind') == kind]


def truncate_after(path: str, step: int) -> None:
  """Drops records after `step`: a resumed run rewrites the steps it repeats."""
  rows = read_jsonl(path)
  with open(path, 'w') as f:
    for r in rows:
      if r['step'] <= step:
        f.write(json.dumps(r) + '\n')


def format_duration(seconds: float) -> str:
  if not math.isfinite(seconds):
    return '?'
  seconds = int(seconds)
  h, rem = divmod(seconds, 3600)
  m, s = divmod(rem, 60)
  return f'{h}:{m:02d}:{s:02d}' if h else f'{m:02d}:{s:02d}'


class Progress:
  """A one-line progress bar with ETA on stderr (plain lines when not a terminal)."""

  def __init__(self, total: int, start: int = 0, stream=None, width: int = 30,
               quiet: bool = False):
    """Args:
      total: steps of the whole run.
      start: steps done before this call (a resumed run).
      stream: where to draw (stderr).
      width: characters of the bar.
      quiet: draw nothing (the other processes of a multi-host run).
    """
    self.total, self.start, self.width, self.quiet = total, start, width, quiet
    self.stream = stream or sys.stderr
    self._t0 = time.time()
    self._tty = self.stream.isatty()

  def update(self, step: int, text: str = '') -> None:
    if self.quiet:
      return
    done = step - self.start
    elapsed = time.time() - self._t0
    eta = elapsed / done * (self.total - step) if done > 0 else float('nan')
    frac = step / max(self.total, 1)
    bar = '#' * int(frac * self.width)
    line = (f'[{bar:<{self.width}}] {step}/{self.total} '
            f'{format_duration(elapsed)}<{format_duration(eta)} {text}')
    if self._tty:
      self.stream.write('\r' + line[:160].ljust(160))
    else:
      self.stream.write(line + '\n')
    self.stream.flush()

  def close(self) -> None:
    if self._tty and not self.quiet:
      self.stream.write('\n')
