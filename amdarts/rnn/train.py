"""Evaluation of a recurrent genotype (Section 3.3): `run(config, workdir)`.

Trains the discrete cell from scratch as the reference's rnn/train.py: SGD with
lr · seq_len/bptt on jittered BPTT lengths, global-norm clip, L2 weight decay, the
activation penalties, and the non-monotone switch to averaged SGD (ASGD with
t0 = 0, λ = 0: the same SGD steps, evaluated at the running average of the iterates
since the switch) once the validation loss exceeds the best of all but the last
`nonmono` epochs. The best validation snapshot (of the averaged weights after the
switch) is scored on the test split; `<workdir>/result.json` gets both perplexities.
The step is data parallel (`amdarts.parallel`) and `amdarts.loop` runs it.

optax has no ASGD; with λ = 0 the reference's torch ASGD is SGD plus a uniform
average of the iterates, which `train_step` keeps on device (`avg_params`).
"""

from __future__ import annotations

import json
import math
import os
import time
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax

from amdarts import errors
from amdarts import loop
from amdarts import optim
from amdarts import parallel
from amdarts.rnn import data as data_lib
from amdarts.rnn import evaluation
from amdarts.rnn import genotype as genotype_lib
from amdarts.rnn import hparams
from amdarts.rnn import model as model_lib

_NO_ALPHA = jnp.zeros((0, 0), jnp.float32)  # A discrete cell has no α.

# What to change when a training metric is not finite.
_FINITE_HINT = 'lower train.w_lr or raise train.grad_clip'


@flax.struct.dataclass
class TrainState:
  """Everything one training step reads and writes, plus the best snapshot.

  Attributes:
    step: i32[] steps done.
    params: ω.
    model_state: an `LMState` with the training stream's hidden state.
    opt_state: state of the gradient transformation (clip, weight decay).
    averaging: bool[] whether the ASGD switch has fired.
    avg_params: running mean of ω over the steps since the switch.
    avg_count: i32[] steps averaged.
    best_params: the weights of the best validation epoch so far.
    rng: the run's base key; each step folds its step number in.
  """

  step: jax.Array
  params: Any
  model_state: model_lib.LMState
  opt_state: Any
  averaging: jax.Array
  avg_params: Any
  avg_count: jax.Array
  best_params: Any
  rng: jax.Array


def _weight_tx(hp: hparams.TrainHParams) -> optax.GradientTransformation:
  return optim.sgd(weight_decay=hp.reg.wd, grad_clip=hp.grad_clip)


def init_state(hp: hparams.TrainHParams, model: model_lib.RNNModel, seed: int) -> TrainState:
  k_params, k_run = jax.random.split(jax.random.PRNGKey(seed))
  params = model.init(k_params)
  copy = lambda tree: jax.tree.map(jnp.copy, tree)  # Distinct buffers: the step donates all.
  return TrainState(
      step=jnp.zeros((), jnp.int32), params=params,
      model_state=model_lib.init_state(model, hp.batch_size),
      opt_state=_weight_tx(hp).init(params), averaging=jnp.zeros((), bool),
      avg_params=copy(params), avg_count=jnp.zeros((), jnp.int32), best_params=copy(params),
      rng=k_run)


def make_train_step(hp: hparams.TrainHParams, model: model_lib.RNNModel):
  """`train_step(state, chunk) -> (state, metrics)`, not yet jitted."""
  tx = _weight_tx(hp)

  def train_step(state: TrainState, chunk: data_lib.Chunk):
    rng = jax.random.fold_in(state.rng, state.step)
    loss_fn = model_lib.make_loss_fn(model, ar=hp.reg.ar, tar=hp.reg.tar,
                                     rngs={chunk.stream: rng})
    lr = hp.w_lr * chunk.length.astype(jnp.float32) / hp.bptt
    (loss, (model_state, aux)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state.params, _NO_ALPHA, chunk, state.model_state)
    direction, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optim.apply_lr(state.params, direction, lr)
    # ASGD's iterate average: ā_n = ā_{n−1} + (ω_n − ā_{n−1}) / n from the switch on.
    count = state.avg_count + state.averaging.astype(jnp.int32)
    inv = 1.0 / jnp.maximum(count, 1).astype(jnp.float32)
    avg = jax.tree.map(
        lambda a, p: jnp.where(state.averaging, a + (p - a) * inv.astype(p.dtype), p),
        state.avg_params, params)
    new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state,
                              avg_params=avg, avg_count=count, model_state=model_state)
    return new_state, {'train_nll': aux['nll'], 'train_loss': loss, 'lr': lr,
                       'grad_norm': optax.tree.norm(grads)}

  return train_step


