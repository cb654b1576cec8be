"""Checkpoints with orbax: atomic, so an interrupted run never leaves a broken one.

A checkpoint holds one pytree (`state`: arrays only) and a JSON dict (`meta`: epoch,
data position, config fingerprint, ...). Orbax writes into a temporary folder and
renames it when complete, so a kill during a save leaves the previous checkpoint
as the latest. A checkpoint can still go bad afterwards (a truncated copy, a disk
error): `restore` tells an unreadable one (`CorruptCheckpoint`, which a run skips,
see `set_aside`) from a readable one of another model (`CheckpointError`, refused).

In a multi-process run only process 0 builds a `Checkpointer` (`amdarts.loop`);
orbax is told it runs on that process alone, so it waits on no other process.
"""

from __future__ import annotations

import os
import shutil
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from amdarts import errors

# Where unreadable checkpoints go, beside `checkpoints/`: out of orbax's sight (its
# step list and pruning), kept for a look.
UNREADABLE_DIR = 'checkpoints_unreadable'


class CheckpointError(errors.UserError, ValueError):
  """A checkpoint exists but cannot be used."""


class CorruptCheckpoint(CheckpointError):
  """A checkpoint's files cannot be read (truncated, overwritten, half-copied)."""


class Checkpointer:
  """Saves and restores (state, meta) under `<workdir>/checkpoints/<step>`."""

  def __init__(self, workdir: str, *, max_to_keep: int = 2):
    if max_to_keep < 1:  # orbax would delete every checkpoint, the last one too.
      raise ValueError(f'keep_checkpoints must be >= 1, got {max_to_keep}')
    self.workdir = os.path.abspath(workdir)
    self.directory = os.path.join(self.workdir, 'checkpoints')
    os.makedirs(self.directory, exist_ok=True)  # orbax will not with active_processes.
    here = jax.process_index()
    self._manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep, create=False,
            multiprocessing_options=ocp.options.MultiprocessingOptions(
                primary_host=here, active_processes={here})),
        item_names=('state', 'meta'),
    )

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def steps(self) -> list[int]:
    """The complete checkpoints' steps, newest first."""
    return sorted(self._manager.all_steps(), reverse=True)

  def save(self, step: int, state: Any, meta: dict) -> None:
    state = jax.tree.map(np.asarray, jax.device_get(state))
    self._manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)), force=True)

  def _read(self, step: int, **items) -> dict:
    try:
      return self._manager.restore(step, args=ocp.args.Composite(**items))
    except Exception as e:  # orbax raises many types; all mean "unusable here".
      msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
      raise CorruptCheckpoint(
          f'cannot restore checkpoint {self.directory}/{step}: {msg[:300]}') from e

  def read_meta(self, step: int) -> dict:
    """The metadata of checkpoint `step` alone (cheap: no arrays are read).

    Raises:
      CorruptCheckpoint: it cannot be read.
    """
    return dict(self._read(step, meta=ocp.args.JsonRestore())['meta'])

  def restore(self, template: Any, step: int | None = None) -> tuple[Any, dict]:
    """Restores into the structure, shapes and dtypes of `template` (arrays or
    jax.ShapeDtypeStruct).

    Raises:
      CorruptCheckpoint: its files cannot be read.
      CheckpointError: it reads, but does not match the template (e.g. another
        config wrote it). Both with one line naming the checkpoint.
    """
    step = self.latest_step() if step is None else step
    if step is None:
      raise CheckpointError(f'no checkpoint in {self.directory}')
    template = jax.tree.map(lambda x: np.zeros(x.shape, x.dtype), template)
    mismatch = CheckpointError(
        f'checkpoint {self.directory}/{step} does not match this config '
        '(different model or space); use a new --workdir')
    try:
      restored = self._read(step, state=ocp.args.StandardRestore(template),
                            meta=ocp.args.JsonRestore())
    except CorruptCheckpoint:
      # Unreadable into this template: read it as stored to tell a broken checkpoint
      # from one of another model, which must not be mistaken for a broken one.
      self._read(step, state=ocp.args.StandardRestore(), meta=ocp.args.JsonRestore())
      raise mismatch from None
    state = restored['state']
    got = jax.tree.map(lambda x: (np.shape(x), np.asarray(x).dtype), state)
    want = jax.tree.map(lambda x: (np.shape(x), x.dtype), template)
    if jax.tree.structure(state) != jax.tree.structure(template) or got != want:
      raise mismatch
    return state, dict(restored['meta'])

  def set_aside(self, step: int) -> str:
    """Moves checkpoint `step` to `<workdir>/checkpoints_unreadable/`; returns where.

    Orbax then neither resumes from it, nor counts it among the checkpoints it
    keeps, nor finds its step taken when the resumed run saves that step again.
    """
    self.wait()
    target = os.path.join(self.workdir, UNREADABLE_DIR, str(step))
    n = 1
    while os.path.exists(target):  # The same step may go bad twice.
      target = os.path.join(self.workdir, UNREADABLE_DIR, f'{step}.{n}')
      n += 1
    os.makedirs(os.path.dirname(target), exist_ok=True)
    shutil.move(os.path.join(self.directory, str(step)), target)
    self._manager.reload()
    return target

  def wait(self) -> None:
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()
