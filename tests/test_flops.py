"""Tests for amdarts.flops: analytic multiply-adds, parameter counts, mobile width."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import pytest

from amdarts import flops
from amdarts import genotypes


def test_count_macs_of_conv_grouped_conv_and_dense():
  x = jax.ShapeDtypeStruct((2, 8, 8, 6), jnp.float32)

  def conv(x, k, groups, stride):
    kernel = jnp.zeros((k, k, 6 // groups, 12))
    return jax.lax.conv_general_dilated(x, kernel, (stride, stride), 'SAME',
                                        dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
                                        feature_group_count=groups)

  # |out| · k² · C_in/groups: 2·8·8·12 outputs, 9·6 resp. 9·3 products each.
  assert flops.count_macs(lambda x: conv(x, 3, 1, 1), x) == 2 * 8 * 8 * 12 * 9 * 6
  assert flops.count_macs(lambda x: conv(x, 3, 2, 1), x) == 2 * 8 * 8 * 12 * 9 * 3
  assert flops.count_macs(lambda x: conv(x, 1, 1, 2), x) == 2 * 4 * 4 * 12 * 6
  dense = nn.Dense(5)
  v = jax.ShapeDtypeStruct((3, 7), jnp.float32)
  params = jax.eval_shape(dense.init, jax.random.PRNGKey(0), v)
  assert flops.count_macs(dense.apply, params, v) == 3 * 7 * 5
  # Inside a nested jit the count is the same.
  assert flops.count_macs(jax.jit(lambda x: conv(x, 3, 1, 1)), x) == 2 * 8 * 8 * 12 * 9 * 6


def test_count_params_excludes_auxiliary_head():
  tree = {'auxiliary_head': {'w': jnp.zeros((10, 10))}, 'cell_00': {'w': jnp.zeros((3, 4))},
          'classifier': {'bias': jnp.zeros(5)}}
  assert flops.count_params(tree) == 17
  assert flops.count_params(tree, exclude=()) == 117


def test_darts_v2_cifar_profile():
  p = flops.profile(genotypes.DARTS_V2, kind='cifar', c=36, num_cells=20, num_classes=10,
                    image_size=32)
  assert p.params == 3_349_342  # DARTS logs 3.349342MB; published 3.3M.
  # Convolutions + classifier of one 32×32 image; the ~528M often quoted for DARTS.
  assert p.macs == 528_359_040


def test_darts_v2_imagenet_mobile_profile():
  p = flops.profile(genotypes.DARTS_V2, kind='imagenet', c=48, num_cells=14, num_classes=1000,
                    image_size=224)
  assert p.params == 4_718_752  # DARTS logs 4.718752MB; published 4.7M.
  assert round(p.params / 1e6, 1) == 4.7
  # Conv + fc multiply-adds: 529.9M, below the published 574M. The DARTS authors did
  # not release their counter; counting conv and fc layers gives ~523-530M for others
  # too (quark0/darts issue #46), so the published figure counts something more.
  assert p.macs == 529_911_552
  assert 0.90 < p.macs / 574e6 < 0.95


def test_choose_width_is_the_widest_even_c_within_budget():
  choice = flops.choose_width(genotypes.DARTS_V2)
  assert choice == flops.Profile(50, 5_079_375, 573_472_800)
  wider = flops.profile(genotypes.DARTS_V2, kind='imagenet', c=52, num_cells=14)
  assert wider.macs > flops.MOBILE_BUDGET >= choice.macs
  # A tighter budget picks the published C=48 setting.
  assert flops.choose_width(genotypes.DARTS_V2, budget=530e6).c == 48


def test_choose_width_rejects_impossible_budget():
  with pytest.raises(ValueError, match='over the budget'):
    flops.choose_width(genotypes.DARTS_V2, budget=1e6)
