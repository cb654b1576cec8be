"""The toy problem of Appendix A.2: closed forms, estimators and search dynamics.

L(ω, α; x) = (ωx − α)², x_train = 1, x_val = 2. At ω = ω*(α) = α every estimator's α
gradient is c·α (first-order c = −2, amended 16η − 2, implicit 2, second-order DARTS
8ξ − 2), which the trajectory tests turn into exact per-step factors.
"""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from amdarts import hypergrad
from amdarts import toy

ALPHAS = (-1.5, 0.3, 2.0)
ETAS = (0.1, 0.25, 0.5)


@pytest.fixture(autouse=True)
def x64():
  # float64 only inside these tests; the global flag would leak into other modules.
  with jax.enable_x64(True):
    yield


def _estimate(name, omega, alpha, xi=0.0, **hparams):
  """Estimator `name` at (ω, α) with ξ = `xi` and those of `hparams` it declares."""
  est = hypergrad.make(name, **hypergrad.select_hparams(name, hparams))
  return est(toy.loss_fn, jnp.asarray(omega), jnp.asarray(alpha), None, toy.X_TRAIN,
             toy.X_VAL, hypergrad.StepContext(lr=xi))


def test_loss_and_optimum():
  loss, (_, aux) = toy.loss_fn(3.0, 1.0, 2.0)
  assert float(loss) == 25.0  # (3·2 − 1)²
  assert float(aux['residual']) == 5.0
  # 1-element arrays give a scalar loss.
  assert toy.loss_fn(jnp.array([3.0]), jnp.array([1.0]), 2.0)[0].shape == ()
  assert float(toy.omega_star(1.5, x_train=0.5)) == 3.0
  # ω*(α) = α minimises L_train: its ω gradient vanishes there, not elsewhere.
  grad_w = jax.grad(lambda w: toy.loss_fn(w, 0.7, toy.X_TRAIN)[0])
  assert float(grad_w(toy.omega_star(0.7))) == 0.0
  assert float(grad_w(0.8)) == pytest.approx(0.2)


def test_closed_form_numbers():
  # Hand-computed at α = 1, ω = 3, η = 0.1, ξ = 0.1: v = 2·2·(6 − 1) = 20,
  # ω′ = 3 − 0.1·2·(3 − 1) = 2.6, v′ = 4·(5.2 − 1) = 16.8.
  cf = toy.closed_form(1.0, 0.1, 0.1, omega=3.0)
  assert cf['g1'] == pytest.approx(-10.0)
  assert cf['g2'] == pytest.approx(20.0)
  assert cf['g2_amended'] == pytest.approx(8.0)
  assert cf['g1_darts'] == pytest.approx(-8.4)
  assert cf['g2_darts'] == pytest.approx(3.36)
  assert cf['true'] == pytest.approx(2.0)
  # At the optimum: the paper's values (Appendix A.2) and 8ξα for DARTS.
  cf = toy.closed_form(1.5, 0.1, 0.3)
  assert (cf['g1'], cf['g2'], cf['true']) == pytest.approx((-3.0, 6.0, 3.0))
  assert cf['g2_amended'] == pytest.approx(16 * 0.1 * 1.5)
  assert (cf['g1_darts'], cf['g2_darts']) == pytest.approx((-3.0, 8 * 0.3 * 1.5))


@pytest.mark.parametrize('alpha', ALPHAS)
def test_first_order_is_g1(alpha):
  grad, aux = _estimate('first_order', alpha, alpha)
  assert float(grad) == pytest.approx(-2 * alpha, rel=1e-12)
  assert float(aux['g2']) == 0.0
  assert float(aux['val_loss']) == pytest.approx(alpha**2, rel=1e-12)


@pytest.mark.parametrize('alpha', ALPHAS)
@pytest.mark.parametrize('solver,kw', [('cg', {'tol': 1e-12}),
                                       ('neumann', {'lr': 0.25, 'maxiter': 80})])
def test_implicit_g2_is_4alpha(alpha, solver, kw):
  grad, aux = _estimate('implicit', alpha, alpha, solver=solver, **kw)
  assert float(aux['g1']) == pytest.approx(-2 * alpha, rel=1e-12)
  assert float(aux['g2']) == pytest.approx(4 * alpha, rel=1e-10)
  # The true gradient of L_val(ω*(α), α) = α².
  assert float(grad) == pytest.approx(2 * alpha, rel=1e-10)


