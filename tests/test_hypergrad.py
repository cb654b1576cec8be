"""Math of the hypergradient estimators on small problems with explicit references.

Two problems: a random strongly convex quadratic bilevel problem (closed-form ω*(α),
H⁻¹ and hypergradient), and a tiny tanh network whose hidden units are gated by
sigmoid(α) (smooth, non-quadratic: finite differences have a truncation error).
Matrices are only formed here, by `jax.hessian` / `jax.jacfwd` or numpy.
"""

import functools

import jax
from jax.flatten_util import ravel_pytree
import jax.numpy as jnp
import numpy as np
import pytest

from amdarts import hypergrad

ALL = sorted(hypergrad.ESTIMATORS)
SECOND_ORDER = [n for n in ALL if n != 'first_order']


@pytest.fixture(autouse=True)
def x64():
  # float64 only inside these tests; the global flag would leak into other modules.
  with jax.enable_x64(True):
    yield


@functools.cache
def _jit(fn, loss_fn, **static):
  """`fn(loss_fn, ...)` jitted with hashable hyper-parameters bound, compiled once.

  The problems here carry no model state. `xi` and `momentum_buffer` are the
  step context; other keywords are traced hyper-parameters. Eager mode dispatches
  every small op separately, which is several times slower than one compilation on
  these problems.
  """

  def call(params, alpha, train, val, xi=0.0, momentum_buffer=None, **traced):
    ctx = hypergrad.StepContext(lr=xi, momentum_buffer=momentum_buffer)
    return fn(loss_fn, params, alpha, None, train, val, ctx, **static, **traced)

  return jax.jit(call)


@functools.cache
def _estimator(name, loss_fn):
  """Jitted estimator `name` taking η and ξ as traced arguments: one compilation each."""

  def est(params, alpha, train, val, eta, xi):
    # Bind only what `name` declares (η for the amended ones, solver keywords, ...).
    hparams = hypergrad.select_hparams(name, {'eta': eta, 'tol': 1e-12, 'maxiter': 100})
    return hypergrad.make(name, **hparams)(loss_fn, params, alpha, None, train, val,
                                           hypergrad.StepContext(lr=xi))

  return jax.jit(est)


def _rel(x, y):
  x, y = ravel_pytree(x)[0], ravel_pytree(y)[0]
  return float(jnp.linalg.norm(x - y) / jnp.linalg.norm(y))


# ---------------------------------------------------------------- the quadratic problem
# ω and α are pytrees (two leaves each) to exercise the estimators' tree handling.


def _split_w(w):
  return {'a': w[:2], 'b': w[2:]}


def _split_a(a):
  return {'normal': a[:2], 'reduce': a[2:]}


def quad_loss(params, alpha, batch, model_state=None):
  """½ωᵀAω + ωᵀBα + cᵀω + ½αᵀDα + fᵀα, with the matrices in `batch`; no model state."""
  w, a = ravel_pytree(params)[0], ravel_pytree(alpha)[0]
  loss = (0.5 * w @ batch['A'] @ w + w @ batch['B'] @ a + batch['c'] @ w
          + 0.5 * a @ batch['D'] @ a + batch['f'] @ a)
  return loss, (model_state, {})


def _quadratic(seed, n_w=5, n_a=3, cond=3.0):
  """A random bilevel quadratic: train Hessian A has eigenvalues in [1, cond]."""
  rng = np.random.default_rng(seed)
  q = np.linalg.qr(rng.normal(size=(n_w, n_w)))[0]
  m = rng.normal(size=(n_w, n_w))
  train = {'A': q @ np.diag(np.linspace(1.0, cond, n_w)) @ q.T,
           'B': rng.normal(size=(n_w, n_a)), 'c': rng.normal(size=n_w),
           'D': np.eye(n_a), 'f': np.zeros(n_a)}
  val = {'A': m @ m.T / n_w, 'B': rng.normal(size=(n_w, n_a)), 'c': rng.normal(size=n_w),
         'D': 0.5 * np.eye(n_a), 'f': rng.normal(size=n_a)}
  return train, val, rng.normal(size=n_a)


