"""Hypergradient estimators for the architecture parameters α.

The bilevel problem: ω minimises L_train(ω, α); α minimises L_val(ω*(α), α). Its true
α gradient is g1 + g2 with (eq. 3-4)

    g1 = ∇α L_val,    g2 = −∇²αω L_train · H⁻¹ · ∇ω L_val,    H = ∇²ω L_train.

Every estimator has one signature

    estimator(loss_fn, params, alpha, train_batch, val_batch, **hparams)
        -> (grad_alpha, aux)

where `loss_fn(params, alpha, batch) -> (loss, loss_aux)` and ω (`params`) and α
(`alpha`) are separate pytrees. `aux` holds `val_loss`, `val_aux` (the loss_fn aux of
the validation pass), `g1` and `g2` (the estimator's second-order term, zeros for
first-order). Second-order products are Hessian-vector products through JAX
autodiff; no Hessian is ever formed. Adding an estimator = one function plus one
entry in `ESTIMATORS`.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax

PyTree = Any
LossFn = Callable[[PyTree, PyTree, Any], tuple[jax.Array, Any]]

_add = functools.partial(jax.tree.map, jnp.add)
_sub = functools.partial(jax.tree.map, jnp.subtract)


def _axpy(a, x, y):
  """a·x + y on pytrees."""
  return jax.tree.map(lambda xi, yi: a * xi + yi, x, y)


def _scale(a, x):
  return jax.tree.map(lambda xi: a * xi, x)


def tree_vdot(x, y) -> jax.Array:
  return sum(jnp.vdot(a, b) for a, b in zip(jax.tree.leaves(x), jax.tree.leaves(y)))


def _fd_step(eps_scale, v) -> jax.Array:
  """ε = eps_scale / ‖v‖ (DARTS); a zero v gives a zero difference instead of inf·0."""
  return eps_scale / jnp.maximum(optax.tree.norm(v), jnp.finfo(jnp.float32).tiny)


def tree_cosine(x, y) -> jax.Array:
  nx, ny = optax.tree.norm(x), optax.tree.norm(y)
  return tree_vdot(x, y) / jnp.maximum(nx * ny, 1e-30)


def _loss(loss_fn, params, alpha, batch):
  return loss_fn(params, alpha, batch)[0]


def _val_grads(loss_fn, params, alpha, val_batch):
  """L_val, its aux, ∇ω L_val and g1 = ∇α L_val in one backward pass."""
  (loss, aux), (g_w, g_a) = jax.value_and_grad(loss_fn, argnums=(0, 1), has_aux=True)(
      params, alpha, val_batch
  )
  return loss, aux, g_w, g_a


def _train_grad_w(loss_fn, train_batch):
  return lambda p, a: jax.grad(_loss, argnums=1)(loss_fn, p, a, train_batch)


def _train_grad_a(loss_fn, train_batch):
  return lambda p, a: jax.grad(_loss, argnums=2)(loss_fn, p, a, train_batch)


def _aux(loss, aux, g1, g2):
  return {'val_loss': loss, 'val_aux': aux, 'g1': g1, 'g2': g2}


def first_order(loss_fn, params, alpha, train_batch, val_batch):
  """First-order DARTS: g2 dropped, the gradient is g1 at the current ω."""
  del train_batch
  loss, aux, _, g1 = _val_grads(loss_fn, params, alpha, val_batch)
  return g1, _aux(loss, aux, g1, jax.tree.map(jnp.zeros_like, g1))


def amended_exact(loss_fn, params, alpha, train_batch, val_batch, *, eta=0.1):
  """Amended gradient g1 + g2′ with g2′ = −η ∇²αω L_train · H · ∇ω L_val (eq. 5).

  Computed exactly at the current ω. One VJP linearisation of
  (ω, α) ↦ ∇ω L_train serves both products: its transpose applied to u gives
  (H u, ∇²αω L_train · u) because H is symmetric, so H v is its ω part at u = v and
  g2′ is −η times its α part at u = H v.
  """
  loss, aux, v, g1 = _val_grads(loss_fn, params, alpha, val_batch)
  _, vjp = jax.vjp(_train_grad_w(loss_fn, train_batch), params, alpha)
  hv = vjp(v)[0]
  g2 = _scale(-eta, vjp(hv)[1])
  return _add(g1, g2), _aux(loss, aux, g1, g2)


def amended_fd(loss_fn, params, alpha, train_batch, val_batch, *, eta=0.1, eps_scale=0.01):
  """The paper's finite-difference amended gradient, eq. 14-15 (Appendix A.4).

  ε = eps_scale / ‖∇ω L_val‖; ω1,2 = ω ± ε v; d = ∇ω L_train(ω1) − ∇ω L_train(ω2)
  (≈ 2ε H v); ω3,4 = ω ± d/2; g2′ ≈ −η (∇α L_train(ω3) − ∇α L_train(ω4)) / 2ε.
  """
  loss, aux, v, g1 = _val_grads(loss_fn, params, alpha, val_batch)
  eps = _fd_step(eps_scale, v)
  grad_w = _train_grad_w(loss_fn, train_batch)
  grad_a = _train_grad_a(loss_fn, train_batch)
  d = _sub(grad_w(_axpy(eps, v, params), alpha), grad_w(_axpy(-eps, v, params), alpha))
  diff = _sub(grad_a(_axpy(0.5, d, params), alpha), grad_a(_axpy(-0.5, d, params), alpha))
  g2 = _scale(-eta / (2 * eps), diff)
  return _add(g1, g2), _aux(loss, aux, g1, g2)


def unrolled_params(loss_fn, params, alpha, train_batch, *, xi, weight_decay=0.0,
                    momentum=0.0, momentum_buffer=None):
  """DARTS's virtual step ω′ = ω − ξ(μ·buf + ∇ω L_train + λω) (SGD with momentum)."""
  g = jax.grad(_loss, argnums=1)(loss_fn, params, alpha, train_batch)
  g = _axpy(weight_decay, params, g)
  if momentum_buffer is not None:
    g = _axpy(momentum, momentum_buffer, g)
  return _axpy(-xi, g, params)