@pytest.mark.parametrize('alpha', ALPHAS)
@pytest.mark.parametrize('eta', ETAS)
def test_amended_g2_is_16_eta_alpha(alpha, eta):
  grad, aux = _estimate('amended_exact', alpha, alpha, eta=eta)
  assert float(aux['g2']) == pytest.approx(16 * eta * alpha, rel=1e-12)
  assert float(grad) == pytest.approx((16 * eta - 2) * alpha, rel=1e-12)
  # The loss is quadratic, so the central differences of eq. 14-15 are exact up to
  # rounding (measured relative error ≲ 1e-15).
  grad_fd, aux_fd = _estimate('amended_fd', alpha, alpha, eta=eta)
  assert float(aux_fd['g2']) == pytest.approx(float(aux['g2']), rel=1e-10)
  assert float(grad_fd) == pytest.approx(float(grad), rel=1e-10)


@pytest.mark.parametrize('name', ['darts_second_order', 'darts_second_order_exact'])
@pytest.mark.parametrize('alpha,omega', [(1.5, 1.5), (-0.4, -0.4), (1.0, 3.0), (0.5, -2.0)])
@pytest.mark.parametrize('xi', [0.1, 0.3])
def test_darts_second_order_closed_form(name, alpha, omega, xi):
  """8ξα at ω = α (ω′ = ω); at ω ≠ α the unrolled step moves ω′ away from ω."""
  grad, aux = _estimate(name, omega, alpha, xi=xi)
  cf = toy.closed_form(alpha, 0.1, xi, omega=omega)
  assert float(aux['g1']) == pytest.approx(cf['g1_darts'], rel=1e-10)
  assert float(aux['g2']) == pytest.approx(cf['g2_darts'], rel=1e-10)
  assert float(grad) == pytest.approx(cf['g1_darts'] + cf['g2_darts'], rel=1e-10)
  if alpha == omega:
    assert float(aux['g2']) == pytest.approx(8 * xi * alpha, rel=1e-10)


@pytest.mark.parametrize('x_train,x_val', [(1.0, 2.0), (0.5, 3.0)])
def test_estimators_match_closed_form_off_optimum(x_train, x_val):
  alpha, omega, eta = 0.7, -1.3, 0.2
  cf = toy.closed_form(alpha, eta, 0.1, omega=omega, x_train=x_train, x_val=x_val)
  args = (toy.loss_fn, jnp.asarray(omega), jnp.asarray(alpha), None, x_train, x_val,
          hypergrad.StepContext(lr=0.1))
  _, aux = hypergrad.implicit(*args, tol=1e-12)
  assert float(aux['g1']) == pytest.approx(cf['g1'], rel=1e-12)
  assert float(aux['g2']) == pytest.approx(cf['g2'], rel=1e-10)
  _, aux = hypergrad.amended_exact(*args, eta=eta)
  assert float(aux['g2']) == pytest.approx(cf['g2_amended'], rel=1e-12)
  # 'true' is the derivative of the bilevel objective α ↦ L_val(ω*(α), α).
  true = jax.grad(lambda a: toy.loss_fn(toy.omega_star(a, x_train), a, x_val)[0])(alpha)
  assert float(true) == pytest.approx(cf['true'], rel=1e-12)


@pytest.mark.parametrize('name', ['first_order', 'amended_exact', 'implicit',
                                  'darts_second_order'])
def test_one_element_arrays_match_scalars(name):
  grad_s, _ = _estimate(name, 0.9, 0.4, eta=0.3, xi=0.2)
  grad_v, _ = _estimate(name, [0.9], [0.4], eta=0.3, xi=0.2)
  assert grad_v.shape == (1,)
  np.testing.assert_allclose(grad_v, [grad_s], rtol=1e-12)


def _transition(c, a_lr, w_lr, k=1):
  """One round (α step, k ω GD steps) as a 2×2 map of (α, ω), for ĝ = c·(2ω − α).

  α′ = α − a_lr·c·(2ω − α) and k steps on (ω − α′)² give ω′ = α′ + r(ω − α′) with
  r = (1 − 2·w_lr)^k. Its determinant is r·(1 + a_lr·c): a large enough α gradient
  toward 0 (c > 0) makes the alternating scheme unstable through the inner lag.
  """
  ac, r = a_lr * c, (1 - 2 * w_lr)**k
  return np.array([[1 + ac, -2 * ac],
                   [(1 - r) * (1 + ac), r - 2 * ac * (1 - r)]])


# At any ω the α gradient of these estimators is c·(2ω − α) (g1 = −2(2ω − α),
# v = 4(2ω − α), g2 = v, g2′ = 4ηv).
_LINEAR = [('first_order', {}, -2.0), ('implicit', {'tol': 1e-12}, 2.0),
           ('amended_exact', {'eta': 0.1}, 16 * 0.1 - 2),
           ('amended_exact', {'eta': 0.25}, 16 * 0.25 - 2),
           ('amended_exact', {'eta': 0.5}, 16 * 0.5 - 2)]