def compile_step(hp: hparams.TrainHParams, model: model_lib.RNNModel,
                 mesh: jax.sharding.Mesh):
  """The jitted step (it compiles once per padded chunk length)."""
  return parallel.jit(make_train_step(hp, model), mesh, donate_state=True)


def should_switch(history: list[float], val_nll: float, nonmono: int) -> bool:
  """The reference's non-monotone trigger for averaging.

  Fires when there are more than `nonmono` earlier epochs and the validation loss is
  worse than the best of all of them except the last `nonmono`.
  """
  return len(history) > nonmono and val_nll > min(history[:-nonmono])


def padded_length(seq_len: int, bucket: int) -> int:
  """Chunks pad up to a multiple of `bucket`, bounding the number of compiled shapes."""
  return int(math.ceil(seq_len / bucket)) * bucket


class ResetHidden(loop.Hook):
  """A zero hidden state at every epoch's start, as the reference."""

  def __init__(self, model: model_lib.RNNModel, batch_size: int):
    self.model, self.batch_size = model, batch_size

  def begin_epoch(self, run, state):
    return state.replace(model_state=model_lib.init_state(self.model, self.batch_size))


class ASGD(loop.Hook):
  """At each epoch's end: validation, the best snapshot, the switch to averaging.

  Its host-side state (best loss and epoch, the validation history, the switch
  epoch) is checkpointed with the run; at the run's end it scores the best snapshot
  on the test split and writes `result.json`.
  """

  name = 'asgd'

  def __init__(self, config, model: model_lib.RNNModel, genotype, val_data, test_data):
    self.config, self.model, self.genotype = config, model, genotype
    self.val_data, self.test_data = val_data, test_data
    self.eval_fn = loop.cached(evaluation.make_eval_fn, model)
    self.best_val, self.best_epoch, self.history, self.asgd_epoch = None, None, [], None
    self.result = None

  def state_dict(self) -> dict:
    return {'best_val': self.best_val, 'best_epoch': self.best_epoch,
            'history': self.history, 'asgd_epoch': self.asgd_epoch}

  def load_state_dict(self, state: dict) -> None:
    self.best_val, self.best_epoch = state['best_val'], state['best_epoch']
    self.history, self.asgd_epoch = list(state['history']), state['asgd_epoch']

  def start(self, run, state):
    self._t0 = time.time()

  def _nll(self, params, data) -> float:
    return evaluation.evaluate(self.eval_fn, self.model, params, _NO_ALPHA, None, data,
                               self.config.train.bptt)

  def end_epoch(self, run, state):
    averaging = bool(state.averaging)
    eval_params = state.avg_params if averaging else state.params
    val_nll = self._nll(eval_params, self.val_data)
    if not math.isfinite(val_nll):
      raise errors.NonFiniteError(f'epoch {run.epoch}: non-finite validation loss; '
                               f'{_FINITE_HINT}')
    if self.best_val is None or val_nll < self.best_val:
      # A copy: the step donates its input buffers, which must not alias.
      state = state.replace(best_params=jax.tree.map(jnp.copy, eval_params))
      self.best_val, self.best_epoch = val_nll, run.epoch
    if not averaging:
      if should_switch(self.history, val_nll, self.config.train.nonmono):
        state = state.replace(averaging=jnp.ones((), bool), avg_count=jnp.zeros((), jnp.int32))
        self.asgd_epoch = run.epoch
      self.history.append(val_nll)
    run.writer.write(run.step, {
        'epoch': run.epoch, 'val_nll': val_nll, 'val_ppl': evaluation.perplexity(val_nll),
        'averaged': averaging, 'best_val_ppl': evaluation.perplexity(self.best_val),
        'time_s': time.time() - self._t0}, kind='epoch')
    return state

  def end(self, run, state):
    test_nll = self._nll(state.best_params, self.test_data)
    self.result = {
        'val_ppl': evaluation.perplexity(self.best_val),
        'test_ppl': evaluation.perplexity(test_nll),
        'best_epoch': self.best_epoch, 'asgd_epoch': self.asgd_epoch,
        'epochs': self.config.train.epochs,
        'genotype': genotype_lib.to_darts_string(self.genotype),
        'num_params': int(sum(np.size(x) for x in jax.tree.leaves(state.params))),
    }
    if run.primary:
      with open(os.path.join(run.workdir, 'result.json'), 'w') as f:
        json.dump(self.result, f, indent=2)
    run.writer.write(run.step, {k: v for k, v in self.result.items() if k != 'genotype'},
                     kind='test')


