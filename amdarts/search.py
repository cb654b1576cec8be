"""The architecture search loop: DARTS alternation with a configurable α estimator.

Each step updates α on a search-val batch with the configured hypergradient
estimator (amended by default, eq. 5), then ω on a search-train batch. The step is
a pure function `search_step(state, train_batch, val_batch) -> (state, metrics)`,
jitted once; data parallelism places the batches sharded over all devices.
Everything needed to continue (ω, BN state, α/β, both optimizer states, step, RNG,
the epoch's running sums) is in `SearchState`; the data position follows from the
step because batch `i` of epoch `e` is a pure function of (seed, e, i).

Outputs in the workdir: metrics.jsonl (+ TensorBoard), genotype.json / genotype.txt
(DARTS string) per epoch under genotypes/ and final at the top, search_curves.png
and genotype.png, checkpoints/.
"""

from __future__ import annotations

import functools
import json
import os
import time
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
import ml_collections
import optax
from absl import logging

from amdarts import checkpoint as ckpt_lib
from amdarts import config_lib
from amdarts import data as data_lib
from amdarts import genotype_text
from amdarts import genotypes as geno_lib
from amdarts import hypergrad
from amdarts import metrics as metrics_lib
from amdarts import ops as ops_lib
from amdarts import parallel
from amdarts import retrain
from amdarts import spaces
from amdarts import supernet


@flax.struct.dataclass
class SearchState:
  step: jax.Array
  params: Any
  batch_stats: Any
  alpha: Any
  w_opt: Any
  a_opt: Any
  rng: jax.Array
  sums: dict  # Running sums of this epoch's metrics (reset at epoch start).


EPOCH_SUMS = ('train_loss', 'train_acc', 'val_loss', 'val_acc', 'alpha_grad_norm', 'count')


