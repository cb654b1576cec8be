"""amdarts.optim against torch's formulas: SGD order, Adam with L2, per-epoch schedules."""

import math

import jax.numpy as jnp
import numpy as np
import optax
import pytest

from amdarts import optim


def _schedule(**kw):
  return optim.epoch_schedule(**{**dict(kind='cosine', base=0.4, minimum=0.0, gamma=0.5,
                                        warmup_epochs=0, epochs=4, steps_per_epoch=10),
                                 **kw})


def test_epoch_lr_schedule_is_per_epoch_cosine():
  lr = optim.epoch_schedule('cosine', base=0.025, minimum=0.001, epochs=4, steps_per_epoch=10)
  assert float(lr(0)) == pytest.approx(0.025)
  assert float(lr(9)) == pytest.approx(0.025)  # Constant within an epoch, as DARTS.
  assert float(lr(20)) == pytest.approx(0.001 + 0.5 * 0.024 * (1 + np.cos(np.pi / 2)))
  assert float(lr(40)) == pytest.approx(0.001)


def test_learning_rate_schedules():
  lr = lambda h, steps: [float(h(s)) for s in steps]
  steps = [0, 9, 10, 25, 39]  # Epochs 0, 0, 1, 2, 3.
  cosine = [0.4, 0.4] + [0.2 * (1 + math.cos(math.pi * e / 4)) for e in (1, 2, 3)]
  np.testing.assert_allclose(lr(_schedule(), steps), cosine, rtol=1e-6)
  np.testing.assert_allclose(lr(_schedule(minimum=0.1), [25]), [0.1 + 0.15], rtol=1e-6)
  np.testing.assert_allclose(lr(_schedule(kind='exponential'), steps),
                             [0.4, 0.4, 0.2, 0.1, 0.05], rtol=1e-6)
  np.testing.assert_allclose(lr(_schedule(kind='linear'), steps),
                             [0.4, 0.4, 0.3, 0.2, 0.1], rtol=1e-6)
  np.testing.assert_allclose(lr(_schedule(kind='linear', warmup_epochs=2), steps),
                             [0.2, 0.2, 0.4, 0.2, 0.1], rtol=1e-6)


def test_unknown_schedule_is_an_error():
  with pytest.raises(ValueError, match='schedule must be one of'):
    _schedule(kind='step')
  with pytest.raises(ValueError, match='at least one epoch'):
    _schedule(steps_per_epoch=0)


def test_optimizer_is_torch_sgd_after_clipping():
  tx = optim.sgd(momentum=0.9, weight_decay=0.01, grad_clip=1.0)
  lr = 0.1
  w0 = {'w': jnp.array([1.0, -2.0])}
  g1, g2 = {'w': jnp.array([3.0, 4.0])}, {'w': jnp.array([0.3, 0.4])}
  state = tx.init(w0)
  d1, state = tx.update(g1, state, w0)
  w1 = optim.apply_lr(w0, d1, lr)
  d2, state = tx.update(g2, state, w1)
  w2 = optim.apply_lr(w1, d2, lr)
  # torch: clip_grad_norm_(1) then d = g + wd·w; buf = m·buf + d; w -= lr·buf.
  d1 = np.array([0.6, 0.8]) + 0.01 * np.array([1.0, -2.0])
  want1 = np.array([1.0, -2.0]) - 0.1 * d1
  d2 = np.array([0.3, 0.4]) + 0.01 * want1  # |g2| = 0.5 < 1: not clipped.
  want2 = want1 - 0.1 * (0.9 * d1 + d2)
  np.testing.assert_allclose(w1['w'], want1, rtol=1e-6)
  np.testing.assert_allclose(w2['w'], want2, rtol=1e-6)
  # The buffer the unrolled second-order step reads is torch's `momentum_buffer`.
  np.testing.assert_allclose(optim.momentum_buffer(state)['w'], 0.9 * d1 + d2, rtol=1e-6)


def test_sgd_without_momentum_or_clip_is_plain_l2_sgd():
  tx = optim.sgd(weight_decay=0.5)
  w = {'w': jnp.array([2.0])}
  d, state = tx.update({'w': jnp.array([10.0])}, tx.init(w), w)
  np.testing.assert_allclose(d['w'], [10.0 + 0.5 * 2.0])  # Not clipped, no buffer.
  assert optim.momentum_buffer(state) is None


def test_adam_adds_l2_before_the_moments():
  tx = optim.adam(0.1, b1=0.5, b2=0.999, weight_decay=0.2)
  a = jnp.array([1.0, -3.0])
  g = jnp.array([0.5, 0.25])
  u, _ = tx.update(g, tx.init(a), a)
  ref_tx = optax.adam(0.1, b1=0.5, b2=0.999)
  want, _ = ref_tx.update(g + 0.2 * a, ref_tx.init(a))
  np.testing.assert_allclose(u, want, rtol=1e-7)
  # The first Adam step moves each coordinate by lr·sign(g + λα) (bias-corrected m/√v).
  np.testing.assert_allclose(u, -0.1 * np.sign(np.asarray(g + 0.2 * a)), rtol=1e-4)
