"""The architecture search on images: DARTS alternation with a configurable α estimator.

Each step updates α on a search-val batch with the configured hypergradient
estimator (amended by default, eq. 5), then ω on a search-train batch. The step is
a pure function `search_step(state, train_batch, val_batch) -> (state, metrics)`,
jitted once; data parallelism places the batches sharded over all devices.
Everything needed to continue (ω, BN state, α/β, both optimizer states, step, RNG,
the epoch's running sums) is in `SearchState`; `amdarts.loop` runs, resumes and
checkpoints it, and the data position follows from the step because batch `i` of
epoch `e` is a pure function of (seed, e, i).

Outputs in the workdir: metrics.jsonl (+ TensorBoard), genotype.json / genotype.txt
(DARTS string) per epoch under genotypes/ and final at the top, search_curves.png
and genotype.png, checkpoints/, config.json; topology.json after an edge search
(`searched`). A `two_stage` search keeps each stage's outputs in stage1/ and
stage2/ and copies the final genotype and topology to the top.
"""

from __future__ import annotations

import json
import os
import shutil
from typing import Any

from absl import logging
import flax
import jax
import jax.numpy as jnp
import ml_collections
import optax

from amdarts import checkpoint as ckpt_lib
from amdarts import config_lib
from amdarts import data as data_lib
from amdarts import diagnostics
from amdarts import errors
from amdarts import genotype_text
from amdarts import genotypes as geno_lib
from amdarts import hypergrad
from amdarts import loop
from amdarts import losses
from amdarts import metrics as metrics_lib
from amdarts import optim
from amdarts import parallel
from amdarts import spaces
from amdarts import supernet


@flax.struct.dataclass
class SearchState:
  """Everything one search step reads and writes.

  Attributes:
    step: i32[] steps done.
    params: ω.
    model_state: the super-net's batch-norm statistics.
    alpha: α (and β), per cell type or cell.
    opt_state: ω's SGD state (the momentum buffer).
    alpha_opt_state: α's Adam state.
    rng: the run's base key; each step folds its step number in.
    sums: running sums of this epoch's metrics (reset at epoch start).
  """

  step: jax.Array
  params: Any
  model_state: Any
  alpha: Any
  opt_state: Any
  alpha_opt_state: Any
  rng: jax.Array
  sums: dict


EPOCH_SUMS = ('train_loss', 'train_acc', 'val_loss', 'val_acc', 'alpha_grad_norm', 'count')