def cosine_epoch_lr(base: float, minimum: float, epochs: int, steps_per_epoch: int):
  """Per-epoch cosine annealing from `base` to `minimum`, as torch CosineAnnealingLR."""

  def schedule(step):
    epoch = jnp.minimum(step // steps_per_epoch, epochs)
    return minimum + 0.5 * (base - minimum) * (1 + jnp.cos(jnp.pi * epoch / epochs))

  return schedule


def weight_optimizer(cfg, schedule) -> optax.GradientTransformation:
  # DARTS: clip the raw gradient, then SGD adds weight decay before momentum.
  return optax.chain(
      optax.clip_by_global_norm(cfg.grad_clip),
      optax.add_decayed_weights(cfg.w_wd),
      optax.sgd(schedule, momentum=cfg.w_momentum))


def arch_optimizer(cfg) -> optax.GradientTransformation:
  # torch Adam's weight_decay is L2 added to the gradient, not AdamW.
  return optax.chain(
      optax.add_decayed_weights(cfg.a_wd),
      optax.adam(cfg.a_lr, b1=cfg.a_b1, b2=cfg.a_b2))


def make_loss_fn(net: supernet.SuperNet, batch_stats, rng, aux_weight: float):
  """loss_fn(params, alpha, batch) -> (loss, (new_batch_stats, accuracy)) in train mode."""

  def loss_fn(params, alpha, batch):
    (logits, aux_logits), new_stats = net.apply(
        params, batch_stats, alpha, batch['image'], train=True, rng=rng)
    loss = retrain.cross_entropy(logits, batch['label'])
    if aux_logits is not None:
      loss = loss + aux_weight * retrain.cross_entropy(aux_logits, batch['label'])
    acc = jnp.mean(jnp.argmax(logits, -1) == batch['label'])
    return loss, (new_stats, acc)

  return loss_fn


class Searcher:
  """Builds the network, optimizers and jitted steps from a config (no I/O)."""

  def __init__(self, config, image_shape, num_classes: int, steps_per_epoch: int,
               mesh=None):
    self.config = config
    s = config.search
    self.hp = config_lib.search_hparams(config)
    self.spec = config_lib.space_spec(config)
    self.net = supernet.SuperNet.create(
        self.spec, c=self.hp.c, num_classes=num_classes,
        stem_multiplier=config.model.stem_multiplier, depthwise=config.model.depthwise,
        drop_path=self.hp.drop_path, auxiliary=self.hp.auxiliary)
    self._aux_weight = self.hp.aux_weight if self.hp.auxiliary else 0.0
    self.image_shape = tuple(image_shape)
    self.steps_per_epoch = steps_per_epoch
    self.lr = cosine_epoch_lr(s.w_lr, s.w_lr_min, s.epochs, steps_per_epoch)
    self.w_tx = weight_optimizer(s, self.lr)
    self.a_tx = arch_optimizer(s)
    self.estimator = hypergrad.make(
        s.estimator, eta=s.eta, eps_scale=s.eps_scale, weight_decay=s.w_wd,
        momentum=s.w_momentum, solver=s.implicit_solver, maxiter=s.implicit_maxiter,
        ridge=s.implicit_ridge)
    self.mesh = mesh or parallel.data_mesh()
    rep = parallel.replicated(self.mesh)
    data = parallel.batch_sharded(self.mesh)
    self.step_fn = jax.jit(self.search_step, in_shardings=(rep, data, data),
                           out_shardings=(rep, rep), donate_argnums=0)
    self.eval_fn = jax.jit(self.eval_step, in_shardings=(rep, data), out_shardings=rep)
    self.diag_fn = jax.jit(self.diagnose, in_shardings=(rep, data, data), out_shardings=rep)

  def init(self, seed: int) -> SearchState:
    rng = jax.random.PRNGKey(seed)
    k_params, k_alpha, k_state = jax.random.split(rng, 3)
    x = jnp.zeros((2,) + self.image_shape)
    params, batch_stats = self.net.init(k_params, x)
    alpha = spaces.init_alpha(self.spec, k_alpha, self.config.search.alpha_init_scale)
    return SearchState(
        step=jnp.zeros((), jnp.int32), params=params, batch_stats=batch_stats, alpha=alpha,
        w_opt=self.w_tx.init(params), a_opt=self.a_tx.init(alpha), rng=k_state,
        sums={k: jnp.zeros(()) for k in EPOCH_SUMS})

  def abstract_state(self, seed: int) -> SearchState:
    return jax.eval_shape(self.init, seed)

  def _estimator_kwargs(self, state):
    if self.config.search.estimator.startswith('darts_second_order'):
      return {'xi': self.lr(state.step),
              'momentum_buffer': optax.tree_utils.tree_get(state.w_opt, 'trace')}
    return {}

  def alpha_step(self, state: SearchState, train_batch, val_batch):
    """One α update with the configured estimator; returns (α, α opt state, aux)."""
    rng = jax.random.fold_in(jax.random.fold_in(state.rng, state.step), 0)
    loss_fn = make_loss_fn(self.net, state.batch_stats, rng, self._aux_weight)
    g_alpha, est = self.estimator(loss_fn, state.params, state.alpha, train_batch, val_batch,
                                  **self._estimator_kwargs(state))
    updates, a_opt = self.a_tx.update(g_alpha, state.a_opt, state.alpha)
    return optax.apply_updates(state.alpha, updates), a_opt, (g_alpha, est)

  def weight_step(self, state: SearchState, alpha, train_batch):
    """One ω update at architecture `alpha`; returns (params, BN state, opt state, aux)."""
    rng = jax.random.fold_in(jax.random.fold_in(state.rng, state.step), 1)
    loss_fn = make_loss_fn(self.net, state.batch_stats, rng, self._aux_weight)
    (loss, (batch_stats, acc)), g_w = jax.value_and_grad(loss_fn, has_aux=True)(
        state.params, alpha, train_batch)
    updates, w_opt = self.w_tx.update(g_w, state.w_opt, state.params)
    return optax.apply_updates(state.params, updates), batch_stats, w_opt, (loss, acc, g_w)

  def search_step(self, state: SearchState, train_batch, val_batch):
    """DARTS alternation: α on the search-val batch, then ω on the search-train batch."""
    alpha, a_opt, (g_alpha, est) = self.alpha_step(state, train_batch, val_batch)
    params, batch_stats, w_opt, (loss, acc, g_w) = self.weight_step(state, alpha, train_batch)
    metrics = {
        'train_loss': loss, 'train_acc': acc, 'val_loss': est['val_loss'],
        'val_acc': est['val_aux'][1], 'alpha_grad_norm': optax.tree.norm(g_alpha),
        'g1_norm': optax.tree.norm(est['g1']), 'g2_norm': optax.tree.norm(est['g2']),
        'w_grad_norm': optax.tree.norm(g_w), 'lr': self.lr(state.step),
    }
    sums = {k: state.sums[k] + (1.0 if k == 'count' else metrics[k]) for k in EPOCH_SUMS}
    new_state = state.replace(step=state.step + 1, params=params, batch_stats=batch_stats,
                              alpha=alpha, w_opt=w_opt, a_opt=a_opt, sums=sums)
    return new_state, metrics

  def eval_step(self, state: SearchState, batch):
    """Super-network loss/accuracy sums in eval mode (running BN statistics)."""
    (logits, _), _ = self.net.apply(state.params, state.batch_stats, state.alpha,
                                    batch['image'], train=False)
    mask = batch.get('mask', jnp.ones(logits.shape[0]))
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, batch['label'])
    correct = (jnp.argmax(logits, -1) == batch['label'])
    return {'loss': jnp.sum(ce * mask), 'correct': jnp.sum(correct * mask),
            'count': jnp.sum(mask)}

  def diagnose(self, state: SearchState, train_batch, val_batch):
    """cos(g2′, g2) and cos(g2_DARTS, g2) with g2 from the implicit solver."""
    s = self.config.search
    loss_fn = make_loss_fn(self.net, state.batch_stats, state.rng, 0.0)
    return hypergrad.diagnose(
        loss_fn, state.params, state.alpha, train_batch, val_batch, eta=s.eta,
        xi=self.lr(state.step), weight_decay=s.w_wd, solver=s.implicit_solver,
        maxiter=s.implicit_maxiter, ridge=s.implicit_ridge)

  def genotype(self, alpha):
    return geno_lib.derive(self.spec, jax.device_get(alpha))


