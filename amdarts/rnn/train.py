"""Evaluation of a recurrent genotype (Section 3.3): `run(config, workdir)`.

Trains the discrete cell from scratch as the reference's rnn/train.py: SGD with
lr · seq_len/bptt on jittered BPTT lengths, global-norm clip, L2 weight decay, the
activation penalties, and the non-monotone switch to averaged SGD (ASGD with
t0 = 0, λ = 0: the same SGD steps, evaluated at the running average of the iterates
since the switch) once the validation loss exceeds the best of all but the last
`nonmono` epochs. The best validation snapshot (of the averaged weights after the
switch) is scored on the test split; `<workdir>/result.json` gets both perplexities.

optax has no ASGD; with λ = 0 the reference's torch ASGD is SGD plus a uniform
average of the iterates, which `train_step` keeps on device (`avg_params`).
"""

from __future__ import annotations

import functools
import json
import math
import os
import time
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from amdarts import checkpoint as checkpoint_lib
from amdarts import metrics as metrics_lib
from amdarts.rnn import data as data_lib
from amdarts.rnn import evaluation
from amdarts.rnn import genotype as genotype_lib
from amdarts.rnn import hparams
from amdarts.rnn import loop
from amdarts.rnn import model as model_lib
from amdarts.rnn import search as search_lib

_NO_ALPHA = jnp.zeros((0, 0), jnp.float32)  # A discrete cell has no α.

# What to change when a training metric is not finite.
_FINITE_HINT = 'lower train.lr or raise train.clip'


class TrainState(NamedTuple):
  """Everything one training step reads and writes, plus the best snapshot.

  Attributes:
    step: i32[] steps done.
    params: ω.
    opt_state: state of the gradient transformation (clip, weight decay).
    averaging: bool[] whether the ASGD switch has fired.
    avg_params: running mean of ω over the steps since the switch.
    avg_count: i32[] steps averaged.
    best_params: the weights of the best validation epoch so far.
    hidden: f[B, H] hidden state of the training stream.
    rng: the run's base key; each step folds its step number in.
  """

  step: jax.Array
  params: Any
  opt_state: Any
  averaging: jax.Array
  avg_params: Any
  avg_count: jax.Array
  best_params: Any
  hidden: jax.Array
  rng: jax.Array


def init_state(hp: hparams.TrainHParams, model: model_lib.RNNModel, seed: int) -> TrainState:
  k_params, k_run = jax.random.split(jax.random.PRNGKey(seed))
  params = model.init(k_params)
  copy = lambda tree: jax.tree.map(jnp.copy, tree)  # Distinct buffers: the step donates all.
  return TrainState(
      step=jnp.zeros((), jnp.int32), params=params,
      opt_state=search_lib.weight_transform(hp.clip, hp.reg.wd).init(params),
      averaging=jnp.zeros((), bool), avg_params=copy(params),
      avg_count=jnp.zeros((), jnp.int32), best_params=copy(params),
      hidden=model.init_hidden(hp.batch_size), rng=k_run)


def make_train_step(hp: hparams.TrainHParams, model: model_lib.RNNModel):
  """`train_step(state, chunk) -> (state, metrics)`, not yet jitted."""
  loss_fn = model_lib.make_loss_fn(model, train=True, ar=hp.reg.ar, tar=hp.reg.tar)
  tx = search_lib.weight_transform(hp.clip, hp.reg.wd)

  def train_step(state: TrainState, chunk: data_lib.Chunk):
    rng = jax.random.fold_in(state.rng, state.step)
    lr = hp.lr * chunk.length.astype(jnp.float32) / hp.bptt
    batch = {'tokens': chunk.tokens, 'targets': chunk.targets, 'length': chunk.length,
             'hidden': state.hidden, 'rng': rng}
    (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params, _NO_ALPHA,
                                                                   batch)
    direction, opt_state = tx.update(grads, state.opt_state, state.params)
    params = jax.tree.map(lambda p, d: p - lr.astype(p.dtype) * d, state.params, direction)
    # ASGD's iterate average: ā_n = ā_{n−1} + (ω_n − ā_{n−1}) / n from the switch on.
    count = state.avg_count + state.averaging.astype(jnp.int32)
    inv = 1.0 / jnp.maximum(count, 1).astype(jnp.float32)
    avg = jax.tree.map(
        lambda a, p: jnp.where(state.averaging, a + (p - a) * inv.astype(p.dtype), p),
        state.avg_params, params)
    new_state = state._replace(step=state.step + 1, params=params, opt_state=opt_state,
                               avg_params=avg, avg_count=count, hidden=aux['hidden'])
    return new_state, {'train_nll': aux['nll'], 'train_loss': loss, 'lr': lr,
                       'grad_norm': optax.tree.norm(grads)}

  return train_step


@functools.lru_cache(maxsize=8)
def compiled_train_step(hp: hparams.TrainHParams, model: model_lib.RNNModel):
  """The jitted step, built once per (hyper-parameters, model); it compiles once per
  padded chunk length."""
  return jax.jit(make_train_step(hp, model), donate_argnums=(0,))


def should_switch(history: list[float], val_nll: float, nonmono: int) -> bool:
  """The reference's non-monotone trigger for averaging.

  Fires when there are more than `nonmono` earlier epochs and the validation loss is
  worse than the best of all of them except the last `nonmono`.
  """
  return len(history) > nonmono and val_nll > min(history[:-nonmono])


def padded_length(seq_len: int, bucket: int) -> int:
  """Chunks pad up to a multiple of `bucket`, bounding the number of compiled shapes."""
  return int(math.ceil(seq_len / bucket)) * bucket


