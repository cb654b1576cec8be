"""The one run loop of every driver: resume, steps, hooks, checkpoints.

    state = init_state(...)                                   # the driver's
    batches = loop.Batches.fixed(epochs, steps_per_epoch, get)  # get(epoch, index)
    result = loop.run(state, step_fn, batches, hooks, workdir, config=config, mesh=mesh)

`run` reads top to bottom, as flax's `train_and_evaluate` and big_vision's `train.py`:

    lock the workdir; resume from the newest readable checkpoint of this config, or
    start fresh; write config.json
    for every epoch left:
      hooks.begin_epoch
      for every batch left in it:
        hooks.before_step;  state, metrics = step_fn(state, batch);  finite check
        hooks.after_step
        at the epoch's last batch: hooks.end_epoch
        at epoch ends, every `checkpoint_every_steps` and when stopping: save
    when every epoch is done: hooks.end

A driver builds only its state, its jitted step and its batch source, and adds the
hooks that are its own (per-epoch genotypes and evaluation, the ASGD switch);
logging and progress are the `LogMetrics` hook. Resume is exact: batches are pure
functions of (epoch, index), steps fold the step number into their keys, the
checkpoint holds the whole step state, the data position and the hooks' host-side
state, and `metrics.jsonl` is cut back to the checkpoint's step before the run
appends to it.

What keeps a run from losing work or recording something false, once for every
driver:
- One live run per workdir (`amdarts.workdir_lock`): a second fails at once.
- Every checkpoint stores the run's fingerprint: the config without the fields a
  resumed run may change (`config_fields.RESUMABLE`), plus what the driver adds (the
  genotype it trains). A restart under another one is refused with the differing
  fields, before anything is written; config.json is written after that check.
- A checkpoint that cannot be read is moved aside with a warning and the run
  resumes from the newest readable one; it refuses only when none is readable.
- Every step's loss, metrics and new state are checked for finiteness on the
  device (one small jitted reduction), fetched one step behind; before any hook
  that reads the state and before every save the check is brought up to date, so a
  non-finite state is never checkpointed and the last good checkpoint stays. The
  error names the step and the config field most likely at fault (`blame`).
- Hooks marked `essential = False` (figures) log a warning when they fail; the run
  goes on. Checkpoints and metrics are essential.
- With many processes only process 0 touches the workdir; it broadcasts what it
  read (the resumed state, or the refusal) to the others.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import sys
import time
from typing import Any, Callable, Iterable, Mapping, Sequence

from absl import logging
import flax
import jax
import jax.numpy as jnp

from amdarts import checkpoint as checkpoint_lib
from amdarts import config_fields
from amdarts import errors
from amdarts import metrics as metrics_lib
from amdarts import parallel
from amdarts import workdir_lock

StepFn = Callable[[Any, Any], tuple[Any, Mapping[str, jax.Array]]]


@dataclasses.dataclass(frozen=True)
class Batches:
  """A run's batch source: every batch a pure function of (epoch, index).

  Attributes:
    epochs: the epoch numbers, in order (their numbering is the source's: the
      image drivers count from 0, the recurrent ones from 1 as their reference).
    epoch_length: epoch -> number of steps in it.
    get: (epoch, index) -> the batch, placed on the devices.
    total_steps: steps of the whole run, for the progress bar (an estimate where
      epochs differ in length).
  """

  epochs: range
  epoch_length: Callable[[int], int]
  get: Callable[[int, int], Any]
  total_steps: int

  @classmethod
  def fixed(cls, epochs: int, steps_per_epoch: int, get: Callable[[int, int], Any]
            ) -> 'Batches':
    """`epochs` epochs 0, 1, ... of `steps_per_epoch` steps each."""
    return cls(range(epochs), lambda _: steps_per_epoch, get, epochs * steps_per_epoch)


@dataclasses.dataclass
class Run:
  """Where a run is, and where its records go; what every hook receives.

  Attributes:
    workdir: the output directory.
    writer: appends records to `<workdir>/metrics.jsonl` (and TensorBoard); records
      nothing on the other processes of a multi-host run.
    progress: the terminal progress bar.
    log_every_steps: the logging period.
    stop_after: the run stops once this many steps are done (None: all epochs).
    primary: whether this process writes files (process 0); hooks write only there.
    step: steps done (before a step: not counting it; after: counting it).
    epoch: the epoch of the current batch.
    index: the current batch's index within `epoch`.
    epoch_length: the steps of `epoch`.
    finish: set by a hook (at an epoch's end, or at `start` when resuming a run
      that had finished so) to finish the run there: the remaining epochs are
      skipped and the run ends as after its last one (`end`, `finished=True`).
    saved_step: the step of the newest checkpoint (None: none yet).
  """

  workdir: str
  writer: metrics_lib.MetricWriter | metrics_lib.NullWriter
  progress: metrics_lib.Progress
  log_every_steps: int
  stop_after: int | None
  primary: bool = True
  step: int = 0
  epoch: int = 0
  index: int = 0
  epoch_length: int = 0
  finish: bool = False
  saved_step: int | None = None

  @property
  def epoch_end(self) -> bool:
    """Whether the current batch is its epoch's last."""
    return self.index == self.epoch_length - 1

  @property
  def stopping(self) -> bool:
    """Whether `stop_after` steps are done."""
    return self.stop_after is not None and self.step >= self.stop_after

  @property
  def log_step(self) -> bool:
    """Whether the step just taken is recorded: periodically, at epoch ends, at a stop."""
    return self.step % self.log_every_steps == 0 or self.epoch_end or self.stopping


