r"""Architecture search: `python experiments/search.py --config=configs/cifar_s1.py`.

Flags only; `config.task` picks the driver (`amdarts.search.run` for image cells,
`amdarts.rnn.search.run` for recurrent cells), which prints the found genotype.
Override any config field with `--config.search.epochs=3` style flags; the config is
locked, so a typo fails. Running again with the same --workdir resumes from the
latest checkpoint. Multi-host: `--coordinator`, `--num_processes`, `--process_id`
(see amdarts.cli and the README); `--debug` shows tracebacks of input errors.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from amdarts import hugepages  # noqa: E402

hugepages.reexec()  # Before anything else: the process may be replaced.

from absl import app  # noqa: E402
from absl import flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from amdarts import cli  # noqa: E402
from amdarts import search  # noqa: E402
from amdarts.rnn import search as rnn_search  # noqa: E402

# config.task -> the driver: run(config, workdir).
DRIVERS = {'image': search.run, 'ptb': rnn_search.run}

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Config module.', lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Output and checkpoint directory.')
flags.mark_flags_as_required(['config', 'workdir'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  config = _CONFIG.value
  if config.task not in DRIVERS:
    raise app.UsageError(f'config.task must be one of {sorted(DRIVERS)}, got {config.task!r}')
  cli.run(DRIVERS[config.task], config, _WORKDIR.value)


if __name__ == '__main__':
  app.run(main)
