r"""Fig. 4 of the paper: bilevel search on the toy loss (ωx − α)² (Appendix A.2).

  .venv/bin/python experiments/toy.py --outdir=/tmp/toy

writes toy.png (α, ω and L_val per step for every run) and toy.json (the
trajectories), and prints the final α / ω / L_val of each run. About 5 s on one CPU.

Expected with the defaults (α0 = 1, ω0 = −1, w_lr = ξ = 0.1, a_lr = 0.05, 200 steps,
one ω step per α step): first-order DARTS diverges (final α ≈ 9.8e3),
second-order DARTS too (≈ 3.2e3, its g2 = 8ξα is too small for ξ < 1/4), the amended
gradient at the paper's η = 0.1 diverges more slowly (≈ 22; its α gradient at ω* is
(16η − 2)α), at η = 0.25 it converges (≈ 9e-6, identical to the implicit, true
gradient, since then g2′ = g2). With --exact_inner the per-step factor of α is exactly
1 − a_lr·(16η − 2) for the amended runs (1.02 at η = 0.1, 0.9 at η = 0.25). With
--eta=0.5 and one ω step per α step the search oscillates and diverges (see
amdarts/toy.py); --w_steps=5 makes it converge.
"""

import os
import sys

# Runnable as a script from the repository root without installing the package.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app
from absl import flags
import jax

from amdarts import toy

_OUTDIR = flags.DEFINE_string('outdir', '/tmp/toy', 'Where toy.png and toy.json go.')
_STEPS = flags.DEFINE_integer('steps', 200, 'Rounds of (α step, ω steps).')
_ETA = flags.DEFINE_multi_float('eta', [0.1, 0.25], 'Amending coefficients η (eq. 5).')
_ESTIMATORS = flags.DEFINE_list(
    'estimators', ['first_order', 'darts_second_order', 'amended_exact', 'implicit'],
    'Keys of amdarts.hypergrad.ESTIMATORS; those with an η run once per --eta.')
_ALPHA0 = flags.DEFINE_float('alpha0', 1.0, 'Initial α.')
_OMEGA0 = flags.DEFINE_float('omega0', -1.0, 'Initial ω (a poor one, as in Fig. 4).')
_W_LR = flags.DEFINE_float('w_lr', 0.1, 'ω learning rate (and DARTS ξ unless --xi).')
_A_LR = flags.DEFINE_float('a_lr', 0.05, 'α learning rate.')
_XI = flags.DEFINE_float('xi', None, 'Second-order DARTS virtual step ξ; default w_lr.')
_W_STEPS = flags.DEFINE_integer('w_steps', 1, 'ω gradient steps per α step.')
_EXACT_INNER = flags.DEFINE_bool('exact_inner', False, 'Set ω = ω*(α) around each α step.')
_X64 = flags.DEFINE_bool('x64', True, 'float64, so diverging and vanishing runs stay exact.')


def main(argv):
  del argv
  jax.config.update('jax_enable_x64', _X64.value)
  os.makedirs(_OUTDIR.value, exist_ok=True)
  run_kw = dict(steps=_STEPS.value, alpha0=_ALPHA0.value, omega0=_OMEGA0.value,
                w_lr=_W_LR.value, a_lr=_A_LR.value, w_steps_per_a_step=_W_STEPS.value,
                exact_inner=_EXACT_INNER.value)
  if _XI.value is not None:
    run_kw['xi'] = _XI.value
  runs = toy.run_all(_ESTIMATORS.value, _ETA.value, **run_kw)
  toy.save_json(runs, os.path.join(_OUTDIR.value, 'toy.json'), **run_kw)
  title = (f'L = (ωx − α)², x_train = 1, x_val = 2; w_lr = {_W_LR.value:g}, '
           f'a_lr = {_A_LR.value:g}, exact inner = {_EXACT_INNER.value}')
  toy.plot(runs, os.path.join(_OUTDIR.value, 'toy.png'), title)
  print(toy.format_table(runs))


if __name__ == '__main__':
  app.run(main)
