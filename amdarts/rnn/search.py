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
batch-norm statistics move with the ω steps. The step is data parallel as the image
search (`amdarts.parallel`: chunks sharded over their batch columns, the state
replicated). `amdarts.loop` runs it; after every epoch: validation perplexity
(evaluation mode), the derived genotype in `<workdir>/genotype.{json,txt}` and one
`kind='epoch'` record in `<workdir>/metrics.jsonl`. A rerun with the same workdir
resumes from the latest checkpoint.
"""

from __future__ import annotations

import time
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax

from amdarts import config_lib
from amdarts import errors
from amdarts import hypergrad
from amdarts import loop
from amdarts import optim
from amdarts import parallel
from amdarts.rnn import data as data_lib
from amdarts.rnn import evaluation
from amdarts.rnn import genotype as genotype_lib
from amdarts.rnn import hparams
from amdarts.rnn import model as model_lib

# What the α step alone reads and writes; a divergence confined to it is α's.
_ALPHA_PARTS = frozenset({'alpha', 'alpha_opt_state', 'alpha_grad_norm', 'g1_norm',
                          'g2_norm', 'val_nll'})
STREAMS = ('train', 'val')  # The ω stream and the α (validation) stream.


@flax.struct.dataclass
class SearchState:
  """Everything one search step reads and writes.

  Attributes:
    step: i32[] steps done.
    params: ω.
    model_state: an `LMState`: batch-norm statistics and both streams' hidden states.
    alpha: f[E, O] architecture logits.
    opt_state: state of ω's gradient transformation (clip, weight decay).
    alpha_opt_state: α's Adam state.
    rng: the run's base key; each step folds its step number in.
    sums: this epoch's running sums of the training NLL and of the steps.
  """

  step: jax.Array
  params: Any
  model_state: model_lib.LMState
  alpha: jax.Array
  opt_state: Any
  alpha_opt_state: Any
  rng: jax.Array
  sums: dict


def _epoch_sums() -> dict:
  return {'train_nll': jnp.zeros(()), 'count': jnp.zeros(())}


def init_state(hp: hparams.SearchHParams, model: model_lib.RNNModel, seed: int) -> SearchState:
  k_params, k_alpha, k_run = jax.random.split(jax.random.PRNGKey(seed), 3)
  params = model.init(k_params)
  alpha = model.init_alpha(k_alpha, hp.alpha_init_scale)
  return SearchState(
      step=jnp.zeros((), jnp.int32), params=params,
      model_state=model_lib.init_state(model, hp.batch_size, STREAMS), alpha=alpha,
      opt_state=_weight_tx(hp).init(params),
      alpha_opt_state=_alpha_optimizer(hp).init(alpha), rng=k_run, sums=_epoch_sums())


def _weight_tx(hp: hparams.SearchHParams) -> optax.GradientTransformation:
  return optim.sgd(weight_decay=hp.reg.wd, grad_clip=hp.grad_clip)  # Plain SGD, as DARTS.


def _alpha_optimizer(hp: hparams.SearchHParams) -> optax.GradientTransformation:
  return optim.adam(hp.a_lr, b1=hp.a_b1, b2=hp.a_b2, weight_decay=hp.a_wd)


def make_search_step(hp: hparams.SearchHParams, model: model_lib.RNNModel):
  """`search_step(state, (train_chunk, val_chunk)) -> (state, metrics)`, not yet jitted."""
  estimator = config_lib.make_estimator(hp, weight_decay=hp.reg.wd)
  w_tx = _weight_tx(hp)
  a_tx = _alpha_optimizer(hp)

  def search_step(state: SearchState, chunks):
    train_chunk, val_chunk = chunks
    k_train, k_val, k_w = jax.random.split(jax.random.fold_in(state.rng, state.step), 3)
    # The reference's `_loss`: plain NLL, fresh dropout masks per stream.
    nll_fn = model_lib.make_loss_fn(model, rngs={'train': k_train, 'val': k_val})
    w_loss_fn = model_lib.make_loss_fn(model, ar=hp.reg.ar, tar=hp.reg.tar,
                                       rngs={'train': k_w})
    # A short chunk carries less gradient signal: the reference scales lr with it.
    lr = hp.w_lr * train_chunk.length.astype(jnp.float32) / hp.bptt
    # DARTS's unrolled step uses the weight optimizer's current (scaled) lr as ξ.
    g_alpha, est = estimator(nll_fn, state.params, state.alpha, state.model_state,
                             train_chunk, val_chunk, hypergrad.StepContext(lr=lr))
    a_updates, a_opt_state = a_tx.update(g_alpha, state.alpha_opt_state, state.alpha)
    alpha = optax.apply_updates(state.alpha, a_updates)

    (loss, (model_state, aux)), g_w = jax.value_and_grad(w_loss_fn, has_aux=True)(
        state.params, alpha, train_chunk, state.model_state)
    w_dir, w_opt_state = w_tx.update(g_w, state.opt_state, state.params)
    params = optim.apply_lr(state.params, w_dir, lr)
    # The ω step moved the training stream and the statistics; the α stream moved in
    # the estimator's validation pass.
    val_hidden = est['val_aux'][0].hidden['val']
    model_state = model_state.replace(hidden={**model_state.hidden, 'val': val_hidden})

    new_state = state.replace(
        step=state.step + 1, params=params, alpha=alpha, opt_state=w_opt_state,
        alpha_opt_state=a_opt_state, model_state=model_state,
        sums={'train_nll': state.sums['train_nll'] + aux['nll'],
              'count': state.sums['count'] + 1.0})
    metrics = {
        'train_nll': aux['nll'], 'train_loss': loss, 'val_nll': est['val_loss'],
        'w_grad_norm': optax.tree.norm(g_w), 'alpha_grad_norm': optax.tree.norm(g_alpha),
        'g1_norm': optax.tree.norm(est['g1']), 'g2_norm': optax.tree.norm(est['g2']),
        'lr': lr,
    }
    return new_state, metrics

  return search_step


def compile_step(hp: hparams.SearchHParams, model: model_lib.RNNModel,
                 mesh: jax.sharding.Mesh):
  """The jitted step: state replicated over `mesh`, chunks as placed (sharded)."""
  return parallel.jit(make_search_step(hp, model), mesh, donate_state=True)


def compiled_step(hp: hparams.SearchHParams, model: model_lib.RNNModel,
                  mesh: jax.sharding.Mesh):
  """`compile_step`, built once per process per setting (a resumed run reuses it)."""
  return loop.cached(compile_step, hp, model, mesh)


class ResetEpoch(loop.Hook):
  """Fresh zero hidden states, as the reference at every epoch's start, and zero sums."""

  def __init__(self, model: model_lib.RNNModel, batch_size: int):
    self.model, self.batch_size = model, batch_size

  def begin_epoch(self, run, state):
    # New buffers, not zeros_like views of each other: the jitted step donates them.
    hidden = model_lib.init_state(self.model, self.batch_size, STREAMS).hidden
    return state.replace(model_state=state.model_state.replace(hidden=hidden),
                         sums=_epoch_sums())


