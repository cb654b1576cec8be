r"""The stability study: `python experiments/study.py --config=configs/study_cpu.py --workdir=W`.

Flags only; `amdarts.study.run` runs the grid (arms × seeds: searches, then the
retraining of every found genotype, random search beside them) and
`amdarts.study_report` writes W/report.md, W/results.json and W/figures/. Running
again with the same --workdir resumes: finished cells are skipped, a killed search or
retrain continues from its last checkpoint.

  --only=first_order/seed_0,random/seed_3   run these cells alone (no report), e.g.
                                            one per machine; a later plain run of
                                            the same command writes the report
  --dry_run                                 print the grid and its estimated wall
                                            time (from the config's measured costs)
  --report_only                             write the report from the cells done
  --compilation_cache=DIR                   XLA's persistent cache (default
                                            W/jax_cache; '' = off): the seeds of an
                                            arm and a resumed run reuse compiled steps
  --debug                                   tracebacks of config and input errors
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from amdarts import hugepages  # noqa: E402

hugepages.reexec()  # Before anything else: the process may be replaced.

from absl import app  # noqa: E402
from absl import flags  # noqa: E402
from absl import logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from amdarts import cli  # noqa: E402,F401  (defines --debug, --compilation_cache)
from amdarts import compile_cache  # noqa: E402
from amdarts import errors  # noqa: E402
from amdarts import study  # noqa: E402
from amdarts import study_report  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Study config module.',
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'The study directory.')
_ONLY = flags.DEFINE_list('only', [], 'Cells <arm>/seed_<s> to run alone (no report).')
_DRY_RUN = flags.DEFINE_bool('dry_run', False, 'Print the grid and its estimated cost.')
_REPORT_ONLY = flags.DEFINE_bool('report_only', False, 'Only write the report.')
flags.mark_flags_as_required(['config', 'workdir'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  logging.set_verbosity(logging.WARNING)
  errors.exit_on_user_error(lambda: _study(_CONFIG.value, _WORKDIR.value),
                            debug=flags.FLAGS.debug)


def _study(config, workdir: str) -> None:
  with errors.user_input():  # A bad config, cell or workdir: one line, no heavy work.
    if _DRY_RUN.value:
      study.validate(config)
      print(study.format_plan(study.plan(config)))
      return
    if not _REPORT_ONLY.value:
      study.claim_cells(config, workdir, _ONLY.value)
  if _REPORT_ONLY.value:
    results = study_report.write(config, workdir)
    print(f'report of {len(results["cells"])} cells ({len(results["missing"])} missing): '
          f'{os.path.join(workdir, "report.md")}')
    return
  # --compilation_cache (amdarts.cli); by default the study keeps its own next to it.
  cache = flags.FLAGS.compilation_cache
  compile_cache.enable(os.path.join(workdir, 'jax_cache') if cache is None else cache)
  study.run(config, workdir, only=_ONLY.value)
  if not _ONLY.value:
    print(f'report: {os.path.join(workdir, "report.md")}')


if __name__ == '__main__':
  app.run(main)
