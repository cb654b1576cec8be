"""The one-dimensional toy bilevel problem of Appendix A.2 (Fig. 4).

L(ω, α; x) = (ωx − α)² with x_train = 1 and x_val = 2, so ω*(α) = α and the bilevel
objective is L_val(ω*(α), α) = α², minimised at α = 0. At ω = ω*(α) (eq. 3-5):

    g1 = −2α,  g2 = 4α  (true gradient g1 + g2 = 2α),  g2′ = 16ηα,
    second-order DARTS: g2 = 8ξα.

Every estimator gives an α gradient c·α at the optimum, so exact-inner gradient descent
multiplies α by 1 − a_lr·c each step: first-order DARTS (c = −2) always diverges, the
amended gradient (c = 16η − 2) converges only for η > 1/8 (η = 1/4 reproduces g2
exactly) and still diverges, more slowly, at the paper's η = 0.1; second-order DARTS
(c = 8ξ − 2) needs ξ > 1/4. The paper's Fig. 4 shows convergence with the amending
term; `run` measures what actually happens.

With k gradient steps on ω per α step instead of an exact inner solve, (α, ω) evolves by
a 2×2 linear map with determinant (1 + a_lr·c)(1 − 2·w_lr)^k, so a large amended term
(e.g. η = 0.5 with a_lr = 0.05, w_lr = 0.1, k = 1: det = 1.04) also diverges, by
oscillation, until ω is updated often enough to keep up.
"""

from __future__ import annotations

import json
from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from amdarts import hypergrad

X_TRAIN = 1.0  # The single training sample (Appendix A.2).
X_VAL = 2.0  # The single validation sample.


def loss_fn(params, alpha, batch, model_state=None):
  """L(ω, α; x) = (ωx − α)², in the `hypergrad` loss signature.

  Args:
    params: ω, a scalar or a 1-element array.
    alpha: α, same shape as `params`.
    batch: the sample x (a scalar).
    model_state: passed through unchanged; the toy model has none (None).

  Returns:
    (loss, (model_state, metrics)): the scalar loss (summed, so 1-element arrays give
    a scalar), and {'residual': ωx − α}.
  """
  residual = params * batch - alpha
  return jnp.sum(residual**2), (model_state, {'residual': residual})


def omega_star(alpha, x_train=X_TRAIN):
  """ω*(α) = argmin_ω (ω·x_train − α)² = α / x_train."""
  return alpha / x_train


def closed_form(alpha, eta, xi, *, omega=None, x_train=X_TRAIN, x_val=X_VAL):
  """Closed-form gradient terms of the toy problem, for checking the estimators.

  With a = x_train, b = x_val: H = ∇²ω L_train = 2a², ∇²αω L_train = −2a,
  v = ∇ω L_val = 2b(ωb − α), g1 = ∇α L_val = −2(ωb − α). Then (eq. 4, 5)

    g2 = −(−2a)·H⁻¹·v = v / a,          g2′ = −η·(−2a)·H·v = 4ηa³·v.

  Second-order DARTS unrolls ω′ = ω − ξ·2a(ωa − α), so dω′/dα = 2aξ and the gradient
  of L_val(ω′(α), α) is g1(ω′) + 2aξ·v(ω′); at ω = ω*(α) the step is zero, ω′ = ω,
  and its g2 is 8ξα for the paper's a = 1, b = 2.

  Args:
    alpha: α (array-like).
    eta: amending coefficient η (eq. 5).
    xi: DARTS virtual-step size ξ (no momentum or weight decay).
    omega: ω at which g1, g2, g2′ and the DARTS terms are evaluated; None = ω*(α).
    x_train: training sample a.
    x_val: validation sample b.

  Returns:
    Dict with 'g1', 'g2' (implicit, eq. 4, at `omega`), 'g2_amended' (eq. 5),
    'g1_darts' and 'g2_darts' (second-order DARTS: ∇α L_val(ω′, α) and its
    second-order term) and 'true' (d/dα L_val(ω*(α), α) = 2α(b/a − 1)², which equals
    g1 + g2 at ω = ω*(α)).
  """
  a, b = x_train, x_val
  alpha = np.asarray(alpha, dtype=np.float64)
  omega = omega_star(alpha, a) if omega is None else np.asarray(omega, dtype=np.float64)
  v = 2 * b * (omega * b - alpha)
  omega_unrolled = omega - xi * 2 * a * (omega * a - alpha)
  v_unrolled = 2 * b * (omega_unrolled * b - alpha)
  return {
      'g1': -2 * (omega * b - alpha),
      'g2': v / a,
      'g2_amended': 4 * eta * a**3 * v,
      'g1_darts': -2 * (omega_unrolled * b - alpha),
      'g2_darts': 2 * a * xi * v_unrolled,
      'true': 2 * alpha * (b / a - 1) ** 2,
  }