@functools.lru_cache(maxsize=8)
def _cached_searcher(config_json, image_shape, num_classes, steps_per_epoch, mesh):
  config = ml_collections.ConfigDict(json.loads(config_json))
  return Searcher(config, image_shape, num_classes, steps_per_epoch, mesh)


def get_searcher(config, image_shape, num_classes, steps_per_epoch, mesh) -> Searcher:
  """A Searcher shared by runs of the same config in one process (compiled once)."""
  return _cached_searcher(config.to_json(), tuple(image_shape), num_classes,
                          steps_per_epoch, mesh)


# ----------------------------------------------------------------------------- checks


def validate_config(config) -> None:
  """Raises ValueError with one line for a config that cannot run; no heavy work."""
  s = config.search
  if s.estimator not in hypergrad.ESTIMATORS:
    raise ValueError(f'search.estimator must be one of {sorted(hypergrad.ESTIMATORS)}, '
                     f'got {s.estimator!r}')
  if s.eta < 0:
    raise ValueError(f'search.eta must be >= 0 (the amending coefficient), got {s.eta}')
  if s.epochs < 1 or s.batch_size < 1:
    raise ValueError('search.epochs and search.batch_size must be positive')
  if s.eps_scale <= 0:
    raise ValueError(f'search.eps_scale must be > 0, got {s.eps_scale}')
  if s.implicit_solver not in hypergrad.SOLVERS:
    raise ValueError(f'search.implicit_solver must be one of {sorted(hypergrad.SOLVERS)}')
  if config.model.depthwise not in ops_lib.DEPTHWISE_IMPLS:
    raise ValueError(f'model.depthwise must be one of {ops_lib.DEPTHWISE_IMPLS}, '
                     f'got {config.model.depthwise!r}')
  if not 0 < config.data.train_portion < 1:
    raise ValueError(f'data.train_portion must be in (0, 1), got {config.data.train_portion}')
  config_lib.space_spec(config)  # Unknown space/op/edge mode/topology.