class Hook:
  """Something a run does besides stepping; every event is a no-op by default.

  Events that return the state may change it (reset epoch sums, carry a snapshot);
  the others only read it. A hook that keeps host-side values a resumed run needs
  (best validation loss, a history) returns them from `state_dict`: they are saved
  in every checkpoint's metadata under `name` and handed back to `load_state_dict`.
  A hook whose output the run does not need (figures) sets `essential = False`: an
  exception in it is logged as a warning and the run goes on.
  """

  name: str = ''
  essential: bool = True

  def start(self, run: Run, state: Any) -> None:
    """Once, after resuming (or starting), before the first step of this call."""

  def begin_epoch(self, run: Run, state: Any) -> Any:
    """Before the first batch of an epoch (not when resuming inside one)."""
    return state

  def before_step(self, run: Run, state: Any, batch: Any) -> None:
    """Before `step_fn` runs on `batch`."""

  def after_step(self, run: Run, state: Any, metrics: Mapping[str, jax.Array]) -> None:
    """After a step, with its (device) metrics; on log steps they are known finite."""

  def end_epoch(self, run: Run, state: Any) -> Any:
    """After an epoch's last step, before its checkpoint."""
    return state

  def end(self, run: Run, state: Any) -> None:
    """Once every epoch is done (also when a resumed run had none left)."""

  def state_dict(self) -> dict:
    """JSON-serialisable host-side state to checkpoint."""
    return {}

  def load_state_dict(self, state: dict) -> None:
    """Restores what `state_dict` returned, when resuming."""


_STATE_EVENTS = ('begin_epoch', 'end_epoch')  # The events that return the state.


def _call(hooks: Sequence[Hook], event: str, r: Run, state: Any, *args: Any) -> Any:
  """Calls `event` on every hook in order; returns the state as the hooks left it."""
  for hook in hooks:
    try:
      out = getattr(hook, event)(r, state, *args)
    except Exception as e:  # pylint: disable=broad-except
      if hook.essential:
        raise
      logging.warning('%s.%s failed at step %d (%s: %s); the run goes on without it',
                      type(hook).__name__, event, r.step, type(e).__name__, e)
      continue
    if event in _STATE_EVENTS:
      state = out
  return state


class LogMetrics(Hook):
  """On log steps: fetch the metrics, record them and show progress.

  The loop has checked them (and the state) for finiteness before this runs.
  """

  def __init__(self, describe: Callable[[Mapping[str, float]], str] = lambda m: ''):
    """Args:
      describe: host metrics -> the progress bar's text.
    """
    self.describe = describe
    self._t_last, self._step_last = 0.0, 0

  def start(self, run: Run, state: Any) -> None:
    self._t_last, self._step_last = time.time(), run.step

  def after_step(self, run: Run, state: Any, metrics: Mapping[str, jax.Array]) -> None:
    if not run.log_step:
      return
    values = {k: float(v) for k, v in jax.device_get(metrics).items()}
    now = time.time()
    rate = (run.step - self._step_last) / max(now - self._t_last, 1e-9)
    self._t_last, self._step_last = now, run.step
    run.writer.write(run.step, {**values, 'epoch': run.epoch, 'steps_per_sec': rate})
    run.progress.update(run.step, f'epoch {run.epoch} {self.describe(values)}')


