"""Every config builds, and each image config searches the network its docstring names.

The table below is the README's config table in code: a paper row's config must
search at the stated depth and width, with the stated regularisers and estimator.
A config file without a row here fails `test_every_config_is_listed`.
"""

import importlib
import os

import pytest

from amdarts import config_lib
from amdarts import search

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The retraining regularisers of configs/base.py: cutout 16, drop-path to 0.2, aux 0.4.
METHOD = (16, 0.2, True, 0.4)
NONE = (0, 0.0, False, 0.0)

# config -> (search cells, search C, (cutout, drop_path, auxiliary, aux_weight), estimator)
IMAGE_SEARCH = {
    'base': (8, 16, METHOD, 'amended_exact'),
    'cifar_s1': (8, 16, METHOD, 'amended_exact'),
    'cifar_s1_no_consistency': (8, 16, NONE, 'amended_exact'),
    'cifar_s1_first_order': (8, 16, METHOD, 'first_order'),
    'cifar_s1_darts_first_order': (8, 16, NONE, 'first_order'),
    'cifar_s1_darts_second_order': (8, 16, NONE, 'darts_second_order'),
    'cifar_s2': (20, 36, METHOD, 'amended_exact'),
    'cifar_s3': (8, 16, METHOD, 'amended_exact'),
    'fashion_mnist': (5, 8, NONE, 'amended_exact'),
    'synthetic_tiny': (3, 4, NONE, 'amended_exact'),
    # The studies' searches (each arm of the grid sets its own estimator and η).
    'study_cifar': (8, 16, NONE, 'amended_exact'),
    'study_cpu': (3, 4, NONE, 'amended_exact'),
    'study_tiny': (3, 4, NONE, 'amended_exact'),
}
RETRAIN_ONLY = ('imagenet',)
RECURRENT = ('ptb', 'ptb_demo')


def _load(name):
  return importlib.import_module(f'configs.{name}').get_config()


def test_every_config_is_listed():
  names = {f[:-3] for f in os.listdir(os.path.join(ROOT, 'configs'))
           if f.endswith('.py') and f != '__init__.py'}
  assert names == set(IMAGE_SEARCH) | set(RETRAIN_ONLY) | set(RECURRENT)


@pytest.mark.parametrize('name', sorted(IMAGE_SEARCH))
def test_search_network_depth_width_and_regularisers(name):
  cells, c, (cutout, drop_path, auxiliary, aux_weight), estimator = IMAGE_SEARCH[name]
  config = _load(name)
  config_lib.validate_search(config)
  assert config.search.estimator == estimator
  hp = config_lib.search_hparams(config)
  assert (hp.cells, hp.c) == (cells, c)
  assert (hp.cutout, hp.drop_path, hp.auxiliary, hp.aux_weight) == (
      cutout, drop_path, auxiliary, aux_weight)
  # What the search actually builds from them (nothing is compiled here).
  searcher = search.Searcher(config, (32, 32, 3), 10, steps_per_epoch=10)
  assert searcher.spec.num_cells == cells and searcher.net.module.c == c
  assert searcher.net.module.auxiliary == auxiliary
  assert search.search_augment(config).cutout_length == cutout
  last = 10 * config.search.epochs - 1  # The last step: epoch E - 1 of the ramp.
  assert searcher.drop_path(0) == 0.0
  assert searcher.drop_path(last) == pytest.approx(
      drop_path * (config.search.epochs - 1) / config.search.epochs)


def test_size_and_regularisers_are_separate_switches():
  config = _load('cifar_s1')
  config.search.consistent_size = True
  hp = config_lib.search_hparams(config)
  assert (hp.cells, hp.c, hp.cutout) == (20, 36, 16)
  config.search.consistent_regularisers = False
  hp = config_lib.search_hparams(config)
  assert (hp.cells, hp.c, hp.cutout, hp.drop_path, hp.auxiliary) == (20, 36, 0, 0.0, False)
  # Retraining never depends on either switch.
  assert config_lib.retrain_hparams(config) == config_lib.retrain_hparams(_load('cifar_s1'))


@pytest.mark.parametrize('name', RETRAIN_ONLY + tuple(sorted(IMAGE_SEARCH)))
def test_retrain_configs_validate(name):
  config_lib.validate_train(_load(name))


@pytest.mark.parametrize('name', RECURRENT)
def test_recurrent_configs_validate(name):
  from amdarts.rnn import hparams  # pylint: disable=g-import-not-at-top
  config = _load(name)
  config.data.data_dir = config.data.data_dir or '/data/ptb'  # Only checked to be set.
  hparams.validate(config, search=True)
  config.train.genotype = 'DARTS_V2'
  hparams.validate(config, search=False)
