"""Perplexity of a language model over a whole split, as the reference's `evaluate`."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from amdarts import losses
from amdarts.rnn import data as data_lib
from amdarts.rnn import model as model_lib


def make_eval_fn(model: model_lib.RNNModel):
  """Jitted `(params, alpha, bn, hidden, chunk) -> (nll_sum, count, hidden)` of one chunk.

  Evaluation mode: no dropout, running batch-norm statistics. Chunks are padded to
  one length, so it compiles once per batch size. The drivers build it through
  `loop.cached`, so runs of one model share it.
  """

  @jax.jit
  def eval_chunk(params, alpha, bn, hidden, chunk: data_lib.Chunk):
    out = model.forward(params, alpha, chunk.tokens, hidden, train=False, bn=bn,
                        length=chunk.length)
    count = chunk.length * chunk.tokens.shape[1]
    # The masked mean times the token count, accumulated in float32 at least.
    nll_sum = losses.nll(out.logits, chunk.targets, chunk.length) * count
    return nll_sum.astype(jnp.promote_types(nll_sum.dtype, jnp.float32)), count, out.hidden

  return eval_chunk


def evaluate(eval_fn, model: model_lib.RNNModel, params, alpha, bn, source_NxB: np.ndarray,
             bptt: int) -> float:
  """Mean next-word NLL over every prediction of `source_NxB`, hidden state carried.

  The reference divides the summed chunk losses by the number of rows (one more
  than the predictions); this divides by the predictions, the exact mean.

  Returns:
    The mean NLL in nats; its exp is the perplexity.
  """
  hidden = model.init_hidden(source_NxB.shape[1], params['embedding'].dtype)
  total, count = 0.0, 0
  for i, seq_len in data_lib.eval_schedule(source_NxB.shape[0], bptt):
    s, n, hidden = eval_fn(params, alpha, bn, hidden,
                           data_lib.get_chunk(source_NxB, i, seq_len, bptt))
    total += float(s)
    count += int(n)
  return total / count


def perplexity(nll: float) -> float:
  return math.exp(min(nll, 700.0))  # Cap: an untrained model's NLL must not overflow.
