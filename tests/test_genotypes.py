"""Tests for amdarts.genotypes: derivation rules, statistics, validation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from amdarts import genotype_text
from amdarts import genotypes
from amdarts import spaces

OPS = spaces.DARTS_OPS


def _alpha(num_edges, entries, ops=OPS):
  """α of zeros with `entries[(edge, op_name)] = value`, as a jax array."""
  a = np.zeros((num_edges, len(ops)), np.float32)
  for (edge, op), value in entries.items():
    a[edge, ops.index(op)] = value
  return jnp.asarray(a)


# ----------------------------------------------------------------------------------
# Derivation.


def test_pruned_darts_rule_on_hand_made_alpha():
  spec = spaces.SpaceSpec(num_cells=3, steps=2)  # edges (0,0) (1,0) (0,1) (1,1) (2,1).
  normal = _alpha(5, {
      # Node 0. Edge 0: none dominates but is ignored, the op is sep_conv_3x3; its
      # non-none strength is tiny, so edge 1 (src 1) ranks first.
      (0, 'none'): 10.0, (0, 'sep_conv_3x3'): 2.0,
      (1, 'skip_connect'): 3.0,
      # Node 1. Edge 2 would rank first if none counted. Edge 3 spreads its weight
      # (largest non-none sum, max 0.16); edge 4 has one peak (max 0.51), so the
      # max rule keeps src 2 before src 1, a sum rule would swap them.
      (2, 'none'): 5.0,
      **{(3, op): 1.0 for op in OPS[1:]}, (3, 'sep_conv_5x5'): 1.2,
      (4, 'dil_conv_5x5'): 2.0,
  })
  reduce = _alpha(5, {
      (0, 'avg_pool_3x3'): 1.0, (1, 'max_pool_3x3'): 2.0,
      (2, 'sep_conv_3x3'): 3.0, (4, 'skip_connect'): 1.0,
  })
  g = genotypes.derive(spec, {'normal': {'alpha': normal}, 'reduce': {'alpha': reduce}})
  assert g == genotypes.Genotype(
      normal=(('skip_connect', 1), ('sep_conv_3x3', 0),
              ('dil_conv_5x5', 2), ('sep_conv_5x5', 1)),
      normal_concat=(2, 3),
      reduce=(('max_pool_3x3', 1), ('avg_pool_3x3', 0),
              ('sep_conv_3x3', 0), ('skip_connect', 2)),
      reduce_concat=(2, 3))
  # The sum-of-weights ranking really disagrees on node 1 (the case is informative).
  w = np.asarray(jax.nn.softmax(normal, -1))
  assert w[3, 1:].sum() > w[4, 1:].sum() and w[3, 1:].max() < w[4, 1:].max()


def test_pruned_rule_properties_on_random_alpha():
  spec = spaces.SpaceSpec()
  arch = spaces.init_alpha(spec, jax.random.PRNGKey(0), scale=1.0)
  g = genotypes.derive(spec, arch)
  assert g.normal_concat == g.reduce_concat == (2, 3, 4, 5)
  for key, genes in (('normal', g.normal), ('reduce', g.reduce)):
    w = np.asarray(jax.nn.softmax(arch[key]['alpha'], -1))
    strength = w[:, 1:].max(-1)
    start = 0
    for node in range(4):
      s = strength[start:start + node + 2]
      (op_a, a), (op_b, b) = genes[2 * node:2 * node + 2]
      # The kept pair are the two strongest edges, strongest first.
      assert s[a] >= s[b] and sorted(s)[-2:] == sorted([s[a], s[b]]) and a != b
      assert op_a == OPS[1 + int(np.argmax(w[start + a, 1:]))]
      start += node + 2


def test_fixed_mode_keeps_every_edge_in_edge_order():
  spec = spaces.SpaceSpec(num_cells=3, steps=2, edge_mode='fixed',
                          inputs={'reduce': ((0, 1), (1, 2))})
  assert spec.edges('normal') == ((0, 0), (1, 0), (0, 1), (2, 1))  # (src, node)
  normal = _alpha(4, {(0, 'none'): 9.0, (0, 'skip_connect'): 1.0, (1, 'dil_conv_3x3'): 5.0,
                      (2, 'sep_conv_5x5'): 1.0, (3, 'avg_pool_3x3'): 1.0})
  reduce = _alpha(4, {(0, 'max_pool_3x3'): 1.0, (1, 'sep_conv_3x3'): 1.0,
                      (2, 'dil_conv_5x5'): 1.0, (3, 'skip_connect'): 1.0})
  g = genotypes.derive(spec, {'normal': {'alpha': normal}, 'reduce': {'alpha': reduce}})
  # Edge order, not strength order: (skip, 0) stays first despite its weak edge.
  assert g.normal == (('skip_connect', 0), ('dil_conv_3x3', 1),
                      ('sep_conv_5x5', 0), ('avg_pool_3x3', 2))
  assert g.reduce == (('max_pool_3x3', 0), ('sep_conv_3x3', 1),
                      ('dil_conv_5x5', 1), ('skip_connect', 2))


def _searched_example():
  spec = spaces.SpaceSpec(num_cells=3, steps=3, edge_mode='searched')
  pairs = spec.pairs()

  def beta(chosen):
    b = np.zeros(len(pairs), np.float32)
    for node, pair in chosen:
      b[pairs.index((node, pair))] = 3.0
    return jnp.asarray(b)

  # Full edges: node 0: 0,1; node 1: 2,3,4; node 2: 5,6,7,8 (sources ascending).
  normal = _alpha(9, {
      (0, 'sep_conv_3x3'): 1.0, (1, 'skip_connect'): 1.0,
      (2, 'sep_conv_3x3'): 10.0,  # the strongest edge, but β drops it.
      (3, 'none'): 5.0, (3, 'max_pool_3x3'): 1.0, (4, 'dil_conv_3x3'): 1.0,
      (5, 'avg_pool_3x3'): 1.0, (8, 'sep_conv_5x5'): 1.0,
  })
  arch = {
      'normal': {'alpha': normal, 'beta': beta([(1, (1, 2)), (2, (0, 3))])},
      'reduce': {'alpha': _alpha(9, {}), 'beta': beta([(1, (0, 2)), (2, (2, 3))])},
  }
  return spec, arch


def test_searched_mode_topology_and_genotype():
  spec, arch = _searched_example()
  topology = genotypes.derive_topology(spec, arch)
  assert topology == {'normal': ((0, 1), (1, 2), (0, 3)), 'reduce': ((0, 1), (0, 2), (2, 3))}
  g = genotypes.derive(spec, arch)
  assert g.normal == (('sep_conv_3x3', 0), ('skip_connect', 1),
                      ('max_pool_3x3', 1), ('dil_conv_3x3', 2),
                      ('avg_pool_3x3', 0), ('sep_conv_5x5', 3))
  # All-equal α: the first non-none op wins, as in the reference's strict '>'.
  assert g.reduce == (('max_pool_3x3', 0), ('max_pool_3x3', 1),
                      ('max_pool_3x3', 0), ('max_pool_3x3', 2),
                      ('max_pool_3x3', 2), ('max_pool_3x3', 3))
  assert g.normal_concat == (2, 3, 4)

  # Stage 2 on the derived topology, with α restricted to the kept edges, agrees.
  stage2 = spaces.SpaceSpec(num_cells=3, steps=3, edge_mode='fixed', inputs=topology)
  full = spaces.full_edges(3)
  arch2 = {k: {'alpha': arch[k]['alpha'][np.array([full.index(e) for e in stage2.edges(k)])]}
           for k in stage2.cell_keys}
  assert genotypes.derive(stage2, arch2) == g

  # eq. 16's edge coefficients put (almost) all weight on the kept pair.
  coef = np.asarray(spaces.edge_coefficients(spec, arch['normal']['beta']))
  for node, pair in enumerate(topology['normal']):
    rows = [full.index((src, node)) for src in range(node + 2)]
    top2 = sorted(np.argsort(-coef[rows])[:2].tolist())
    assert tuple(top2) == pair


def test_per_cell_space_without_none():
  ops = spaces.SPACE_OPS['s2']  # ('skip_connect', 'sep_conv_3x3'): no none to skip.
  spec = spaces.SpaceSpec(ops=ops, num_cells=3, shared=False, steps=2, edge_mode='fixed')
  signs = {'cell_00': (1, -1, 1, 1), 'cell_01': (-1, -1, 1, -1), 'cell_02': (1, 1, 1, 1)}
  arch = {k: {'alpha': _alpha(4, {(e, 'skip_connect'): float(s) for e, s in enumerate(v)},
                              ops=ops)} for k, v in signs.items()}
  g = genotypes.derive(spec, arch)
  assert isinstance(g, genotypes.PerCellGenotype)
  assert [c.reduction for c in g.cells] == [False, True, True]
  assert g.cells[0].genes == (('skip_connect', 0), ('sep_conv_3x3', 1),
                              ('skip_connect', 0), ('skip_connect', 2))
  assert g.cells[1].genes == (('sep_conv_3x3', 0), ('sep_conv_3x3', 1),
                              ('skip_connect', 0), ('sep_conv_3x3', 2))
  assert genotypes.skip_ratio(g) == pytest.approx(8 / 12)
  assert genotypes.skip_ratio(g, reduction=False) == pytest.approx(3 / 4)
  assert genotypes.num_parametric(g, reduction=True) == 3
  assert genotype_text.from_darts_string(genotype_text.to_darts_string(g)) == g


def test_statistics():
  assert genotypes.skip_ratio(genotypes.DARTS_V2) == pytest.approx(5 / 16)
  assert genotypes.skip_ratio(genotypes.DARTS_V2, reduction=False) == pytest.approx(2 / 8)
  assert genotypes.skip_ratio(genotypes.DARTS_V1) == pytest.approx(6 / 16)
  assert genotypes.num_parametric(genotypes.DARTS_V2) == 6
  assert genotypes.num_parametric(genotypes.DARTS_V2, reduction=True) == 0
  s3 = spaces.SpaceSpec(ops=spaces.SPACE_OPS['s3'], num_cells=1, steps=1)
  # softmax none weights 1/3 and e^ln2 / (2 + e^ln2) = 1/2.
  alpha = _alpha(2, {(1, 'none'): float(np.log(2.0))}, ops=s3.ops)
  assert genotypes.none_weight(s3, {'normal': {'alpha': alpha}}) == pytest.approx(5 / 12)
  s2 = spaces.SpaceSpec(ops=spaces.SPACE_OPS['s2'], num_cells=1, steps=1)
  assert genotypes.none_weight(s2, {'normal': {'alpha': jnp.zeros((2, 2))}}) == 0.0
  g = genotypes.derive(s3, {'normal': {'alpha': alpha}})
  assert g.reduce == () and g.reduce_concat == ()  # one cell: no reduction cell.
  assert genotype_text.from_json(genotype_text.to_json(g)) == g


def test_statistics_are_the_normal_cells_with_pooled_and_reduction_versions():
  # S3 in 3 cells: cell 0 normal, cells 1 and 2 reduction; 2 edges per cell (1 node).
  spec = spaces.SpaceSpec(ops=spaces.SPACE_OPS['s3'], num_cells=3, steps=1)
  log2 = float(np.log(2.0))
  # none weights: normal 1/3 and 1/2 (mean 5/12); reduce 2 / (3 + e) on both edges.
  r = 2 / (3 + np.e)
  arch = {'normal': {'alpha': _alpha(2, {(1, 'none'): log2}, ops=spec.ops)},
          'reduce': {'alpha': _alpha(2, {(0, 'none'): log2, (1, 'none'): log2,
                                         (0, 'skip_connect'): 1.0, (1, 'skip_connect'): 1.0},
                                     ops=spec.ops)}}
  genotype = genotypes.derive(spec, arch)
  # Ties go to the first non-none op: sep_conv_3x3 in the normal cell; skips in reduce.
  assert genotype.normal == (('sep_conv_3x3', 0), ('sep_conv_3x3', 1))
  assert genotype.reduce == (('skip_connect', 0), ('skip_connect', 1))
  stats = genotypes.statistics(spec, arch, genotype)
  assert stats == pytest.approx({
      'none_weight': 5 / 12, 'none_weight_reduce': r, 'none_weight_all': (5 / 6 + 2 * r) / 4,
      'skip_ratio': 0.0, 'skip_ratio_reduce': 1.0, 'skip_ratio_all': 0.5,
      'num_parametric': 2.0, 'num_parametric_reduce': 0.0, 'num_parametric_all': 2.0})
  # Per-cell α: the normal-cell keys are the cells that are not reductions.
  per_cell = spaces.SpaceSpec(ops=spec.ops, num_cells=3, steps=1, shared=False)
  arch = {'cell_00': arch['normal'], 'cell_01': arch['reduce'], 'cell_02': arch['reduce']}
  assert genotypes.none_weight(per_cell, arch, reduction=False) == pytest.approx(5 / 12)
  assert genotypes.none_weight(per_cell, arch) == pytest.approx((5 / 6 + 4 * r) / 6)


def test_derive_rejects_wrong_alpha_shape():
  spec = spaces.SpaceSpec(num_cells=3, steps=2)
  arch = {'normal': {'alpha': jnp.zeros((5, 8))}, 'reduce': {'alpha': jnp.zeros((14, 8))}}
  with pytest.raises(ValueError, match=r'reduce/alpha has shape \(14, 8\), the space needs'):
    genotypes.derive(spec, arch)


# ----------------------------------------------------------------------------------
# Uniform sampling (random search).


def _alpha_deriving(spec, genotype):
  """An architecture from which `derive` returns `genotype` (None if there is none).

  Each kept gene's edge gets weight on its op only, the node's first gene more than
  its second (derive lists a node's genes strongest first); searched mode puts β on
  the node's kept pair.
  """
  pairs = spec.pairs()
  arch = {}
  keys = spec.cell_keys if spec.shared else [spec.cell_key(i) for i in range(spec.num_cells)]
  for (_, cell), cell_key in zip(genotypes.named_cells(genotype), keys):
    edges = spec.edges(cell_key)
    a = np.zeros((len(edges), len(spec.ops)), np.float32)
    beta = np.zeros(len(pairs), np.float32)
    for k, (op, src) in enumerate(cell.genes):
      node = k // 2
      if (src, node) not in edges:
        return None
      a[edges.index((src, node)), spec.ops.index(op)] = 8.0 - (k % 2)
    for node in range(spec.steps):
      kept = tuple(sorted(src for _, src in cell.genes[2 * node:2 * node + 2]))
      if spec.has_beta:
        beta[pairs.index((node, kept))] = 5.0
    arch[cell_key] = {'alpha': jnp.asarray(a)}
    if spec.has_beta:
      arch[cell_key]['beta'] = jnp.asarray(beta)
  return arch


@pytest.mark.parametrize('space,edge_mode,shared', [
    ('s1', 'pruned', True), ('s3', 'searched', True), ('s2', 'fixed', False)])
def test_sample_draws_derivable_genotypes_and_covers_the_space(space, edge_mode, shared):
  """Every draw is a genotype `derive` can return; every op and input pair appears."""
  spec = spaces.SpaceSpec(ops=spaces.SPACE_OPS[space], num_cells=4, shared=shared,
                          edge_mode=edge_mode, steps=4)
  rng = np.random.default_rng(0)
  ops_seen, pairs_seen = {}, {}
  draws = 400
  for _ in range(draws):
    g = genotypes.sample(spec, rng)
    assert genotypes.validate(g) == g
    assert type(g) is (genotypes.Genotype if shared else genotypes.PerCellGenotype)
    arch = _alpha_deriving(spec, g)
    assert arch is not None and genotypes.derive(spec, arch) == g
    for _, cell in genotypes.named_cells(g):
      for op, _ in cell.genes:
        ops_seen[op] = ops_seen.get(op, 0) + 1
      for node in range(spec.steps):
        pair = tuple(src for _, src in cell.genes[2 * node:2 * node + 2])
        pairs_seen[(node, pair)] = pairs_seen.get((node, pair), 0) + 1
  kept_ops = [op for op in spec.ops if op != 'none']
  assert sorted(ops_seen) == sorted(kept_ops)  # none never kept, every other op drawn.
  counts = np.array([ops_seen[op] for op in kept_ops])
  # Uniform ops: each count within 20% of the mean (the mean is >= 400 per op here).
  assert np.all(np.abs(counts - counts.mean()) < 0.2 * counts.mean()), ops_seen
  if edge_mode == 'fixed':
    assert set(pairs_seen) == {(n, p) for n, p in enumerate(spaces.fixed_pairs(4))}
  else:
    assert set(pairs_seen) == set(spaces.node_pairs(4))  # Every pair of every node.
    last = np.array([v for (n, _), v in pairs_seen.items() if n == 3])  # 10 pairs.
    assert np.all(np.abs(last - last.mean()) < 0.35 * last.mean()), pairs_seen


def test_sample_is_a_function_of_the_generator_state():
  spec = spaces.SpaceSpec(ops=spaces.SPACE_OPS['s3'], num_cells=3, steps=2)
  first, again = (genotypes.sample(spec, np.random.default_rng(7)) for _ in range(2))
  assert first == again  # Random search's k-th sample is reproducible.
  assert genotypes.sample(spec, np.random.default_rng(8)) != first
  rng = np.random.default_rng(7)
  assert len({genotypes.sample(spec, rng) for _ in range(20)}) > 10