class Trajectory(NamedTuple):
  """Per-step quantities of a toy search (Fig. 4).

  `alpha`, `omega` and `val_loss` have steps + 1 entries: index 0 is the initial
  state, index t the state after t (α step, ω phase) rounds. `g1` and `g2` have
  `steps` entries: the estimator's terms at the α step of each round.
  """

  alpha: jax.Array
  omega: jax.Array
  val_loss: jax.Array
  g1: jax.Array
  g2: jax.Array


def run(estimator_name, *, steps, alpha0, omega0, w_lr, a_lr, w_steps_per_a_step=1,
        exact_inner=False, x_train=X_TRAIN, x_val=X_VAL, **hparams) -> Trajectory:
  """Alternating bilevel gradient descent on the toy problem, as one `lax.scan`.

  Each round: one α step α ← α − a_lr·ĝ with ĝ from the estimator on
  (x_train, x_val), then `w_steps_per_a_step` gradient-descent steps
  ω ← ω − w_lr·∇ω L_train. With `exact_inner` ω is instead set to ω*(α) before every
  α step and after it, which removes the inner-loop lag and isolates the estimator:
  α is then multiplied by exactly 1 − a_lr·c per round, c as in the module docstring.

  Args:
    estimator_name: a key of `hypergrad.ESTIMATORS`.
    steps: number of rounds.
    alpha0: initial α.
    omega0: initial ω (replaced by ω*(α0) before the first α step if `exact_inner`).
    w_lr: ω learning rate; also DARTS's ξ unless `xi` is given, as in DARTS.
    a_lr: α learning rate (plain gradient descent, so the dynamics are analytic).
    w_steps_per_a_step: ω steps per α step.
    exact_inner: solve the inner problem exactly instead of by gradient descent.
    x_train: training sample.
    x_val: validation sample.
    **hparams: estimator hyper-parameters (eta, eps_scale, solver, ...), those
      the estimator declares (`hypergrad.ESTIMATORS`); `xi`, second-order DARTS's
      virtual step, goes to the estimator's step context instead.

  Returns:
    The `Trajectory`.
  """
  if steps < 1 or w_steps_per_a_step < 0:
    raise ValueError(f'need steps >= 1 and w_steps_per_a_step >= 0, got {steps} and '
                     f'{w_steps_per_a_step}')
  # ξ is the weight learning rate unless given, as in DARTS.
  ctx = hypergrad.StepContext(lr=hparams.pop('xi', w_lr))
  estimator = hypergrad.make(estimator_name, **hparams)
  dtype = jnp.result_type(float)  # float64 under x64, else float32.
  grad_w = jax.grad(lambda w, a: loss_fn(w, a, x_train)[0])

  def inner(omega, alpha):
    if exact_inner:
      return omega_star(alpha, x_train)
    return jax.lax.fori_loop(0, w_steps_per_a_step,
                             lambda _, w: w - w_lr * grad_w(w, alpha), omega)

  def round_(carry, _):
    alpha, omega = carry
    if exact_inner:
      omega = omega_star(alpha, x_train)
    grad_alpha, aux = estimator(loss_fn, omega, alpha, None, x_train, x_val, ctx)
    alpha = alpha - a_lr * grad_alpha
    omega = inner(omega, alpha)
    val_loss = loss_fn(omega, alpha, x_val)[0]
    return (alpha, omega), (alpha, omega, val_loss, aux['g1'], aux['g2'])

  alpha0 = jnp.asarray(alpha0, dtype)
  omega0 = jnp.asarray(omega0, dtype)
  _, (alphas, omegas, val_losses, g1, g2) = jax.lax.scan(
      round_, (alpha0, omega0), None, length=steps)
  prepend = lambda x0, xs: jnp.concatenate([x0[None], xs])
  return Trajectory(
      alpha=prepend(alpha0, alphas),
      omega=prepend(omega0, omegas),
      val_loss=prepend(loss_fn(omega0, alpha0, x_val)[0], val_losses),
      g1=g1,
      g2=g2,
  )