def darts_second_order(loss_fn, params, alpha, train_batch, val_batch, *, xi,
                       weight_decay=0.0, momentum=0.0, momentum_buffer=None,
                       eps_scale=0.01, exact=False):
  """Second-order DARTS: the gradient of L_val(ω − ξ∇ω L_train(ω, α), α).

  With `exact=False` as in DARTS: g1 = ∇α L_val(ω′, α) and the second-order term
  −ξ ∇²αω L_train(ω, α) · ∇ω′ L_val(ω′, α) by central differences at
  ω ± ε∇ω′ L_val with ε = eps_scale / ‖∇ω′ L_val‖. With `exact=True` the whole
  unrolled objective is differentiated through the virtual step by autodiff.
  `xi` is the weight optimizer's current learning rate.
  """
  unroll = functools.partial(
      unrolled_params, loss_fn, train_batch=train_batch, xi=xi, weight_decay=weight_decay,
      momentum=momentum, momentum_buffer=momentum_buffer)
  w1 = unroll(params, alpha)
  loss, aux, v, g1 = _val_grads(loss_fn, w1, alpha, val_batch)
  if exact:
    total = jax.grad(lambda a: _loss(loss_fn, unroll(params, a), a, val_batch))(alpha)
    return total, _aux(loss, aux, g1, _sub(total, g1))
  eps = _fd_step(eps_scale, v)
  grad_a = _train_grad_a(loss_fn, train_batch)
  diff = _sub(grad_a(_axpy(eps, v, params), alpha), grad_a(_axpy(-eps, v, params), alpha))
  g2 = _scale(-xi / (2 * eps), diff)
  return _add(g1, g2), _aux(loss, aux, g1, g2)


# Linear solvers in the jaxopt shape: solve(matvec, b, ...) -> x, matrices never built.


def solve_cg(matvec, b, *, ridge=0.0, maxiter=50, tol=1e-6, init=None):
  """Conjugate gradients on (A + ridge·I) x = b; A symmetric positive definite."""
  mv = (lambda x: _axpy(ridge, x, matvec(x))) if ridge else matvec
  return jax.scipy.sparse.linalg.cg(mv, b, x0=init, tol=tol, maxiter=maxiter)[0]


