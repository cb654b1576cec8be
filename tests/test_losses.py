"""amdarts.losses: DARTS's label smoothing, evaluation sums, masked NLL and penalties."""

import jax
import jax.numpy as jnp
import numpy as np

from amdarts import losses


def test_label_smoothing_is_darts_cross_entropy_label_smooth():
  logits = jnp.array([[2.0, 0.5, -1.0], [0.1, 0.2, 0.3]])
  labels = jnp.array([0, 2])
  logp = np.asarray(jax.nn.log_softmax(logits))
  targets = 0.9 * np.eye(3)[[0, 2]] + 0.1 / 3
  want = (-targets * logp).sum(1).mean()
  np.testing.assert_allclose(losses.cross_entropy(logits, labels, 0.1), want, rtol=1e-6)
  np.testing.assert_allclose(losses.cross_entropy(logits, labels),
                             -logp[[0, 1], [0, 2]].mean(), rtol=1e-6)


def test_classification_sums_skip_padding():
  logits = jnp.array([[3.0, 1.0, 0.0], [0.0, 2.0, 1.0], [5.0, 0.0, 0.0]])
  labels = jnp.array([0, 2, 1])
  sums = losses.classification_sums(logits, labels, jnp.array([1.0, 1.0, 0.0]))
  logp = np.asarray(jax.nn.log_softmax(logits))
  np.testing.assert_allclose(sums['loss'], -(logp[0, 0] + logp[1, 2]), rtol=1e-6)
  # Top-1: only the first is right; top-K (K = 3 classes) counts every real one.
  assert (float(sums['correct']), float(sums['correct5']), float(sums['count'])) == (
      1.0, 2.0, 2.0)


def test_nll_averages_valid_steps_only():
  logits = jax.random.normal(jax.random.PRNGKey(0), (4, 2, 5))
  targets = jnp.array([[1, 2], [3, 4], [0, 0], [0, 0]])
  logp = np.asarray(jax.nn.log_softmax(logits))
  want = -np.mean([logp[t, b, targets[t, b]] for t in range(2) for b in range(2)])
  np.testing.assert_allclose(losses.nll(logits, targets, 2), want, rtol=1e-6)
  np.testing.assert_allclose(losses.nll(logits[:2], targets[:2]), want, rtol=1e-6)


def test_activation_penalties_match_their_formulas():
  rng = np.random.RandomState(0)
  raw, dropped = rng.randn(5, 2, 3), rng.randn(5, 2, 3)
  got = losses.activation_penalties(jnp.asarray(raw), jnp.asarray(dropped), 4, ar=2.0,
                                    tar=3.0)
  want = 2.0 * np.mean(dropped[:4] ** 2) + 3.0 * np.mean((raw[1:4] - raw[:3]) ** 2)
  np.testing.assert_allclose(got, want, rtol=1e-5)
  assert float(losses.activation_penalties(jnp.asarray(raw), jnp.asarray(dropped), None,
                                           ar=0.0, tar=0.0)) == 0.0