def load_search_data(config):
  d = config.data
  kwargs = {'data_dir': d.data_dir or None}
  if d.name == 'synthetic':
    kwargs.update(num_examples=d.max_examples or 512, image_shape=tuple(d.image_shape),
                  num_classes=d.num_classes, seed=config.seed)
  train = data_lib.load_dataset(d.name, 'train', **kwargs)
  if d.max_examples and len(train) > d.max_examples:
    train = train.subset(np.arange(d.max_examples))
  return data_lib.search_split(train, d.train_portion)


# ------------------------------------------------------------------------------ driver


def _write_genotype(workdir: str, genotype, epoch: int | None) -> None:
  folder = workdir if epoch is None else os.path.join(workdir, 'genotypes')
  os.makedirs(folder, exist_ok=True)
  stem = 'genotype' if epoch is None else f'epoch_{epoch:03d}'
  for ext, text in (('json', genotype_text.to_json(genotype, indent=1)),
                    ('txt', genotype_text.to_darts_string(genotype) + '\n')):
    tmp = os.path.join(folder, f'.{stem}.{ext}.tmp')
    with open(tmp, 'w') as f:
      f.write(text)
    os.replace(tmp, os.path.join(folder, f'{stem}.{ext}'))  # Never a half-written file.


def evaluate(searcher: Searcher, state, dataset, config, max_batches: int) -> dict:
  bs = config.search.batch_size
  n_batches = data_lib.steps_per_epoch(len(dataset), bs, drop_remainder=False)
  if max_batches:
    n_batches = min(n_batches, max_batches)
  totals = {'loss': 0.0, 'correct': 0.0, 'count': 0.0}
  for i in range(n_batches):
    batch = data_lib.batch_at(dataset, 0, i, batch_size=bs, seed=config.seed, shuffle=False,
                              drop_remainder=False)
    out = jax.device_get(searcher.eval_fn(state, parallel.put_batch(batch, searcher.mesh)))
    totals = {k: totals[k] + float(out[k]) for k in totals}
  count = max(totals['count'], 1.0)
  return {'eval_loss': totals['loss'] / count, 'eval_acc': totals['correct'] / count}