class StopWhenUnchanged(Hook):
  """Finishes a run once `describe(state)` has not changed for `patience` epochs.

  The paper's stopping rule for the recurrent search ("till the architecture does
  not change for sufficiently long", Section 3.3), for any search: `describe` gives
  the derived genotype as text. At every epoch's end the value is compared with the
  previous epoch's; after `patience` unchanged epochs in a row the hook records
  `{'epoch', 'unchanged_epochs', 'value'}` (kind 'stop') in metrics.jsonl and sets
  `run.finish`, so the run ends there as after its last epoch. The count and the
  last value are checkpointed, so a resumed run counts on, and a resumed run that
  had finished so stays finished.
  """

  name = 'stop_when_unchanged'

  def __init__(self, describe: Callable[[Any], str], patience: int, *,
               epoch_offset: int = 0):
    """Args:
      describe: state -> a JSON-serialisable value (e.g. the genotype's text).
      patience: epochs without a change that end the run (>= 1).
      epoch_offset: added to the loop's epoch in the record, so that it reads as
        the driver's epoch records (the image search counts those from 1).
    """
    if patience < 1:
      raise ValueError(f'patience must be >= 1, got {patience}')
    self.describe, self.patience, self.epoch_offset = describe, patience, epoch_offset
    self.last, self.unchanged, self.stopped = None, 0, False

  def start(self, run: Run, state: Any) -> None:
    if self.stopped:
      run.finish = True

  def end_epoch(self, run: Run, state: Any) -> Any:
    value = self.describe(state)
    self.unchanged = self.unchanged + 1 if value == self.last else 0
    self.last = value
    if self.unchanged >= self.patience:
      self.stopped = run.finish = True
      epoch = run.epoch + self.epoch_offset
      run.writer.write(run.step, {'epoch': epoch, 'unchanged_epochs': self.unchanged,
                                  'value': value}, kind='stop')
      logging.info('epoch %d: unchanged for %d epochs, finishing', epoch, self.unchanged)
    return state

  def state_dict(self) -> dict:
    return {'last': self.last, 'unchanged': self.unchanged, 'stopped': self.stopped}

  def load_state_dict(self, state: dict) -> None:
    self.last, self.unchanged = state['last'], int(state['unchanged'])
    self.stopped = bool(state['stopped'])


@dataclasses.dataclass
class Result:
  """What `run` ends with.

  Attributes:
    state: the final step state (on the devices).
    step: steps done.
    epoch: the epoch a continuation would start in.
    finished: whether every epoch is done (False: stopped by `stop_after`).
  """

  state: Any
  step: int
  epoch: int
  finished: bool