def _omega_star(train, a):
  return -jnp.linalg.solve(train['A'], train['B'] @ a + train['c'])


@jax.jit
def _bilevel_grad(train, val, a):
  """d/dα L_val(ω*(α), α), differentiating through the closed-form ω*(α)."""
  return jax.grad(
      lambda a_: quad_loss(_split_w(_omega_star(train, a_)), _split_a(a_), val)[0])(a)


def _quad_args(train, val, a, w=None):
  w = _omega_star(train, a) if w is None else w
  return quad_loss, _split_w(w), _split_a(a), train, val


# ---------------------------------------------------------------- the smooth network


def net_loss(params, alpha, batch, model_state=None):
  """Mean squared error of a 1-hidden-layer tanh net, hidden unit i gated by σ(α_i)."""
  x, y = batch
  h = jnp.tanh(x @ params['w1'] + params['b1']) * jax.nn.sigmoid(alpha)
  pred = h @ params['w2'] + params['b2']
  return jnp.mean((pred - y)**2), (model_state, {'pred': pred})


def _net(seed=0, d=3, h=6, n=16):
  rng = np.random.default_rng(seed)
  params = {'w1': rng.normal(size=(d, h)), 'b1': 0.1 * rng.normal(size=h),
            'w2': rng.normal(size=h) / np.sqrt(h), 'b2': np.zeros(())}
  alpha = rng.normal(size=h)
  train = (rng.normal(size=(n, d)), rng.normal(size=n))
  val = (rng.normal(size=(n, d)), rng.normal(size=n))
  return params, alpha, train, val


@jax.jit
def _explicit_net_terms(params, alpha, train, val, at):
  """H, J = ∂(∇ω L_train)/∂α (n_ω × n_α) at ω = params and v = ∇ω L_val at ω = `at`."""
  flat, unravel = ravel_pytree(params)
  l_train = lambda w, a: net_loss(unravel(w), a, train)[0]
  l_val = lambda w, a: net_loss(unravel(w), a, val)[0]
  hess = jax.hessian(l_train)(flat, alpha)
  jac = jax.jacfwd(jax.grad(l_train), argnums=1)(flat, alpha)
  v = jax.grad(l_val)(ravel_pytree(at)[0], alpha)
  return hess, jac, v


# ---------------------------------------------------------------- generic checks


@pytest.mark.parametrize('name', ALL)
def test_gradient_is_g1_plus_g2_with_alpha_structure(name):
  train, val, a = _quadratic(0)
  args = _quad_args(train, val, a, w=np.linspace(-1.0, 1.0, 5))
  xi = 0.05
  grad, aux = _estimator(name, quad_loss)(*args[1:], eta=0.1, xi=xi)
  assert jax.tree.structure(grad) == jax.tree.structure(args[2])
  np.testing.assert_allclose(ravel_pytree(grad)[0],
                             ravel_pytree(aux['g1'])[0] + ravel_pytree(aux['g2'])[0],
                             rtol=1e-12)
  # g1 = ∇α L_val at the current ω (at the unrolled ω′ for second-order DARTS).
  w = jnp.linspace(-1.0, 1.0, 5)
  if name.startswith('darts'):
    w = w - xi * (train['A'] @ w + train['B'] @ a + train['c'])
  g1 = val['B'].T @ w + val['D'] @ a + val['f']
  np.testing.assert_allclose(ravel_pytree(aux['g1'])[0], g1, rtol=1e-12)
  assert float(aux['val_loss']) == pytest.approx(
      float(quad_loss(_split_w(w), _split_a(a), val)[0]), rel=1e-12)


