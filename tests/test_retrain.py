"""Tests for amdarts.retrain: drop-path, a tiny run, resume, devices, consistency."""

import json
import os
import subprocess
import sys

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from amdarts import checkpoint
from amdarts import config_lib
from amdarts import data as data_lib
from amdarts import errors
from amdarts import genotype_text
from amdarts import genotypes as G
from amdarts import metrics
from amdarts import retrain
from amdarts import spaces
from amdarts import supernet
from configs import base

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _tiny_config():
  c = base.get_config()
  c.data.name = 'synthetic'
  c.data.max_examples = 32  # 4 steps of 8 per epoch; 8 test examples.
  c.data.image_shape = (8, 8, 3)
  c.data.num_classes = 4
  c.model.cells = 2
  c.model.c = 4
  c.model.depthwise = 'shifted'
  c.train.genotype = 'DARTS_V2'
  c.train.epochs = 2
  c.train.batch_size = 8
  c.train.cutout = 4
  c.log_every_steps = 1
  c.checkpoint_every_steps = 3
  return c


def _final_state(config, workdir):
  """The latest checkpoint of a run (as a dict of its fields) and its metadata."""
  train_ds = config_lib.image_dataset(config, 'train')
  genotype = genotype_text.load(config.train.genotype)
  net = retrain.create_network(config, genotype, train_ds.num_classes)
  hp = retrain.step_config(config, data_lib.steps_per_epoch(len(train_ds), 8))
  template = retrain.init_state(net, hp, 0, train_ds.image_shape)
  ckpt = checkpoint.Checkpointer(workdir)
  try:
    state, meta = ckpt.restore(template)
    return flax.serialization.to_state_dict(state), meta
  finally:
    ckpt.close()


@pytest.fixture(scope='module')
def full_run(tmp_path_factory):
  """One uninterrupted tiny run, shared by the tests that compare against it."""
  workdir = str(tmp_path_factory.mktemp('full'))
  return workdir, retrain.train_and_evaluate(_tiny_config(), workdir)


def test_tiny_run_writes_result_metrics_and_schedules(full_run):
  workdir, result = full_run
  with open(os.path.join(workdir, 'result.json')) as f:
    assert json.load(f) == result
  evals = metrics.read_jsonl(os.path.join(workdir, 'metrics.jsonl'), 'eval')
  assert [r['step'] for r in evals] == [4, 8]
  assert result['test_accuracy'] == evals[-1]['accuracy']
  assert result['test_examples'] == 8 and result['steps'] == 8
  # 8 test examples: the accuracy is a multiple of 1/8.
  assert 0 <= result['test_accuracy'] <= 1 and (8 * result['test_accuracy']).is_integer()
  assert genotype_text.from_json(json.dumps(result['genotype'])) == G.DARTS_V2
  train = metrics.read_jsonl(os.path.join(workdir, 'metrics.jsonl'), 'train')
  assert [r['step'] for r in train] == list(range(1, 9))
  # Per-epoch cosine from 0.025 (E = 2: epoch 1 sits at cos(π/2)) and drop-path
  # 0.2·epoch/epochs, both constant within an epoch.
  np.testing.assert_allclose([r['lr'] for r in train], [0.025] * 4 + [0.0125] * 4, rtol=1e-6)
  np.testing.assert_allclose([r['drop_path'] for r in train], [0.0] * 4 + [0.1] * 4)
  assert all(np.isfinite(r['loss']) for r in train)


def test_resume_follows_the_uninterrupted_run(full_run, tmp_path):
  workdir, result = full_run
  config = _tiny_config()
  # Stop inside the second epoch (epoch 1, batch 1 next), then rerun in the same place.
  assert retrain.train_and_evaluate(config, str(tmp_path), stop_after=5) is None
  assert not os.path.exists(tmp_path / 'result.json')
  state, meta = _final_state(config, str(tmp_path))
  assert int(state['step']) == 5 and (meta['epoch'], meta['index']) == (1, 1)
  resumed = retrain.train_and_evaluate(config, str(tmp_path))
  assert resumed == result
  want, _ = _final_state(config, workdir)
  got, _ = _final_state(config, str(tmp_path))
  assert int(got['step']) == 8
  jax.tree.map(np.testing.assert_array_equal, got, want)
  # The metrics record has each step once and the same values.
  strip = lambda rows: [{k: v for k, v in r.items() if k != 'steps_per_sec'} for r in rows]
  assert strip(metrics.read_jsonl(str(tmp_path / 'metrics.jsonl'))) == strip(
      metrics.read_jsonl(os.path.join(workdir, 'metrics.jsonl')))


def test_non_finite_loss_names_the_step(tmp_path, monkeypatch):
  batch_at = data_lib.batch_at

  def poisoned(*args, **kwargs):
    batch = batch_at(*args, **kwargs)
    return {**batch, 'image': np.full_like(batch['image'], np.nan)}

  monkeypatch.setattr(data_lib, 'batch_at', poisoned)
  with pytest.raises(FloatingPointError, match='at step 1'):
    retrain.train_and_evaluate(_tiny_config(), str(tmp_path))