def run(state: Any, step_fn: StepFn, batches: Batches, hooks: Sequence[Hook], workdir: str,
        *, config, mesh: jax.sharding.Mesh, stop_after: int | None = None,
        fingerprint: Mapping[str, Any] | None = None,
        blame: Callable[[Sequence[str]], str] | None = None) -> Result:
  """Runs (or resumes) a run in `workdir` to its end or to `stop_after` steps.

  Args:
    state: the fresh step state; also the template a checkpoint is restored into.
    step_fn: (state, batch) -> (state, metrics), jitted by the driver (it may donate
      the state).
    batches: the batch source.
    hooks: called in this order at every event.
    workdir: output directory: checkpoints/, metrics.jsonl, config.json, .lock.
    config: the run's config, already validated; its `log_every_steps`,
      `checkpoint_every_steps` (0 = only at epoch ends and stops) and
      `keep_checkpoints` apply; its fingerprint goes into every checkpoint and it
      is written to `<workdir>/config.json`.
    mesh: the devices; the state is replicated over them.
    stop_after: stop once this many steps are done, with a checkpoint (e.g. to split
      a long run over jobs); None runs every epoch.
    fingerprint: what else must not change between a run and its resumption (e.g.
      the genotype being trained); stored in every checkpoint.
    blame: the names of the non-finite parts (state fields, metrics) -> the config
      field most likely at fault, for the divergence message.

  Returns:
    The `Result`.

  Raises:
    WorkdirBusy: another live process runs in `workdir`.
    CheckpointError: no checkpoint is readable, or the newest readable one belongs
      to another model or fingerprint.
    NonFiniteError: a step made the loss, a metric or the state non-finite.
  """
  fingerprint = {'config': config_fields.fingerprint(config), **(fingerprint or {})}
  primary = parallel.is_primary()
  lock = ckpt = writer = progress = None
  try:
    lock, ckpt, state, (step, epoch, index), hook_states, resumed = _start(
        workdir, config, state, batches, fingerprint)
    state = parallel.put_replicated(state, mesh)
    for hook in hooks:
      if hook.name in hook_states:
        hook.load_state_dict(hook_states[hook.name])
    if primary:
      # Before the writer opens: steps the resumed run repeats must not be recorded twice.
      metrics_lib.truncate_after(os.path.join(workdir, 'metrics.jsonl'), step)
      _write_config(config, workdir)
      writer = metrics_lib.MetricWriter(workdir)
    else:
      writer = metrics_lib.NullWriter()
    progress = metrics_lib.Progress(batches.total_steps, start=step, quiet=not primary)
    r = Run(workdir, writer, progress, config.log_every_steps, stop_after, primary=primary,
            step=step, saved_step=step if resumed else None)
    finite = _FiniteCheck(r, config, blame)
    _call(hooks, 'start', r, state)

    def save():
      finite.settle()  # Never a checkpoint of a non-finite state.
      if primary:
        next_position = (r.epoch + 1, 0) if r.epoch_end else (r.epoch, r.index + 1)
        _save(ckpt, state, r.step, next_position, hooks, fingerprint)
      r.saved_step = r.step

    next_epoch = batches.epochs.stop
    for epoch in range(epoch, batches.epochs.stop):
      if r.finish:  # A hook ended the run at the previous epoch's end (or resume).
        next_epoch = epoch
        break
      r.epoch, r.epoch_length = epoch, batches.epoch_length(epoch)
      for index in range(index, r.epoch_length):
        r.index = index
        if r.stopping:
          return Result(state, r.step, r.epoch, finished=False)
        if r.index == 0:
          state = _call(hooks, 'begin_epoch', r, state)
        batch = batches.get(r.epoch, r.index)
        _call(hooks, 'before_step', r, state, batch)
        state, metrics = step_fn(state, batch)
        r.step += 1  # Counted here: reading state.step would wait for the device.
        finite.push(state, metrics)  # Checks the step before this one.
        every = config.checkpoint_every_steps
        saving = r.epoch_end or r.stopping or (every and r.step % every == 0)
        if r.log_step or saving:
          finite.settle()  # Hooks fetch this step's values here anyway.
        _call(hooks, 'after_step', r, state, metrics)
        if r.epoch_end:
          state = _call(hooks, 'end_epoch', r, state)
        if saving:
          save()
      index = 0
    _call(hooks, 'end', r, state)
    return Result(state, r.step, next_epoch, finished=True)
  finally:  # Also on a crash: finish the checkpoint in flight, then unlock.
    if progress is not None:
      progress.close()
    if ckpt is not None:
      ckpt.close()
    if writer is not None:
      writer.close()
    if lock is not None:
      lock.release()


# ------------------------------------------------------------------ finiteness


def _part(key) -> str:
  """The name of a pytree path's first key: a state field, a dict key, an index."""
  for attr in ('name', 'key', 'idx'):
    if hasattr(key, attr):
      return str(getattr(key, attr))
  return str(key)


@jax.jit
def _finite_parts(state: Any, metrics: Mapping[str, jax.Array]) -> dict[str, jax.Array]:
  """{state field or metric: whether all its floats are finite}, one fused reduction."""
  parts = {}
  for tree in (state, metrics):
    for path, x in jax.tree_util.tree_leaves_with_path(tree):
      if not jnp.issubdtype(x.dtype, jnp.inexact):  # Keys, counters, flags.
        continue
      name = _part(path[0]) if path else 'state'
      ok = jnp.all(jnp.isfinite(x))
      parts[name] = ok if name not in parts else parts[name] & ok
  return parts