def make_loss_fn(net: supernet.SuperNet, rng, aux_weight: float,
                 drop_path_rate=0.0) -> hypergrad.LossFn:
  """The super-net's training-mode loss in the `hypergrad` convention.

  `loss_fn(params, alpha, batch, batch_stats) -> (loss, (new_batch_stats, metrics))`
  with `metrics = {'accuracy'}`; the auxiliary head, if any, adds `aux_weight` times
  its cross-entropy. `rng` drives drop-path at `drop_path_rate`.
  """

  def loss_fn(params, alpha, batch, batch_stats):
    (logits, aux_logits), new_stats = net.apply(
        params, batch_stats, alpha, batch['image'], train=True,
        drop_path_rate=drop_path_rate, rng=rng)
    loss = losses.cross_entropy(logits, batch['label'])
    if aux_logits is not None:
      loss = loss + aux_weight * losses.cross_entropy(aux_logits, batch['label'])
    return loss, (new_stats, {'accuracy': losses.accuracy(logits, batch['label'])})

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
        auxiliary=self.hp.auxiliary)
    self._aux_weight = self.hp.aux_weight if self.hp.auxiliary else 0.0
    self.image_shape = tuple(image_shape)
    self.steps_per_epoch = steps_per_epoch
    self.lr = optim.epoch_schedule('cosine', base=s.w_lr, minimum=s.w_lr_min,
                                   epochs=s.epochs, steps_per_epoch=steps_per_epoch)
    # Retraining's ramp over the search epochs (with search.consistent_regularisers).
    self.drop_path = optim.drop_path_schedule(self.hp.drop_path, epochs=s.epochs,
                                              steps_per_epoch=steps_per_epoch)
    self.w_tx = optim.sgd(momentum=s.w_momentum, weight_decay=s.w_wd, grad_clip=s.grad_clip)
    self.a_tx = optim.adam(s.a_lr, b1=s.a_b1, b2=s.a_b2, weight_decay=s.a_wd)
    self.estimator = config_lib.make_estimator(s, weight_decay=s.w_wd, momentum=s.w_momentum)
    self.mesh = mesh or parallel.data_mesh()
    self.step_fn = parallel.jit(self.search_step, self.mesh, batch_args=2,
                                donate_state=True)
    self.eval_fn = parallel.jit(self.eval_step, self.mesh)
    self.diag_fn = parallel.jit(self.diagnose, self.mesh, batch_args=2)
    self.hessian_fn = parallel.jit(self.alpha_hessian, self.mesh)

  def init(self, seed: int) -> SearchState:
    rng = jax.random.PRNGKey(seed)
    k_params, k_alpha, k_state = jax.random.split(rng, 3)
    x = jnp.zeros((2,) + self.image_shape)
    params, batch_stats = self.net.init(k_params, x)
    alpha = spaces.init_alpha(self.spec, k_alpha, self.config.search.alpha_init_scale)
    return SearchState(
        step=jnp.zeros((), jnp.int32), params=params, model_state=batch_stats, alpha=alpha,
        opt_state=self.w_tx.init(params), alpha_opt_state=self.a_tx.init(alpha), rng=k_state,
        sums={k: jnp.zeros(()) for k in EPOCH_SUMS})

  def abstract_state(self, seed: int) -> SearchState:
    return jax.eval_shape(self.init, seed)

  def context(self, state: SearchState) -> hypergrad.StepContext:
    """The step's learning rate and momentum buffer, for DARTS's unrolled step."""
    return hypergrad.StepContext(lr=self.lr(state.step),
                                 momentum_buffer=optim.momentum_buffer(state.opt_state))

  def alpha_step(self, state: SearchState, train_batch, val_batch):
    """One α update with the configured estimator; returns (α, α opt state, aux)."""
    rng = jax.random.fold_in(jax.random.fold_in(state.rng, state.step), 0)
    loss_fn = make_loss_fn(self.net, rng, self._aux_weight, self.drop_path(state.step))
    g_alpha, est = self.estimator(loss_fn, state.params, state.alpha, state.model_state,
                                  train_batch, val_batch, self.context(state))
    updates, a_opt = self.a_tx.update(g_alpha, state.alpha_opt_state, state.alpha)
    return optax.apply_updates(state.alpha, updates), a_opt, (g_alpha, est)

  def weight_step(self, state: SearchState, alpha, train_batch):
    """One ω update at architecture `alpha`; returns (params, BN state, opt state, aux)."""
    rng = jax.random.fold_in(jax.random.fold_in(state.rng, state.step), 1)
    loss_fn = make_loss_fn(self.net, rng, self._aux_weight, self.drop_path(state.step))
    (loss, (batch_stats, m)), g_w = jax.value_and_grad(loss_fn, has_aux=True)(
        state.params, alpha, train_batch, state.model_state)
    direction, w_opt = self.w_tx.update(g_w, state.opt_state, state.params)
    params = optim.apply_lr(state.params, direction, self.lr(state.step))
    return params, batch_stats, w_opt, (loss, m['accuracy'], g_w)

  def search_step(self, state: SearchState, train_batch, val_batch):
    """DARTS alternation: α on the search-val batch, then ω on the search-train batch."""
    alpha, a_opt, (g_alpha, est) = self.alpha_step(state, train_batch, val_batch)
    params, batch_stats, w_opt, (loss, acc, g_w) = self.weight_step(state, alpha, train_batch)
    metrics = {
        'train_loss': loss, 'train_acc': acc, 'val_loss': est['val_loss'],
        'val_acc': est['val_aux'][1]['accuracy'], 'alpha_grad_norm': optax.tree.norm(g_alpha),
        'g1_norm': optax.tree.norm(est['g1']), 'g2_norm': optax.tree.norm(est['g2']),
        'w_grad_norm': optax.tree.norm(g_w), 'lr': self.lr(state.step),
        'drop_path': jnp.asarray(self.drop_path(state.step), jnp.float32),
    }
    sums = {k: state.sums[k] + (1.0 if k == 'count' else metrics[k]) for k in EPOCH_SUMS}
    new_state = state.replace(step=state.step + 1, params=params, model_state=batch_stats,
                              alpha=alpha, opt_state=w_opt, alpha_opt_state=a_opt, sums=sums)
    return new_state, metrics

  def eval_step(self, state: SearchState, batch):
    """Super-network loss/accuracy sums in eval mode (running BN statistics)."""
    (logits, _), _ = self.net.apply(state.params, state.model_state, state.alpha,
                                    batch['image'], train=False)
    return losses.classification_sums(logits, batch['label'], batch.get('mask'))

  def diagnose(self, state: SearchState, train_batch, val_batch):
    """cos(g2′, g2) and cos(g2_DARTS, g2) with g2 from the implicit solver."""
    s = self.config.search
    loss_fn = make_loss_fn(self.net, state.rng, 0.0)
    return hypergrad.diagnose(
        loss_fn, state.params, state.alpha, state.model_state, train_batch, val_batch,
        hypergrad.StepContext(lr=self.lr(state.step)), eta=s.eta, weight_decay=s.w_wd,
        solver=s.implicit_solver, maxiter=s.implicit_maxiter, ridge=s.implicit_ridge)

  def alpha_hessian(self, state: SearchState, val_batch):
    """Dominant eigenvalue of ∇²α L_val on `val_batch` (R-DARTS's collapse signal).

    L_val as the α step sees it (training-mode batch norm, the auxiliary head), without
    drop-path so that the operator is the same at every power-iteration product.
    """
    loss_fn = make_loss_fn(self.net, state.rng, self._aux_weight)
    return diagnostics.alpha_hessian_eigenvalue(
        loss_fn, state.params, state.alpha, state.model_state, val_batch,
        jax.random.fold_in(state.rng, 2), iters=self.config.search.hessian_iters)

  def genotype(self, alpha):
    return geno_lib.derive(self.spec, jax.device_get(alpha))


