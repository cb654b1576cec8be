"""Figures written by the search: the Fig. 1-style curves per epoch."""

from __future__ import annotations

from typing import Sequence


def search_curves(history: Sequence[dict], path: str) -> None:
  """Average `none` weight, skip-connect share, parametric ops and super-net accuracy.

  Args:
    history: the per-epoch records of metrics.jsonl (kind 'epoch').
    path: output PNG.
  """
  from matplotlib.figure import Figure  # No pyplot: no global state, no display.

  epochs = [r['epoch'] for r in history]
  panels = (
      ('none_weight', 'average weight of none'),
      ('skip_share', 'share of skip_connect among kept ops'),
      ('num_parametric', 'parametric ops kept'),
      (('train_acc', 'val_acc', 'eval_acc'), 'super-net accuracy'),
  )
  fig = Figure(figsize=(13, 3.2))
  for k, (keys, title) in enumerate(panels):
    ax = fig.add_subplot(1, len(panels), k + 1)
    for key in (keys,) if isinstance(keys, str) else keys:
      ax.plot(epochs, [r.get(key, float('nan')) for r in history], marker='.', label=key)
    ax.set_title(title, fontsize=9)
    ax.set_xlabel('epoch')
    if not isinstance(keys, str):
      ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
