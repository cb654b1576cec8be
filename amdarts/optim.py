"""The optimizers of every driver, once: torch-order SGD for ω, L2 Adam for α, schedules.

    direction_tx = optim.sgd(momentum=0.9, weight_decay=3e-4, grad_clip=5.0)
    lr = optim.epoch_schedule('cosine', base=0.025, minimum=0.001, epochs=50,
                              steps_per_epoch=390)
    rate = optim.drop_path_schedule(0.2, epochs=50, steps_per_epoch=390)
    ...
    direction, opt_state = direction_tx.update(grads, opt_state, params)
    params = optim.apply_lr(params, direction, lr(step))

The weight transformation stops before the learning rate: every step applies it
itself, because every step needs its value anyway. DARTS's unrolled second-order
step reads it as ξ (`hypergrad.StepContext.lr`) and the recurrent steps scale it by
the chunk length. `momentum_buffer` reads the buffer that step also uses.

A leaf module: drivers import it, it imports no driver.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax

SCHEDULES = ('cosine', 'exponential', 'linear')


def sgd(*, momentum: float = 0.0, weight_decay: float = 0.0,
        grad_clip: float = 0.0) -> optax.GradientTransformation:
  """torch.optim.SGD's update direction after clip_grad_norm, as DARTS trains ω.

  The gradient is clipped to global norm `grad_clip` (skipped when 0), then wd·ω is
  added (torch's `weight_decay`, L2 rather than decoupled), then the momentum buffer
  buf ← μ·buf + d replaces it (skipped when μ = 0). The result is the direction the
  step multiplies by −lr (`apply_lr`).

  Args:
    momentum: μ.
    weight_decay: L2 coefficient λ.
    grad_clip: maximal global norm of the raw gradient; 0 = no clipping.

  Returns:
    The transformation; its update needs `params` (for the decay term).
  """
  parts = [optax.clip_by_global_norm(grad_clip)] if grad_clip > 0 else []
  parts.append(optax.add_decayed_weights(weight_decay))
  if momentum:
    parts.append(optax.trace(decay=momentum))
  return optax.chain(*parts)


def apply_lr(params: Any, direction: Any, lr: jax.Array) -> Any:
  """ω − lr·direction, in each leaf's dtype."""
  return jax.tree.map(lambda p, d: p - jnp.asarray(lr, p.dtype) * d, params, direction)


def momentum_buffer(opt_state: Any) -> Any | None:
  """The momentum buffer inside a `sgd` state, or None without momentum."""
  return optax.tree_utils.tree_get(opt_state, 'trace')


def adam(learning_rate: float, *, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8,
         weight_decay: float = 0.0) -> optax.GradientTransformation:
  """torch.optim.Adam with `weight_decay`: L2 added to the gradient, not AdamW.

  DARTS's optimizer of α.

  Args:
    learning_rate: constant step size.
    b1: first-moment decay.
    b2: second-moment decay.
    eps: denominator offset.
    weight_decay: L2 coefficient added to the gradient before the moments.

  Returns:
    The transformation (full updates, learning rate included).
  """
  return optax.chain(optax.add_decayed_weights(weight_decay),
                     optax.adam(learning_rate, b1=b1, b2=b2, eps=eps))


def epoch_schedule(kind: str = 'cosine', *, base: float, epochs: int, steps_per_epoch: int,
                   minimum: float = 0.0, gamma: float = 1.0,
                   warmup_epochs: int = 0) -> optax.Schedule:
  """A learning rate constant within each epoch, as DARTS's per-epoch torch schedulers.

  With e = step // steps_per_epoch (at most `epochs`) and E = `epochs`:

    cosine:      minimum + (base − minimum)(1 + cos(π e / E)) / 2   (CosineAnnealingLR)
    exponential: base · γ^e                                         (DARTS ImageNet)
    linear:      base · (1 − e / E)                                 (the paper's ImageNet)

  During the first `warmup_epochs` epochs the rate is base · (e + 1) / warmup instead.

  Args:
    kind: one of SCHEDULES.
    base: the rate of epoch 0.
    epochs: E.
    steps_per_epoch: optimizer steps per epoch.
    minimum: the final rate of the cosine schedule.
    gamma: the per-epoch factor of the exponential schedule.
    warmup_epochs: linear warm-up epochs (0 = none).

  Returns:
    step -> learning rate (traceable).

  Raises:
    ValueError: for an unknown kind or a non-positive length.
  """
  if kind not in SCHEDULES:
    raise ValueError(f'schedule must be one of {SCHEDULES}, got {kind!r}')
  if epochs < 1 or steps_per_epoch < 1:
    raise ValueError(f'need at least one epoch of at least one step, got {epochs} epochs '
                     f'of {steps_per_epoch} steps')

  def schedule(step):
    epoch = jnp.minimum(step // steps_per_epoch, epochs).astype(jnp.float32)
    if kind == 'cosine':
      lr = minimum + (base - minimum) * 0.5 * (1 + jnp.cos(jnp.pi * epoch / epochs))
    elif kind == 'exponential':
      lr = base * gamma**epoch
    else:
      lr = base * (1 - epoch / epochs)
    if warmup_epochs:
      lr = jnp.where(epoch < warmup_epochs, base * (epoch + 1) / warmup_epochs, lr)
    return lr

  return schedule


def drop_path_schedule(final_rate: float, *, epochs: int,
                       steps_per_epoch: int) -> Callable[[Any], Any]:
  """DARTS's drop-path ramp, final_rate · e / E with e = step // steps_per_epoch.

  The rate of epoch e (0-based) of E, constant within the epoch, as DARTS's
  `drop_path_prob * epoch / epochs`: 0 in the first epoch, final_rate·(E−1)/E in
  the last. Retraining ramps over its epochs, the search (with the retraining
  regularisers) over the search epochs.

  Args:
    final_rate: the rate the ramp heads for (`train.drop_path`).
    epochs: E.
    steps_per_epoch: optimizer steps per epoch.

  Returns:
    step -> rate; traceable, so a jitted step computes it from its own step
    counter and does not retrace as it rises. For `final_rate == 0` it returns the
    python number 0.0, which the networks read as "no drop-path" at trace time.

  Raises:
    ValueError: for a rate outside [0, 1) or a non-positive length.
  """
  if not 0 <= final_rate < 1:
    raise ValueError(f'drop-path rate must lie in [0, 1), got {final_rate}')
  if epochs < 1 or steps_per_epoch < 1:
    raise ValueError(f'need at least one epoch of at least one step, got {epochs} epochs '
                     f'of {steps_per_epoch} steps')
  if not final_rate:
    return lambda step: 0.0
  return lambda step: final_rate * (step // steps_per_epoch) / epochs
