"""Recurrent-cell search on a word-level corpus (Section 3.3): `run(config, workdir)`.

The DARTS alternation of the reference's rnn/train_search.py, one step per BPTT
chunk:

  1. α step: the configured hypergradient estimator (`amdarts.hypergrad`; the
     amended gradient g1 + g2′ of eq. 5 by default) of the NLL on a chunk of the
     α stream (the corpus's validation split, as the reference) with the current
     training chunk for the second-order term; Adam with L2 on α.
  2. ω step on the training chunk with the new α: NLL + activation penalties,
     global-norm clip, L2 weight decay, plain SGD with lr · seq_len/bptt.

Both streams carry their own hidden state from chunk to chunk within an epoch (the
α stream's comes back from the estimator's validation pass); the search cell's
batch-norm statistics move with the ω steps. After every epoch: validation
perplexity (evaluation mode), the derived genotype in `<workdir>/genotype.{json,txt}`
and one `kind='epoch'` record in `<workdir>/metrics.jsonl`. Checkpoints hold the whole
step state (ω, α, optimizer states, hidden states, statistics, step, rng) with the
data position in their metadata; a rerun with the same workdir resumes from them.
"""

from __future__ import annotations

import functools
import inspect
import os
import time
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from amdarts import checkpoint as checkpoint_lib
from amdarts import hypergrad
from amdarts import metrics as metrics_lib
from amdarts.rnn import data as data_lib
from amdarts.rnn import evaluation
from amdarts.rnn import genotype as genotype_lib
from amdarts.rnn import hparams
from amdarts.rnn import loop
from amdarts.rnn import model as model_lib

# What to change when a search metric is not finite.
_FINITE_HINT = 'lower search.lr or search.a_lr, or raise search.clip'


class SearchState(NamedTuple):
  """Everything one search step reads and writes.

  Attributes:
    step: i32[] steps done.
    params: ω.
    alpha: f[E, O] architecture logits.
    w_opt_state: state of ω's gradient transformation (clip, weight decay).
    a_opt_state: α's Adam state.
    bn: the search cell's running batch-norm statistics.
    hidden_train: f[B, H] hidden state of the training stream.
    hidden_val: f[B, H] hidden state of the α (validation) stream.
    rng: the run's base key; each step folds its step number in.
  """

  step: jax.Array
  params: Any
  alpha: jax.Array
  w_opt_state: Any
  a_opt_state: Any
  bn: model_lib.BNStats
  hidden_train: jax.Array
  hidden_val: jax.Array
  rng: jax.Array


def weight_transform(clip: float, wd: float) -> optax.GradientTransformation:
  """ω's gradient → SGD direction: clip the global norm, then add wd·ω (torch order)."""
  return optax.chain(optax.clip_by_global_norm(clip), optax.add_decayed_weights(wd))


def alpha_optimizer(hp: hparams.SearchHParams) -> optax.GradientTransformation:
  """torch Adam with weight_decay: L2 added to the gradient before the moments."""
  return optax.chain(optax.add_decayed_weights(hp.a_wd),
                     optax.scale_by_adam(b1=hp.a_b1, b2=hp.a_b2, eps=1e-8),
                     optax.scale(-hp.a_lr))


def make_estimator(hp: hparams.SearchHParams):
  """The estimator with its hyper-parameters bound; whether it takes `xi` per call."""
  est = hypergrad.make(hp.estimator, eta=hp.eta, eps_scale=hp.eps_scale,
                       weight_decay=hp.reg.wd, solver=hp.implicit_solver,
                       maxiter=hp.implicit_maxiter, ridge=hp.implicit_ridge)
  return est, 'xi' in inspect.signature(est).parameters


def init_state(hp: hparams.SearchHParams, model: model_lib.RNNModel, seed: int) -> SearchState:
  k_params, k_alpha, k_run = jax.random.split(jax.random.PRNGKey(seed), 3)
  params = model.init(k_params)
  alpha = model.init_alpha(k_alpha, hp.alpha_init_scale)
  return SearchState(
      step=jnp.zeros((), jnp.int32), params=params, alpha=alpha,
      w_opt_state=weight_transform(hp.clip, hp.reg.wd).init(params),
      a_opt_state=alpha_optimizer(hp).init(alpha), bn=model.init_bn(),
      hidden_train=model.init_hidden(hp.batch_size),
      hidden_val=model.init_hidden(hp.batch_size), rng=k_run)