class EpochGenotype(loop.Hook):
  """At each epoch's end: validation perplexity, the genotype files and the record."""

  def __init__(self, config, model: model_lib.RNNModel, val_data: np.ndarray):
    self.config, self.model, self.val_data = config, model, val_data
    self.eval_fn = loop.cached(evaluation.make_eval_fn, model)
    self.val_ppl = None  # Of the last epoch this call finished.

  def start(self, run, state):
    self._t0 = time.time()

  def end_epoch(self, run, state):
    config, ops = self.config, tuple(self.config.model.ops)
    alpha = jax.device_get(state.alpha)
    val_nll = evaluation.evaluate(self.eval_fn, self.model, state.params, state.alpha,
                                  state.model_state.bn, self.val_data, config.search.bptt)
    genotype = genotype_lib.derive(alpha, ops)
    if run.primary:
      genotype_lib.save(genotype, run.workdir)
    sums = jax.device_get(state.sums)
    record = {
        'epoch': run.epoch, 'val_nll': val_nll, 'val_ppl': evaluation.perplexity(val_nll),
        'train_ppl': evaluation.perplexity(float(sums['train_nll']) /
                                           max(float(sums['count']), 1.0)),
        'genotype': genotype_lib.to_darts_string(genotype),
        'alpha_softmax': np.asarray(jax.nn.softmax(alpha, -1), np.float64).round(4).tolist(),
        'time_s': time.time() - self._t0,
    }
    run.writer.write(run.step, record, kind='epoch')
    self.val_ppl = record['val_ppl']
    return state


