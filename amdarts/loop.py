"""The one run loop of every driver: resume, steps, hooks, checkpoints.

    state = init_state(...)                                   # the driver's
    batches = loop.Batches.fixed(epochs, steps_per_epoch, get)  # get(epoch, index)
    result = loop.run(state, step_fn, batches, hooks, workdir, config=config, mesh=mesh)

`run` reads top to bottom, as flax's `train_and_evaluate` and big_vision's `train.py`:

    resume from the latest checkpoint or start fresh; write config.json
    for every epoch left:
      hooks.begin_epoch
      for every batch left in it:
        hooks.before_step;  state, metrics = step_fn(state, batch);  hooks.after_step
        at the epoch's last batch: hooks.end_epoch
        at epoch ends, every `checkpoint_every_steps` and when stopping: save
    when every epoch is done: hooks.end

A driver builds only its state, its jitted step and its batch source, and adds the
hooks that are its own (per-epoch genotypes and evaluation, the ASGD switch);
logging, finite checks and progress are the `LogMetrics` hook. Resume is exact:
batches are pure functions of (epoch, index), steps fold the step number into their
keys, the checkpoint holds the whole step state, the data position and the hooks'
host-side state, and `metrics.jsonl` is cut back to the checkpoint's step before the
run appends to it.

Everything a reliability rule needs passes through here once: the resume path
(`_restore`), the one save (`_save`, the only place a checkpoint is written), the
run's fingerprint stored in every checkpoint's metadata and compared on resume, and
every hook call, so a workdir lock, a per-step finite check that gates saving, or
hooks that warn instead of failing go into this module, not into four drivers.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import time
from typing import Any, Callable, Iterable, Mapping, Sequence

from absl import logging
import jax
import jax.numpy as jnp

from amdarts import checkpoint as checkpoint_lib
from amdarts import metrics as metrics_lib
from amdarts import parallel

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
    writer: appends records to `<workdir>/metrics.jsonl` (and TensorBoard).
    progress: the terminal progress bar.
    log_every_steps: the logging period.
    stop_after: the run stops once this many steps are done (None: all epochs).
    step: steps done (before a step: not counting it; after: counting it).
    epoch: the epoch of the current batch.
    index: the current batch's index within `epoch`.
    epoch_length: the steps of `epoch`.
    finish: set by a hook (at an epoch's end, or at `start` when resuming a run
      that had finished so) to finish the run there: the remaining epochs are
      skipped and the run ends as after its last one (`end`, `finished=True`).
  """

  workdir: str
  writer: metrics_lib.MetricWriter
  progress: metrics_lib.Progress
  log_every_steps: int
  stop_after: int | None
  step: int = 0
  epoch: int = 0
  index: int = 0
  epoch_length: int = 0
  finish: bool = False

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
  """

  name: str = ''

  def start(self, run: Run, state: Any) -> None:
    """Once, after resuming (or starting), before the first step of this call."""

  def begin_epoch(self, run: Run, state: Any) -> Any:
    """Before the first batch of an epoch (not when resuming inside one)."""
    return state

  def before_step(self, run: Run, state: Any, batch: Any) -> None:
    """Before `step_fn` runs on `batch`."""

  def after_step(self, run: Run, state: Any, metrics: Mapping[str, jax.Array]) -> None:
    """After a step, with its (device) metrics."""

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


class LogMetrics(Hook):
  """On log steps: fetch the metrics, check them, record them and show progress."""

  def __init__(self, describe: Callable[[Mapping[str, float]], str] = lambda m: '', *,
               hint: str = 'lower the learning rate or check the data'):
    """Args:
      describe: host metrics -> the progress bar's text.
      hint: what to change when a metric is not finite (names the config fields).
    """
    self.describe = describe
    self.hint = hint
    self._t_last, self._step_last = 0.0, 0

  def start(self, run: Run, state: Any) -> None:
    self._t_last, self._step_last = time.time(), run.step

  def after_step(self, run: Run, state: Any, metrics: Mapping[str, jax.Array]) -> None:
    if not run.log_step:
      return
    values = {k: float(v) for k, v in jax.device_get(metrics).items()}
    metrics_lib.check_finite(run.step, values, hint=self.hint)
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
        fingerprint: Mapping[str, Any] | None = None) -> Result:
  """Runs (or resumes) a run in `workdir` to its end or to `stop_after` steps.

  Args:
    state: the fresh step state; also the template a checkpoint is restored into.
    step_fn: (state, batch) -> (state, metrics), jitted by the driver (it may donate
      the state).
    batches: the batch source.
    hooks: called in this order at every event.
    workdir: output directory: checkpoints/, metrics.jsonl, config.json.
    config: the run's config; its `log_every_steps`, `checkpoint_every_steps` (0 =
      only at epoch ends and stops) and `keep_checkpoints` apply, and it is written
      to `<workdir>/config.json`.
    mesh: the devices; the state is replicated over them.
    stop_after: stop once this many steps are done, with a checkpoint (e.g. to split
      a long run over jobs); None runs every epoch.
    fingerprint: what must not change between a run and its resumption (e.g. the
      genotype being trained); stored in every checkpoint.

  Returns:
    The `Result`.

  Raises:
    CheckpointError: the latest checkpoint is unreadable, belongs to another
      model, or its fingerprint differs.
  """
  fingerprint = dict(fingerprint or {})
  os.makedirs(workdir, exist_ok=True)
  ckpt = checkpoint_lib.Checkpointer(workdir, max_to_keep=config.keep_checkpoints)
  writer = progress = None
  try:
    state, (step, epoch, index), hook_states = _restore(ckpt, state, batches, fingerprint)
    state = parallel.put_replicated(state, mesh)
    for hook in hooks:
      if hook.name in hook_states:
        hook.load_state_dict(hook_states[hook.name])
    # Before the writer opens: steps the resumed run repeats must not be recorded twice.
    metrics_lib.truncate_after(os.path.join(workdir, 'metrics.jsonl'), step)
    _write_config(config, workdir)
    writer = metrics_lib.MetricWriter(workdir)
    progress = metrics_lib.Progress(batches.total_steps, start=step)
    r = Run(workdir, writer, progress, config.log_every_steps, stop_after, step=step)
    for hook in hooks:
      hook.start(r, state)

    def save():
      next_position = (r.epoch + 1, 0) if r.epoch_end else (r.epoch, r.index + 1)
      _save(ckpt, state, r.step, next_position, hooks, fingerprint)

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
          for hook in hooks:
            state = hook.begin_epoch(r, state)
        batch = batches.get(r.epoch, r.index)
        for hook in hooks:
          hook.before_step(r, state, batch)
        state, metrics = step_fn(state, batch)
        r.step += 1  # Counted here: reading state.step would wait for the device.
        for hook in hooks:
          hook.after_step(r, state, metrics)
        if r.epoch_end:
          for hook in hooks:
            state = hook.end_epoch(r, state)
        every = config.checkpoint_every_steps
        if r.epoch_end or r.stopping or (every and r.step % every == 0):
          save()
      index = 0
    for hook in hooks:
      hook.end(r, state)
    return Result(state, r.step, next_epoch, finished=True)
  finally:  # Also on a crash: finish the checkpoint in flight.
    if progress is not None:
      progress.close()
    ckpt.close()
    if writer is not None:
      writer.close()


def _restore(ckpt: checkpoint_lib.Checkpointer, state: Any, batches: Batches,
             fingerprint: dict) -> tuple[Any, tuple[int, int, int], dict]:
  """The run's one resume path: the latest checkpoint, or the fresh start.

  Returns:
    (state, (step, epoch, index) of the next batch, the hooks' saved states).
  """
  if ckpt.latest_step() is None:
    return state, (0, batches.epochs.start, 0), {}
  state, meta = ckpt.restore(state)
  for key, value in fingerprint.items():
    if meta.get('fingerprint', {}).get(key) != value:
      raise checkpoint_lib.CheckpointError(
          f'{ckpt.directory} holds a run of another {key}; use a new --workdir')
  position = (int(meta['step']), int(meta['epoch']), int(meta['index']))
  logging.info('resumed from step %d (epoch %d, batch %d)', *position)
  return state, position, meta.get('hooks', {})


def _save(ckpt: checkpoint_lib.Checkpointer, state: Any, step: int,
          next_position: tuple[int, int], hooks: Sequence[Hook], fingerprint: dict) -> None:
  """The only place a run writes a checkpoint: state, position, hooks, fingerprint."""
  meta = {'step': step, 'epoch': next_position[0], 'index': next_position[1],
          'hooks': {h.name: h.state_dict() for h in hooks if h.name},
          'fingerprint': fingerprint}
  ckpt.save(step, state, meta)


def _write_config(config, workdir: str) -> None:
  with open(os.path.join(workdir, 'config.json'), 'w') as f:
    f.write(config.to_json_best_effort(indent=1))


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