def _searcher_from_json(config_json, image_shape, num_classes, steps_per_epoch, mesh):
  config = ml_collections.ConfigDict(json.loads(config_json))
  return Searcher(config, image_shape, num_classes, steps_per_epoch, mesh)


def get_searcher(config, image_shape, num_classes, steps_per_epoch, mesh) -> Searcher:
  """A Searcher shared by runs of the same config in one process (compiled once)."""
  return loop.cached(_searcher_from_json, config.to_json(), tuple(image_shape), num_classes,
                     steps_per_epoch, mesh)


def search_augment(config) -> data_lib.Augment:
  """The augmentation of both search halves (α's batches as well as ω's).

  Args:
    config: an image config.

  Returns:
    DARTS's pad-4 random crop and flip (`data.flip`), plus the retraining cutout
    (`train.cutout`) with `search.consistent_regularisers`.
  """
  return data_lib.Augment(crop_padding=4, flip=bool(config.data.flip),
                          cutout_length=config_lib.search_hparams(config).cutout)


def load_search_data(config) -> tuple[data_lib.Dataset, data_lib.Dataset]:
  """(search-train, search-val): the training split cut by data.train_portion."""
  train = config_lib.image_dataset(config, 'train')
  return data_lib.search_split(train, config.data.train_portion)


# ------------------------------------------------------------------------------ hooks


class ResetEpochSums(loop.Hook):
  """Zeroes the running epoch sums at each epoch's start."""

  def begin_epoch(self, run, state):
    return state.replace(sums=jax.tree.map(jnp.zeros_like, state.sums))


class Diagnostics(loop.Hook):
  """Every `every` steps, before the step: cosines of g2′ and g2_DARTS to the implicit g2."""

  def __init__(self, searcher: Searcher, every: int):
    self.searcher, self.every = searcher, every

  def before_step(self, run, state, batch):
    if run.step % self.every == 0:
      diag = jax.device_get(self.searcher.diag_fn(state, *batch))
      run.writer.write(run.step, diag, kind='diagnostic')


class AlphaHessian(loop.Hook):
  """The dominant eigenvalue of ∇²α L_val at the start and every `every` epochs.

  Always on the same (unaugmented) search-val batch, so values compare over a run;
  recorded as kind='hessian' with the epoch it follows (0: the initial α).
  """

  def __init__(self, searcher: Searcher, val_batch, every: int):
    self.searcher, self.val_batch, self.every = searcher, val_batch, every

  def _record(self, run, state, epoch: int) -> None:
    out = jax.device_get(self.searcher.hessian_fn(state, self.val_batch))
    run.writer.write(run.step, {'epoch': epoch, 'eigenvalue': out['eigenvalue'],
                                'residual': out['residual']}, kind='hessian')

  def start(self, run, state):
    if run.step == 0:
      self._record(run, state, 0)

  def end_epoch(self, run, state):
    if (run.epoch + 1) % self.every == 0:
      self._record(run, state, run.epoch + 1)
    return state