@pytest.mark.parametrize('name,hparams,c,k,diverges', [
    ('first_order', {}, -2.0, 1, True),
    ('first_order', {}, -2.0, 5, True),
    ('implicit', {'tol': 1e-12}, 2.0, 1, False),
    ('amended_exact', {'eta': 0.1}, 16 * 0.1 - 2, 1, True),
    ('amended_exact', {'eta': 0.25}, 16 * 0.25 - 2, 1, False),
    # η = 0.5 overshoots: det M = 0.8·1.3 = 1.04 > 1 with one ω step per α step ...
    ('amended_exact', {'eta': 0.5}, 16 * 0.5 - 2, 1, True),
    # ... and converges when ω keeps up (det M = 0.8⁵·1.3 ≈ 0.43).
    ('amended_exact', {'eta': 0.5}, 16 * 0.5 - 2, 5, False)])
def test_alternating_trajectory_is_linear_map(name, hparams, c, k, diverges):
  """With gradient-descent inner steps the search is (α, ω) ↦ M(α, ω), exactly."""
  steps, a_lr, w_lr = 200, 0.05, 0.1
  traj = toy.run(name, steps=steps, alpha0=1.0, omega0=-1.0, w_lr=w_lr, a_lr=a_lr,
                 w_steps_per_a_step=k, **hparams)
  m = _transition(c, a_lr, w_lr, k)
  state = np.array([1.0, -1.0])
  expected = [state]
  for _ in range(steps):
    state = m @ state
    expected.append(state)
  expected = np.array(expected)
  np.testing.assert_allclose(traj.alpha, expected[:, 0], rtol=1e-9, atol=1e-12)
  np.testing.assert_allclose(traj.omega, expected[:, 1], rtol=1e-9, atol=1e-12)
  np.testing.assert_allclose(traj.val_loss, (2 * expected[:, 1] - expected[:, 0])**2,
                             rtol=1e-9, atol=1e-20)
  eigvals = np.linalg.eigvals(m)
  rho = max(abs(eigvals))
  assert (rho > 1) == diverges
  if diverges:
    assert abs(float(traj.alpha[-1])) > 1.5
  else:
    assert abs(float(traj.alpha[-1])) < 1e-3
  if np.all(np.isreal(eigvals)):  # Otherwise α oscillates and the ratio does not settle.
    assert traj.alpha[-1] / traj.alpha[-2] == pytest.approx(rho, rel=1e-6)


def test_first_order_diverges_and_eta_0_1_too():
  kw = dict(steps=200, alpha0=1.0, omega0=-1.0, w_lr=0.1, a_lr=0.05)
  first = toy.run('first_order', **kw)
  amended = toy.run('amended_exact', eta=0.1, **kw)
  # Measured: α_200 ≈ 9.8e3 (first-order) and ≈ 22 (η = 0.1) from α0 = 1.
  assert abs(float(first.alpha[-1])) > 1e3
  assert 10 < abs(float(amended.alpha[-1])) < abs(float(first.alpha[-1]))
  # The validation loss first falls (ω catches up with α) and then explodes (Fig. 4a).
  assert float(first.val_loss.min()) < 0.1 * float(first.val_loss[0])
  assert float(first.val_loss[-1]) > 1e6


@pytest.mark.parametrize('name,hparams,c', _LINEAR + [
    ('amended_fd', {'eta': 0.1}, 16 * 0.1 - 2),
    ('darts_second_order', {'xi': 0.1}, 8 * 0.1 - 2),
    ('darts_second_order_exact', {'xi': 0.5}, 8 * 0.5 - 2)])
def test_exact_inner_factor(name, hparams, c):
  """With ω = ω*(α) around every α step, α_{t+1} = (1 − a_lr·c)·α_t exactly."""
  steps, a_lr = 60, 0.05
  traj = toy.run(name, steps=steps, alpha0=1.0, omega0=5.0, w_lr=0.1, a_lr=a_lr,
                 exact_inner=True, **hparams)
  factor = 1 - a_lr * c
  np.testing.assert_allclose(traj.alpha[1:] / traj.alpha[:-1], factor, rtol=1e-9)
  np.testing.assert_allclose(traj.omega[1:], traj.alpha[1:], rtol=1e-12)
  np.testing.assert_allclose(traj.val_loss[1:], traj.alpha[1:]**2, rtol=1e-9)
  # The logged terms are those at ω = ω*(α_t), including the very first α step.
  np.testing.assert_allclose(traj.g1, -2 * traj.alpha[:-1], rtol=1e-9)


@pytest.mark.parametrize('eta,w_steps', [(0.25, 1), (0.5, 5)])
def test_amended_converges_for_eta_above_one_eighth(eta, w_steps):
  for exact_inner in (False, True):
    traj = toy.run('amended_exact', eta=eta, steps=300, alpha0=1.0, omega0=-1.0,
                   w_lr=0.1, a_lr=0.05, w_steps_per_a_step=w_steps,
                   exact_inner=exact_inner)
    assert abs(float(traj.alpha[-1])) < 1e-5
    assert abs(float(traj.omega[-1])) < 1e-5
    assert float(traj.val_loss[-1]) < 1e-9