@pytest.mark.parametrize('field, value, match', [
    ('genotype', 'NOT_A_GENOTYPE', 'unknown genotype'),
    ('genotype', '', 'no genotype'),
    ('w_lr_schedule', 'step', 'lr_schedule must be one of'),
    ('color_jitter', (0.4, 0.4, 0.4, 0.7), r'color_jitter must be 4 numbers in .*\[0, 0.5\]'),
])
def test_bad_config_fails_before_training(tmp_path, field, value, match):
  config = _tiny_config()
  config.train[field] = value
  with pytest.raises(ValueError, match=match):
    retrain.train_and_evaluate(config, str(tmp_path))
  assert not os.path.exists(tmp_path / 'checkpoints')


@pytest.mark.parametrize('section, field, value, match', [
    # Issue 11: "600 epochs of 0 steps"; a traceback from inside JAX.
    ('train', 'batch_size', 96, r'train.batch_size=96 is larger than the training data '
                                r'\(32 examples\): no step would run'),
    ('model', 'c', 0, 'model.c=0 .choose the width. is for ImageNet networks only'),
    ('train', 'eval_batch_size', -1, 'train.eval_batch_size must be >= 0, got -1'),
])
def test_input_errors_are_one_line_before_the_workdir_exists(tmp_path, section, field,
                                                             value, match):
  config = _tiny_config()
  config[section][field] = value
  workdir = str(tmp_path / 'w')
  with pytest.raises(errors.ConfigError, match=match) as info:
    retrain.train_and_evaluate(config, workdir)
  assert '\n' not in str(info.value)
  assert not os.path.exists(workdir)


def test_per_cell_genotype_depth_must_match_model(tmp_path):
  cell = G.CellGenotype(G.DARTS_V2.normal, (2, 3, 4, 5), False)
  path = tmp_path / 'g.json'
  path.write_text(genotype_text.to_json(G.PerCellGenotype((cell,) * 3)))
  config = _tiny_config()
  config.train.genotype = str(path)
  with pytest.raises(ValueError, match='per-cell genotype has 3 cells'):
    retrain.train_and_evaluate(config, str(tmp_path / 'run'))


def test_batch_must_divide_over_devices(tmp_path, monkeypatch):
  device = jax.devices()[0]
  monkeypatch.setattr(jax, 'devices', lambda *a: [device] * 3)
  with pytest.raises(ValueError, match='train.batch_size=8 is not divisible by the 3'):
    retrain.train_and_evaluate(_tiny_config(), str(tmp_path))


def test_drop_path_rate_rises_per_epoch():
  hp = retrain.StepConfig(
      steps_per_epoch=10, epochs=4, w_lr=0.4, w_lr_min=0.0, w_lr_schedule='cosine',
      w_lr_gamma=0.5, warmup_epochs=0, w_momentum=0.9, w_wd=0.0, grad_clip=0.0,
      drop_path=0.2, aux_weight=0.0, label_smoothing=0.0)
  steps = [0, 9, 10, 25, 39]  # Epochs 0, 0, 1, 2, 3.
  np.testing.assert_allclose([float(retrain.drop_path_rate(hp, s)) for s in steps],
                             [0, 0, 0.05, 0.1, 0.15], rtol=1e-6)


def _cell_shapes(module, variables_shape, *args):
  """Shapes of the output of every `cell_XX` submodule, by abstract evaluation."""

  def run(variables, *args):
    _, mutated = module.apply(
        variables, *args, train=False, mutable=['intermediates'],
        capture_intermediates=lambda m, _: (m.name or '').startswith('cell_'))
    return mutated['intermediates']

  inter = jax.eval_shape(run, variables_shape, *args)
  return {k: v['__call__'][0].shape for k, v in inter.items()}


def _preprocess_kernels(params):
  """{cell: shapes of the conv kernels of its input preprocessing}."""
  out = {}
  for cell, tree in params.items():
    if cell.startswith('cell_'):
      leaves = jax.tree_util.tree_leaves_with_path(tree['preprocess'])
      out[cell] = {jax.tree_util.keystr(p): x.shape for p, x in leaves
                   if jax.tree_util.keystr(p).endswith("['kernel']")}
  return out