def run_all(estimators: Sequence[str], etas: Sequence[float], **run_kw
            ) -> dict[str, Trajectory]:
  """`run` for every estimator, once per η for those that take an amending coefficient.

  Args:
    estimators: keys of `hypergrad.ESTIMATORS`.
    etas: η values for estimators with an `eta` hyper-parameter (eq. 5).
    **run_kw: passed to `run` (steps, alpha0, omega0, w_lr, a_lr, ...).

  Returns:
    Run name (e.g. 'amended_exact η=0.1') -> `Trajectory`, in the given order.
  """
  runs = {}
  for name in estimators:
    if 'eta' in hypergrad.ESTIMATORS[name].hparams:
      for eta in etas:
        runs[f'{name} η={eta:g}'] = run(name, eta=eta, **run_kw)
    else:
      runs[name] = run(name, **run_kw)
  return runs


def format_table(trajectories: dict[str, Trajectory]) -> str:
  """Final α, ω, L_val and the last per-round ratio α_T / α_{T−1} of each run."""
  lines = [f'{"run":<28} {"final α":>12} {"final ω":>12} {"final L_val":>12} '
           f'{"α_T/α_T-1":>10}']
  for name, t in trajectories.items():
    alpha = np.asarray(t.alpha, dtype=np.float64)
    ratio = alpha[-1] / alpha[-2] if alpha[-2] != 0 else float('nan')
    lines.append(f'{name:<28} {alpha[-1]:>12.4g} {float(t.omega[-1]):>12.4g} '
                 f'{float(t.val_loss[-1]):>12.4g} {ratio:>10.5f}')
  return '\n'.join(lines)


def save_json(trajectories: dict[str, Trajectory], path, **meta):
  """Writes {'meta': meta, 'runs': {name: {field: list}}} to `path`."""
  runs = {name: {k: np.asarray(v).tolist() for k, v in t._asdict().items()}
          for name, t in trajectories.items()}
  with open(path, 'w') as f:
    json.dump({'meta': meta, 'runs': runs}, f)


def plot(trajectories: dict[str, Trajectory], path, title=''):
  """Fig. 4-style grid: one panel per run with α (red), ω (green), L_val (blue).

  The y axis is symlog because diverging runs span many orders of magnitude while
  converging ones approach 0 from either side.

  Args:
    trajectories: run name -> `Trajectory`.
    path: output image path (PNG).
    title: figure title.
  """
  # Imported here so that the library does not pay matplotlib's import time.
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt

  n = len(trajectories)
  cols = min(n, 3)
  rows = -(-n // cols)
  fig, axes = plt.subplots(rows, cols, figsize=(4.5 * cols, 3.4 * rows), squeeze=False)
  for ax, (name, t) in zip(axes.flat, trajectories.items()):
    for values, label, color in ((t.alpha, 'α', 'tab:red'), (t.omega, 'ω', 'tab:green'),
                                 (t.val_loss, 'L_val', 'tab:blue')):
      ax.plot(np.asarray(values), label=label, color=color)
    ax.set_yscale('symlog', linthresh=1e-2)
    ax.set_title(name, fontsize=9)
    ax.set_xlabel('step')
    ax.grid(alpha=0.3)
  for ax in list(axes.flat)[n:]:
    ax.axis('off')
  axes.flat[0].legend(fontsize=8)
  if title:
    fig.suptitle(title, fontsize=10)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)