@pytest.mark.parametrize('name', SECOND_ORDER)
def test_identity_hessian_all_second_order_terms_are_exact(name):
  """With H = I at ω*(α), H⁻¹ = H = I: with η = ξ = 1 every g2 estimate is exact."""
  train, val, a = _quadratic(1)
  train = dict(train, A=np.eye(5))
  grad, aux = _estimator(name, quad_loss)(*_quad_args(train, val, a)[1:], eta=1.0, xi=1.0)
  true = _bilevel_grad(train, val, a)
  np.testing.assert_allclose(ravel_pytree(grad)[0], true, rtol=1e-9)
  # ... and g2 is not negligible, so this is not a first-order coincidence.
  assert _rel(aux['g2'], aux['g1']) > 0.1


# ---------------------------------------------------------------- implicit (eq. 4)


@pytest.mark.parametrize('seed', [0, 1, 2])
@pytest.mark.parametrize('ridge', [0.0, 0.5])
@pytest.mark.parametrize('solver,kw', [('cg', {'tol': 1e-12, 'maxiter': 50}),
                                       ('neumann', {'lr': 0.3, 'maxiter': 150})])
def test_implicit_matches_closed_form(seed, ridge, solver, kw):
  # Neumann: λ(A + ridge·I) ∈ [1, 3.5] and lr = 0.3 contract by ≤ 0.7 per term.
  train, val, a = _quadratic(seed)
  w = _omega_star(train, a)
  grad, aux = _jit(hypergrad.implicit, quad_loss, solver=solver, ridge=ridge, **kw)(
      *_quad_args(train, val, a)[1:])
  v = val['A'] @ w + val['B'] @ a + val['c']
  g2 = -train['B'].T @ np.linalg.solve(train['A'] + ridge * np.eye(5), v)
  np.testing.assert_allclose(ravel_pytree(aux['g2'])[0], g2, rtol=1e-9, atol=1e-12)
  if ridge == 0.0:
    # At ω*(α) it is the gradient of the bilevel objective α ↦ L_val(ω*(α), α).
    true = _bilevel_grad(train, val, a)
    np.testing.assert_allclose(ravel_pytree(grad)[0], true, rtol=1e-9)


def test_neumann_truncation_is_a_partial_sum():
  """Too few Neumann terms give exactly lr·Σ_{k≤K}(I − lr·A)^k v, not the inverse."""
  train, val, a = _quadratic(0)
  lr, k = 0.3, 3
  w = _omega_star(train, a)
  _, aux = _jit(hypergrad.implicit, quad_loss, solver='neumann', lr=lr, maxiter=k)(
      *_quad_args(train, val, a)[1:])
  v = val['A'] @ w + val['B'] @ a + val['c']
  step = np.eye(5) - lr * train['A']
  x = lr * sum(np.linalg.matrix_power(step, i) @ v for i in range(k + 1))
  np.testing.assert_allclose(ravel_pytree(aux['g2'])[0], -train['B'].T @ x, rtol=1e-10)
  assert _rel(aux['g2'], {'x': -train['B'].T @ np.linalg.solve(train['A'], v)}) > 1e-2


# ---------------------------------------------------------------- amended (eq. 5)


def test_amended_exact_is_minus_eta_j_h_v():
  params, alpha, train, val = _net()
  eta = 0.3
  hess, jac, v = _explicit_net_terms(params, alpha, train, val, params)
  _, aux = _estimator('amended_exact', net_loss)(params, alpha, train, val, eta=eta, xi=0.0)
  np.testing.assert_allclose(aux['g2'], -eta * jac.T @ hess @ v, rtol=1e-10)
  # The Hessian matters: H is far from a multiple of I here, so J·v alone differs.
  assert _rel(-eta * jac.T @ v, aux['g2']) > 0.1