@pytest.mark.parametrize('space, shared', [('s1', True), ('s2', False)])
def test_consistent_search_and_retrain_networks_share_their_layout(space, shared):
  config = base.get_config()
  config.search.consistent_size = True  # With base's consistent regularisers: all of it.
  config.space.name, config.space.shared = space, shared
  config.model.cells, config.model.c = 4, 4
  hp = config_lib.search_hparams(config)
  assert hp == config_lib.retrain_hparams(config)
  spec = config_lib.space_spec(config)
  search_net = supernet.SuperNet.create(spec, c=hp.c, num_classes=10, auxiliary=hp.auxiliary)
  arch = spaces.init_alpha(spec, jax.random.PRNGKey(0))
  genotype = G.derive(spec, arch)
  assert isinstance(genotype, G.Genotype if shared else G.PerCellGenotype)
  retrain_net = retrain.create_network(config, genotype, num_classes=10)

  assert retrain_net.num_cells == spec.num_cells
  assert [c.reduction for c in retrain_net.module.layout] == [
      spec.is_reduction(i) for i in range(spec.num_cells)]
  x = jax.ShapeDtypeStruct((2, 32, 32, 3), jnp.float32)
  key = jax.random.PRNGKey(0)
  s_params, s_state = jax.eval_shape(search_net.init, key, x)
  r_params, r_state = jax.eval_shape(retrain_net.init, key, x)
  search_shapes = _cell_shapes(search_net.module, {'params': s_params, 'batch_stats': s_state},
                               x, arch)
  retrain_shapes = _cell_shapes(retrain_net.module,
                                {'params': r_params, 'batch_stats': r_state}, x)
  assert len(search_shapes) == 4 and search_shapes == retrain_shapes
  assert _preprocess_kernels(s_params) == _preprocess_kernels(r_params)
  # Without consistent_size the search network is DARTS's shallower, narrower one.
  config.search.consistent_size = False
  assert config_lib.search_hparams(config).cells == 8 != retrain_net.num_cells


def test_imagenet_config_selects_the_imagenet_network():
  from configs import imagenet  # pylint: disable=g-import-not-at-top
  config = imagenet.get_config()
  assert retrain.network_kind(config) == 'imagenet'
  hp = retrain.step_config(config, steps_per_epoch=1251)
  assert (hp.w_lr, hp.w_lr_schedule, hp.epochs, hp.w_wd, hp.label_smoothing) == (
      0.5, 'linear', 250, 3e-5, 0.1)
  config.model.c = 48
  net = retrain.create_network(config, G.DARTS_V2, num_classes=1000)
  assert net.module.kind == 'imagenet' and net.num_cells == 14 and net.module.auxiliary


def test_entry_point_overrides_genotype_and_fails_fast(tmp_path):
  proc = subprocess.run(
      [sys.executable, 'experiments/train.py', '--config=configs/imagenet.py',
       '--genotype=NOT_A_GENOTYPE', f'--workdir={tmp_path}'],
      cwd=ROOT, capture_output=True, text=True, timeout=120,
      env={**os.environ, 'JAX_PLATFORMS': 'cpu'})
  assert proc.returncode == 1
  assert "unknown genotype 'NOT_A_GENOTYPE'" in proc.stderr
  assert 'Traceback' not in proc.stderr  # A user error is one line.
  assert not os.listdir(tmp_path)



_TWO_DEVICE_STEPS = """
import sys
sys.path.insert(0, {root!r})
import jax, jax.numpy as jnp, numpy as np
from amdarts import config_lib, data, genotypes as G, parallel, retrain
from tests import test_retrain
assert jax.device_count() == 2, jax.devices()
config = test_retrain._tiny_config()
cell = G.CellGenotype((('sep_conv_3x3', 0), ('max_pool_3x3', 1)), (2,), False)
net = retrain.network_lib.Network.create(G.PerCellGenotype((cell,)), c=4, num_classes=4,
                                         auxiliary=False, depthwise='shifted')
train_ds = config_lib.image_dataset(config, 'train')
hp = retrain.step_config(config, steps_per_epoch=4)
batches = [data.batch_at(train_ds, 0, i, batch_size=8, seed=0) for i in range(2)]
finals = []
for devices in (jax.devices()[:1], jax.devices()):
  mesh = parallel.data_mesh(devices)
  step, _ = retrain.compile_steps(net, hp, mesh)
  state = parallel.put_replicated(retrain.init_state(net, hp, 0, (8, 8, 3)), mesh)
  for b in batches:
    batch = parallel.put_batch(b, mesh)
    assert len(batch['image'].sharding.device_set) == len(devices)
    state, _ = step(state, batch)
  assert len(state.params['classifier']['kernel'].sharding.device_set) == len(devices)
  finals.append(jax.device_get(state))
diff = jax.tree.map(lambda a, b: float(np.max(np.abs(a - b))), *finals)
print('MAXDIFF', max(jax.tree.leaves(diff)))
"""


def test_two_devices_match_one_device(run_with_devices):
  # Data parallelism over 2 host devices: batch norm and the loss still see the global
  # batch, so two steps (drop-path on) match one device up to reduction order.
  proc = run_with_devices(_TWO_DEVICE_STEPS.format(root=ROOT), 2, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  maxdiff = float(proc.stdout.split('MAXDIFF')[1])
  assert maxdiff < 1e-5


def test_imagenet_config_trains_with_darts_imagenet_augmentation():
  from configs import cifar_s1, imagenet  # pylint: disable=g-import-not-at-top
  config = imagenet.get_config()
  assert retrain.train_augment(config, (224, 224, 3)) == data_lib.IMAGENET_AUGMENT
  assert config.train.label_smoothing == 0.1
  assert retrain.train_augment(cifar_s1.get_config(), (32, 32, 3)) == data_lib.Augment(
      crop_padding=4, flip=True, cutout_length=16)