def test_amended_eta_0_1_diverges_with_exact_inner():
  """The paper's η = 0.1: α grows by exactly 1 + a_lr·0.4 per step (Fig. 4b is not)."""
  traj = toy.run('amended_exact', eta=0.1, steps=200, alpha0=1.0, omega0=1.0, w_lr=0.1,
                 a_lr=0.05, exact_inner=True)
  assert float(traj.alpha[-1]) == pytest.approx(1.02**200, rel=1e-9)  # ≈ 52.5
  np.testing.assert_allclose(traj.g2, 16 * 0.1 * traj.alpha[:-1], rtol=1e-12)


def test_inner_steps():
  """K gradient steps on (ω − α)² contract ω − α by (1 − 2·w_lr)^K."""
  a_lr, w_lr, k = 0.05, 0.1, 3
  traj = toy.run('first_order', steps=1, alpha0=1.0, omega0=-1.0, w_lr=w_lr, a_lr=a_lr,
                 w_steps_per_a_step=k)
  alpha1 = 1.0 + a_lr * 2 * (2 * -1.0 - 1.0)  # α − a_lr·g1, g1 = −2(2ω − α) = 6.
  assert float(traj.alpha[1]) == pytest.approx(alpha1, rel=1e-12)
  omega1 = alpha1 + (1 - 2 * w_lr)**k * (-1.0 - alpha1)
  assert float(traj.omega[1]) == pytest.approx(omega1, rel=1e-12)


def test_run_validates_before_compiling():
  with pytest.raises(ValueError, match='steps >= 1'):
    toy.run('first_order', steps=0, alpha0=1.0, omega0=0.0, w_lr=0.1, a_lr=0.1)
  with pytest.raises(ValueError, match='unknown estimator'):
    toy.run('second_order', steps=3, alpha0=1.0, omega0=0.0, w_lr=0.1, a_lr=0.1)


def test_xi_defaults_to_w_lr():
  kw = dict(steps=5, alpha0=1.0, omega0=0.0, a_lr=0.05)
  default = toy.run('darts_second_order', w_lr=0.2, **kw)
  explicit = toy.run('darts_second_order', w_lr=0.2, xi=0.2, **kw)
  other = toy.run('darts_second_order', w_lr=0.2, xi=0.05, **kw)
  np.testing.assert_array_equal(default.alpha, explicit.alpha)
  assert float(abs(default.alpha[-1] - other.alpha[-1])) > 1e-3


@pytest.mark.parametrize('alpha', ALPHAS)
def test_diagnose_cosines_are_one(alpha):
  eta, xi = 0.1, 0.05
  d = hypergrad.diagnose(toy.loss_fn, jnp.asarray(alpha), jnp.asarray(alpha), None,
                         toy.X_TRAIN, toy.X_VAL, hypergrad.StepContext(lr=xi), eta=eta,
                         tol=1e-12)
  # In 1-D every term is a multiple of α: g2 = 4α, g2′ = 16ηα, g2_darts = 8ξα.
  assert float(d['cos_amended']) == pytest.approx(1.0, abs=1e-12)
  assert float(d['cos_darts']) == pytest.approx(1.0, abs=1e-12)
  assert float(d['inner_amended']) == pytest.approx(64 * eta * alpha**2, rel=1e-10)
  assert float(d['norm_g2']) == pytest.approx(4 * abs(alpha), rel=1e-10)
  assert float(d['norm_g2_amended']) == pytest.approx(16 * eta * abs(alpha), rel=1e-12)
  assert float(d['norm_g2_darts']) == pytest.approx(8 * xi * abs(alpha), rel=1e-10)


def test_run_all_and_json(tmp_path):
  runs = toy.run_all(['first_order', 'amended_exact'], [0.1, 0.25], steps=4, alpha0=1.0,
                     omega0=1.0, w_lr=0.1, a_lr=0.05, exact_inner=True)
  assert list(runs) == ['first_order', 'amended_exact η=0.1', 'amended_exact η=0.25']
  assert float(runs['amended_exact η=0.25'].alpha[1]) == pytest.approx(0.9)
  toy.save_json(runs, tmp_path / 'toy.json', steps=4)
  data = json.loads((tmp_path / 'toy.json').read_text())
  assert data['meta'] == {'steps': 4}
  np.testing.assert_allclose(data['runs']['first_order']['alpha'], 1.1**np.arange(5))
  table = toy.format_table(runs)
  assert 'amended_exact η=0.25' in table and '0.90000' in table