def test_amended_fd_matches_exact_to_second_order():
  """Central differences (eq. 14-15): error O(ε²), so ×100 smaller per decade of ε."""
  params, alpha, train, val = _net()
  _, exact = _estimator('amended_exact', net_loss)(params, alpha, train, val, eta=0.1, xi=0.0)
  amended_fd = _jit(hypergrad.amended_fd, net_loss, eta=0.1)
  errs = [_rel(amended_fd(params, alpha, train, val, eps_scale=s)[1]['g2'], exact['g2'])
          for s in (0.01, 0.001)]
  # Measured: 4.9e-5 at the default eps_scale = 0.01 and 4.9e-7 at 0.001.
  assert errs[0] < 1e-4
  assert 80 < errs[0] / errs[1] < 120


# ---------------------------------------------------------------- second-order DARTS


def _darts_kw(params):
  rng = np.random.default_rng(7)
  buf = jax.tree.map(lambda p: rng.normal(size=np.shape(p)), params)
  return {'xi': 0.05, 'weight_decay': 3e-4, 'momentum': 0.9, 'momentum_buffer': buf}


def test_darts_exact_differentiates_through_the_unrolled_step():
  """d/dα L_val(ω′(α), α) = ∇α L_val(ω′) − ξ Jᵀ(ω) ∇ω L_val(ω′) (wd, momentum ⟂ α)."""
  params, alpha, train, val = _net()
  kw = _darts_kw(params)

  @jax.jit
  def reference(params, alpha, buf):
    w1 = hypergrad.unrolled_params(net_loss, params, alpha, None, train, xi=0.05,
                                   weight_decay=3e-4, momentum=0.9, momentum_buffer=buf)
    # ω′ = ω − ξ(μ·buf + ∇ω L_train + λω), written out.
    g_w = jax.grad(net_loss, has_aux=True)(params, alpha, train)[0]
    expected_w1 = jax.tree.map(lambda p, b, g: p - 0.05 * (0.9 * b + g + 3e-4 * p),
                               params, buf, g_w)
    g1 = jax.grad(net_loss, 1, has_aux=True)(w1, alpha, val)[0]
    return w1, expected_w1, g1

  w1, expected_w1, g1 = reference(params, alpha, kw['momentum_buffer'])
  np.testing.assert_allclose(ravel_pytree(w1)[0], ravel_pytree(expected_w1)[0], rtol=1e-12)
  _, jac, v1 = _explicit_net_terms(params, alpha, train, val, w1)
  _, aux = _jit(hypergrad.darts_second_order, net_loss, exact=True)(
      params, alpha, train, val, **kw)
  np.testing.assert_allclose(aux['g2'], -kw['xi'] * jac.T @ v1, rtol=1e-9)
  np.testing.assert_allclose(aux['g1'], g1, rtol=1e-12)


def test_darts_fd_matches_exact():
  params, alpha, train, val = _net()
  kw = _darts_kw(params)
  darts = functools.partial(_jit, hypergrad.darts_second_order, net_loss)
  exact_grad, exact = darts(exact=True)(params, alpha, train, val, **kw)
  fd_grad, fd = darts()(params, alpha, train, val, **kw)
  # Measured: 1.3e-5 on g2 and 1.5e-6 on the whole gradient at eps_scale = 0.01.
  assert _rel(fd['g2'], exact['g2']) < 1e-4
  assert _rel(fd_grad, exact_grad) < 1e-5


# ---------------------------------------------------------------- make


def test_make_rejects_unknown_names():
  with pytest.raises(ValueError, match='unknown estimator'):
    hypergrad.make('second_order', eta=0.1)


def test_make_rejects_hparams_the_estimator_does_not_declare():
  # A misspelt key is an error naming it, like a locked ConfigDict.
  with pytest.raises(ValueError, match="'amended_exact' takes no hyper-parameter etaa"):
    hypergrad.make('amended_exact', etaa=0.3)
  with pytest.raises(ValueError, match='takes no hyper-parameter eta; it takes none'):
    hypergrad.make('first_order', eta=0.3)
  # A shared mapping may hold any declared name, but not one no estimator declares.
  with pytest.raises(ValueError, match='no estimator takes hyper-parameter not_a_hparam'):
    hypergrad.select_hparams('amended_exact', {'eta': 0.3, 'not_a_hparam': 1})


