"""Tests for amdarts.network: DARTS's discrete CIFAR / ImageNet networks."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from amdarts import genotypes
from amdarts import network as network_lib
from amdarts import ops as ops_lib

KEY = jax.random.PRNGKey(0)


def _num_params(tree) -> int:
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


def _cell_outputs(net, x_shape, train=False):
  """Shapes of every cell's output, without computing anything."""
  x = jax.ShapeDtypeStruct(x_shape, jnp.float32)
  params, state = jax.eval_shape(net.init, KEY, x)

  def run(params, state, x):
    variables = {'params': params, 'batch_stats': state}
    kwargs = dict(rngs={'drop_path': KEY}, mutable=['intermediates', 'batch_stats'],
                  capture_intermediates=lambda m, _: (m.name or '').startswith('cell_'))
    out, mutated = net.module.apply(variables, x, train=train, **kwargs)
    return out, mutated['intermediates']

  out, inter = jax.eval_shape(run, params, state, x)
  shapes = [inter[f'cell_{i:02d}']['__call__'][0].shape for i in range(net.num_cells)]
  return out, shapes


def _uniform_cell(op, reduction=False, steps=2):
  genes = tuple((op, src) for node in range(steps) for src in (0, node + 1))
  return genotypes.CellGenotype(genes, tuple(range(2, steps + 2)), reduction)


def test_darts_v2_cifar_param_count_matches_darts_log():
  # DARTS's train.py logs "param size = 3.349342MB" for DARTS_V2 (C=36, 20 cells),
  # auxiliary head excluded; the paper's tables round it to 3.3M.
  net = network_lib.Network.create(genotypes.DARTS_V2, kind='cifar', num_cells=20, c=36,
                                   auxiliary=True)
  params, _ = jax.eval_shape(net.init, KEY, jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32))
  aux = _num_params(params[ops_lib.AUX_HEAD])
  assert _num_params(params) - aux == 3_349_342
  # AuxiliaryHeadCIFAR on 576 channels: 576·128 + BN 2·128 + 128·768·4 + BN 2·768
  # + 768·10 + 10.
  assert aux == 576 * 128 + 256 + 128 * 768 * 4 + 1536 + 7680 + 10 == 476_426
  assert round((_num_params(params) - aux) / 1e6, 1) == 3.3


def test_darts_v2_imagenet_param_count_matches_darts_log():
  # DARTS's train_imagenet.py logs 4.718752MB for DARTS_V2 at C=48, 14 cells (4.7M).
  net = network_lib.Network.create(genotypes.DARTS_V2, kind='imagenet', num_cells=14, c=48,
                                   num_classes=1000, auxiliary=True)
  params, _ = jax.eval_shape(net.init, KEY, jax.ShapeDtypeStruct((1, 224, 224, 3), jnp.float32))
  aux = _num_params(params[ops_lib.AUX_HEAD])
  assert _num_params(params) - aux == 4_718_752
  # The ImageNet head has no BN after its 768-channel conv (as the reference):
  # 768·128 + BN 2·128 + 128·768·4 + 768·1000 + 1000.
  assert aux == 768 * 128 + 256 + 128 * 768 * 4 + 768_000 + 1000 == 1_260_776
  assert round((_num_params(params) - aux) / 1e6, 1) == 4.7


def test_cifar_cell_layout_shapes():
  net = network_lib.Network.create(genotypes.DARTS_V2, kind='cifar', num_cells=5, c=4,
                                   auxiliary=True)
  (logits, aux), shapes = _cell_outputs(net, (2, 32, 32, 3), train=True)
  # Reductions at 5//3 = 1 and 2·5//3 = 3 halve the resolution and double C.
  assert shapes == [(2, 32, 32, 16), (2, 16, 16, 32), (2, 16, 16, 32), (2, 8, 8, 64),
                    (2, 8, 8, 64)]
  assert net.cell_channels() == (16, 32, 32, 64, 64)
  assert logits.shape == aux.shape == (2, 10)