class EpochRecord(loop.Hook):
  """At each epoch's end: the epoch record (means, super-net evaluation) and genotype files."""

  def __init__(self, searcher: Searcher, search_val, config):
    self.searcher, self.search_val, self.config = searcher, search_val, config

  def evaluate(self, state) -> dict:
    """Super-net loss and accuracy on (the first `search.eval_batches` of) search-val."""
    s, mesh = self.config.search, self.searcher.mesh
    n = data_lib.steps_per_epoch(len(self.search_val), s.batch_size, drop_remainder=False)
    n = min(n, s.eval_batches) if s.eval_batches else n
    batches = (parallel.put_batch(data_lib.batch_at(
        self.search_val, 0, i, batch_size=s.batch_size, seed=self.config.seed, shuffle=False,
        drop_remainder=False), mesh) for i in range(n))
    sums = loop.sum_batches(self.searcher.eval_fn, state, batches)
    count = max(sums['count'], 1.0)
    return {'eval_loss': sums['loss'] / count, 'eval_acc': sums['correct'] / count}

  def end_epoch(self, run, state):
    searcher = self.searcher
    sums = jax.device_get(state.sums)
    count = max(float(sums['count']), 1.0)
    genotype = searcher.genotype(state.alpha)
    alpha = jax.device_get(state.alpha)
    record = {k: float(sums[k]) / count for k in EPOCH_SUMS if k != 'count'}
    record.update(self.evaluate(state))
    record.update(geno_lib.statistics(searcher.spec, alpha, genotype))  # Normal cell & co.
    record.update({'epoch': run.epoch + 1,
                   'genotype': genotype_text.to_darts_string(genotype)})
    metrics_lib.check_finite(run.step, {k: v for k, v in record.items()
                                        if isinstance(v, float)})
    run.writer.write(run.step, record, kind='epoch')
    if run.primary:
      write_genotype(run.workdir, genotype, run.epoch + 1)
    logging.info('epoch %d: %s', run.epoch + 1, record)
    return state


class Plots(loop.Hook):
  """At each epoch's end, after its record: the search curves so far and the cell.

  Not essential: figures are not needed to continue a run, unlike the record, so a
  failure to draw or write them (a full disk) is a warning.
  """

  essential = False

  def __init__(self, searcher: Searcher):
    self.searcher = searcher

  def end_epoch(self, run, state):
    if not run.primary:
      return state
    from amdarts import plots  # matplotlib only when plotting.
    history = metrics_lib.read_jsonl(run.writer.path, kind='epoch')
    plots.search_curves(history, os.path.join(run.workdir, 'search_curves.png'))
    plots.draw_genotype(self.searcher.genotype(state.alpha),
                        os.path.join(run.workdir, 'genotype.png'))
    return state


def write_genotype(workdir: str, genotype, epoch: int | None) -> None:
  """genotype.{json,txt} at the top (epoch None) or genotypes/epoch_NNN.{json,txt}."""
  folder = workdir if epoch is None else os.path.join(workdir, 'genotypes')
  os.makedirs(folder, exist_ok=True)
  stem = 'genotype' if epoch is None else f'epoch_{epoch:03d}'
  for ext, text in (('json', genotype_text.to_json(genotype, indent=1)),
                    ('txt', genotype_text.to_darts_string(genotype) + '\n')):
    tmp = os.path.join(folder, f'.{stem}.{ext}.tmp')
    with open(tmp, 'w') as f:
      f.write(text)
    os.replace(tmp, os.path.join(folder, f'{stem}.{ext}'))  # Never a half-written file.


# ------------------------------------------------------------------------------ driver

# What the α step alone reads and writes; a divergence confined to it is α's.
_ALPHA_PARTS = frozenset({'alpha', 'alpha_opt_state', 'alpha_grad_norm', 'g1_norm',
                          'g2_norm', 'val_loss', 'val_acc'})


def blame(parts) -> str:
  """The config field most likely behind the non-finite `parts` of a search step."""
  return 'search.a_lr' if set(parts) <= _ALPHA_PARTS else 'search.w_lr'


def run(config, workdir: str, *, stop_after: int | None = None) -> Any:
  """Runs (or resumes) the search described by `config` in `workdir`.

  With `space.edge_mode='two_stage'` this is the two-stage search of Appendix B.2:
  stage 1 (edge search, `searched` mode) in `<workdir>/stage1`, which ends with its
  `topology.json`, then stage 2 (operator search on those edges, `fixed` mode,
  from scratch with the same hyper-parameters) in `<workdir>/stage2`; the final
  genotype and topology are copied to the top of `workdir`. A resumed run skips a
  finished stage 1 and resumes stage 2 from its checkpoint.

  Args:
    config: an image config (configs/base.py).
    workdir: output directory; an existing checkpoint in it is resumed.
    stop_after: stop once this many steps are done (with a checkpoint), stage 1's
      included; None runs every epoch.

  Returns:
    The genotype of the final α (the final genotype files are written only when
    every epoch is done, or when `search.stop_after_unchanged` ended the search).
  """
  with errors.user_input():
    config_lib.validate_search(config)
  if config.space.edge_mode == config_lib.TWO_STAGE:
    return _run_two_stage(config, workdir, stop_after)
  return _search(config, workdir, stop_after)[0]


