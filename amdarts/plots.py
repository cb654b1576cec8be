"""Figures: the search curves of Fig. 1 and drawings of genotype cells.

    search_curves(history, path)      normal cell: none weight, skip ratio, #P; accuracy
    curves_by_arm(runs, panels, path) the same kind of panels, one colour per study arm
    draw_genotype(genotype, path)     the cell(s) of a genotype, PNG or SVG
    draw_cells(cells, path)           chosen cells side by side (e.g. an η sweep, Fig. 5)

Matplotlib is imported inside the functions, on its Agg canvas (no pyplot, no
display), so importing this module costs nothing.
"""

from __future__ import annotations

import math
import os
from typing import Mapping, Sequence

from amdarts import genotypes
from amdarts import ops as ops_lib


def search_curves(history: Sequence[dict], path: str):
  """Fig. 1's statistics of the normal cell, and the super-net accuracy, per epoch.

  The normal cell's average `none` weight, ratio of skip_connect among its kept ops
  and #P (`genotypes.statistics`: `none_weight`, `skip_ratio`, `num_parametric`),
  as the paper plots them; the pooled and reduction-cell versions stay in the
  records only.

  Args:
    history: the per-epoch records of metrics.jsonl (kind 'epoch').
    path: output PNG.

  Returns:
    The matplotlib Figure (saved to `path` already).
  """
  from matplotlib.figure import Figure  # No pyplot: no global state, no display.

  epochs = [r['epoch'] for r in history]
  panels = (
      ('none_weight', 'normal cell: average weight of none'),
      ('skip_ratio', 'normal cell: ratio of skip_connect kept'),
      ('num_parametric', 'normal cell: parametric ops kept (#P)'),
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
  return fig


def curves_by_arm(runs: Mapping[str, Sequence[Sequence[dict]]],
                  panels: Sequence[tuple[str, str]], path: str, *, x: str = 'epoch',
                  log_panels: Sequence[str] = (), zero_line: Sequence[str] = ()) -> None:
  """One panel per quantity; per arm the mean over seeds bold, every seed thin.

  Args:
    runs: arm -> one record sequence per seed; a record is a dict holding `x` and
      (some of) the panels' keys. Seeds may have different x values: the mean is
      taken over the seeds that have a value at each x.
    panels: (key, title) per panel.
    path: output PNG.
    x: the key of the horizontal axis.
    log_panels: keys whose panel has a logarithmic y axis (non-positive values dropped).
    zero_line: keys whose panel gets a dashed line at y = 0 (signs matter there).
  """
  from matplotlib.figure import Figure

  ncols = min(len(panels), 4)
  nrows = math.ceil(len(panels) / ncols)
  fig = Figure(figsize=(3.6 * ncols, 3.0 * nrows))
  colours = [f'C{i}' for i in range(10)]
  for k, (key, title) in enumerate(panels):
    ax = fig.add_subplot(nrows, ncols, k + 1)
    for i, (arm, seeds) in enumerate(runs.items()):
      colour = colours[i % len(colours)]
      by_x: dict[float, list[float]] = {}
      for records in seeds:
        pts = [(r[x], r[key]) for r in records if r.get(key) is not None
               and math.isfinite(r[key]) and (key not in log_panels or r[key] > 0)]
        if len(seeds) > 1 and pts:
          ax.plot(*zip(*pts), color=colour, lw=0.6, alpha=0.35)
        for px, py in pts:
          by_x.setdefault(px, []).append(py)
      if by_x:
        xs = sorted(by_x)
        ax.plot(xs, [sum(by_x[v]) / len(by_x[v]) for v in xs], color=colour, lw=1.6,
                marker='.', label=arm)
    if key in log_panels:
      ax.set_yscale('log')
    if key in zero_line:
      ax.axhline(0.0, color='gray', lw=0.8, ls='--')
    ax.set_title(title, fontsize=9)
    ax.set_xlabel(x)
    if k == 0:
      ax.legend(fontsize=6)
  fig.tight_layout()
  fig.savefig(path, dpi=100)


# ----------------------------------------------------------------------------------
# Genotype drawings.

_NODE_R = 0.38     # node radius, data units.
_ROW = 1.5         # vertical distance between intermediate nodes.
_X_NODE = 3.0      # column of the intermediate nodes; inputs sit at x = 0.
_X_OUT = 6.0       # column of the cell output.


def _draw_cell(ax, cell: genotypes.CellGenotype, title: str, fontsize: float) -> None:
  """Draws one cell: inputs left, intermediate nodes in a column, output right.

  Edges between intermediate nodes bulge to the right, more for longer jumps, so no
  edge runs through a node and nested arcs stay apart.
  """
  from matplotlib import patches

  steps = len(cell.genes) // 2
  top = _ROW * (steps - 1) / 2
  pos = {0: (0.0, 1.0), 1: (0.0, -1.0)}
  pos.update({j + 2: (_X_NODE, top - _ROW * j) for j in range(steps)})
  out = (_X_OUT, 0.0)
  labels = {0: '$c_{k-2}$', 1: '$c_{k-1}$', 'out': '$c_{k}$'}
  labels.update({j + 2: str(j) for j in range(steps)})
  circles = {}
  for state, xy in list(pos.items()) + [('out', out)]:
    face = ('#c1e1c1' if state in (0, 1) else '#fdf1b8' if state == 'out' else '#add8e6')
    circles[state] = patches.Circle(xy, _NODE_R, facecolor=face, edgecolor='black', lw=0.8,
                                    zorder=3)
    ax.add_patch(circles[state])
    ax.text(*xy, labels[state], ha='center', va='center', fontsize=fontsize, zorder=4)

  for k, (op, src) in enumerate(cell.genes):
    dst = k // 2 + 2
    (x0, y0), (x1, y1) = pos[src], pos[dst]
    if src < 2:
      # Input edges fan into the node column; labelling them at 70% of the way
      # keeps the 2·steps labels at distinct heights (>= 0.45 apart) instead of
      # piling them at the crossings.
      rad, lx, ly = 0.0, x0 + 0.7 * (x1 - x0), y0 + 0.7 * (y1 - y0)
    else:
      # arc3 puts its control point at mid + rad·(dy, -dx); the curve's midpoint is
      # half-way there. dy < 0 here (src is above dst), so rad < 0 bends right.
      bulge = 0.5 + 0.5 * (dst - src - 1)
      rad = -2 * bulge / abs(y1 - y0)
      lx, ly = x0 + bulge, (y0 + y1) / 2
    color = ops_lib.REGISTRY[op].colour
    ax.add_patch(patches.FancyArrowPatch(
        (x0, y0), (x1, y1), patchA=circles[src], patchB=circles[dst], arrowstyle='-|>',
        mutation_scale=8, connectionstyle=f'arc3,rad={rad}', color=color, lw=1.2,
        zorder=2))
    ax.text(lx, ly, op, ha='center', va='center', fontsize=fontsize * 0.8, color=color,
            zorder=5, bbox=dict(boxstyle='round,pad=0.1', fc='white', ec='none', alpha=0.8))
  for state in cell.concat:
    ax.add_patch(patches.FancyArrowPatch(
        pos[state], out, patchA=circles[state], patchB=circles['out'], arrowstyle='-|>',
        mutation_scale=8, color='gray', lw=0.8, linestyle='--', zorder=1))

  ax.set_title(title, fontsize=fontsize * 1.1)
  ax.set_xlim(-0.6, _X_OUT + 0.6)
  half = max(top, 1.0) + 0.7
  ax.set_ylim(-half, half)
  ax.set_aspect('equal')
  ax.axis('off')


def draw_genotype(genotype: genotypes.AnyGenotype, path: str | os.PathLike,
                  dpi: int = 150) -> None:
  """Draws the cell(s) of a genotype to a PNG or SVG file (chosen by the suffix).

  Uses matplotlib's Agg canvas (no display, no graphviz). A `Genotype` gives its
  normal and reduction cells side by side; a `PerCellGenotype` gives a grid of small
  cells in network order, reduction cells marked in their titles. Text is kept as
  text in SVG so op names stay searchable.

  Args:
    genotype: either kind.
    path: output file, `.png` or `.svg`.
    dpi: resolution of a PNG.
  """
  import matplotlib
  from matplotlib.backends.backend_agg import FigureCanvasAgg
  from matplotlib.figure import Figure

  path = os.fspath(path)
  fmt = os.path.splitext(path)[1].lower().lstrip('.')
  if fmt not in ('png', 'svg'):
    raise ValueError(f'draw writes .png or .svg, got {path!r}')
  genotype = genotypes.validate(genotype)
  cells = genotypes.named_cells(genotype)
  if isinstance(genotype, genotypes.Genotype):
    ncols, size, fontsize = len(cells), 4.5, 10
    titles = [name for name, _ in cells]
  else:
    ncols, size, fontsize = min(5, len(cells)), 3.0, 7
    titles = [f'{name}{" (reduction)" if c.reduction else ""}' for name, c in cells]
  nrows = math.ceil(len(cells) / ncols)
  with matplotlib.rc_context({'svg.fonttype': 'none'}):
    fig = Figure(figsize=(size * ncols, size * 0.9 * nrows))
    FigureCanvasAgg(fig)
    for i, ((_, cell), title) in enumerate(zip(cells, titles)):
      _draw_cell(fig.add_subplot(nrows, ncols, i + 1), cell, title, fontsize)
    fig.tight_layout()
    parent = os.path.dirname(path)
    if parent:
      os.makedirs(parent, exist_ok=True)
    fig.savefig(path, format=fmt, dpi=dpi)


def draw_cells(cells: Sequence[tuple[str, genotypes.CellGenotype]], path: str | os.PathLike,
               dpi: int = 120) -> None:
  """Draws the given cells side by side (at most 4 per row), each under its title.

  Args:
    cells: (title, cell) pairs, e.g. the normal cell of every η of a sweep (Fig. 5).
    path: output `.png` or `.svg`.
    dpi: resolution of a PNG.
  """
  from matplotlib.backends.backend_agg import FigureCanvasAgg
  from matplotlib.figure import Figure

  if not cells:
    raise ValueError('draw_cells needs at least one cell')
  path = os.fspath(path)
  fmt = os.path.splitext(path)[1].lower().lstrip('.')
  if fmt not in ('png', 'svg'):
    raise ValueError(f'draw_cells writes .png or .svg, got {path!r}')
  ncols = min(4, len(cells))
  nrows = math.ceil(len(cells) / ncols)
  fig = Figure(figsize=(4.0 * ncols, 3.6 * nrows))
  FigureCanvasAgg(fig)
  for i, (title, cell) in enumerate(cells):
    _draw_cell(fig.add_subplot(nrows, ncols, i + 1), cell, title, 9)
  fig.tight_layout()
  fig.savefig(path, format=fmt, dpi=dpi)