def run(config, workdir: str) -> Any:
  """Runs (or resumes) the search described by `config` in `workdir`.

  Returns:
    The final genotype.
  """
  if config.task == 'ptb':
    from amdarts.rnn import search as rnn_search  # Recurrent cells, same estimators.
    return rnn_search.run(config, workdir)
  validate_config(config)
  mesh = parallel.data_mesh()
  parallel.check_batch(config.search.batch_size, mesh, 'search.batch_size')
  search_train, search_val = load_search_data(config)  # Fails fast when data is missing.
  s = config.search
  spe = min(len(search_train), len(search_val)) // s.batch_size
  if spe < 1:
    raise ValueError(f'search.batch_size={s.batch_size} exceeds the search split '
                     f'({min(len(search_train), len(search_val))} examples)')
  hp = config_lib.search_hparams(config)
  augment = data_lib.Augment(crop_padding=4, flip=config.data.flip, cutout_length=hp.cutout)
  searcher = get_searcher(config, search_train.image_shape, search_train.num_classes, spe,
                          mesh)
  total_steps = s.epochs * spe

  os.makedirs(workdir, exist_ok=True)
  _write_config(config, workdir)
  ckpt = ckpt_lib.Checkpointer(workdir, max_to_keep=config.keep_checkpoints)
  if ckpt.latest_step() is not None:
    state, meta = ckpt.restore(searcher.abstract_state(config.seed))
    logging.info('resumed from step %d', meta['step'])
  else:
    state = searcher.init(config.seed)
  state = parallel.put_replicated(state, mesh)
  step = int(jax.device_get(state.step))
  writer = metrics_lib.MetricWriter(workdir)
  metrics_lib.truncate_after(writer.path, step)
  progress = metrics_lib.Progress(total_steps, start=step)
  history = metrics_lib.read_jsonl(writer.path, kind='epoch')

  t_last = time.time()
  try:
    while step < total_steps:
      epoch, index = divmod(step, spe)
      if index == 0:
        state = state.replace(sums=jax.tree.map(jnp.zeros_like, state.sums))
      train_batch = data_lib.batch_at(search_train, epoch, index, batch_size=s.batch_size,
                                      seed=config.seed, augment=augment)
      val_batch = data_lib.batch_at(search_val, epoch, index, batch_size=s.batch_size,
                                    seed=config.seed + 1, augment=augment)
      train_batch = parallel.put_batch(train_batch, mesh)
      val_batch = parallel.put_batch(val_batch, mesh)
      if s.diag_every and step % s.diag_every == 0:
        diag = jax.device_get(searcher.diag_fn(state, train_batch, val_batch))
        writer.write(step, diag, kind='diagnostic')
      state, metrics = searcher.step_fn(state, train_batch, val_batch)
      step += 1
      if step % config.log_every_steps == 0 or step == total_steps:
        metrics = jax.device_get(metrics)
        metrics_lib.check_finite(step, metrics)
        now = time.time()
        metrics['steps_per_sec'] = config.log_every_steps / max(now - t_last, 1e-9)
        t_last = now
        writer.write(step, metrics)
        progress.update(step, f"loss {metrics['train_loss']:.3f} val {metrics['val_loss']:.3f}")
      if step % spe == 0:
        history.append(_end_epoch(searcher, state, search_val, config, workdir, writer, step,
                                  epoch))
        _plot(history, searcher, state, workdir)
      if step % config.checkpoint_every_steps == 0 or step % spe == 0:
        ckpt.save(step, state, {'step': step, 'epoch': step // spe})
  finally:  # Also on a crash: finish the checkpoint in flight.
    progress.close()
    ckpt.close()
    writer.close()
  genotype = searcher.genotype(state.alpha)
  _write_genotype(workdir, genotype, None)
  if searcher.spec.has_beta:
    topology = geno_lib.derive_topology(searcher.spec, jax.device_get(state.alpha))
    with open(os.path.join(workdir, 'topology.json'), 'w') as f:
      json.dump({k: [list(p) for p in v] for k, v in topology.items()}, f)
  return genotype


def _write_config(config, workdir: str) -> None:
  with open(os.path.join(workdir, 'config.json'), 'w') as f:
    f.write(config.to_json_best_effort(indent=1))


def _end_epoch(searcher, state, search_val, config, workdir, writer, step, epoch) -> dict:
  sums = jax.device_get(state.sums)
  count = max(float(sums['count']), 1.0)
  genotype = searcher.genotype(state.alpha)
  alpha = jax.device_get(state.alpha)
  record = {k: float(sums[k]) / count for k in EPOCH_SUMS if k != 'count'}
  record.update(evaluate(searcher, state, search_val, config, config.search.eval_batches))
  record.update({
      'epoch': epoch + 1,
      'none_weight': geno_lib.none_weight(searcher.spec, alpha),
      'skip_share': geno_lib.skip_share(genotype),
      'num_parametric': geno_lib.num_parametric(genotype),
      'genotype': genotype_text.to_darts_string(genotype),
  })
  metrics_lib.check_finite(step, {k: v for k, v in record.items() if isinstance(v, float)})
  writer.write(step, record, kind='epoch')
  _write_genotype(workdir, genotype, epoch + 1)
  logging.info('epoch %d: %s', epoch + 1, record)
  return record


def _plot(history, searcher, state, workdir) -> None:
  from amdarts import plots
  plots.search_curves(history, os.path.join(workdir, 'search_curves.png'))
  plots.draw_genotype(searcher.genotype(state.alpha), os.path.join(workdir, 'genotype.png'))