class _FiniteCheck:
  """Every step's finiteness flags, fetched one step behind or when settled.

  Fetching a step's flags waits for that step; waiting for the previous one while
  the current one runs keeps the device busy. `settle` waits for the newest.
  """

  def __init__(self, r: Run, config, blame: Callable[[Sequence[str]], str] | None):
    self.r, self.config, self.blame = r, config, blame
    self._pending: list[tuple[int, dict]] = []

  def push(self, state: Any, metrics: Mapping[str, jax.Array]) -> None:
    self._pending.append((self.r.step, _finite_parts(state, metrics)))
    while len(self._pending) > 1:
      self._verify(*self._pending.pop(0))

  def settle(self) -> None:
    while self._pending:
      self._verify(*self._pending.pop(0))

  def _verify(self, step: int, flags: dict) -> None:
    bad = sorted(k for k, ok in jax.device_get(flags).items() if not ok)
    if not bad:
      return
    self._pending.clear()
    kept = ('no checkpoint was written' if self.r.saved_step is None else
            f'the checkpoint of step {self.r.saved_step} is kept')
    if self.blame is None:
      hint = 'lower the learning rate or check the data'
    else:
      field = self.blame(bad)
      hint = f'most likely at fault: {field}={_value(self.config, field)} (or the data)'
    raise errors.NonFiniteError(f'non-finite {", ".join(bad)} at step {step}, not '
                                f'checkpointed ({kept}); {hint}')


def _value(config, field: str) -> str:
  node = config
  for key in field.split('.'):
    node = node[key]
  return f'{node:g}' if isinstance(node, float) else repr(node)


# ------------------------------------------------------------------ the workdir


def _start(workdir: str, config, state: Any, batches: Batches, fingerprint: dict):
  """Process 0 locks the workdir and resumes; every process gets the same outcome.

  Returns:
    (lock, checkpointer: both None on other processes, state, (step, epoch, index)
    of the next batch, the hooks' saved states, whether a checkpoint was resumed).
  """
  many = jax.process_count() > 1
  lock = ckpt = None
  if parallel.is_primary():
    try:
      os.makedirs(workdir, exist_ok=True)
      lock = workdir_lock.WorkdirLock(workdir).acquire()
      ckpt = checkpoint_lib.Checkpointer(workdir, max_to_keep=config.keep_checkpoints)
      restored, position, hook_states, resumed = _restore(ckpt, state, batches, fingerprint)
    except Exception as e:
      if ckpt is not None:
        ckpt.close()
      if lock is not None:
        lock.release()
      if many:  # The others wait for the outcome; tell them.
        parallel.broadcast_bytes(json.dumps(
            {'error': str(e), 'user': isinstance(e, errors.UserError)}).encode())
      raise
    if resumed is not None:
      _announce(resumed, position, batches)
    if not many:
      return lock, ckpt, restored, position, hook_states, resumed is not None
    parallel.broadcast_bytes(json.dumps(
        {'position': position, 'hooks': hook_states, 'resumed': resumed}).encode())
    if resumed is not None:
      parallel.broadcast_bytes(flax.serialization.to_bytes(restored))
    return lock, ckpt, restored, position, hook_states, resumed is not None
  outcome = json.loads(parallel.broadcast_bytes(None))
  if 'error' in outcome:
    kind = errors.UserError if outcome['user'] else RuntimeError
    raise kind(f'process 0: {outcome["error"]}')
  if outcome['resumed'] is not None:
    state = flax.serialization.from_bytes(state, parallel.broadcast_bytes(None))
  return (None, None, state, tuple(outcome['position']), outcome['hooks'],
          outcome['resumed'] is not None)


def _announce(step: int, position: tuple[int, int, int], batches: Batches) -> None:
  """One visible line saying where the run picks up (stderr, as the progress bar)."""
  _, epoch, index = position
  n = len(batches.epochs)
  number = epoch - batches.epochs.start + 1  # 1-based whatever the source's numbering.
  where = (f'all {n} epochs done' if number > n else
           f'epoch {number} of {n}, ' + ('from its start' if index == 0 else
                                         f'batch {index + 1} next'))
  print(f'resumed from step {step} ({where})', file=sys.stderr, flush=True)


