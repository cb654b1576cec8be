"""Step-loop plumbing shared by the recurrent search and training runs.

`search.run` and `train.run` both walk epochs of BPTT chunks, resume from the
latest checkpoint, log every `log_every_steps` steps and checkpoint every
`checkpoint_every_steps` steps or when asked to stop. Keeping those rules here makes
an interrupted search and an interrupted training resume, log and stop alike.
"""

from __future__ import annotations

import os
from typing import Any, Mapping

import jax
import jax.numpy as jnp

from amdarts import checkpoint as checkpoint_lib
from amdarts import metrics as metrics_lib
from amdarts.rnn import evaluation


def resume(ckpt: checkpoint_lib.Checkpointer, workdir: str, state: Any,
           meta: dict) -> tuple[Any, dict, metrics_lib.MetricWriter]:
  """Continues from the latest checkpoint, if any, and opens the metric writer.

  Args:
    ckpt: the run's checkpointer.
    workdir: the run's output directory (holds metrics.jsonl).
    state: the fresh state; also the template the checkpoint is restored into.
    meta: the fresh run's metadata (data position, epoch statistics).

  Returns:
    `(state, meta, writer)`: the checkpoint's state (as device arrays) and metadata,
    or the given ones when there is no checkpoint, and a writer appending to
    `<workdir>/metrics.jsonl`.
  """
  if ckpt.latest_step() is not None:
    state, meta = ckpt.restore(state)
    state = jax.tree.map(jnp.asarray, state)
    # Before the writer opens: the steps the run repeats must not be recorded twice.
    metrics_lib.truncate_after(os.path.join(workdir, 'metrics.jsonl'), int(state.step))
  return state, meta, metrics_lib.MetricWriter(workdir)


def log_train(writer: metrics_lib.MetricWriter, progress: metrics_lib.Progress, step: int,
              epoch: int, metrics: Mapping[str, Any], *, hint: str) -> None:
  """Checks, records and shows the metrics of one logged step.

  Args:
    writer: where the `kind='train'` record goes.
    progress: the run's progress bar; shows the training perplexity.
    step: steps done.
    epoch: the current epoch, added to the record.
    metrics: host values of the step's metrics, `train_nll` among them.
    hint: what to change when a metric is not finite (names the config fields).

  Raises:
    FloatingPointError: naming the step and the non-finite metrics.
  """
  metrics_lib.check_finite(step, metrics, hint=hint)
  writer.write(step, dict(metrics, epoch=epoch), kind='train')
  progress.update(step, f'epoch {epoch} train ppl '
                  f'{evaluation.perplexity(float(metrics["train_nll"])):.1f}')


def should_stop(step: int, stop_after: int | None) -> bool:
  """Whether a run asked to stop after `stop_after` steps stops at `step`."""
  return stop_after is not None and step >= stop_after


def should_save(step: int, every: int, stop_after: int | None) -> bool:
  """Whether a mid-epoch `step` is checkpointed: on the period, or before a stop.

  Args:
    step: steps done.
    every: `checkpoint_every_steps`; 0 saves only at epoch ends and stops.
    stop_after: the step count the run stops after, or None.
  """
  return should_stop(step, stop_after) or bool(every and step % every == 0)