def make_search_step(hp: hparams.SearchHParams, model: model_lib.RNNModel):
  """`search_step(state, train_chunk, val_chunk) -> (state, metrics)`, not yet jitted."""
  nll_fn = model_lib.make_loss_fn(model, train=True)  # The reference's `_loss`: plain NLL.
  w_loss_fn = model_lib.make_loss_fn(model, train=True, ar=hp.reg.ar, tar=hp.reg.tar)
  estimator, takes_xi = make_estimator(hp)
  w_tx = weight_transform(hp.clip, hp.reg.wd)
  a_tx = alpha_optimizer(hp)

  def search_step(state: SearchState, train_chunk: data_lib.Chunk, val_chunk: data_lib.Chunk):
    k_train, k_val, k_w = jax.random.split(jax.random.fold_in(state.rng, state.step), 3)
    # A short chunk carries less gradient signal: the reference scales lr with it.
    lr = hp.lr * train_chunk.length.astype(jnp.float32) / hp.bptt
    train_batch = {'tokens': train_chunk.tokens, 'targets': train_chunk.targets,
                   'length': train_chunk.length, 'hidden': state.hidden_train,
                   'bn': state.bn, 'rng': k_train}
    val_batch = {'tokens': val_chunk.tokens, 'targets': val_chunk.targets,
                 'length': val_chunk.length, 'hidden': state.hidden_val,
                 'bn': state.bn, 'rng': k_val}
    # DARTS's unrolled step uses the weight optimizer's current (scaled) lr as ξ.
    g_alpha, haux = estimator(nll_fn, state.params, state.alpha, train_batch, val_batch,
                              **({'xi': lr} if takes_xi else {}))
    a_updates, a_opt_state = a_tx.update(g_alpha, state.a_opt_state, state.alpha)
    alpha = optax.apply_updates(state.alpha, a_updates)

    (loss, aux), g_w = jax.value_and_grad(w_loss_fn, has_aux=True)(
        state.params, alpha, dict(train_batch, rng=k_w))
    w_dir, w_opt_state = w_tx.update(g_w, state.w_opt_state, state.params)
    params = jax.tree.map(lambda p, d: p - lr.astype(p.dtype) * d, state.params, w_dir)

    new_state = SearchState(
        step=state.step + 1, params=params, alpha=alpha, w_opt_state=w_opt_state,
        a_opt_state=a_opt_state, bn=aux['bn'], hidden_train=aux['hidden'],
        hidden_val=haux['val_aux']['hidden'], rng=state.rng)
    metrics = {
        'train_nll': aux['nll'], 'train_loss': loss, 'val_nll': haux['val_loss'],
        'w_grad_norm': optax.tree.norm(g_w), 'alpha_grad_norm': optax.tree.norm(g_alpha),
        'g1_norm': optax.tree.norm(haux['g1']), 'g2_norm': optax.tree.norm(haux['g2']),
        'lr': lr,
    }
    return new_state, metrics

  return search_step


@functools.lru_cache(maxsize=8)
def compiled_search_step(hp: hparams.SearchHParams, model: model_lib.RNNModel):
  """The jitted step, built once per (hyper-parameters, model): a resumed or repeated
  run in the same process reuses its compilation."""
  return jax.jit(make_search_step(hp, model), donate_argnums=(0,))


def _reset_streams(state: SearchState, model: model_lib.RNNModel, batch: int) -> SearchState:
  """Fresh zero hidden states, as the reference at the start of every epoch."""
  # Two distinct buffers: the jitted step donates both.
  return state._replace(hidden_train=model.init_hidden(batch, state.hidden_train.dtype),
                        hidden_val=model.init_hidden(batch, state.hidden_val.dtype))