def _restore(ckpt: checkpoint_lib.Checkpointer, state: Any, batches: Batches,
             fingerprint: dict) -> tuple[Any, tuple[int, int, int], dict, int | None]:
  """The run's one resume path: the newest readable checkpoint, or the fresh start.

  Unreadable checkpoints newer than the one resumed are moved aside (`set_aside`),
  each with a warning; nothing is moved when none is readable.

  Returns:
    (state, (step, epoch, index) of the next batch, the hooks' saved states, the
    step resumed or None for a fresh start).

  Raises:
    CheckpointError: no checkpoint is readable, or the newest readable one is of
      another model or fingerprint.
  """
  steps = ckpt.steps()
  if not steps:
    return state, (0, batches.epochs.start, 0), {}, None
  unreadable = []
  for step in steps:
    try:
      _check_fingerprint(ckpt, step, ckpt.read_meta(step), fingerprint)
      restored, meta = ckpt.restore(state, step)
    except checkpoint_lib.CorruptCheckpoint as e:
      unreadable.append((step, e))
      continue
    for bad, e in unreadable:
      logging.warning('%s; moved it to %s, resuming from step %d', e, ckpt.set_aside(bad),
                      step)
    position = (int(meta['step']), int(meta['epoch']), int(meta['index']))
    return restored, position, meta.get('hooks', {}), step
  raise checkpoint_lib.CheckpointError(
      f'no readable checkpoint in {ckpt.directory} (steps {", ".join(map(str, steps))}: '
      f'{unreadable[0][1]}); move the folder away to start afresh')


def _check_fingerprint(ckpt: checkpoint_lib.Checkpointer, step: int, meta: dict,
                       fingerprint: dict) -> None:
  """Raises CheckpointError when checkpoint `step` was written under another fingerprint."""
  stored = meta.get('fingerprint', {})
  for key, value in fingerprint.items():
    if key == 'config':
      if 'config' not in stored:  # Written before configs were fingerprinted.
        logging.warning('checkpoint %d stores no config to compare; resuming it as is', step)
        continue
      changed = config_fields.diff(stored['config'], value)
      if changed:
        raise checkpoint_lib.CheckpointError(
            f'{ckpt.workdir} holds a run of another config ({changed}); use a new '
            '--workdir (a resumed run may change only its length, logging, '
            'checkpointing, evaluation and data locations)')
    elif stored.get(key) != value:
      raise checkpoint_lib.CheckpointError(
          f'{ckpt.directory} holds a run of another {key}; use a new --workdir')


def _save(ckpt: checkpoint_lib.Checkpointer, state: Any, step: int,
          next_position: tuple[int, int], hooks: Sequence[Hook], fingerprint: dict) -> None:
  """The only place a run writes a checkpoint: state, position, hooks, fingerprint."""
  meta = {'step': step, 'epoch': next_position[0], 'index': next_position[1],
          'hooks': {h.name: h.state_dict() for h in hooks if h.name},
          'fingerprint': fingerprint}
  ckpt.save(step, state, meta)


def _write_config(config, workdir: str) -> None:
  """config.json, whole or not at all (written once the resume checks passed)."""
  path = os.path.join(workdir, 'config.json')
  with open(path + '.tmp', 'w') as f:
    f.write(config.to_json_best_effort(indent=1))
  os.replace(path + '.tmp', path)


def sum_batches(fn: Callable[[Any, Any], Mapping[str, jax.Array]], state: Any,
                batches: Iterable[Any]) -> dict[str, float]:
  """Σ over `batches` of `fn(state, batch)`, dicts of per-batch sums, fetched once.

  The evaluation loop of the image drivers: sums (not means) so that a padded,
  masked last batch still gives exact means over a split.
  """
  totals = None
  for batch in batches:
    sums = fn(state, batch)
    totals = sums if totals is None else jax.tree.map(jnp.add, totals, sums)
  if totals is None:
    raise ValueError('no batches to evaluate')
  return {k: float(v) for k, v in jax.device_get(totals).items()}


@functools.lru_cache(maxsize=16)
def cached(factory: Callable[..., Any], *args: Any) -> Any:
  """`factory(*args)`, built once per process for equal (hashable) arguments.

  The drivers build their jitted steps through this, so runs of one setting in one
  process (a resumed run, the tests) share the compiled code; the one place that
  holds compiled steps alive.
  """
  return factory(*args)
