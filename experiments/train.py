"""Retrains a discrete architecture and reports its test accuracy.

    python experiments/train.py --config=configs/cifar_s1.py --genotype=DARTS_V2 \
        --workdir=/tmp/darts_v2
    python experiments/train.py --config=configs/imagenet.py \
        --genotype=/tmp/s2/genotype.json --workdir=/tmp/s2_imagenet

`--genotype` (a genotype file or a name in amdarts.genotypes.NAMED) overrides
config.train.genotype. Rerunning with the same --workdir resumes from its latest
checkpoint. `config.task` picks the driver: `amdarts.retrain.train_and_evaluate` for
image cells, `amdarts.rnn.train.run` for recurrent cells; all logic lives there.
Multi-host and `--debug` flags as experiments/search.py (amdarts.cli).
"""

import os
import sys

# Runs as `python experiments/train.py` from the repository root.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from amdarts import hugepages  # noqa: E402

hugepages.reexec()  # Before anything else: the process may be replaced.

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags
from ml_collections import config_flags

from amdarts import cli
from amdarts import retrain
from amdarts.rnn import train as rnn_train

# config.task -> the driver: run(config, workdir).
DRIVERS = {'image': retrain.train_and_evaluate, 'ptb': rnn_train.run}

_CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'Config file (configs/*.py).', lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Directory for checkpoints, metrics, result.')
_GENOTYPE = flags.DEFINE_string(
    'genotype', None, 'Genotype file or name; overrides config.train.genotype.')
flags.mark_flags_as_required(['config', 'workdir'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  config = _CONFIG.value
  if config.task not in DRIVERS:
    raise app.UsageError(f'config.task must be one of {sorted(DRIVERS)}, got {config.task!r}')
  if _GENOTYPE.value:
    config.train.genotype = _GENOTYPE.value  # A locked config still takes new values.
  cli.run(DRIVERS[config.task], config, _WORKDIR.value)


if __name__ == '__main__':
  app.run(main)