def run(config, workdir: str, *, stop_after: int | None = None) -> dict:
  """Searches a recurrent cell; resumes from `<workdir>/checkpoints` when present.

  Args:
    config: a configs/ptb.py config.
    workdir: output directory (checkpoints, metrics.jsonl, genotype.json/.txt).
    stop_after: stop after the first checkpointed step ≥ this (mid-epoch, or at an
      epoch's end after its evaluation), as an interrupted run would; None runs
      all epochs.

  Returns:
    Summary: `step`, `epoch` (last finished), `val_ppl` (of that epoch; None if no
    epoch finished in this call) and `genotype` (the DARTS string).
  """
  hparams.validate(config, search=True)
  os.makedirs(workdir, exist_ok=True)
  s = config.search
  hp = hparams.SearchHParams.from_config(config)
  corpus = data_lib.load_for_config(config.data, workdir)
  model = model_lib.RNNModel(hparams.search_spec(config, corpus.vocab_size))
  train_data = data_lib.batchify(corpus.train, s.batch_size)
  search_data = data_lib.batchify(corpus.valid, s.batch_size)  # The α stream.
  val_data = data_lib.batchify(corpus.valid, s.eval_batch_size)

  step_fn = compiled_search_step(hp, model)
  eval_fn = evaluation.make_eval_fn(model)
  state = init_state(hp, model, config.seed)
  ckpt = checkpoint_lib.Checkpointer(workdir, max_to_keep=config.keep_checkpoints)
  state, meta, writer = loop.resume(
      ckpt, workdir, state, {'epoch': 1, 'batch': 0, 'epoch_nll': 0.0, 'epoch_steps': 0})

  def save():
    ckpt.save(int(state.step), state, dict(meta, vocab_size=corpus.vocab_size))

  summary = {'step': int(state.step), 'epoch': meta['epoch'] - 1, 'val_ppl': None,
             'genotype': genotype_lib.to_darts_string(
                 genotype_lib.derive(state.alpha, tuple(config.model.ops)))}
  steps_per_epoch = len(data_lib.search_schedule(
      train_data.shape[0], s.bptt, data_lib.epoch_rng(config.seed, 1), s.half_bptt_prob))
  progress = metrics_lib.Progress(s.epochs * steps_per_epoch, start=int(state.step))
  t0 = time.time()
  try:
    for epoch in range(meta['epoch'], s.epochs + 1):
      schedule = data_lib.search_schedule(train_data.shape[0], s.bptt,
                                          data_lib.epoch_rng(config.seed, epoch),
                                          s.half_bptt_prob)
      if meta['batch'] == 0:
        state = _reset_streams(state, model, s.batch_size)
      for b in range(meta['batch'], len(schedule)):
        i, seq_len = schedule[b]
        train_chunk = data_lib.get_chunk(train_data, i, seq_len, s.bptt)
        # The α stream advances with the training rows and wraps, as the reference.
        val_chunk = data_lib.get_chunk(search_data, i % (search_data.shape[0] - 1), s.bptt,
                                       s.bptt)
        state, m = step_fn(state, train_chunk, val_chunk)
        step = int(state.step)
        m = jax.device_get(m)
        meta.update(batch=b + 1, epoch_nll=meta['epoch_nll'] + float(m['train_nll']),
                    epoch_steps=meta['epoch_steps'] + 1)
        if step % config.log_every_steps == 0:
          loop.log_train(writer, progress, step, epoch, m, hint=_FINITE_HINT)
        if b == len(schedule) - 1:
          break  # The epoch-end checkpoint below covers this step (one save per step).
        if loop.should_save(step, config.checkpoint_every_steps, stop_after):
          save()
        if loop.should_stop(step, stop_after):
          summary['step'] = step
          return summary

      metrics_lib.check_finite(int(state.step), {'alpha': state.alpha}, hint=_FINITE_HINT)
      val_nll = evaluation.evaluate(eval_fn, model, state.params, state.alpha, state.bn,
                                    val_data, s.bptt)
      genotype = genotype_lib.derive(state.alpha, tuple(config.model.ops))
      genotype_lib.save(genotype, workdir)
      record = {
          'epoch': epoch, 'val_nll': val_nll, 'val_ppl': evaluation.perplexity(val_nll),
          'train_ppl': evaluation.perplexity(meta['epoch_nll'] / max(meta['epoch_steps'], 1)),
          'genotype': genotype_lib.to_darts_string(genotype),
          'alpha_softmax': np.asarray(jax.nn.softmax(state.alpha, -1),
                                      np.float64).round(4).tolist(),
          'time_s': time.time() - t0,
      }
      writer.write(int(state.step), record, kind='epoch')
      meta = {'epoch': epoch + 1, 'batch': 0, 'epoch_nll': 0.0, 'epoch_steps': 0}
      save()
      summary.update(step=int(state.step), epoch=epoch, val_ppl=record['val_ppl'],
                     genotype=record['genotype'])
      if loop.should_stop(int(state.step), stop_after):
        return summary
    genotype_lib.save(genotype_lib.derive(state.alpha, tuple(config.model.ops)), workdir)
    return summary
  finally:
    progress.close()
    writer.close()
    ckpt.close()
