"""Losses shared by the drivers: classification and next-word prediction.

A leaf module (it imports no other amdarts module), so every driver can use it
without importing another driver. The models' loss functions in the `hypergrad`
convention (`loss_fn(params, alpha, batch, model_state)`) are built on these in the
driver or model that owns the network.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax


def cross_entropy(logits_BxK: jax.Array, labels_B: jax.Array,
                  smoothing: float = 0.0) -> jax.Array:
  """Mean cross-entropy against (1-ε)·one-hot + ε/K (DARTS's CrossEntropyLabelSmooth).

  Args:
    logits_BxK: unnormalised class scores.
    labels_B: integer labels.
    smoothing: label smoothing ε; 0 is the plain cross-entropy.

  Returns:
    The scalar mean over the batch.
  """
  targets = jax.nn.one_hot(labels_B, logits_BxK.shape[-1])
  if smoothing:
    targets = optax.smooth_labels(targets, smoothing)
  return optax.softmax_cross_entropy(logits_BxK, targets).mean()


def accuracy(logits_BxK: jax.Array, labels_B: jax.Array) -> jax.Array:
  """Top-1 accuracy of a batch."""
  return jnp.mean(jnp.argmax(logits_BxK, -1) == labels_B)


def classification_sums(logits_BxK: jax.Array, labels_B: jax.Array,
                        mask_B: jax.Array | None = None) -> dict[str, jax.Array]:
  """Sums over the real (mask = 1) examples of an evaluation batch.

  Sums rather than means, so batches (the last one padded) add up to the exact mean
  over a split.

  Args:
    logits_BxK: class scores.
    labels_B: integer labels.
    mask_B: 1 for real examples, 0 for padding; None = all real.

  Returns:
    {'loss': Σ CE, 'correct': Σ top-1 hits, 'correct5': Σ top-5 hits (top-K for
    K < 5 classes), 'count': Σ mask}.
  """
  mask = jnp.ones(logits_BxK.shape[:1]) if mask_B is None else mask_B
  ce = optax.softmax_cross_entropy_with_integer_labels(logits_BxK, labels_B)
  k = min(5, logits_BxK.shape[-1])
  top5 = jnp.any(jax.lax.top_k(logits_BxK, k)[1] == labels_B[:, None], axis=-1)
  return {
      'loss': jnp.sum(ce * mask),
      'correct': jnp.sum((jnp.argmax(logits_BxK, -1) == labels_B) * mask),
      'correct5': jnp.sum(top5 * mask),
      'count': jnp.sum(mask),
  }


def valid_mask(T: int, length) -> jax.Array:
  """bool[T]: the first `length` steps of a padded chunk."""
  return jnp.arange(T) < length


def nll(logits_TxBxV: jax.Array, targets_TxB: jax.Array, length=None) -> jax.Array:
  """Mean negative log-likelihood over the first `length` steps of every column.

  Args:
    logits_TxBxV: next-word scores, time-major.
    targets_TxB: the next words.
    length: valid leading steps (traced is fine); None = all T.

  Returns:
    The scalar mean over the valid predictions.
  """
  logp = jax.nn.log_softmax(logits_TxBxV, axis=-1)
  ll_TxB = jnp.take_along_axis(logp, targets_TxB[..., None], axis=-1)[..., 0]
  T, B = targets_TxB.shape
  if length is None:
    return -ll_TxB.mean()
  w_T = valid_mask(T, length).astype(ll_TxB.dtype)
  return -(ll_TxB * w_T[:, None]).sum() / (jnp.maximum(w_T.sum(), 1.0) * B)


def activation_penalties(raw_TxBxH: jax.Array, dropped_TxBxH: jax.Array, length, *,
                         ar: float, tar: float) -> jax.Array:
  """The AWD-LSTM penalties AR·mean(dropped²) + TAR·mean((h_t − h_{t−1})²).

  As the DARTS reference, over valid steps only; TAR (slowness) uses the raw cell
  outputs, and a step pair counts when both steps are valid.

  Args:
    raw_TxBxH: cell outputs before output dropout.
    dropped_TxBxH: cell outputs after output dropout.
    length: valid leading steps; None = all T.
    ar: activation-regularisation weight (the reference's `alpha`).
    tar: temporal-activation-regularisation weight (the reference's `beta`).

  Returns:
    The scalar penalty (0 when both weights are 0).
  """
  T, B, H = raw_TxBxH.shape
  dtype = raw_TxBxH.dtype
  w_T = valid_mask(T, T if length is None else length).astype(dtype)
  penalty = jnp.zeros((), dtype)
  if ar:
    penalty += ar * (dropped_TxBxH ** 2 * w_T[:, None, None]).sum() / (w_T.sum() * B * H)
  if tar and T > 1:
    w_pair = w_T[1:]  # Valid steps are a prefix, so t valid implies t − 1 valid.
    diff = (raw_TxBxH[1:] - raw_TxBxH[:-1]) ** 2
    penalty += tar * (diff * w_pair[:, None, None]).sum() / (
        jnp.maximum(w_pair.sum(), 1.0) * B * H)
  return penalty
