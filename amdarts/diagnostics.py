"""Curvature of the validation loss in α: R-DARTS's collapse signal.

Zela et al. (2020) observe that DARTS collapses as the dominant eigenvalue of
∇²α L_val grows: α sits in an ever sharper valley, and discretising it (keeping the
arg-max op) then costs much accuracy. `alpha_hessian_eigenvalue` measures that
eigenvalue on a batch by power iteration with exact Hessian-vector products in α
(forward-over-reverse: the JVP of ∇α L_val), never forming the Hessian.

The loss follows the `hypergrad` convention,
`loss_fn(params, alpha, batch, model_state) -> (loss, (new_model_state, metrics))`,
so any loss the estimators take works here.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax

from amdarts import hypergrad

PyTree = Any


def alpha_hvp(loss_fn: hypergrad.LossFn, params: PyTree, alpha: PyTree, model_state: PyTree,
              batch: Any) -> Callable[[PyTree], PyTree]:
  """v ↦ ∇²α L(ω, α) · v at fixed (ω, α), exactly.

  `jax.linearize` of ∇α L evaluates the gradient once and keeps its linearisation,
  so each product costs one tangent pass instead of a fresh forward-over-reverse
  evaluation.

  Args:
    loss_fn: the loss in the `hypergrad` convention.
    params: ω.
    alpha: α, the point of the Hessian.
    model_state: the network's state besides ω (batch-norm statistics).
    batch: the batch the loss is taken on.

  Returns:
    The Hessian-vector product, a function of an α-shaped pytree.
  """
  grad_a = jax.grad(lambda a: loss_fn(params, a, batch, model_state)[0])
  _, hvp = jax.linearize(grad_a, alpha)
  return hvp


def power_iteration(matvec: Callable[[PyTree], PyTree], init: PyTree, *,
                    iters: int) -> dict[str, jax.Array]:
  """The eigenvalue of largest magnitude of a symmetric operator, by power iteration.

  Runs `iters` products from `init` (any non-zero vector; a random one avoids
  starting orthogonal to the dominant eigenvector). The estimate is the Rayleigh
  quotient vᵀAv of the last unit iterate v. The relative residual ‖Av − λv‖ / |λ|
  says how far it is from an eigenpair: convergence is geometric with ratio
  |λ₂ / λ₁|, slow when the two top magnitudes are close.

  Args:
    matvec: v ↦ A v on pytrees, A symmetric.
    init: the start vector.
    iters: number of products (the last one gives the residual).

  Returns:
    {'eigenvalue': λ (signed), 'residual': ‖Av − λv‖ / |λ|, 'eigenvector': v}.
  """
  if iters < 1:
    raise ValueError(f'power iteration needs iters >= 1, got {iters}')

  def normalise(x):
    inv = 1.0 / jnp.maximum(optax.tree.norm(x), 1e-30)
    return jax.tree.map(lambda xi: inv * xi, x)

  def body(_, v):
    return normalise(matvec(v))

  v = jax.lax.fori_loop(0, iters - 1, body, normalise(init))
  av = matvec(v)
  lam = hypergrad.tree_vdot(v, av)
  residual = (optax.tree.norm(jax.tree.map(lambda a, b: a - lam * b, av, v))
              / jnp.maximum(jnp.abs(lam), 1e-30))
  return {'eigenvalue': lam, 'residual': residual, 'eigenvector': v}


def alpha_hessian_eigenvalue(loss_fn: hypergrad.LossFn, params: PyTree, alpha: PyTree,
                             model_state: PyTree, batch: Any, key: jax.Array, *,
                             iters: int = 20) -> dict[str, jax.Array]:
  """Dominant eigenvalue of ∇²α L(ω, α) on `batch` (R-DARTS's collapse signal).

  Args:
    loss_fn: the loss in the `hypergrad` convention (the super-net's L_val).
    params: ω.
    alpha: α (all architecture leaves, β included, are one vector).
    model_state: batch-norm statistics.
    batch: the batch of L_val; keep it fixed across a run so values compare.
    key: draws the start vector.
    iters: power-iteration products.

  Returns:
    {'eigenvalue', 'residual'} as `power_iteration` (the eigenvector is dropped).
  """
  leaves, treedef = jax.tree.flatten(alpha)
  keys = jax.random.split(key, len(leaves))
  init = jax.tree.unflatten(treedef, [jax.random.normal(k, x.shape, x.dtype)
                                      for k, x in zip(keys, leaves)])
  out = power_iteration(alpha_hvp(loss_fn, params, alpha, model_state, batch), init,
                        iters=iters)
  return {'eigenvalue': out['eigenvalue'], 'residual': out['residual']}