def _run_two_stage(config, workdir: str, stop_after: int | None) -> Any:
  stage1, stage2 = os.path.join(workdir, 'stage1'), os.path.join(workdir, 'stage2')
  topology = os.path.join(stage1, 'topology.json')
  if os.path.exists(topology):  # Stage 1's last output: it is finished.
    genotype = genotype_text.load(os.path.join(stage1, 'genotype.json'))
    ckpt = ckpt_lib.Checkpointer(stage1)
    done = ckpt.latest_step()
    ckpt.close()
  else:
    genotype, result = _search(config_lib.stage_config(config, 1), stage1, stop_after)
    if not result.finished:
      return genotype
    done = result.step
  if stop_after is not None and stop_after <= done:
    return genotype
  genotype, result = _search(config_lib.stage_config(config, 2, os.path.abspath(topology)),
                             stage2, None if stop_after is None else stop_after - done)
  if result.finished and parallel.is_primary():
    write_genotype(workdir, genotype, None)
    shutil.copyfile(topology, os.path.join(workdir, 'topology.json'))
  return genotype


def _search(config, workdir: str, stop_after: int | None) -> tuple[Any, loop.Result]:
  """One search (a validated config, not two_stage): the final genotype and loop result."""
  s = config.search
  mesh = parallel.data_mesh()
  with errors.user_input():  # Up to here, anything wrong is in what the user gave.
    parallel.check_batch(s.batch_size, mesh, 'search.batch_size')
    search_train, search_val = load_search_data(config)  # Fails fast when data is missing.
    spe = min(len(search_train), len(search_val)) // s.batch_size
    if spe < 1:
      raise ValueError(f'search.batch_size={s.batch_size} exceeds the search split '
                       f'({min(len(search_train), len(search_val))} examples)')
  augment = search_augment(config)
  searcher = get_searcher(config, search_train.image_shape, search_train.num_classes, spe,
                          mesh)

  def get(epoch, index):
    # Independent orders for the two halves: seeds `seed` and `seed + 1`.
    return tuple(
        parallel.put_batch(data_lib.batch_at(ds, epoch, index, batch_size=s.batch_size,
                                              seed=seed, augment=augment), mesh)
        for ds, seed in ((search_train, config.seed), (search_val, config.seed + 1)))

  hooks = [ResetEpochSums()]
  if s.diag_every:
    hooks.append(Diagnostics(searcher, s.diag_every))
  if s.hessian_every:
    first = data_lib.batch_at(search_val, 0, 0, batch_size=s.batch_size, seed=config.seed,
                              shuffle=False)
    hooks.append(AlphaHessian(searcher, parallel.put_batch(first, mesh), s.hessian_every))
  hooks += [loop.LogMetrics(lambda m: f"loss {m['train_loss']:.3f} val {m['val_loss']:.3f}"),
            EpochRecord(searcher, search_val, config), Plots(searcher)]
  if s.stop_after_unchanged:
    hooks.append(loop.StopWhenUnchanged(
        lambda st: genotype_text.to_darts_string(searcher.genotype(st.alpha)),
        s.stop_after_unchanged, epoch_offset=1))
  result = loop.run(searcher.init(config.seed), lambda st, b: searcher.step_fn(st, *b),
                    loop.Batches.fixed(s.epochs, spe, get), hooks, workdir, config=config,
                    mesh=mesh, stop_after=stop_after, blame=blame)
  genotype = searcher.genotype(result.state.alpha)
  if result.finished and parallel.is_primary():
    write_genotype(workdir, genotype, None)
    if searcher.spec.has_beta:  # Last: a two-stage run takes it as stage 1's end.
      topology = geno_lib.derive_topology(searcher.spec, jax.device_get(result.state.alpha))
      tmp = os.path.join(workdir, '.topology.json.tmp')
      with open(tmp, 'w') as f:
        json.dump({k: [list(p) for p in v] for k, v in topology.items()}, f)
      os.replace(tmp, os.path.join(workdir, 'topology.json'))
    print(genotype_text.to_darts_string(genotype))
  return genotype, result