def test_make_binds_only_accepted_hparams():
  # ξ and the momentum buffer are per-step inputs (StepContext), not hyper-parameters.
  shared = {'eta': 0.3, 'eps_scale': 0.001, 'solver': 'neumann', 'lr': 0.3,
            'maxiter': 150, 'tol': 1e-12}
  make = lambda name: hypergrad.make(name, **hypergrad.select_hparams(name, shared))
  assert make('first_order').keywords == {}
  assert make('amended_exact').keywords == {'eta': 0.3}
  assert make('amended_fd').keywords == {'eta': 0.3, 'eps_scale': 0.001}
  assert make('darts_second_order').keywords == {'eps_scale': 0.001}
  assert make('implicit').keywords == {
      'solver': 'neumann', 'lr': 0.3, 'maxiter': 150, 'tol': 1e-12}
  # The registered variant keeps its own binding.
  assert make('darts_second_order_exact').keywords == {'exact': True}
  # The bound values are the ones used: g2′ is linear in η.
  train, val, a = _quadratic(0)
  args = _quad_args(train, val, a)
  ctx = hypergrad.StepContext(lr=0.0)
  g2_03 = jax.jit(make('amended_exact'), static_argnums=0)(
      args[0], args[1], args[2], None, args[3], args[4], ctx)[1]['g2']
  g2_01 = _estimator('amended_exact', quad_loss)(*args[1:], eta=0.1, xi=0.0)[1]['g2']
  np.testing.assert_allclose(ravel_pytree(g2_03)[0], 3 * ravel_pytree(g2_01)[0], rtol=1e-12)


# ---------------------------------------------------------------- ⟨g2′, g2⟩ (Appendix A.3)
# With J = ∂(∇ω L_train)/∂α, g2 = −Jᵀ H⁻¹ v and g2′ = −η Jᵀ H v, so
#   ⟨g2′, g2⟩ = η (Jᵀ H v)·(Jᵀ H⁻¹ v) = η vᵀ H (J Jᵀ) H⁻¹ v.
# H (J Jᵀ) H⁻¹ is similar to the PSD J Jᵀ, so its eigenvalues and trace are ≥ 0, but its
# quadratic form is indefinite unless H commutes with J Jᵀ (e.g. H = c·I). The paper's
# claim ⟨g2′, g2⟩ ≥ 0 (Section 2.3, proof in A.3) is therefore false in general: for
# one α and H = diag(1, 1 + δ), j = (1, 1), v = (1, −1) it is −η δ²/(1 + δ) < 0 for
# every δ > 0. What holds: ≥ 0 if H = c·I, and ≥ 0 on average over isotropic v
# (Σ_i over v = e_i gives η·tr(J Jᵀ)).


def _linear_val_problem(hess, jac, v):
  """L_train = ½ωᵀHω + ωᵀJα, L_val = vᵀω: so H, J and ∇ω L_val = v are as given."""
  n_w, n_a = jac.shape
  train = {'A': hess, 'B': jac, 'c': np.zeros(n_w), 'D': np.eye(n_a), 'f': np.zeros(n_a)}
  val = {'A': np.zeros((n_w, n_w)), 'B': np.zeros((n_w, n_a)), 'c': v,
         'D': np.zeros((n_a, n_a)), 'f': np.zeros(n_a)}
  return train, val


@functools.partial(jax.jit, static_argnames='eta')
def _diagnose(train, val, a, eta=0.1):
  # ξ = 0.025, the default the diagnostic used before it took a step context.
  return hypergrad.diagnose(quad_loss, _split_w(_omega_star(train, a)), _split_a(a), None,
                            train, val, hypergrad.StepContext(lr=0.025), eta=eta, tol=1e-12,
                            maxiter=100)


