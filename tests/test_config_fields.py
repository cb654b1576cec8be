"""Every config field has a type and range; bad values fail in one line each; the fingerprint."""

import glob
import importlib
import os

import ml_collections
import pytest

from amdarts import config_fields
from amdarts import errors
from configs import base, ptb
from conftest import ROOT

_TASK_BASES = {'image': base, 'ptb': ptb}


def _configs():
  for path in sorted(glob.glob(os.path.join(ROOT, 'configs', '*.py'))):
    name = os.path.basename(path)[:-3]
    yield name, importlib.import_module(f'configs.{name}').get_config()


@pytest.mark.parametrize('task', sorted(_TASK_BASES))
def test_every_field_of_the_base_configs_has_a_spec(task):
  names = [n for n, _ in config_fields.flatten(_TASK_BASES[task].get_config())]
  missing = sorted(set(names) - set(config_fields.FIELDS[task]))
  assert not missing, f'add these fields to config_fields.FIELDS[{task!r}]: {missing}'
  stale = sorted(set(config_fields.FIELDS[task]) - set(names))
  assert not stale, f'no longer config fields of {task!r}: {stale}'


def test_resumable_fields_are_fields():
  known = set(config_fields.FIELDS['image']) | set(config_fields.FIELDS['ptb'])
  assert config_fields.RESUMABLE <= known


@pytest.mark.parametrize('name,config', list(_configs()))
def test_shipped_configs_pass(name, config):
  config_fields.check(config)


@pytest.mark.parametrize('field,value,message', [
    ('search.c', 0, 'search.c must be >= 1, got 0'),
    ('search.c', -4, 'search.c must be >= 1, got -4'),
    ('search.c', True, 'search.c must be an integer, got True'),
    ('data.num_classes', 0, 'data.num_classes must be >= 2, got 0'),
    ('search.cells', 0, 'search.cells must be >= 1, got 0'),
    ('search.epochs', 0, 'search.epochs must be >= 1, got 0'),
    ('search.w_lr', 0.0, 'search.w_lr must be > 0, got 0.0'),
    ('search.a_lr', -1.0, 'search.a_lr must be > 0, got -1.0'),
    ('search.w_lr', float('nan'), 'search.w_lr must be a finite number, got nan'),
    ('search.w_lr', float('inf'), 'search.w_lr must be a finite number, got inf'),
    ('search.eta', -0.1, 'search.eta must be >= 0, got -0.1'),
    ('search.eval_batches', -1, 'search.eval_batches must be >= 0, got -1'),
    ('search.w_momentum', 1.0, 'search.w_momentum must lie in [0, 1), got 1.0'),
    ('data.train_portion', 1.0, 'data.train_portion must lie in (0, 1), got 1.0'),
    ('data.image_shape', (8, 0, 3), 'data.image_shape must be 3 positive integers'),
    ('train.drop_path', 1.0, 'train.drop_path must lie in [0, 1), got 1.0'),
    ('train.w_lr_gamma', 0.0, 'train.w_lr_gamma must lie in (0, 1], got 0.0'),
    ('log_every_steps', 0, 'log_every_steps must be >= 1, got 0'),
    ('checkpoint_every_steps', -1, 'checkpoint_every_steps must be >= 0, got -1'),
    ('keep_checkpoints', 0, 'keep_checkpoints must be >= 1, got 0'),
    ('seed', -1, 'seed must be >= 0, got -1'),
])
def test_a_bad_value_is_one_line_naming_field_and_value(field, value, message):
  # Not type-safe, so that wrong types get past ConfigDict's own check to this one.
  config = ml_collections.ConfigDict(base.get_config().to_dict(), type_safe=False)
  section, _, key = field.rpartition('.')
  (config[section] if section else config)[key] = value
  with pytest.raises(errors.ConfigError) as info:
    config_fields.check(config)
  assert str(info.value).startswith(message) and '\n' not in str(info.value)


def test_several_bad_fields_give_one_line_each():
  config = ptb.get_config()
  config.search.nhid = 0
  config.reg.dropouth = 1.0
  config.train.nonmono = 0
  with pytest.raises(errors.ConfigError) as info:
    config_fields.check(config)
  assert str(info.value).splitlines() == [
      'reg.dropouth must lie in [0, 1), got 1.0', 'search.nhid must be >= 1, got 0',
      'train.nonmono must be >= 1, got 0']


def test_fingerprint_leaves_out_what_a_resume_may_change():
  a, b = base.get_config(), base.get_config()
  b.search.epochs, b.log_every_steps, b.data.data_dir = 7, 3, '/elsewhere'
  assert config_fields.fingerprint(a) == config_fields.fingerprint(b)
  b.search.c, b.seed, b.space.ops = 8, 1, ('skip_connect',)
  assert config_fields.diff(config_fields.fingerprint(a), config_fields.fingerprint(b)) == (
      'search.c 16 → 8, seed 0 → 1, space.ops [] → ["skip_connect"]')
  assert config_fields.diff({'x': 1}, {}) == 'x 1 → absent'
