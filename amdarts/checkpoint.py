"""Checkpoints with orbax: atomic, so an interrupted run never leaves a broken one.

A checkpoint holds one pytree (`state`: arrays only) and a JSON dict (`meta`: epoch,
data position, config fingerprint, ...). Orbax writes into a temporary folder and
renames it when complete, so a kill during a save leaves the previous checkpoint
as the latest.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp


class CheckpointError(ValueError):
  """A checkpoint exists but cannot be used."""


class Checkpointer:
  """Saves and restores (state, meta) under `<workdir>/checkpoints/<step>`."""

  def __init__(self, workdir: str, *, max_to_keep: int = 2):
    self.directory = os.path.join(os.path.abspath(workdir), 'checkpoints')
    self._manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True),
        item_names=('state', 'meta'),
    )

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def save(self, step: int, state: Any, meta: dict) -> None:
    state = jax.tree.map(np.asarray, jax.device_get(state))
    self._manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)), force=True)

  def restore(self, template: Any, step: int | None = None) -> tuple[Any, dict]:
    """Restores into the structure, shapes and dtypes of `template` (arrays or
    jax.ShapeDtypeStruct).

    Raises:
      CheckpointError: with one line naming the checkpoint, when it is unreadable or
        does not match the template (e.g. another config wrote it).
    """
    step = self.latest_step() if step is None else step
    if step is None:
      raise CheckpointError(f'no checkpoint in {self.directory}')
    template = jax.tree.map(lambda x: np.zeros(x.shape, x.dtype), template)
    try:
      restored = self._manager.restore(step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(template), meta=ocp.args.JsonRestore()))
    except Exception as e:  # orbax raises many types; all mean "unusable".
      msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
      raise CheckpointError(
          f'cannot restore checkpoint {self.directory}/{step}: {msg[:300]}') from e
    state = restored['state']
    got = jax.tree.map(lambda x: (np.shape(x), np.asarray(x).dtype), state)
    want = jax.tree.map(lambda x: (np.shape(x), x.dtype), template)
    if jax.tree.structure(state) != jax.tree.structure(template) or got != want:
      raise CheckpointError(
          f'checkpoint {self.directory}/{step} does not match this config '
          '(different model or space); use a new --workdir')
    return state, dict(restored['meta'])

  def wait(self) -> None:
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()
