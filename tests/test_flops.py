"""Tests for amdarts.flops: analytic multiply-adds, parameter counts, mobile width."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import pytest

from amdarts import flops
from amdarts import genotypes
from amdarts import ops as ops_lib


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
  assert flops.count_macs(dense.apply, params, v) == 3 * 7 * 5 + 3 * 5  # With the bias.
  # Inside a nested jit the count is the same.
  assert flops.count_macs(jax.jit(lambda x: conv(x, 3, 1, 1)), x) == 2 * 8 * 8 * 12 * 9 * 6


class _Block(nn.Module):
  """conv 1×1 -> BN (affine) -> ReLU -> 3×3 max pool (stride 2) -> BN -> global mean."""

  @nn.compact
  def __call__(self, x):
    x = ops_lib.conv(4, 1, name='conv')(x)
    x = nn.relu(ops_lib.batch_norm(False, True, name='bn')(x))
    x = ops_lib.Pool('max', 2, bn=True, name='pool')(x, train=False)
    return jnp.mean(x, axis=(1, 2))


def test_count_ops_counts_each_layer_kind_as_ptflops():
  x = jax.ShapeDtypeStruct((2, 8, 8, 3), jnp.float32)
  block = _Block()
  variables = jax.eval_shape(block.init, jax.random.PRNGKey(0), x)
  assert flops.count_ops(block.apply, variables, x) == {
      'conv_fc': 2 * 8 * 8 * 4 * 3,  # |output| · C_in.
      'batch_norm': 2 * (2 * 8 * 8 * 4) + 2 * 4 * 4 * 4,  # |input|, twice when affine.
      'relu': 2 * 8 * 8 * 4,  # |output|.
      'pool': 2 * 8 * 8 * 4 + 2 * 4 * 4 * 4,  # |input| of the 3×3 and the global pool.
  }


def test_count_params_excludes_auxiliary_head():
  tree = {'auxiliary_head': {'w': jnp.zeros((10, 10))}, 'cell_00': {'w': jnp.zeros((3, 4))},
          'classifier': {'bias': jnp.zeros(5)}}
  assert flops.count_params(tree) == 17
  assert flops.count_params(tree, exclude=()) == 117


def test_darts_v2_cifar_profile():
  p = flops.profile(genotypes.DARTS_V2, kind='cifar', c=36, num_cells=20, num_classes=10,
                    image_size=32)
  assert p.params == 3_349_342  # DARTS logs 3.349342MB; published 3.3M.
  assert p.macs == 547_473_034  # ptflops's convention (the conv + fc part: 528.4M).


def test_darts_v2_imagenet_mobile_profile():
  p = flops.profile(genotypes.DARTS_V2, kind='imagenet', c=48, num_cells=14, num_classes=1000,
                    image_size=224)
  assert p.params == 4_718_752  # DARTS logs 4.718752MB; published 4.7M.
  assert round(p.params / 1e6, 1) == 4.7
  # ptflops on DARTS's PyTorch NetworkImageNet gives 544.59M (quark0/darts issue #46);
  # the published 574M came from an unreleased counter.
  assert round(p.macs / 1e4) == 54_459
  assert p.macs == 544_589_032
  net = flops.network_lib.Network.create(genotypes.DARTS_V2, kind='imagenet', num_cells=14,
                                         c=48, num_classes=1000, depthwise='native')
  x = jax.ShapeDtypeStruct((1, 224, 224, 3), jnp.float32)
  params, state = jax.eval_shape(net.init, jax.random.PRNGKey(0), x)
  ops = flops.count_ops(lambda p, s, x: net.apply(p, s, x, train=False)[0][0], params,
                        state, x)
  assert ops == {'conv_fc': 529_912_552, 'batch_norm': 8_279_040, 'relu': 5_795_328,
                 'pool': 602_112}


def test_choose_width_is_the_widest_even_c_within_budget():
  choice = flops.choose_width(genotypes.DARTS_V2)
  # C=50 where DARTS used 48: 588.8M fits the 600M budget by any public count.
  assert choice == flops.Profile(50, 5_079_375, 588_761_800)
  wider = flops.profile(genotypes.DARTS_V2, kind='imagenet', c=52, num_cells=14)
  assert wider.macs > flops.MOBILE_BUDGET >= choice.macs
  # A tighter budget picks the published C=48 setting.
  assert flops.choose_width(genotypes.DARTS_V2, budget=560e6).c == 48


def test_choose_width_rejects_impossible_budget():
  with pytest.raises(ValueError, match='over the budget'):
    flops.choose_width(genotypes.DARTS_V2, budget=1e6)