def test_imagenet_mobile_shapes():
  net = network_lib.Network.create(genotypes.DARTS_V2, kind='imagenet', num_cells=14, c=48,
                                   num_classes=1000, auxiliary=True)
  (logits, aux), shapes = _cell_outputs(net, (2, 224, 224, 3), train=True)
  spatial = [s[1] for s in shapes]
  # Stems reduce 224 -> 28; reductions at cells 4 and 9.
  assert spatial == [28] * 4 + [14] * 5 + [7] * 5
  assert [s[3] for s in shapes] == [192] * 4 + [384] * 5 + [768] * 5
  assert logits.shape == aux.shape == (2, 1000)


def test_imagenet_small_forward_runs():
  # One cell: it reads the stride-4 stem0 output through FactorizedReduce.
  net = network_lib.Network.create(genotypes.DARTS_V2, kind='imagenet', num_cells=1, c=4,
                                   num_classes=5, depthwise='shifted')
  x = jax.random.normal(KEY, (2, 32, 32, 3))
  params, state = net.init(KEY, x)
  (logits, aux), _ = net.apply(params, state, x, train=False)
  assert logits.shape == (2, 5) and aux is None
  assert np.all(np.isfinite(logits))


def test_per_cell_genotype_follows_its_flags_and_ops():
  cells = (_uniform_cell('sep_conv_3x3'), _uniform_cell('max_pool_3x3', reduction=True),
           _uniform_cell('dil_conv_3x3'), _uniform_cell('skip_connect', reduction=True))
  genotype = genotypes.PerCellGenotype(cells)
  net = network_lib.Network.create(genotype, kind='cifar', c=4)
  assert net.num_cells == 4
  _, shapes = _cell_outputs(net, (1, 16, 16, 3))
  # Two nodes per cell: outputs of 2·C channels; reductions where the flags say.
  assert shapes == [(1, 16, 16, 8), (1, 8, 8, 16), (1, 8, 8, 16), (1, 4, 4, 32)]
  params, _ = jax.eval_shape(net.init, KEY, jax.ShapeDtypeStruct((1, 16, 16, 3), jnp.float32))
  # The ops with weights in each cell, from the cell_XX/edge_K/<op> parameter paths.
  weighted = {cell: {op for edge, tree in params[cell].items() if edge.startswith('edge_')
                     for op in tree} for cell in params if cell.startswith('cell_')}
  assert 'sep_conv_3x3' in weighted['cell_00'] and 'dil_conv_3x3' in weighted['cell_02']
  # Pooling and stride-2 skips (FactorizedReduce) carry no SepConv/DilConv weights.
  assert not any(op.startswith(('sep_conv', 'dil_conv')) for op in weighted['cell_01'])
  assert 'conv_even' in params['cell_03']['edge_0']['skip_connect']  # FactorizedReduce.
  with pytest.raises(ValueError, match='per-cell genotype has 4 cells'):
    network_lib.Network.create(genotype, num_cells=5)


