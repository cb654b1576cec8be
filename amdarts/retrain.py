"""Retraining a discrete architecture from scratch (the evaluation stage).

    python experiments/train.py --config=configs/cifar_s1.py --genotype=DARTS_V2 \
        --workdir=/tmp/darts_v2

CIFAR follows DARTS's `train.py`: SGD with momentum, weight decay and gradient
clipping, learning rate cosine-annealed per epoch to `lr_min`, cutout, drop-path
rising linearly from 0 to `train.drop_path` over training, auxiliary head weighted by
`train.aux_weight`. ImageNet (`data.name == 'imagenet2012'` or `model.kind ==
'imagenet'`) builds `NetworkImageNet`; configs/imagenet.py holds the paper's schedule
(Section 3.2) and label smoothing.

With `search.consistency` the search network used the same depth, width, cutout,
drop-path and auxiliary head as this network (config_lib.retrain_hparams).

The run is data parallel over all devices (amdarts.parallel): one jitted step with the batch
sharded on its first axis and parameters replicated, so batch norm sees the global
batch (the step equals the single-device step). Checkpoints (orbax) are written every
`checkpoint_every_steps` and at every epoch end; a restarted run in the same workdir
resumes from the latest one and then follows exactly the uninterrupted run (batches
depend only on (seed, epoch, index), per-step keys on the step number).

Outputs in the workdir: `metrics.jsonl` (+ TensorBoard), `genotype.json`,
`checkpoints/`, and `result.json` with the final test accuracy.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import time
from typing import Any

from absl import logging
import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax

from amdarts import checkpoint as checkpoint_lib
from amdarts import data as data_lib
from amdarts import flops
from amdarts import genotype_text
from amdarts import genotypes
from amdarts import metrics as metrics_lib
from amdarts import network as network_lib
from amdarts import parallel

LR_SCHEDULES = ('cosine', 'exponential', 'linear')

# Synthetic data: train examples when data.max_examples is 0 (as the search's).
_SYNTHETIC_EXAMPLES = 512


@flax.struct.dataclass
class TrainState:
  """Everything a step changes.

  Attributes:
    step: number of steps taken.
    params: network parameters (with the auxiliary head).
    batch_stats: batch-norm running statistics.
    opt_state: optimizer state.
  """

  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any


@dataclasses.dataclass(frozen=True)
class StepConfig:
  """Hashable hyper-parameters of the jitted steps (a change recompiles).

  Attributes:
    steps_per_epoch: optimizer steps per epoch; schedules change once per epoch.
    epochs: training length.
    lr: initial learning rate.
    lr_min: final learning rate of the cosine schedule.
    lr_schedule: one of LR_SCHEDULES.
    lr_gamma: per-epoch factor of the exponential schedule.
    warmup_epochs: linear warm-up epochs.
    momentum: SGD momentum.
    wd: L2 weight decay, added to the clipped gradient as torch's SGD does.
    grad_clip: global-norm clip of the gradient (0 = off).
    drop_path: final drop-path rate.
    aux_weight: weight of the auxiliary loss (0 = not used).
    label_smoothing: label smoothing ε of the training loss.
  """

  steps_per_epoch: int
  epochs: int
  lr: float
  lr_min: float
  lr_schedule: str
  lr_gamma: float
  warmup_epochs: int
  momentum: float
  wd: float
  grad_clip: float
  drop_path: float
  aux_weight: float
  label_smoothing: float


def network_kind(config) -> str:
  """'imagenet' for ImageNet-sized inputs, else 'cifar'."""
  kind = config.model.kind
  if kind:
    if kind not in network_lib.KINDS:
      raise ValueError(f'model.kind must be one of {network_lib.KINDS}, got {kind!r}')
    return kind
  return 'imagenet' if config.data.name.startswith('imagenet') else 'cifar'


def step_config(config, steps_per_epoch: int) -> StepConfig:
  """The step hyper-parameters of `config.train`, validated.

  Raises:
    ValueError: for an unknown schedule or an out-of-range value.
  """
  t = config.train
  hp = StepConfig(
      steps_per_epoch=int(steps_per_epoch), epochs=int(t.epochs), lr=float(t.lr),
      lr_min=float(t.lr_min), lr_schedule=t.lr_schedule,
      lr_gamma=float(t.lr_gamma),
      warmup_epochs=int(t.warmup_epochs),
      momentum=float(t.momentum), wd=float(t.wd), grad_clip=float(t.grad_clip),
      drop_path=float(t.drop_path), aux_weight=float(t.aux_weight) if t.auxiliary else 0.0,
      label_smoothing=float(t.label_smoothing))
  if hp.lr_schedule not in LR_SCHEDULES:
    raise ValueError(f'train.lr_schedule must be one of {LR_SCHEDULES}, got {hp.lr_schedule!r}')
  if hp.epochs < 1 or hp.steps_per_epoch < 1:
    raise ValueError(f'need at least one epoch of at least one step, got {hp.epochs} epochs '
                     f'of {hp.steps_per_epoch} steps')
  if not 0 <= hp.drop_path < 1 or not 0 <= hp.label_smoothing < 1:
    raise ValueError('train.drop_path and train.label_smoothing must lie in [0, 1)')
  return hp


def learning_rate(hp: StepConfig, step):
  """Learning rate of `step`: constant within an epoch, as DARTS's per-epoch schedulers.

  cosine:      lr_min + (lr - lr_min)(1 + cos(π e / E)) / 2   (DARTS CIFAR)
  exponential: lr · γ^e                                      (DARTS ImageNet)
  linear:      lr · (1 - e / E)                              (the paper's ImageNet)
  During the first `warmup_epochs` epochs the rate is lr · (e + 1) / warmup instead.
  """
  epoch = jnp.asarray(step // hp.steps_per_epoch, jnp.float32)
  if hp.lr_schedule == 'cosine':
    lr = hp.lr_min + (hp.lr - hp.lr_min) * 0.5 * (1 + jnp.cos(jnp.pi * epoch / hp.epochs))
  elif hp.lr_schedule == 'exponential':
    lr = hp.lr * hp.lr_gamma**epoch
  else:
    lr = hp.lr * (1 - epoch / hp.epochs)
  if hp.warmup_epochs:
    lr = jnp.where(epoch < hp.warmup_epochs, hp.lr * (epoch + 1) / hp.warmup_epochs, lr)
  return lr


def drop_path_rate(hp: StepConfig, step):
  """DARTS: drop_path · epoch / epochs, fixed within an epoch."""
  return hp.drop_path * (step // hp.steps_per_epoch) / hp.epochs


def make_optimizer(hp: StepConfig) -> optax.GradientTransformation:
  """torch.optim.SGD(momentum, weight_decay) after clip_grad_norm, as DARTS.

  The gradient is clipped first, then the decay term wd·ω is added, then momentum:
  the order of DARTS's `clip_grad_norm` + `optimizer.step()`.
  """
  parts = [optax.clip_by_global_norm(hp.grad_clip)] if hp.grad_clip > 0 else []
  parts += [optax.add_decayed_weights(hp.wd),
            optax.sgd(functools.partial(learning_rate, hp), momentum=hp.momentum or None)]
  return optax.chain(*parts)


def cross_entropy(logits_BxK, labels_B, smoothing: float = 0.0):
  """Mean cross-entropy against (1-ε)·one-hot + ε/K (DARTS's CrossEntropyLabelSmooth)."""
  targets = jax.nn.one_hot(labels_B, logits_BxK.shape[-1])
  if smoothing:
    targets = optax.smooth_labels(targets, smoothing)
  return optax.softmax_cross_entropy(logits_BxK, targets).mean()


def init_state(net: network_lib.Network, hp: StepConfig, rng: jax.Array,
               image_shape: tuple[int, ...]) -> TrainState:
  params, batch_stats = net.init(rng, jnp.zeros((1, *image_shape), jnp.float32))
  return TrainState(jnp.zeros((), jnp.int32), params, batch_stats,
                    make_optimizer(hp).init(params))


def train_step(state: TrainState, batch: dict, rng: jax.Array, *,
               net: network_lib.Network, hp: StepConfig) -> tuple[TrainState, dict]:
  """One SGD step on a global batch.

  Args:
    state: the current state.
    batch: {'image': f32[B, H, W, C], 'label': i32[B]}.
    rng: the run's base key; the step's key is fold_in(rng, step), so a resumed run
      draws the same drop-path masks as an uninterrupted one.
    net: the network (static).
    hp: step hyper-parameters (static).

  Returns:
    (new state, metrics of this step: loss, accuracy, grad_norm, lr, drop_path).
  """
  key = jax.random.fold_in(rng, state.step)
  rate = drop_path_rate(hp, state.step)

  def loss_fn(params):
    (logits, aux_logits), batch_stats = net.apply(
        params, state.batch_stats, batch['image'], train=True, drop_path_rate=rate, rng=key)
    loss = cross_entropy(logits, batch['label'], hp.label_smoothing)
    total = loss
    if hp.aux_weight and aux_logits is not None:
      total = loss + hp.aux_weight * cross_entropy(aux_logits, batch['label'],
                                                   hp.label_smoothing)
    return total, (loss, logits, batch_stats)

  (total, (loss, logits, batch_stats)), grads = jax.value_and_grad(
      loss_fn, has_aux=True)(state.params)
  updates, opt_state = make_optimizer(hp).update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  metrics = {
      'loss': total,
      'ce_loss': loss,
      'accuracy': jnp.mean(jnp.argmax(logits, -1) == batch['label']),
      'grad_norm': jnp.sqrt(sum(jnp.sum(g * g) for g in jax.tree.leaves(grads))),
      'lr': learning_rate(hp, state.step),
      'drop_path': jnp.asarray(rate, jnp.float32),
  }
  return TrainState(state.step + 1, params, batch_stats, opt_state), metrics


def eval_step(state: TrainState, batch: dict, *, net: network_lib.Network) -> dict:
  """Sums over the real (mask = 1) examples of a batch: loss, top-1, top-5 hits.

  Returns:
    {'loss': Σ CE, 'correct': Σ top-1 hits, 'correct5': Σ top-5 hits, 'count': Σ mask}.
  """
  (logits, _), _ = net.apply(state.params, state.batch_stats, batch['image'], train=False)
  mask = batch.get('mask', jnp.ones(logits.shape[:1]))
  labels = batch['label']
  ce = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
  k = min(5, logits.shape[-1])
  top5 = jnp.any(jax.lax.top_k(logits, k)[1] == labels[:, None], axis=-1)
  return {
      'loss': jnp.sum(ce * mask),
      'correct': jnp.sum((jnp.argmax(logits, -1) == labels) * mask),
      'correct5': jnp.sum(top5 * mask),
      'count': jnp.sum(mask),
  }


@functools.lru_cache(maxsize=8)
def compiled_steps(net: network_lib.Network, hp: StepConfig, mesh: jax.sharding.Mesh):
  """Jitted (train_step, eval_step) for a mesh: batch sharded on axis 0, rest replicated.

  Cached on its hashable arguments, so runs with the same setting in one process (a
  resumed run, tests) share the compiled code.
  """
  replicated, sharded = parallel.replicated(mesh), parallel.batch_sharded(mesh)
  train = jax.jit(functools.partial(train_step, net=net, hp=hp),
                  in_shardings=(replicated, sharded, replicated),
                  out_shardings=(replicated, replicated), donate_argnums=0)
  evaluate = jax.jit(functools.partial(eval_step, net=net),
                     in_shardings=(replicated, sharded), out_shardings=replicated)
  return train, evaluate


def load_datasets(config) -> tuple[Any, Any]:
  """(full train split, test split) of `config.data`.

  Synthetic data has data.max_examples (or 512) training and a quarter as many test
  examples, shaped by data.image_shape / data.num_classes.
  """
  d = config.data
  kwargs = {'data_dir': d.data_dir or None}
  if d.name == 'synthetic':
    n = d.max_examples or _SYNTHETIC_EXAMPLES
    kwargs = dict(image_shape=tuple(d.image_shape), num_classes=d.num_classes, seed=config.seed)
    train = data_lib.load_dataset('synthetic', 'train', num_examples=n, **kwargs)
    test = data_lib.load_dataset('synthetic', 'test', num_examples=max(n // 4, 1), **kwargs)
    return train, test
  if d.name != 'fashion_mnist':  # tfds: ImageNet needs a fixed size.
    kwargs['image_size'] = int(d.image_size) or None
  train = data_lib.load_dataset(d.name, 'train', **kwargs)
  test = data_lib.load_dataset(d.name, 'test', **kwargs)
  if d.max_examples and len(train) > d.max_examples:
    train = train.subset(np.arange(d.max_examples))
  return train, test


def create_network(config, genotype: genotypes.AnyGenotype, num_classes: int,
                   c: int | None = None) -> network_lib.Network:
  """The retrain network of `config.model` / `config.train` for `genotype`."""
  m = config.model
  return network_lib.Network.create(
      genotype, kind=network_kind(config), num_cells=m.cells, c=m.c if c is None else c,
      num_classes=num_classes, auxiliary=bool(config.train.auxiliary),
      stem_multiplier=m.stem_multiplier, depthwise=m.depthwise)


def load_genotype(spec: str) -> genotypes.AnyGenotype:
  if not spec:
    raise ValueError('no genotype: set --genotype (or config.train.genotype) to a '
                     f'genotype file or one of {sorted(genotypes.NAMED)}')
  return genotype_text.load(spec)


def evaluate(eval_fn, state: TrainState, dataset, batch_size: int,
             mesh: jax.sharding.Mesh) -> dict:
  """Loss, top-1 and top-5 accuracy over a whole split (last batch padded and masked)."""
  totals = None
  for batch in data_lib.epoch_batches(dataset, batch_size=batch_size, shuffle=False,
                                      drop_remainder=False):
    sums = eval_fn(state, parallel.put_batch(batch, mesh))
    totals = sums if totals is None else jax.tree.map(jnp.add, totals, sums)
  totals = jax.device_get(totals)
  count = float(totals['count'])
  return {'loss': float(totals['loss']) / count, 'accuracy': float(totals['correct']) / count,
          'top5': float(totals['correct5']) / count, 'count': int(count)}


def _checkpoint_tree(state: TrainState, rng: jax.Array) -> dict:
  """The checkpointed pytree: the state's fields plus the run's base key."""
  tree = {f.name: getattr(state, f.name) for f in dataclasses.fields(state)}
  return {**tree, 'rng': rng}


def train_and_evaluate(config, workdir: str, *, max_steps: int | None = None) -> dict | None:
  """Retrains `config.train.genotype` and evaluates it on the test split.

  Args:
    config: the run's ConfigDict (configs/base.py).
    workdir: output directory; an existing checkpoint in it is resumed.
    max_steps: stop after this many steps in total (with a checkpoint), e.g. to
      split a long run over several jobs; None runs all `train.epochs`.

  Returns:
    The contents of `result.json` ({'test_accuracy', 'test_top5', 'test_loss',
    'params', 'macs', ...}), or None when stopped by `max_steps` before the end.
  """
  if config.task == 'ptb':
    from amdarts.rnn import train as rnn_train  # The recurrent cell's evaluation.
    return rnn_train.run(config, workdir, stop_after=max_steps)
  # Everything that can be wrong with the config fails here, before data or compile.
  genotype = load_genotype(config.train.genotype)
  t = config.train
  eval_bs = int(t.eval_batch_size) or t.batch_size
  mesh = parallel.data_mesh()
  parallel.check_batch(t.batch_size, mesh, 'train.batch_size')
  parallel.check_batch(eval_bs, mesh, 'train.eval_batch_size')
  c = config.model.c
  if c == 0 and network_kind(config) == 'imagenet':
    image_size = int(config.data.image_size) or 224
    width = flops.choose_width(genotype, num_cells=config.model.cells, image_size=image_size)
    c = width.c
    logging.info('mobile setting: %s', flops.format_profile(width))
  create_network(config, genotype, num_classes=1, c=c)  # Validates depth, width, ops.
  step_config(config, steps_per_epoch=1)  # Validates the schedule.

  train_ds, test_ds = load_datasets(config)
  net = create_network(config, genotype, train_ds.num_classes, c)
  steps_per_epoch = data_lib.steps_per_epoch(len(train_ds), t.batch_size)
  hp = step_config(config, steps_per_epoch)
  total_steps = hp.epochs * steps_per_epoch
  train_fn, eval_fn = compiled_steps(net, hp, mesh)

  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, 'genotype.json'), 'w') as f:
    f.write(genotype_text.to_json(genotype, indent=1))
  k_init, rng = jax.random.split(jax.random.PRNGKey(config.seed))
  state = init_state(net, hp, k_init, train_ds.image_shape)
  ckpt = checkpoint_lib.Checkpointer(workdir, max_to_keep=config.keep_checkpoints)
  epoch, index = 0, 0
  metrics_path = os.path.join(workdir, 'metrics.jsonl')
  if ckpt.latest_step() is not None:
    restored, meta = ckpt.restore(_checkpoint_tree(state, rng))
    if meta.get('genotype') != genotype_text.to_json(genotype):
      raise checkpoint_lib.CheckpointError(
          f'{ckpt.directory} holds a run of another genotype; use a new --workdir')
    rng = jnp.asarray(restored.pop('rng'))
    state = TrainState(**restored)
    epoch, index = int(meta['epoch']), int(meta['index'])
    metrics_lib.truncate_after(metrics_path, int(state.step))
    logging.info('resumed from step %d (epoch %d, batch %d)', int(state.step), epoch, index)
  state, rng = parallel.put_replicated((state, rng), mesh)

  # Pad-4 random crops are CIFAR's; ImageNet images come resized and centre-cropped.
  crop = 4 if network_kind(config) == 'cifar' else 0
  augment = data_lib.Augment(crop_padding=crop, flip=bool(config.data.flip),
                             cutout_length=int(t.cutout))
  batches = data_lib.Batches(train_ds, t.batch_size, seed=config.seed, augment=augment,
                             epoch=epoch, index=index)
  writer = metrics_lib.MetricWriter(workdir)
  step = int(state.step)
  progress = metrics_lib.Progress(total_steps, start=step)
  stop = total_steps if max_steps is None else min(max_steps, total_steps)
  logging.info('C=%d, %d parameters; %d steps of %d examples (%d epochs)', c,
               flops.count_params(state.params), total_steps, t.batch_size, hp.epochs)

  def save():
    position = batches.position
    meta = {'epoch': position[0], 'index': position[1],
            'genotype': genotype_text.to_json(genotype)}
    ckpt.save(step, _checkpoint_tree(state, rng), meta)

  t0, result = time.time(), None
  try:
    while step < stop:
      state, step_metrics = train_fn(state, parallel.put_batch(next(batches), mesh), rng)
      step += 1
      epoch_end = step % steps_per_epoch == 0
      if step % config.log_every_steps == 0 or epoch_end or step == stop:
        values = {k: float(v) for k, v in jax.device_get(step_metrics).items()}
        metrics_lib.check_finite(step, values)
        values['epoch'] = (step - 1) // steps_per_epoch
        values['steps_per_sec'] = (step - progress.start) / max(time.time() - t0, 1e-9)
        writer.write(step, values)
        progress.update(step, f'loss {values["loss"]:.3f} acc {values["accuracy"]:.3f}')
      if epoch_end:
        result = evaluate(eval_fn, state, test_ds, eval_bs, mesh)
        writer.write(step, {**result, 'epoch': step // steps_per_epoch - 1}, kind='eval')
      if epoch_end or step % config.checkpoint_every_steps == 0 or step == stop:
        save()
    progress.close()
    ckpt.wait()
    if step < total_steps:
      return None
    if result is None:  # Restarted after the last epoch: its evaluation is not at hand.
      result = evaluate(eval_fn, state, test_ds, eval_bs, mesh)
  finally:
    writer.close()
    ckpt.close()
  size = flops.network_profile(
      dataclasses.replace(net, module=net.module.clone(depthwise='native')),
      train_ds.image_shape)
  out = {
      'test_accuracy': result['accuracy'], 'test_top5': result['top5'],
      'test_loss': result['loss'], 'test_examples': result['count'], 'steps': step,
      'epochs': hp.epochs, 'c': c, 'params': size.params, 'macs': size.macs,
      'genotype': json.loads(genotype_text.to_json(genotype)),
  }
  with open(os.path.join(workdir, 'result.json'), 'w') as f:
    json.dump(out, f, indent=1)
  print(f'test accuracy {100 * result["accuracy"]:.2f}% (top-5 {100 * result["top5"]:.2f}%) '
        f'on {result["count"]} examples; {flops.format_profile(size)}')
  return out