def solve_neumann(matvec, b, *, ridge=0.0, maxiter=50, lr=1e-2, init=None):
  """Neumann series x = lr Σ_k (I − lr(A + ridge·I))^k b, truncated at `maxiter` terms.

  Converges when lr · λ_max(A + ridge·I) < 2 and A + ridge·I is positive definite.
  """
  del init

  def body(_, carry):
    term, acc = carry
    term = _sub(term, _scale(lr, _axpy(ridge, term, matvec(term))))
    return term, _add(acc, term)

  _, acc = jax.lax.fori_loop(0, maxiter, body, (b, b))
  return _scale(lr, acc)


SOLVERS = {'cg': solve_cg, 'neumann': solve_neumann}


def implicit(loss_fn, params, alpha, train_batch, val_batch, *, solver='cg', ridge=0.0,
             maxiter=50, tol=1e-6, lr=1e-2):
  """Implicit-function gradient g1 + g2, g2 = −∇²αω L_train · (H + ridge·I)⁻¹ ∇ω L_val.

  H⁻¹ is applied by conjugate gradients or a Neumann series with exact HVPs. This is
  the true hypergradient when ω is a minimiser of L_train (eq. 4), and the reference
  for the estimator diagnostics.
  """
  loss, aux, v, g1 = _val_grads(loss_fn, params, alpha, val_batch)
  _, vjp = jax.vjp(_train_grad_w(loss_fn, train_batch), params, alpha)
  hvp = lambda x: vjp(x)[0]  # H symmetric: the transpose is H itself.
  kwargs = {'maxiter': maxiter, 'ridge': ridge}
  kwargs.update({'tol': tol} if solver == 'cg' else {'lr': lr})
  x = SOLVERS[solver](hvp, v, **kwargs)
  g2 = _scale(-1.0, vjp(x)[1])
  return _add(g1, g2), _aux(loss, aux, g1, g2)


ESTIMATORS = {
    'first_order': first_order,
    'darts_second_order': darts_second_order,
    'darts_second_order_exact': functools.partial(darts_second_order, exact=True),
    'amended_exact': amended_exact,
    'amended_fd': amended_fd,
    'implicit': implicit,
}


def make(name: str, **hparams) -> Callable:
  """The estimator `name` with those of `hparams` that it accepts bound.

  A shared hyper-parameter dict (eta, xi, eps_scale, ...) can be passed whole;
  values an estimator takes as traced arguments (e.g. `xi`, which follows the
  learning-rate schedule) may instead be given at call time.
  """
  if name not in ESTIMATORS:
    raise ValueError(f'unknown estimator {name!r}; known: {sorted(ESTIMATORS)}')
  fn = ESTIMATORS[name]
  accepted = inspect.signature(fn).parameters
  return functools.partial(fn, **{k: v for k, v in hparams.items() if k in accepted})


def diagnose(loss_fn, params, alpha, train_batch, val_batch, *, eta=0.1, xi=0.025,
             weight_decay=0.0, **implicit_kw):
  """How well g2′ (amended) and g2 of second-order DARTS align with the implicit g2.

  The paper claims ⟨g2′, g2⟩ ≥ 0 (Appendix A.3); this measures it rather than
  assuming it. Returns cosines, the inner product and norms.
  """
  args = (loss_fn, params, alpha, train_batch, val_batch)
  g2 = implicit(*args, **implicit_kw)[1]['g2']
  g2_amended = amended_exact(*args, eta=eta)[1]['g2']
  g2_darts = darts_second_order(*args, xi=xi, weight_decay=weight_decay, exact=True)[1]['g2']
  return {
      'cos_amended': tree_cosine(g2_amended, g2),
      'cos_darts': tree_cosine(g2_darts, g2),
      'inner_amended': tree_vdot(g2_amended, g2),
      'norm_g2': optax.tree.norm(g2),
      'norm_g2_amended': optax.tree.norm(g2_amended),
      'norm_g2_darts': optax.tree.norm(g2_darts),
  }