def test_fixed_edges_any_inputs_and_concat():
  # Node j <- c_{k-2} and its predecessor (the fixed topology), output = last 2 nodes.
  genes = (('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ('skip_connect', 0),
           ('dil_conv_3x3', 2), ('max_pool_3x3', 0), ('skip_connect', 3))
  cell = genotypes.CellGenotype(genes, (3, 4), False)
  net = network_lib.Network.create(genotypes.PerCellGenotype((cell, cell)), c=4)
  _, shapes = _cell_outputs(net, (1, 8, 8, 3))
  assert shapes == [(1, 8, 8, 8), (1, 8, 8, 8)]


def test_shared_genotype_without_reduce_needs_shallow_network():
  genotype = genotypes.Genotype(genotypes.DARTS_V2.normal, (2, 3, 4, 5), (), ())
  network_lib.Network.create(genotype, num_cells=2, c=4)  # No reduction positions.
  with pytest.raises(ValueError, match='no reduction cell'):
    network_lib.Network.create(genotype, num_cells=3, c=4)


@pytest.mark.parametrize('kwargs, match', [
    (dict(kind='mobile'), 'kind must be'),
    (dict(depthwise='fft'), 'depthwise must be'),
    (dict(kind='imagenet', c=5), 'even'),
])
def test_create_rejects_bad_arguments(kwargs, match):
  with pytest.raises(ValueError, match=match):
    network_lib.Network.create(genotypes.DARTS_V2, **{'num_cells': 3, 'c': 4, **kwargs})


def test_drop_path_only_in_training_and_never_on_identity():
  x = jax.random.normal(KEY, (4, 8, 8, 3))
  k1, k2 = jax.random.split(jax.random.PRNGKey(1))

  def outputs(op):
    net = network_lib.Network.create(genotypes.PerCellGenotype((_uniform_cell(op),) * 2), c=4)
    params, state = net.init(KEY, x)
    train = lambda rate, rng: net.apply(params, state, x, train=True, drop_path_rate=rate,
                                        rng=rng)[0][0]
    evaluate = lambda rate, rng: net.apply(params, state, x, train=False,
                                           drop_path_rate=rate, rng=rng)[0][0]
    return train, evaluate

  train, evaluate = outputs('max_pool_3x3')
  # Training: the mask depends on the key; a traced rate of 0 keeps everything.
  assert not np.allclose(train(0.5, k1), train(0.5, k2))
  np.testing.assert_allclose(train(jnp.float32(0.0), k1), train(0.0, None), rtol=1e-6)
  # Evaluation ignores rate and key: a leak would make these differ.
  np.testing.assert_array_equal(evaluate(0.9, k1), evaluate(0.0, None))
  np.testing.assert_array_equal(evaluate(0.9, k1), evaluate(0.9, k2))

  # An all-identity cell has nothing to drop (DARTS skips Identity ops).
  train, _ = outputs('skip_connect')
  np.testing.assert_array_equal(train(0.9, k1), train(0.0, None))

  net = network_lib.Network.create(genotypes.PerCellGenotype((_uniform_cell('max_pool_3x3'),)), c=4)
  params, state = net.init(KEY, x)
  with pytest.raises(ValueError, match='needs an rng'):
    net.apply(params, state, x, train=True, drop_path_rate=0.2)


def test_auxiliary_head_only_in_training_and_off_the_main_path():
  # Two cells, no reduction: the head after cell 1 sees the full 8×8 input.
  x = jax.random.normal(KEY, (2, 8, 8, 3))
  kw = dict(kind='cifar', num_cells=2, c=4, num_classes=7, depthwise='shifted')
  net = network_lib.Network.create(genotypes.DARTS_V2, auxiliary=True, **kw)
  params, state = net.init(KEY, x)  # Initialised in eval mode, still has the head.
  assert ops_lib.AUX_HEAD in params
  (logits, aux), _ = net.apply(params, state, x, train=True)
  assert aux.shape == (2, 7)
  (eval_logits, eval_aux), _ = net.apply(params, state, x, train=False)
  assert eval_aux is None
  # The same weights without the head give the same logits in both modes.
  plain = network_lib.Network.create(genotypes.DARTS_V2, auxiliary=False, **kw)
  body = {k: v for k, v in params.items() if k != ops_lib.AUX_HEAD}
  (p_logits, p_aux), _ = plain.apply(body, state, x, train=True)
  assert p_aux is None
  np.testing.assert_allclose(p_logits, logits, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(plain.apply(body, state, x, train=False)[0][0], eval_logits,
                             rtol=1e-5, atol=1e-6)


def test_auxiliary_head_too_small_input_is_a_clear_error():
  net = network_lib.Network.create(genotypes.DARTS_V2, num_cells=3, c=4, auxiliary=True)
  with pytest.raises(ValueError, match='auxiliary head needs at least 5x5'):
    jax.eval_shape(net.init, KEY, jax.ShapeDtypeStruct((1, 16, 16, 3), jnp.float32))
