"""Tests for amdarts.plots: search curves, genotype drawings."""

import pytest

from amdarts import genotypes
from amdarts import plots


def test_search_curves_plot_the_normal_cell_statistics(tmp_path):
  """Fig. 1's curves are the normal cell's; the pooled ones (which differ) are not drawn."""
  history = [{'epoch': e, 'none_weight': 0.1 * e, 'none_weight_all': 0.5,
              'skip_ratio': 0.25 * e, 'skip_ratio_all': 0.9, 'num_parametric': 8.0 - e,
              'num_parametric_all': 16.0, 'train_acc': 0.5, 'val_acc': 0.4, 'eval_acc': 0.45}
             for e in (1, 2, 3)]
  fig = plots.search_curves(history, tmp_path / 'curves.png')
  assert (tmp_path / 'curves.png').stat().st_size > 1000
  drawn = [[list(line.get_ydata()) for line in ax.lines] for ax in fig.axes]
  assert drawn[:3] == [[[0.1, 0.2, pytest.approx(0.3)]], [[0.25, 0.5, 0.75]], [[7.0, 6.0, 5.0]]]
  assert 'normal cell' in fig.axes[0].get_title()


def test_draw_png_and_svg(tmp_path, per_cell_genotype):
  png, svg = tmp_path / 'v2.png', tmp_path / 'cells' / 'pc.svg'
  plots.draw_genotype(genotypes.DARTS_V2, png)
  assert png.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n' and png.stat().st_size > 5000
  plots.draw_genotype(per_cell_genotype, svg)
  text = svg.read_text()
  assert text.count('sep_conv_3x3') == 5 and 'skip_connect' in text
  assert 'cell_01 (reduction)' in text
  plots.draw_genotype(genotypes.DARTS_V2, tmp_path / 'v2.svg')
  text = (tmp_path / 'v2.svg').read_text()
  assert text.count('dil_conv_3x3') == 1 and text.count('max_pool_3x3') == 5
  with pytest.raises(ValueError, match='png or .svg'):
    plots.draw_genotype(genotypes.DARTS_V2, tmp_path / 'x.pdf')