def run(config, workdir: str, *, stop_after: int | None = None) -> dict:
  """Trains the genotype `config.train.genotype`; resumes from `<workdir>/checkpoints`.

  Args:
    config: a configs/ptb.py config.
    workdir: output directory (checkpoints, metrics.jsonl, result.json).
    stop_after: stop after the first checkpointed step ≥ this (mid-epoch, or at an
      epoch's end after its evaluation); None runs all epochs and the test.

  Returns:
    The result dict also written to `<workdir>/result.json` (after a full run):
    `val_ppl`, `test_ppl`, `best_epoch`, `asgd_epoch` (None if never switched),
    `epochs`, `genotype`, `num_params`.
  """
  hparams.validate(config, search=False)
  os.makedirs(workdir, exist_ok=True)
  t = config.train
  genotype = genotype_lib.load(t.genotype)
  corpus = data_lib.load_for_config(config.data, workdir)
  model = model_lib.RNNModel(hparams.eval_spec(config, corpus.vocab_size, genotype))
  train_data = data_lib.batchify(corpus.train, t.batch_size)
  val_data = data_lib.batchify(corpus.valid, t.eval_batch_size)
  test_data = data_lib.batchify(corpus.test, t.test_batch_size)

  step_fn = compiled_train_step(hparams.TrainHParams.from_config(config), model)
  eval_fn = evaluation.make_eval_fn(model)
  state = init_state(hparams.TrainHParams.from_config(config), model, config.seed)
  ckpt = checkpoint_lib.Checkpointer(workdir, max_to_keep=config.keep_checkpoints)
  state, meta, writer = loop.resume(
      ckpt, workdir, state, {'epoch': 1, 'batch': 0, 'best_val': None, 'best_epoch': None,
                             'history': [], 'asgd_epoch': None})

  def save():
    ckpt.save(step, state, meta)

  step = int(state.step)
  steps_per_epoch = len(data_lib.eval_schedule(train_data.shape[0], t.bptt))
  progress = metrics_lib.Progress(t.epochs * steps_per_epoch, start=step)
  t0 = time.time()
  try:
    for epoch in range(meta['epoch'], t.epochs + 1):
      schedule = data_lib.train_schedule(
          train_data.shape[0], t.bptt, data_lib.epoch_rng(config.seed, epoch),
          half_prob=t.half_bptt_prob, std=t.seq_len_std, max_delta=t.max_seq_len_delta)
      if meta['batch'] == 0:
        state = state._replace(hidden=jnp.zeros_like(state.hidden))
      for b in range(meta['batch'], len(schedule)):
        i, seq_len = schedule[b]
        chunk = data_lib.get_chunk(train_data, i, seq_len,
                                   padded_length(seq_len, t.seq_len_bucket))
        state, m = step_fn(state, chunk)
        step += 1  # Counted here: reading state.step would wait for the device.
        meta['batch'] = b + 1
        if step % config.log_every_steps == 0:
          loop.log_train(writer, progress, step, epoch, jax.device_get(m), hint=_FINITE_HINT)
        if b == len(schedule) - 1:
          break  # The epoch-end checkpoint below covers this step (one save per step).
        if loop.should_save(step, config.checkpoint_every_steps, stop_after):
          save()
        if loop.should_stop(step, stop_after):
          return {'step': step}

      averaging = bool(state.averaging)
      eval_params = state.avg_params if averaging else state.params
      val_nll = evaluation.evaluate(eval_fn, model, eval_params, _NO_ALPHA, None, val_data,
                                    t.bptt)
      if not math.isfinite(val_nll):
        raise FloatingPointError(f'epoch {epoch}: non-finite validation loss')
      if meta['best_val'] is None or val_nll < meta['best_val']:
        # A copy: the step donates its input buffers, which must not alias.
        state = state._replace(best_params=jax.tree.map(jnp.copy, eval_params))
        meta.update(best_val=val_nll, best_epoch=epoch)
      history = meta['history']
      if not averaging:
        if should_switch(history, val_nll, t.nonmono):
          state = state._replace(averaging=jnp.ones((), bool), avg_count=jnp.zeros((), jnp.int32))
          meta['asgd_epoch'] = epoch
        history.append(val_nll)
      writer.write(step, {
          'epoch': epoch, 'val_nll': val_nll, 'val_ppl': evaluation.perplexity(val_nll),
          'averaged': averaging, 'best_val_ppl': evaluation.perplexity(meta['best_val']),
          'time_s': time.time() - t0}, kind='epoch')
      meta.update(epoch=epoch + 1, batch=0, history=history)
      save()
      if loop.should_stop(step, stop_after):
        return {'step': step}

    test_nll = evaluation.evaluate(eval_fn, model, state.best_params, _NO_ALPHA, None,
                                   test_data, t.bptt)
    result = {
        'val_ppl': evaluation.perplexity(meta['best_val']),
        'test_ppl': evaluation.perplexity(test_nll),
        'best_epoch': meta['best_epoch'], 'asgd_epoch': meta['asgd_epoch'],
        'epochs': t.epochs, 'genotype': genotype_lib.to_darts_string(genotype),
        'num_params': int(sum(np.size(x) for x in jax.tree.leaves(state.params))),
    }
    with open(os.path.join(workdir, 'result.json'), 'w') as f:
      json.dump(result, f, indent=2)
    writer.write(step, {k: v for k, v in result.items() if k != 'genotype'},
                 kind='test')
    return result
  finally:
    progress.close()
    writer.close()
    ckpt.close()
