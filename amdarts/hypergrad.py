"""Hypergradient estimators for the architecture parameters α.

The bilevel problem: ω minimises L_train(ω, α); α minimises L_val(ω*(α), α). Its true
α gradient is g1 + g2 with (eq. 3-4)

    g1 = ∇α L_val,    g2 = −∇²αω L_train · H⁻¹ · ∇ω L_val,    H = ∇²ω L_train.

The contract, shared by the CNN and the recurrent search:

    loss_fn(params, alpha, batch, model_state) -> (loss, (new_model_state, metrics))
    estimator(loss_fn, params, alpha, model_state, train_batch, val_batch, ctx)
        -> (grad_alpha, aux)

ω (`params`) and α (`alpha`) are separate pytrees; `model_state` is what the network
carries besides ω (batch-norm statistics; for the language model also its hidden
states) and is an argument, never a closure, so both passes see it explicitly. `ctx`
is a `StepContext`: the per-step inputs (the weight optimizer's current learning
rate and momentum buffer) that only DARTS's unrolled step reads; the others ignore
it. Static hyper-parameters (η, ε, solver, ...) are bound by `make`, which refuses
names the estimator does not declare.

`aux` holds `val_loss`, `val_aux` (the `(new_model_state, metrics)` of the
validation pass), `g1`, `g2` (the estimator's second-order term, zeros for
first-order), `v` (∇ω L_val at the ω the validation pass used) and, where the
estimator computes them, `hv` (H·v), `hinv_v` (H⁻¹·v) and `mixed` (the ∇²αω L_train
product before its scaling by −η, −ξ or −1), for diagnostics; under jit the unused
ones cost nothing. Second-order products are Hessian-vector products through JAX
autodiff; no Hessian is ever formed. Adding an estimator = one function plus one
`Estimator` entry in `ESTIMATORS`.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Mapping, NamedTuple

import jax
import jax.numpy as jnp
import optax

PyTree = Any
# loss_fn(params, alpha, batch, model_state) -> (loss, (new_model_state, metrics))
LossFn = Callable[[PyTree, PyTree, Any, PyTree], tuple[jax.Array, tuple[PyTree, Any]]]


class StepContext(NamedTuple):
  """Per-step inputs of an estimator, the same type for every estimator and caller.

  Attributes:
    lr: current weight learning rate (ξ of DARTS's unrolled step).
    momentum_buffer: the weight optimizer's momentum buffer (ω-shaped), or None
      for plain SGD.
  """

  lr: jax.Array
  momentum_buffer: PyTree | None = None

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


def _loss(loss_fn, params, alpha, batch, model_state):
  return loss_fn(params, alpha, batch, model_state)[0]


def _val_grads(loss_fn, params, alpha, model_state, val_batch):
  """L_val, its aux, ∇ω L_val and g1 = ∇α L_val in one backward pass."""
  (loss, aux), (g_w, g_a) = jax.value_and_grad(loss_fn, argnums=(0, 1), has_aux=True)(
      params, alpha, val_batch, model_state
  )
  return loss, aux, g_w, g_a


def _train_grad_w(loss_fn, model_state, train_batch):
  return lambda p, a: jax.grad(_loss, argnums=1)(loss_fn, p, a, train_batch, model_state)


def _train_grad_a(loss_fn, model_state, train_batch):
  return lambda p, a: jax.grad(_loss, argnums=2)(loss_fn, p, a, train_batch, model_state)


def _aux(loss, aux, g1, g2, v, **vectors):
  return {'val_loss': loss, 'val_aux': aux, 'g1': g1, 'g2': g2, 'v': v, **vectors}


def first_order(loss_fn, params, alpha, model_state, train_batch, val_batch, ctx):
  """First-order DARTS: g2 dropped, the gradient is g1 at the current ω."""
  del train_batch, ctx
  loss, aux, v, g1 = _val_grads(loss_fn, params, alpha, model_state, val_batch)
  return g1, _aux(loss, aux, g1, jax.tree.map(jnp.zeros_like, g1), v)


def amended_exact(loss_fn, params, alpha, model_state, train_batch, val_batch, ctx, *,
                  eta=0.1):
  """Amended gradient g1 + g2′ with g2′ = −η ∇²αω L_train · H · ∇ω L_val (eq. 5).

  Computed exactly at the current ω. One VJP linearisation of
  (ω, α) ↦ ∇ω L_train serves both products: its transpose applied to u gives
  (H u, ∇²αω L_train · u) because H is symmetric, so H v is its ω part at u = v and
  g2′ is −η times its α part at u = H v.
  """
  del ctx
  loss, aux, v, g1 = _val_grads(loss_fn, params, alpha, model_state, val_batch)
  _, vjp = jax.vjp(_train_grad_w(loss_fn, model_state, train_batch), params, alpha)
  hv = vjp(v)[0]
  mixed = vjp(hv)[1]
  g2 = _scale(-eta, mixed)
  return _add(g1, g2), _aux(loss, aux, g1, g2, v, hv=hv, mixed=mixed)


def amended_fd(loss_fn, params, alpha, model_state, train_batch, val_batch, ctx, *,
               eta=0.1, eps_scale=0.01):
  """The paper's finite-difference amended gradient, eq. 14-15 (Appendix A.4).

  ε = eps_scale / ‖∇ω L_val‖; ω1,2 = ω ± ε v; d = ∇ω L_train(ω1) − ∇ω L_train(ω2)
  (≈ 2ε H v); ω3,4 = ω ± d/2; g2′ ≈ −η (∇α L_train(ω3) − ∇α L_train(ω4)) / 2ε.
  """
  del ctx
  loss, aux, v, g1 = _val_grads(loss_fn, params, alpha, model_state, val_batch)
  eps = _fd_step(eps_scale, v)
  grad_w = _train_grad_w(loss_fn, model_state, train_batch)
  grad_a = _train_grad_a(loss_fn, model_state, train_batch)
  d = _sub(grad_w(_axpy(eps, v, params), alpha), grad_w(_axpy(-eps, v, params), alpha))
  diff = _sub(grad_a(_axpy(0.5, d, params), alpha), grad_a(_axpy(-0.5, d, params), alpha))
  g2 = _scale(-eta / (2 * eps), diff)
  # d/2ε ≈ H v and diff/2ε ≈ ∇²αω L_train · H v, the quantities eq. 14-15 approximate.
  return _add(g1, g2), _aux(loss, aux, g1, g2, v, hv=_scale(1 / (2 * eps), d),
                            mixed=_scale(1 / (2 * eps), diff))


def unrolled_params(loss_fn, params, alpha, model_state, train_batch, *, xi,
                    weight_decay=0.0, momentum=0.0, momentum_buffer=None):
  """DARTS's virtual step ω′ = ω − ξ(μ·buf + ∇ω L_train + λω) (SGD with momentum)."""
  g = jax.grad(_loss, argnums=1)(loss_fn, params, alpha, train_batch, model_state)
  g = _axpy(weight_decay, params, g)
  if momentum_buffer is not None:
    g = _axpy(momentum, momentum_buffer, g)
  return _axpy(-xi, g, params)


def darts_second_order(loss_fn, params, alpha, model_state, train_batch, val_batch, ctx,
                       *, weight_decay=0.0, momentum=0.0, eps_scale=0.01, exact=False):
  """Second-order DARTS: the gradient of L_val(ω − ξ∇ω L_train(ω, α), α).

  ξ = `ctx.lr`, the weight optimizer's current learning rate, and the virtual step
  uses its momentum buffer `ctx.momentum_buffer` (None: plain SGD). With
  `exact=False` as in DARTS: g1 = ∇α L_val(ω′, α) and the second-order term
  −ξ ∇²αω L_train(ω, α) · ∇ω′ L_val(ω′, α) by central differences at
  ω ± ε∇ω′ L_val with ε = eps_scale / ‖∇ω′ L_val‖. With `exact=True` the whole
  unrolled objective is differentiated through the virtual step by autodiff.
  """
  xi = ctx.lr
  unroll = functools.partial(
      unrolled_params, loss_fn, model_state=model_state, train_batch=train_batch, xi=xi,
      weight_decay=weight_decay, momentum=momentum, momentum_buffer=ctx.momentum_buffer)
  w1 = unroll(params, alpha)
  loss, aux, v, g1 = _val_grads(loss_fn, w1, alpha, model_state, val_batch)
  if exact:
    total = jax.grad(lambda a: _loss(loss_fn, unroll(params, a), a, val_batch,
                                     model_state))(alpha)
    return total, _aux(loss, aux, g1, _sub(total, g1), v)
  eps = _fd_step(eps_scale, v)
  grad_a = _train_grad_a(loss_fn, model_state, train_batch)
  diff = _sub(grad_a(_axpy(eps, v, params), alpha), grad_a(_axpy(-eps, v, params), alpha))
  g2 = _scale(-xi / (2 * eps), diff)
  return _add(g1, g2), _aux(loss, aux, g1, g2, v, mixed=_scale(1 / (2 * eps), diff))


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


def implicit(loss_fn, params, alpha, model_state, train_batch, val_batch, ctx, *,
             solver='cg', ridge=0.0, maxiter=50, tol=1e-6, lr=1e-2):
  """Implicit-function gradient g1 + g2, g2 = −∇²αω L_train · (H + ridge·I)⁻¹ ∇ω L_val.

  H⁻¹ is applied by conjugate gradients or a Neumann series (step `lr`) with exact
  HVPs. This is the true hypergradient when ω is a minimiser of L_train (eq. 4), and
  the reference for the estimator diagnostics.
  """
  del ctx
  loss, aux, v, g1 = _val_grads(loss_fn, params, alpha, model_state, val_batch)
  _, vjp = jax.vjp(_train_grad_w(loss_fn, model_state, train_batch), params, alpha)
  hvp = lambda x: vjp(x)[0]  # H symmetric: the transpose is H itself.
  kwargs = {'maxiter': maxiter, 'ridge': ridge}
  kwargs.update({'tol': tol} if solver == 'cg' else {'lr': lr})
  x = SOLVERS[solver](hvp, v, **kwargs)
  mixed = vjp(x)[1]
  g2 = _scale(-1.0, mixed)
  return _add(g1, g2), _aux(loss, aux, g1, g2, v, hinv_v=x, mixed=mixed)


class Estimator(NamedTuple):
  """One registry entry.

  Attributes:
    fn: the estimator function (the shared signature, hyper-parameters keyword-only).
    hparams: the keyword hyper-parameters a caller may bind with `make`.
    fixed: keywords the entry binds itself (variants of one function).
  """

  fn: Callable
  hparams: tuple[str, ...]
  fixed: Mapping[str, Any] = {}


ESTIMATORS = {
    'first_order': Estimator(first_order, ()),
    'darts_second_order': Estimator(darts_second_order,
                                    ('weight_decay', 'momentum', 'eps_scale')),
    'darts_second_order_exact': Estimator(darts_second_order, ('weight_decay', 'momentum'),
                                          {'exact': True}),
    'amended_exact': Estimator(amended_exact, ('eta',)),
    'amended_fd': Estimator(amended_fd, ('eta', 'eps_scale')),
    'implicit': Estimator(implicit, ('solver', 'ridge', 'maxiter', 'tol', 'lr')),
}

# Every hyper-parameter some estimator declares: what a shared dict may hold.
HPARAMS = frozenset(k for e in ESTIMATORS.values() for k in e.hparams)


def _entry(name: str) -> Estimator:
  if name not in ESTIMATORS:
    raise ValueError(f'unknown estimator {name!r}; known: {sorted(ESTIMATORS)}')
  return ESTIMATORS[name]


def make(name: str, **hparams) -> functools.partial:
  """The estimator `name` with `hparams` bound, in the shared signature.

  Raises:
    ValueError: for an unknown estimator, or naming every hyper-parameter it does
      not declare (a misspelt key fails here, like a locked ConfigDict).
  """
  entry = _entry(name)
  unknown = sorted(set(hparams) - set(entry.hparams))
  if unknown:
    raise ValueError(f'estimator {name!r} takes no hyper-parameter {", ".join(unknown)}; '
                     f'it takes {", ".join(entry.hparams) or "none"}')
  return functools.partial(entry.fn, **entry.fixed, **hparams)


def select_hparams(name: str, offered: Mapping[str, Any]) -> dict[str, Any]:
  """Those of `offered` that estimator `name` declares, for `make`.

  A driver offers every hyper-parameter its config holds and binds only the chosen
  estimator's, by the registry's declaration.

  Raises:
    ValueError: for an unknown estimator, or a key no estimator declares (a typo
      in the caller's mapping must not vanish silently).
  """
  entry = _entry(name)
  stray = sorted(set(offered) - HPARAMS)
  if stray:
    raise ValueError(f'no estimator takes hyper-parameter {", ".join(stray)}; '
                     f'known: {", ".join(sorted(HPARAMS))}')
  return {k: v for k, v in offered.items() if k in entry.hparams}


def diagnose(loss_fn, params, alpha, model_state, train_batch, val_batch, ctx, *, eta=0.1,
             weight_decay=0.0, **implicit_kw):
  """How well g2′ (amended) and g2 of second-order DARTS align with the implicit g2.

  Same arguments as an estimator; second-order DARTS takes ξ from `ctx.lr` (without
  momentum), the implicit g2 the solver keywords `implicit_kw`. The paper claims
  ⟨g2′, g2⟩ ≥ 0 (Appendix A.3); this measures it rather than assuming it.

  Returns:
    Cosines, the inner product and norms.
  """
  args = (loss_fn, params, alpha, model_state, train_batch, val_batch)
  g2 = implicit(*args, ctx, **implicit_kw)[1]['g2']
  g2_amended = amended_exact(*args, ctx, eta=eta)[1]['g2']
  plain = StepContext(lr=ctx.lr)
  g2_darts = darts_second_order(*args, plain, weight_decay=weight_decay, exact=True)[1]['g2']
  return {
      'cos_amended': tree_cosine(g2_amended, g2),
      'cos_darts': tree_cosine(g2_darts, g2),
      'inner_amended': tree_vdot(g2_amended, g2),
      'norm_g2': optax.tree.norm(g2),
      'norm_g2_amended': optax.tree.norm(g2_amended),
      'norm_g2_darts': optax.tree.norm(g2_darts),
  }
