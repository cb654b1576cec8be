"""Tests for amdarts.plots: genotype drawings."""

import pytest

from amdarts import genotypes
from amdarts import plots


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