@pytest.mark.parametrize('delta', [0.01, 1.0])
def test_amended_can_oppose_the_true_g2(delta):
  eta = 0.1
  hess = np.diag([1.0, 1.0 + delta, 2.0, 2.0, 2.0])
  jac = np.zeros((5, 3))
  jac[:2, 0] = -1.0  # ∇ω L_train = Hω − α₀·(1, 1, 0, 0, 0): only α₀ couples.
  v = np.array([1.0, -1.0, 0.0, 0.0, 0.0])
  train, val = _linear_val_problem(hess, jac, v)
  a = np.array([1.0, -0.5, 2.0])
  d = _diagnose(train, val, a, eta)
  assert float(d['inner_amended']) == pytest.approx(-eta * delta**2 / (1 + delta), rel=1e-9)
  assert float(d['cos_amended']) == pytest.approx(-1.0, abs=1e-9)
  # The true hypergradient (g1 = 0: L_val does not depend on α) and the amended one have
  # opposite signs on α₀: an amended step increases the bilevel objective.
  true = _bilevel_grad(train, val, a)
  amended = ravel_pytree(_estimator('amended_exact', quad_loss)(
      *_quad_args(train, val, a)[1:], eta=eta, xi=0.0)[0])[0]
  assert float(true[0]) == pytest.approx(delta / (1 + delta), rel=1e-9)
  assert float(amended[0]) == pytest.approx(-eta * delta, rel=1e-9)


def test_inner_product_sign_over_random_quadratics():
  eta, n_neg = 0.1, 0
  for seed in range(20):
    train, val, a = _quadratic(seed, cond=10.0)
    d = _diagnose(train, val, a, eta)
    w = np.asarray(_omega_star(train, a))
    v = val['A'] @ w + val['B'] @ a + val['c']
    h, j = train['A'], train['B']
    expected = eta * (j.T @ h @ v) @ (j.T @ np.linalg.solve(h, v))
    assert float(d['inner_amended']) == pytest.approx(expected, rel=1e-8)
    n_neg += expected < 0
  # Measured: 4 of these 20 problems have ⟨g2′, g2⟩ < 0 — the paper's bound fails on
  # generic problems, not only on constructed ones; most are still positive.
  assert 0 < n_neg < 10


def test_inner_product_nonnegative_when_hessian_is_scalar():
  rng = np.random.default_rng(3)
  for _ in range(5):
    jac, v = rng.normal(size=(5, 3)), rng.normal(size=5)
    train, val = _linear_val_problem(2.5 * np.eye(5), jac, v)
    d = _diagnose(train, val, rng.normal(size=3))
    # H = c·I: ⟨g2′, g2⟩ = η‖Jᵀv‖², and g2′ ∥ g2.
    assert float(d['inner_amended']) == pytest.approx(0.1 * np.sum((jac.T @ v)**2), rel=1e-9)
    assert float(d['cos_amended']) == pytest.approx(1.0, abs=1e-9)


def test_inner_product_is_an_indefinite_form_with_nonnegative_trace():
  """⟨g2′, g2⟩ = η vᵀSv, S = sym(H JJᵀ H⁻¹): tr S = ‖J‖²_F ≥ 0 but λ_min(S) < 0.

  Over the eigenbasis of S the inner products are η·λ_k(S) and sum to η‖J‖²_F: the
  trace (eigenvalue) argument of A.3 holds, the pointwise sign does not.
  """
  eta = 0.1
  train, _, _ = _quadratic(5, cond=10.0)
  h, j = train['A'], train['B']
  m = h @ j @ j.T @ np.linalg.inv(h)
  lam, vecs = np.linalg.eigh(0.5 * (m + m.T))
  a = np.array([0.3, -0.7, 1.1])
  inner = np.array([float(_diagnose(*_linear_val_problem(h, j, e), a, eta)['inner_amended'])
                    for e in vecs.T])
  np.testing.assert_allclose(inner, eta * lam, rtol=1e-8, atol=1e-12)
  assert inner.sum() == pytest.approx(eta * np.sum(j**2), rel=1e-8)
  assert inner.min() < 0
