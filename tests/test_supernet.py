"""Super-network: op definitions, mixtures, α gradients, all spaces and edge modes."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from amdarts import ops as ops_lib
from amdarts import spaces
from amdarts import supernet


def _x(shape, seed=0):
  return jax.random.normal(jax.random.PRNGKey(seed), shape)


def _apply_op(module, x, train=True):
  variables = module.init(jax.random.PRNGKey(1), x, train)
  out, _ = module.apply(variables, x, train, mutable=['batch_stats'])
  return out, variables


def test_depthwise_matches_explicit_symmetric_padding():
  # 5x5 input, 3x3 kernel, stride 2, padding 1: PyTorch pads one pixel on every side,
  # so output (i, j) looks at rows 2i-1..2i+1 (XLA 'SAME' would pad only bottom/right).
  x = _x((1, 5, 5, 2))
  for impl in ops_lib.DEPTHWISE_IMPLS:
    dw = ops_lib.DepthwiseConv(3, stride=2, padding=1, impl=impl)
    variables = dw.init(jax.random.PRNGKey(0), x)
    out = dw.apply(variables, x)
    k = np.asarray(variables['params']['kernel'])[:, :, 0, :]
    xp = np.pad(np.asarray(x), ((0, 0), (1, 1), (1, 1), (0, 0)))
    want = np.zeros((1, 3, 3, 2))
    for i in range(3):
      for j in range(3):
        want[0, i, j] = (xp[0, 2 * i:2 * i + 3, 2 * j:2 * j + 3] * k).sum((0, 1))
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-5, err_msg=impl)


@pytest.mark.parametrize('stride,padding,dilation', [(1, 1, 1), (2, 2, 1), (1, 2, 2), (2, 4, 2)])
def test_depthwise_impls_agree(stride, padding, dilation):
  x = _x((2, 8, 8, 3))
  k = 3 if dilation == 1 else 3
  native = ops_lib.DepthwiseConv(k, stride, padding, dilation, impl='native')
  shifted = ops_lib.DepthwiseConv(k, stride, padding, dilation, impl='shifted')
  variables = native.init(jax.random.PRNGKey(0), x)
  np.testing.assert_allclose(native.apply(variables, x), shifted.apply(variables, x),
                             rtol=1e-5, atol=1e-5)


def test_avg_pool_excludes_padding_and_max_pool_pads_with_minus_inf():
  x = jnp.arange(16.0).reshape(1, 4, 4, 1) - 100.0
  avg = ops_lib.Pool('avg', 1).apply({}, x, False)
  # Corner (0, 0) averages the 4 real pixels 0, 1, 4, 5 (count_include_pad=False).
  np.testing.assert_allclose(avg[0, 0, 0, 0], np.mean([0, 1, 4, 5]) - 100.0, rtol=1e-6)
  mx = ops_lib.Pool('max', 2).apply({}, x, False)
  assert mx.shape == (1, 2, 2, 1)
  np.testing.assert_allclose(mx[0, 0, 0, 0], 5.0 - 100.0)  # Padding never wins.


def test_op_shapes_and_reduction():
  x = _x((2, 8, 8, 6))
  for name in spaces.DARTS_OPS:
    for stride in (1, 2):
      module = ops_lib.build(name, 6, stride, affine=False)
      out, _ = _apply_op(module, x)
      assert out.shape == (2, 8 // stride, 8 // stride, 6), (name, stride)
  zero, _ = _apply_op(ops_lib.build('none', 6, 2, affine=False), x)
  assert not np.any(zero)


def test_factorized_reduce_uses_both_pixel_phases():
  x = _x((1, 4, 4, 2))
  module = ops_lib.FactorizedReduce(4, affine=False)
  variables = module.init(jax.random.PRNGKey(0), x, False)
  p = variables['params']
  xr = np.maximum(np.asarray(x), 0)
  a = xr[:, ::2, ::2] @ np.asarray(p['conv_even']['kernel'])[0, 0]
  b = xr[:, 1::2, 1::2] @ np.asarray(p['conv_odd']['kernel'])[0, 0]
  # Eval mode with fresh running stats (mean 0, var 1): BN divides by sqrt(1 + eps).
  out = module.apply(variables, x, False)
  np.testing.assert_allclose(out, np.concatenate([a, b], -1) / np.sqrt(1 + 1e-5), rtol=1e-5,
                             atol=1e-6)


def test_pointwise_conv_is_flax_conv():
  # 1x1 convs run as slicing + matmul but keep nn.Conv's name, layout and init.
  x = _x((2, 7, 7, 3))
  for stride in (1, 2):
    ours = ops_lib.conv(5, 1, stride=stride)
    theirs = nn.Conv(5, (1, 1), strides=stride, padding=((0, 0), (0, 0)), use_bias=False,
                     kernel_init=ops_lib.torch_init)
    variables = ours.init(jax.random.PRNGKey(0), x)
    np.testing.assert_array_equal(variables['params']['kernel'],
                                  theirs.init(jax.random.PRNGKey(0), x)['params']['kernel'])
    np.testing.assert_allclose(ours.apply(variables, x), theirs.apply(variables, x),
                               rtol=1e-5, atol=1e-6)
  assert ops_lib.conv(5, 1).init(jax.random.PRNGKey(0), x)['params']['kernel'].shape == (
      1, 1, 3, 5)


def test_batch_norm_without_affine_in_search_cells():
  spec = spaces.SpaceSpec(num_cells=1, edge_mode='fixed')
  net = supernet.SuperNet.create(spec, c=4)
  params, state = net.init(jax.random.PRNGKey(0), jnp.zeros((2, 8, 8, 3)))
  flat = jax.tree_util.tree_flatten_with_path(params['cell_00'])[0]
  names = [jax.tree_util.keystr(path) for path, _ in flat]
  assert any("'sep_conv_3x3'" in n for n in names), names
  assert not any("['bn']" in n for n in names), names  # No scale/bias in cells.
  assert 'scale' in params['stem']['bn']  # The stem keeps affine BN.
  # Running statistics are kept per edge: the group of the 5 edges leaving the cell
  # inputs stacks them on a leading axis.
  bn = state['cell_00']['from_0_1']['sep_conv_3x3']['block1']['bn']
  assert bn['mean'].shape == (5, 4)


def _mixed(ops, x, stride=1):
  module = supernet.MixedOp(ops, x.shape[-1], stride, 'native')
  w = jnp.full((len(ops),), 1.0 / len(ops))
  variables = module.init(jax.random.PRNGKey(0), x, w, True)
  return module, variables


def test_mixed_op_is_softmax_weighted_sum_of_ops():
  ops = spaces.DARTS_OPS
  x = _x((2, 8, 8, 4))
  module, variables = _mixed(ops, x)
  alpha = jax.random.normal(jax.random.PRNGKey(3), (len(ops),))
  w = jax.nn.softmax(alpha)
  mixed, _ = module.apply(variables, x, w, True, mutable=['batch_stats'])

  def single(name):
    op = ops_lib.build(name, 4, 1, affine=False)  # As a discrete network builds it.
    sub = {'params': variables['params'].get(name, {})}
    y = op.apply(sub, x, True, mutable=['batch_stats'])[0]
    if 'pool' in name:
      y = ops_lib.batch_norm(True, False).apply({}, y, mutable=['batch_stats'])[0]
    return y

  want = sum(w[k] * single(name) for k, name in enumerate(ops))
  np.testing.assert_allclose(mixed, want, rtol=1e-4, atol=1e-5)
  # Zero α is the uniform mixture; a dominant α selects one op.
  uniform, _ = module.apply(variables, x, jax.nn.softmax(jnp.zeros(len(ops))), True,
                            mutable=['batch_stats'])
  np.testing.assert_allclose(uniform, sum(single(n) for n in ops) / len(ops), rtol=1e-4,
                             atol=1e-5)
  onehot, _ = module.apply(variables, x, jax.nn.softmax(jnp.eye(len(ops))[4] * 50.0), True,
                           mutable=['batch_stats'])
  np.testing.assert_allclose(onehot, single(ops[4]), rtol=1e-4, atol=1e-5)


def test_alpha_gradient_is_the_softmax_jacobian_and_reaches_none():
  # For L = <r, Σ_k w_k o_k>, ∂L/∂α_k = w_k (<r, o_k> − L): α_none gets −w_none·L ≠ 0.
  ops = spaces.SPACE_OPS['s3']
  x = _x((2, 6, 6, 4))
  module, variables = _mixed(ops, x)
  r = _x((2, 6, 6, 4), seed=5)

  def loss(alpha):
    y, _ = module.apply(variables, x, jax.nn.softmax(alpha), True, mutable=['batch_stats'])
    return jnp.vdot(r, y)

  alpha = jnp.array([0.3, -0.2, 0.5])
  w = jax.nn.softmax(alpha)
  per_op = [loss(jnp.eye(3)[k] * 60.0) for k in range(3)]  # <r, o_k> (o_none = 0).
  total = loss(alpha)
  want = w * (jnp.array(per_op) - total)
  np.testing.assert_allclose(jax.grad(loss)(alpha), want, rtol=1e-3, atol=1e-4)
  assert abs(float(jax.grad(loss)(alpha)[2])) > 1e-3


def test_edge_coefficients_implement_eq16():
  spec = spaces.SpaceSpec(edge_mode='searched')
  beta = jax.random.normal(jax.random.PRNGKey(0), (len(spec.pairs()),))
  coef = spaces.edge_coefficients(spec, beta)
  edges = spaces.full_edges(spec.steps)
  want = np.zeros(len(edges))
  for node in range(spec.steps):
    idx = [k for k, (n, _) in enumerate(spec.pairs()) if n == node]
    w = np.exp(beta[np.array(idx)]) / np.exp(beta[np.array(idx)]).sum()
    for k, wk in zip(idx, w):
      for i in spec.pairs()[k][1]:
        want[edges.index((i, node))] += wk
  np.testing.assert_allclose(coef, want, rtol=1e-5)
  # Each node receives exactly two inputs' worth of weight.
  for node in range(spec.steps):
    assert np.isclose(sum(c for c, (_, n) in zip(coef, edges) if n == node), 2.0)


def test_fixed_topology_edges():
  spec = spaces.SpaceSpec(edge_mode='fixed')
  assert spec.edges('normal') == ((0, 0), (1, 0), (0, 1), (2, 1), (0, 2), (3, 2), (0, 3), (4, 3))
  custom = spaces.SpaceSpec(edge_mode='fixed', inputs={'normal': ((0, 1), (1, 2), (0, 3), (2, 4))})
  assert custom.edges('normal')[2:4] == ((1, 1), (2, 1))
  assert custom.edges('reduce') == spec.edges('reduce')
  with pytest.raises(ValueError, match='node 1'):
    spaces.SpaceSpec(edge_mode='fixed', inputs={'normal': ((0, 1), (0, 3), (0, 3), (0, 4))})
  with pytest.raises(ValueError, match='unknown op'):
    spaces.SpaceSpec(ops=('skip_connect', 'conv_9x9'))


@pytest.mark.parametrize('space,shared,edge_mode', [
    ('s1', True, 'pruned'), ('s1', True, 'searched'), ('s2', False, 'fixed'),
    ('s3', True, 'fixed'), ('s2', False, 'searched')])
def test_spaces_build_and_take_a_gradient(space, shared, edge_mode):
  spec = spaces.SpaceSpec(ops=spaces.SPACE_OPS[space], num_cells=3, shared=shared,
                          edge_mode=edge_mode, steps=2)
  net = supernet.SuperNet.create(spec, c=4, num_classes=5, depthwise='shifted')
  x = _x((2, 8, 8, 3))
  params, state = net.init(jax.random.PRNGKey(0), x)
  alpha = spaces.init_alpha(spec, jax.random.PRNGKey(1))
  assert set(alpha) == ({'normal', 'reduce'} if shared else {'cell_00', 'cell_01', 'cell_02'})
  assert spec.reduction_cells == (1, 2)

  def loss(params, alpha):
    (logits, _), new_state = net.apply(params, state, alpha, x, train=True)
    return jnp.mean(logits ** 2), new_state

  (value, new_state), (g_w, g_a) = jax.value_and_grad(loss, (0, 1), has_aux=True)(params, alpha)
  assert np.isfinite(value)
  assert jax.tree.structure(g_a) == jax.tree.structure(alpha)
  for leaf in jax.tree.leaves(g_a):
    assert np.all(np.isfinite(leaf)) and np.any(leaf != 0)
  # Training mode updated the running statistics.
  changed = jax.tree.map(lambda a, b: bool(np.any(a != b)), state, new_state)
  assert any(jax.tree.leaves(changed))


def test_supernet_output_and_reduction_shapes():
  spec = spaces.SpaceSpec(num_cells=5, edge_mode='fixed', steps=2)
  net = supernet.SuperNet.create(spec, c=4, num_classes=7, auxiliary=True, depthwise='shifted')
  x = _x((2, 32, 32, 3))
  variables = jax.eval_shape(functools.partial(net.module.init, train=True),
                             {'params': jax.random.PRNGKey(0)}, x,
                             spaces.init_alpha(spec, jax.random.PRNGKey(0)))
  # Channels double at the reductions (cells 1 and 3): C, 2C, 2C, 4C, 4C.
  params = variables['params']
  assert params['cell_04']['preprocess']['pre1']['conv']['kernel'].shape[-1] == 16
  assert params['cell_01']['preprocess']['pre1']['conv']['kernel'].shape[-1] == 8
  assert 'auxiliary_head' in params
  assert params['classifier']['kernel'].shape == (2 * 16, 7)
  # Edge parameters: one stacked tree per group, edges on the leading axis. Fixed
  # topology, 2 nodes: edges (0,0), (1,0), (0,1) leave the cell inputs, (2,1) state 2.
  assert set(params['cell_01']) == {'preprocess', 'from_0_1', 'from_2'}
  kernel = params['cell_01']['from_0_1']['sep_conv_3x3']['block1']['depthwise']
  assert kernel['kernel'].shape == (3, 3, 3, 1, 8)
  assert params['cell_01']['from_2']['sep_conv_3x3']['block2']['pointwise'][
      'kernel'].shape == (1, 1, 1, 8, 8)


def test_edge_groups_run_each_source_once_in_dependency_order():
  edges = spaces.full_edges(4)
  groups = supernet.edge_groups(edges)
  assert [supernet.group_name(edges, g) for g in groups] == [
      'from_0_1', 'from_2', 'from_3', 'from_4']
  assert sorted(e for g in groups for e in g) == list(range(len(edges)))
  assert [edges[e] for e in groups[1]] == [(2, 1), (2, 2), (2, 3)]
  fixed = spaces.SpaceSpec(edge_mode='fixed').edges('normal')
  assert [[fixed[e] for e in g] for g in supernet.edge_groups(fixed)] == [
      [(0, 0), (1, 0), (0, 1), (0, 2), (0, 3)], [(2, 1)], [(3, 2)], [(4, 3)]]


def _per_edge_cell(cell, variables, s0, s1, arch, train):
  """Reference: the cell as one MixedOp per edge, applied in edge order, with each
  edge's parameters and BN statistics sliced out of the stacked groups.

  Returns (output, {edge: its updated batch_stats}).
  """
  spec, edges = cell.spec, cell.spec.edges(cell.key)
  params, stats = variables['params'], variables['batch_stats']
  pre = ops_lib.Preprocess(cell.c, cell.reduction_prev, affine=False)
  (s0, s1), _ = pre.apply({'params': params['preprocess'],
                           'batch_stats': stats['preprocess']}, s0, s1, train,
                          mutable=['batch_stats'])
  w = jax.nn.softmax(arch['alpha'], -1)
  coef = (spaces.edge_coefficients(spec, arch['beta']) if spec.has_beta
          else jnp.ones(len(edges)))
  states, new_stats = [s0, s1], {}
  for node in range(spec.steps):
    acc = 0.0
    for e, (src, dst) in enumerate(edges):
      if dst != node:
        continue
      sub = supernet.edge_variables(cell, variables, e)
      stride = 2 if cell.reduction and src < 2 else 1
      op = supernet.MixedOp(spec.ops, cell.c, stride, cell.depthwise)
      y, mutated = op.apply(sub, states[src], w[e], train, mutable=['batch_stats'])
      new_stats[e] = mutated['batch_stats']
      acc = acc + coef[e] * y
    states.append(acc)
  return jnp.concatenate(states[2:], -1), new_stats


@pytest.mark.parametrize('space,edge_mode,reduction,depthwise', [
    ('s1', 'pruned', False, 'shifted'), ('s1', 'searched', True, 'shifted'),
    ('s2', 'fixed', True, 'native')])
def test_batched_cell_matches_per_edge_loop(space, edge_mode, reduction, depthwise):
  # Output, per-edge BN statistics and α/β gradients of the vmapped groups equal a
  # plain loop over edges (train mode, batch statistics).
  spec = spaces.SpaceSpec(ops=spaces.SPACE_OPS[space], num_cells=3, edge_mode=edge_mode,
                          steps=3)
  key = 'reduce' if reduction else 'normal'
  cell = supernet.SearchCell(spec, key, 4, reduction, False, depthwise)
  s0, s1 = _x((2, 8, 8, 6), seed=1), _x((2, 8, 8, 6), seed=2)
  arch = spaces.init_alpha(spec, jax.random.PRNGKey(3), scale=1.0)[key]
  variables = cell.init(jax.random.PRNGKey(4), s0, s1, arch, True)
  r = _x((2, 4, 4, 12) if reduction else (2, 8, 8, 12), seed=5)

  def batched(arch):
    out, mutated = cell.apply(variables, s0, s1, arch, True, mutable=['batch_stats'])
    return jnp.vdot(r, out), (out, mutated['batch_stats'])

  def looped(arch):
    out, new_stats = _per_edge_cell(cell, variables, s0, s1, arch, True)
    return jnp.vdot(r, out), (out, new_stats)

  (_, (out, stats)), g = jax.value_and_grad(batched, has_aux=True)(arch)
  (_, (want, want_stats)), g_want = jax.value_and_grad(looped, has_aux=True)(arch)
  np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-5)
  for e, tree in want_stats.items():
    got = supernet.edge_variables(cell, {'batch_stats': stats}, e)['batch_stats']
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
                 got, tree)
  for k in arch:
    np.testing.assert_allclose(g[k], g_want[k], rtol=1e-4, atol=1e-5)


def test_drop_path_is_per_edge_and_per_sample_and_spares_identity():
  module = supernet.EdgeMixedOps(('sep_conv_3x3', 'skip_connect'), 4, 1, 'shifted')
  x_ExBxHxWxC = jnp.broadcast_to(_x((1, 16, 4, 4, 4)), (4, 16, 4, 4, 4))
  w_only_sep = jnp.tile(jnp.array([1.0, 0.0]), (4, 1))
  rngs = {'params': jax.random.PRNGKey(0), 'drop_path': jax.random.PRNGKey(1)}
  variables = module.init(rngs, x_ExBxHxWxC, w_only_sep, True, 0.5)
  # The same parameters on every edge, so only the drop-path masks can differ.
  variables = jax.tree.map(lambda a: jnp.broadcast_to(a[:1], a.shape), variables)
  y, _ = module.apply(variables, x_ExBxHxWxC, w_only_sep, True, 0.5,
                      rngs={'drop_path': jax.random.PRNGKey(2)}, mutable=['batch_stats'])
  kept_ExB = np.asarray(jnp.any(y != 0, axis=(2, 3, 4)))
  assert 0 < kept_ExB.mean() < 1
  assert len({tuple(row) for row in kept_ExB}) > 1  # Masks differ between edges.
  w_only_skip = jnp.tile(jnp.array([0.0, 1.0]), (4, 1))
  y, _ = module.apply(variables, x_ExBxHxWxC, w_only_skip, True, 0.5,
                      rngs={'drop_path': jax.random.PRNGKey(2)}, mutable=['batch_stats'])
  np.testing.assert_array_equal(y, x_ExBxHxWxC)  # Never on Identity.


def test_weightless_ops_draw_a_drop_path_mask_per_edge(monkeypatch):
  # A pool runs once per source state, but each edge leaving that state drops its
  # samples by its own mask, as per-edge ops of the reference would.
  spec = spaces.SpaceSpec(ops=('max_pool_3x3', 'avg_pool_3x3', 'skip_connect'), num_cells=3,
                          edge_mode='pruned', steps=2)
  cell = supernet.SearchCell(spec, 'normal', 2, False, False, 'shifted')
  s0, s1 = _x((64, 4, 4, 2), seed=1), _x((64, 4, 4, 2), seed=2)
  arch = spaces.init_alpha(spec, jax.random.PRNGKey(3), scale=1.0)['normal']
  variables = cell.init(jax.random.PRNGKey(4), s0, s1, arch, True)
  masks, drop_path = [], ops_lib.drop_path

  def recording(x, rate, rng=None, keep_B=None):
    masks.append(tuple(np.asarray(keep_B)))
    return drop_path(x, rate, rng, keep_B)

  monkeypatch.setattr(ops_lib, 'drop_path', recording)
  cell.apply(variables, s0, s1, arch, True, 0.5, rngs={'drop_path': jax.random.PRNGKey(5)},
             mutable=['batch_stats'])
  # 5 edges × 2 pools (identity is spared), every mask its own draw.
  assert len(masks) == len(spec.edges('normal')) * 2 == 10
  assert len(set(masks)) == 10


def test_init_is_compiled_once_with_the_values_of_eager_init():
  spec = spaces.SpaceSpec(num_cells=1, steps=2)
  net = supernet.SuperNet.create(spec, c=4, depthwise='shifted')
  x = jnp.zeros((2, 8, 8, 3))
  rng = jax.random.PRNGKey(7)
  params, state = net.init(rng, x)
  k_params, k_drop = jax.random.split(rng)
  eager = net.module.init({'params': k_params, 'drop_path': k_drop}, x,
                          spaces.init_alpha(spec, jax.random.PRNGKey(0)), train=True)
  jax.tree.map(np.testing.assert_array_equal, (params, state),
               (eager['params'], eager['batch_stats']))
  hits = ops_lib._compiled_init.cache_info().hits
  other, _ = net.init(jax.random.PRNGKey(8), x)  # Same module and shapes: reused.
  assert ops_lib._compiled_init.cache_info().hits == hits + 1
  assert not np.array_equal(jax.tree.leaves(other)[0], jax.tree.leaves(params)[0])