def run(config, workdir: str, *, stop_after: int | None = None) -> dict:
  """Trains the genotype `config.train.genotype`; resumes from `<workdir>/checkpoints`.

  Args:
    config: a configs/ptb.py config.
    workdir: output directory (checkpoints, metrics.jsonl, result.json).
    stop_after: stop once this many steps are done (mid-epoch, or at an epoch's end
      after its evaluation), with a checkpoint; None runs all epochs and the test.

  Returns:
    The result dict also written to `<workdir>/result.json` (after a full run):
    `val_ppl`, `test_ppl`, `best_epoch`, `asgd_epoch` (None if never switched),
    `epochs`, `genotype`, `num_params`; `{'step': steps done}` when stopped.
  """
  t = config.train
  mesh = parallel.data_mesh()
  with errors.user_input():  # Up to here, anything wrong is in what the user gave.
    hparams.validate(config, search=False)
    parallel.check_batch(t.batch_size, mesh, 'train.batch_size')
    genotype = genotype_lib.load(t.genotype)
    corpus = data_lib.load_for_config(config.data)
    model = model_lib.RNNModel(hparams.eval_spec(config, corpus.vocab_size, genotype))
    train_data = data_lib.batchify(corpus.train, t.batch_size, 'train.batch_size')
    val_data = data_lib.batchify(corpus.valid, t.eval_batch_size, 'train.eval_batch_size')
    test_data = data_lib.batchify(corpus.test, t.test_batch_size, 'train.test_batch_size')
  hp = hparams.TrainHParams.from_config(config)
  step_fn = loop.cached(compile_step, hp, model, mesh)

  schedules = {}  # This epoch's schedule, drawn once per epoch.

  def epoch_length(epoch):
    schedules.clear()
    schedules[epoch] = data_lib.train_schedule(
        train_data.shape[0], t.bptt, data_lib.epoch_rng(config.seed, epoch),
        half_prob=t.half_bptt_prob, std=t.seq_len_std, max_delta=t.max_seq_len_delta)
    return len(schedules[epoch])

  def get(epoch, index):
    i, seq_len = schedules[epoch][index]
    chunk = data_lib.get_chunk(train_data, i, seq_len, padded_length(seq_len, t.seq_len_bucket))
    return parallel.put_batch(chunk, mesh, axis=1)  # Time-major [T, B].

  steps_per_epoch = len(data_lib.eval_schedule(train_data.shape[0], t.bptt))  # An estimate.
  batches = loop.Batches(range(1, t.epochs + 1), epoch_length, get,
                         total_steps=t.epochs * steps_per_epoch)
  asgd = ASGD(config, model, genotype, val_data, test_data)
  hooks = [ResetHidden(model, t.batch_size),
           loop.LogMetrics(lambda m: f"train ppl {evaluation.perplexity(m['train_nll']):.1f}"),
           asgd]
  result = loop.run(init_state(hp, model, config.seed), step_fn, batches, hooks, workdir,
                    config=config, mesh=mesh, stop_after=stop_after,
                    fingerprint={'genotype': genotype_lib.to_json(genotype)},
                    blame=lambda parts: 'train.w_lr')
  if not result.finished:
    return {'step': result.step}
  print(f"validation perplexity {asgd.result['val_ppl']:.2f}, "
        f"test perplexity {asgd.result['test_ppl']:.2f}")
  return asgd.result
