"""Tests of amdarts.ops: the op registry every consumer reads, and the parts both networks
share (module names, capturing cell outputs)."""

import jax
import jax.numpy as jnp
from matplotlib import colors
import numpy as np
import pytest

from amdarts import genotype_text
from amdarts import genotypes
from amdarts import network as network_lib
from amdarts import ops as ops_lib
from amdarts import plots
from amdarts import spaces
from amdarts import supernet

KEY = jax.random.PRNGKey(0)


@pytest.mark.parametrize('name', sorted(ops_lib.REGISTRY))
def test_every_entry_builds_and_parametric_means_it_has_weights(name):
  entry = ops_lib.REGISTRY[name]
  x = jax.random.normal(KEY, (2, 8, 8, 6))
  for stride in (1, 2):
    module = ops_lib.build(name, 6, stride, affine=True)
    variables = module.init(KEY, x, False)
    assert module.apply(variables, x, False).shape == (2, 8 // stride, 8 // stride, 6)
  # At stride 1 (a stride-2 skip is a FactorizedReduce, still not a parametric op),
  # an op has trainable weights exactly when the registry calls it parametric.
  params = ops_lib.build(name, 6, 1, affine=True).init(KEY, x, False).get('params', {})
  assert bool(jax.tree.leaves(params)) == entry.parametric
  assert colors.is_color_like(entry.colour)


def test_colours_tell_ops_apart():
  colours = [colors.to_hex(e.colour) for e in ops_lib.REGISTRY.values()]
  assert len(set(colours)) == len(colours)


def test_pool_batch_norm_sits_inside_the_pool_in_a_mixture():
  x = jax.random.normal(KEY, (2, 8, 8, 4))
  mixed = ops_lib.build('max_pool_3x3', 4, 1, affine=False, mixture=True).init(KEY, x, True)
  assert jax.tree.map(jnp.shape, mixed) == {'batch_stats': {'bn': {'mean': (4,), 'var': (4,)}}}
  assert ops_lib.build('max_pool_3x3', 4, 1, affine=True).init(KEY, x, True) == {}


def test_unknown_op_fails_at_the_space_with_one_line():
  with pytest.raises(ValueError) as info:
    spaces.SpaceSpec(ops=('none', 'conv_9x9'))
  assert "unknown op(s) ['conv_9x9']" in str(info.value) and '\n' not in str(info.value)
  with pytest.raises(ValueError, match="unknown op 'conv_9x9'; known: "):
    ops_lib.build('conv_9x9', 4, 1, affine=True)


@pytest.fixture
def conv_1x1(monkeypatch):
  """Adds an op to the registry, as a newcomer would: one entry."""
  entry = ops_lib.OpDef(
      build=lambda a: ops_lib.ReLUConvBN(a.c, 1, a.stride, 0, a.affine, name=a.name),
      parametric=True, colour='tab:pink')
  monkeypatch.setitem(ops_lib.REGISTRY, 'conv_1x1', entry)
  return 'conv_1x1'


def test_an_op_added_to_the_registry_is_accepted_end_to_end(conv_1x1, tmp_path):
  # Space and super-net.
  spec = spaces.SpaceSpec(ops=('none', 'skip_connect', conv_1x1), num_cells=3, steps=2)
  net = supernet.SuperNet.create(spec, c=4, num_classes=3)
  x = jax.random.normal(KEY, (2, 8, 8, 3))
  params, state = net.init(KEY, x)
  assert params['cell_00']['from_0_1'][conv_1x1]['conv']['kernel'].shape == (4, 1, 1, 4, 4)
  # α favouring the new op on every edge.
  arch = {key: {'alpha': a['alpha'].at[:, 2].add(1.0)}
          for key, a in spaces.init_alpha(spec, KEY).items()}
  (logits, _), _ = net.apply(params, state, arch, x, train=True)
  assert logits.shape == (2, 3) and np.all(np.isfinite(logits))

  # Derivation, validation, statistics, both text forms, drawing.
  genotype = genotypes.derive(spec, arch)
  assert {op for op, _ in genotype.normal + genotype.reduce} == {conv_1x1}
  assert genotypes.validate(genotype) == genotype
  assert genotypes.num_parametric(genotype) == 8
  assert genotype_text.from_json(genotype_text.to_json(genotype)) == genotype
  assert genotype_text.from_darts_string(genotype_text.to_darts_string(genotype)) == genotype
  plots.draw_genotype(genotype, tmp_path / 'cells.svg')
  svg = (tmp_path / 'cells.svg').read_text()
  assert svg.count(conv_1x1) == 8 and colors.to_hex('tab:pink') in svg

  # The discrete network of the genotype.
  discrete = network_lib.Network.create(genotype, num_cells=3, c=4, num_classes=3)
  d_params, d_state = discrete.init(KEY, x)
  assert d_params['cell_01']['edge_0'][conv_1x1]['conv']['kernel'].shape == (1, 1, 8, 8)
  (d_logits, _), _ = discrete.apply(d_params, d_state, x, train=False)
  assert d_logits.shape == (2, 3)


def _supernet_and_apply():
  spec = spaces.SpaceSpec(num_cells=3, edge_mode='fixed', steps=2)
  net = supernet.SuperNet.create(spec, c=4, num_classes=5, depthwise='shifted')
  alpha = spaces.init_alpha(spec, jax.random.PRNGKey(1))
  x = jax.random.normal(KEY, (2, 8, 8, 3))
  params, state = net.init(KEY, x)
  apply = lambda p, **kw: net.apply(p, state, alpha, x, **kw)
  return params, apply, [(2, 8, 8, 8), (2, 4, 4, 16), (2, 2, 2, 32)]


def _network_and_apply():
  net = network_lib.Network.create(genotypes.DARTS_V2, kind='cifar', num_cells=3, c=4,
                                   num_classes=5, auxiliary=True, depthwise='shifted')
  x = jax.random.normal(KEY, (2, 32, 32, 3))
  params, state = net.init(KEY, x)
  apply = lambda p, **kw: net.apply(p, state, x, **kw)
  return params, apply, [(2, 32, 32, 16), (2, 16, 16, 32), (2, 8, 8, 64)]


@pytest.mark.parametrize('make', [_supernet_and_apply, _network_and_apply],
                         ids=['supernet', 'network'])
def test_capture_returns_the_cell_outputs_and_adds_no_computation(make):
  params, apply, shapes = make()
  for train in (False, True):
    (logits, _), new_state, cells = apply(params, train=train, capture=True)
    assert list(cells) == ['cell_00', 'cell_01', 'cell_02']
    assert [c.shape for c in cells.values()] == shapes
    (plain, _), plain_state = apply(params, train=train)
    np.testing.assert_array_equal(logits, plain)
    jax.tree.map(np.testing.assert_array_equal, new_state, plain_state)
    # The classifier reads the global average pool of the last cell's output.
    pooled = cells['cell_02'].mean(axis=(1, 2))
    head = params['classifier']
    np.testing.assert_allclose(pooled @ head['kernel'] + head['bias'], logits, rtol=1e-5,
                               atol=1e-6)

  def num_ops(capture):
    fn = lambda p: apply(p, train=True, capture=capture)
    return len(jax.make_jaxpr(fn)(params).jaxpr.eqns)

  assert num_ops(True) == num_ops(False)


def test_batch_norm_matches_torch_by_hand():
  # PyTorch normalises with the biased batch variance and moves running_var towards
  # the unbiased one, n/(n-1) times larger (n = B·H·W values per channel).
  x = jnp.asarray(np.random.default_rng(0).normal(1.5, 2.0, size=(4, 3, 3, 2)), jnp.float32)
  bn = ops_lib.BatchNorm(use_running_average=False, affine=False)
  variables = bn.init(jax.random.PRNGKey(0), x)
  y, mutated = bn.apply(variables, x, mutable=['batch_stats'])
  xs = np.asarray(x, np.float64).reshape(-1, 2)
  n, mean, var = xs.shape[0], xs.mean(0), xs.var(0)
  np.testing.assert_allclose(np.asarray(y).reshape(-1, 2), (xs - mean) / np.sqrt(var + 1e-5),
                             rtol=1e-5, atol=1e-5)
  stats = mutated['batch_stats']
  np.testing.assert_allclose(stats['mean'], 0.1 * mean, rtol=1e-6)
  np.testing.assert_allclose(stats['var'], 0.9 + 0.1 * var * n / (n - 1), rtol=1e-6)
  # Evaluation uses the running statistics.
  y_eval = ops_lib.BatchNorm(use_running_average=True, affine=False).apply(
      {'batch_stats': stats}, x)
  np.testing.assert_allclose(
      np.asarray(y_eval).reshape(-1, 2),
      (xs - 0.1 * mean) / np.sqrt(0.9 + 0.1 * var * n / (n - 1) + 1e-5), rtol=1e-5, atol=1e-5)


_FLOAT64_SCRIPT = '''
import collections, sys
sys.path.insert(0, {root!r}); sys.path.insert(0, {root!r} + '/tests')
import jax
jax.config.update('jax_enable_x64', True)  # Before any array exists.
import numpy as np
from amdarts import data, genotypes, parallel, retrain, search
import test_retrain, test_search

def dtypes(state):
  return {{jax.tree_util.keystr(p): str(x.dtype)
          for p, x in jax.tree_util.tree_leaves_with_path(state)}}

def check(name, before, after):
  floats = {{k: v for k, v in before.items() if v.startswith('float')}}
  assert set(floats.values()) == {{'float64'}}, (name, sorted(
      k for k, v in floats.items() if v != 'float64')[:5])
  assert after == before, (name, sorted(k for k in before if after[k] != before[k])[:5])
  print(name, len(floats), 'float64 leaves')

config = test_search.tiny_config(**{{'search.estimator': 'first_order'}})
train, val = search.load_search_data(config)
s = search.Searcher(config, train.image_shape, train.num_classes, 3)
state = parallel.put_replicated(s.init(0), s.mesh)
before = dtypes(state)
batch = lambda ds: data.batch_at(ds, 0, 0, batch_size=8, seed=0)  # float32 images.
state, _ = s.step_fn(state, batch(train), batch(val))
check('search', before, dtypes(state))
state, _ = s.step_fn(state, batch(train), batch(val))
assert s.step_fn._cache_size() == 1  # The second step reused the first compilation.

rc = test_retrain._tiny_config()
ds = retrain.config_lib.image_dataset(rc, 'train')
net = retrain.create_network(rc, genotypes.DARTS_V2, ds.num_classes)
hp = retrain.step_config(rc, 4)
train_fn, _ = retrain.compile_steps(net, hp, parallel.data_mesh())
state = parallel.put_replicated(retrain.init_state(net, hp, 0, ds.image_shape), s.mesh)
before = dtypes(state)
state, _ = train_fn(state, data.batch_at(ds, 0, 0, batch_size=8, seed=0,
                                        augment=data.Augment(cutout_length=4)))
check('retrain', before, dtypes(state))
print('OK')
'''


def test_float64_every_leaf_keeps_its_dtype_through_a_search_and_a_retrain_step(
    run_with_devices):
  """Under jax_enable_x64 params, BN statistics, α and optimizer states are all float64.

  A float32 leaf that turns float64 after a step (BN statistics, Dense layers and
  BN affine parameters used to) changes the jitted step's input types: a retrace.
  """
  import os  # pylint: disable=g-import-not-at-top
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  out = run_with_devices(_FLOAT64_SCRIPT.format(root=root), 1)
  assert out.returncode == 0 and 'OK' in out.stdout, out.stdout[-2000:] + out.stderr[-3000:]


def _traced_normalize(x, epsilon):
  axes = tuple(range(x.ndim - 1))
  mean = jnp.mean(x, axes)
  var = jnp.mean(jnp.square(x - mean), axes)
  return (x - mean) * jax.lax.rsqrt(var + epsilon), mean, var


def test_normalize_derivatives_equal_those_of_the_traced_statistics_at_every_order():
  # The compact tangent rule against JAX differentiating the statistics: gradients,
  # gradients of gradients and a forward-over-reverse Hessian-vector product, through
  # all three outputs (the running statistics read μ and σ²), in float64.
  with jax.enable_x64(True):
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(1.5, 2.0, (3, 4, 4, 5)))
    w = jnp.asarray(rng.normal(size=(3, 4, 4, 5)))
    v = jnp.asarray(rng.normal(size=(3, 4, 4, 5)))

    def loss(normalize):
      def f(x):
        y, mean, var = normalize(x, 1e-5)
        return jnp.sum(jnp.sin(y) * w) + jnp.sum(var ** 2) + jnp.sum(jnp.cos(mean))
      return f

    ours, traced = loss(ops_lib.normalize), loss(_traced_normalize)
    for derivative in (
        lambda f: f,
        jax.grad,
        lambda f: jax.grad(lambda x: jnp.sum(jax.grad(f)(x) ** 3)),
        lambda f: lambda x: jax.jvp(jax.grad(f), (x,), (v,))[1],
    ):
      np.testing.assert_allclose(derivative(ours)(x), derivative(traced)(x),
                                 rtol=1e-10, atol=1e-12)