def run(config, workdir: str, *, stop_after: int | None = None) -> dict:
  """Searches a recurrent cell; resumes from `<workdir>/checkpoints` when present.

  Args:
    config: a configs/ptb.py config.
    workdir: output directory (checkpoints, metrics.jsonl, genotype.json/.txt).
    stop_after: stop once this many steps are done (mid-epoch, or at an epoch's end
      after its evaluation), with a checkpoint, as an interrupted run would; None
      runs all epochs.

  Returns:
    Summary: `step`, `epoch` (last finished), `val_ppl` (of that epoch; None if no
    epoch finished in this call) and `genotype` (the DARTS string of the final α).
  """
  s = config.search
  mesh = parallel.data_mesh()
  with errors.user_input():  # Up to here, anything wrong is in what the user gave.
    hparams.validate(config, search=True)
    parallel.check_batch(s.batch_size, mesh, 'search.batch_size')
    hp = hparams.SearchHParams.from_config(config)
    corpus = data_lib.load_for_config(config.data)
    model = model_lib.RNNModel(hparams.search_spec(config, corpus.vocab_size))
    train_data = data_lib.batchify(corpus.train, s.batch_size, 'search.batch_size')
    search_data = data_lib.batchify(corpus.valid, s.batch_size,  # The α stream.
                                    'search.batch_size (validation split)')
    val_data = data_lib.batchify(corpus.valid, s.eval_batch_size, 'search.eval_batch_size')
  step_fn = compiled_step(hp, model, mesh)

  def schedule(epoch):
    return data_lib.search_schedule(train_data.shape[0], s.bptt,
                                    data_lib.epoch_rng(config.seed, epoch), s.half_bptt_prob)

  schedules = {}  # This epoch's schedule, drawn once per epoch.

  def epoch_length(epoch):
    schedules.clear()
    schedules[epoch] = schedule(epoch)
    return len(schedules[epoch])

  def get(epoch, index):
    i, seq_len = schedules[epoch][index]
    # The α stream advances with the training rows and wraps, as the reference.
    chunks = (data_lib.get_chunk(train_data, i, seq_len, s.bptt, 'train'),
              data_lib.get_chunk(search_data, i % (search_data.shape[0] - 1), s.bptt,
                                 s.bptt, 'val'))
    return parallel.put_batch(chunks, mesh, axis=1)  # Chunks are time-major, [T, B].

  batches = loop.Batches(range(1, s.epochs + 1), epoch_length, get,
                         total_steps=s.epochs * len(schedule(1)))
  genotypes = EpochGenotype(config, model, val_data)
  hooks = [ResetEpoch(model, s.batch_size),
           loop.LogMetrics(lambda m: f"train ppl {evaluation.perplexity(m['train_nll']):.1f}"),
           genotypes]
  if s.stop_after_unchanged:  # The paper's criterion: the architecture stopped changing.
    hooks.append(loop.StopWhenUnchanged(
        lambda st: genotype_lib.to_darts_string(
            genotype_lib.derive(jax.device_get(st.alpha), tuple(config.model.ops))),
        s.stop_after_unchanged))
  result = loop.run(init_state(hp, model, config.seed), step_fn, batches, hooks, workdir,
                    config=config, mesh=mesh, stop_after=stop_after,
                    blame=lambda parts: ('search.a_lr' if set(parts) <= _ALPHA_PARTS
                                         else 'search.w_lr'))
  genotype = genotype_lib.derive(jax.device_get(result.state.alpha), tuple(config.model.ops))
  if result.finished and parallel.is_primary():
    genotype_lib.save(genotype, workdir)
  summary = {'step': result.step, 'epoch': result.epoch - 1, 'val_ppl': genotypes.val_ppl,
             'genotype': genotype_lib.to_darts_string(genotype)}
  if result.finished:
    print(summary['genotype'])
  return summary
