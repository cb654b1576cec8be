"""Retraining a discrete architecture from scratch (the evaluation stage).

    python experiments/train.py --config=configs/cifar_s1.py --genotype=DARTS_V2 \
        --workdir=/tmp/darts_v2

CIFAR follows DARTS's `train.py`: SGD with momentum, weight decay and gradient
clipping, learning rate cosine-annealed per epoch to `w_lr_min`, cutout, drop-path
rising linearly from 0 to `train.drop_path` over training, auxiliary head weighted by
`train.aux_weight`. ImageNet (`data.name == 'imagenet2012'` or `model.kind ==
'imagenet'`) builds `NetworkImageNet`; configs/imagenet.py holds the paper's schedule
(Section 3.2) and label smoothing.

With `search.consistent_regularisers` the search used this network's cutout,
drop-path schedule and auxiliary head, and with `search.consistent_size` its depth and
width (config_lib.search_hparams).

The run is data parallel over all devices (amdarts.parallel): one jitted step with the batch
sharded on its first axis and parameters replicated, so batch norm sees the global
batch (the step equals the single-device step). `amdarts.loop` runs it: checkpoints
every `checkpoint_every_steps` and at every epoch end, and a restarted run in the same
workdir resumes from the latest one and then follows exactly the uninterrupted run
(batches depend only on (seed, epoch, index), per-step keys on the step number).

Outputs in the workdir: `metrics.jsonl` (+ TensorBoard), `genotype.json`,
`checkpoints/`, `config.json` and `result.json` with the final test accuracy.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from typing import Any

from absl import logging
import flax
import jax
import jax.numpy as jnp
import optax

from amdarts import config_lib
from amdarts import data as data_lib
from amdarts import errors
from amdarts import flops
from amdarts import genotype_text
from amdarts import genotypes
from amdarts import loop
from amdarts import losses
from amdarts import network as network_lib
from amdarts import optim
from amdarts import parallel


@flax.struct.dataclass
class TrainState:
  """Everything a step changes, and the run's key.

  Attributes:
    step: i32[] steps taken.
    params: network parameters (with the auxiliary head).
    model_state: batch-norm running statistics.
    opt_state: the SGD state (momentum buffer).
    rng: the run's base key; each step folds its step number in.
  """

  step: jax.Array
  params: Any
  model_state: Any
  opt_state: Any
  rng: jax.Array


@dataclasses.dataclass(frozen=True)
class StepConfig:
  """Hashable hyper-parameters of the jitted steps (a change recompiles).

  Attributes:
    steps_per_epoch: optimizer steps per epoch; schedules change once per epoch.
    epochs: training length.
    w_lr: initial learning rate.
    w_lr_min: final learning rate of the cosine schedule.
    w_lr_schedule: one of optim.SCHEDULES.
    w_lr_gamma: per-epoch factor of the exponential schedule.
    warmup_epochs: linear warm-up epochs.
    w_momentum: SGD momentum.
    w_wd: L2 weight decay, added to the clipped gradient as torch's SGD does.
    grad_clip: global-norm clip of the gradient (0 = off).
    drop_path: final drop-path rate.
    aux_weight: weight of the auxiliary loss (0 = not used).
    label_smoothing: label smoothing ε of the training loss.
  """

  steps_per_epoch: int
  epochs: int
  w_lr: float
  w_lr_min: float
  w_lr_schedule: str
  w_lr_gamma: float
  warmup_epochs: int
  w_momentum: float
  w_wd: float
  grad_clip: float
  drop_path: float
  aux_weight: float
  label_smoothing: float

  def learning_rate(self) -> optax.Schedule:
    return optim.epoch_schedule(
        self.w_lr_schedule, base=self.w_lr, minimum=self.w_lr_min, gamma=self.w_lr_gamma,
        warmup_epochs=self.warmup_epochs, epochs=self.epochs,
        steps_per_epoch=self.steps_per_epoch)

  def optimizer(self) -> optax.GradientTransformation:
    return optim.sgd(momentum=self.w_momentum, weight_decay=self.w_wd,
                     grad_clip=self.grad_clip)


def network_kind(config) -> str:
  """'imagenet' for ImageNet-sized inputs, else 'cifar'."""
  kind = config.model.kind
  if kind:
    if kind not in network_lib.KINDS:
      raise ValueError(f'model.kind must be one of {network_lib.KINDS}, got {kind!r}')
    return kind
  return 'imagenet' if config.data.name.startswith('imagenet') else 'cifar'


def step_config(config, steps_per_epoch: int) -> StepConfig:
  """The step hyper-parameters of `config.train`.

  Raises:
    ValueError: when the data make no step per epoch.
  """
  t = config.train
  hp = StepConfig(
      steps_per_epoch=int(steps_per_epoch), epochs=int(t.epochs), w_lr=float(t.w_lr),
      w_lr_min=float(t.w_lr_min), w_lr_schedule=t.w_lr_schedule,
      w_lr_gamma=float(t.w_lr_gamma), warmup_epochs=int(t.warmup_epochs),
      w_momentum=float(t.w_momentum), w_wd=float(t.w_wd), grad_clip=float(t.grad_clip),
      drop_path=float(t.drop_path), aux_weight=float(t.aux_weight) if t.auxiliary else 0.0,
      label_smoothing=float(t.label_smoothing))
  hp.learning_rate()  # Raises for no epochs or no steps per epoch.
  return hp


def drop_path_rate(hp: StepConfig, step):
  """DARTS: drop_path · epoch / epochs, fixed within an epoch (`optim.drop_path_schedule`)."""
  return optim.drop_path_schedule(hp.drop_path, epochs=hp.epochs,
                                  steps_per_epoch=hp.steps_per_epoch)(step)


def init_state(net: network_lib.Network, hp: StepConfig, seed: int,
               image_shape: tuple[int, ...]) -> TrainState:
  k_init, k_run = jax.random.split(jax.random.PRNGKey(seed))
  params, batch_stats = net.init(k_init, jnp.zeros((1, *image_shape), jnp.float32))
  return TrainState(jnp.zeros((), jnp.int32), params, batch_stats,
                    hp.optimizer().init(params), k_run)


def train_step(state: TrainState, batch: dict, *, net: network_lib.Network,
               hp: StepConfig) -> tuple[TrainState, dict]:
  """One SGD step on a global batch.

  Args:
    state: the current state; the step's key is fold_in(state.rng, step), so a
      resumed run draws the same drop-path masks as an uninterrupted one.
    batch: {'image': f32[B, H, W, C], 'label': i32[B]}.
    net: the network (static).
    hp: step hyper-parameters (static).

  Returns:
    (new state, metrics of this step: loss, accuracy, grad_norm, lr, drop_path).
  """
  key = jax.random.fold_in(state.rng, state.step)
  rate = drop_path_rate(hp, state.step)
  lr = hp.learning_rate()(state.step)

  def loss_fn(params):
    (logits, aux_logits), batch_stats = net.apply(
        params, state.model_state, batch['image'], train=True, drop_path_rate=rate, rng=key)
    loss = losses.cross_entropy(logits, batch['label'], hp.label_smoothing)
    total = loss
    if hp.aux_weight and aux_logits is not None:
      total = loss + hp.aux_weight * losses.cross_entropy(aux_logits, batch['label'],
                                                          hp.label_smoothing)
    return total, (loss, logits, batch_stats)

  (total, (loss, logits, batch_stats)), grads = jax.value_and_grad(
      loss_fn, has_aux=True)(state.params)
  direction, opt_state = hp.optimizer().update(grads, state.opt_state, state.params)
  params = optim.apply_lr(state.params, direction, lr)
  metrics = {
      'loss': total,
      'ce_loss': loss,
      'accuracy': losses.accuracy(logits, batch['label']),
      'grad_norm': optax.tree.norm(grads),
      'lr': lr,
      'drop_path': jnp.asarray(rate, jnp.float32),
  }
  return state.replace(step=state.step + 1, params=params, model_state=batch_stats,
                       opt_state=opt_state), metrics


def eval_step(state: TrainState, batch: dict, *, net: network_lib.Network) -> dict:
  """Sums over the real (mask = 1) examples of a batch (losses.classification_sums)."""
  (logits, _), _ = net.apply(state.params, state.model_state, batch['image'], train=False)
  return losses.classification_sums(logits, batch['label'], batch.get('mask'))


def compile_steps(net: network_lib.Network, hp: StepConfig, mesh: jax.sharding.Mesh):
  """Jitted (train_step, eval_step) for a mesh: batch sharded on axis 0, rest replicated."""
  return (parallel.jit(functools.partial(train_step, net=net, hp=hp), mesh, donate_state=True),
          parallel.jit(functools.partial(eval_step, net=net), mesh))


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
  batches = (parallel.put_batch(b, mesh) for b in data_lib.epoch_batches(
      dataset, batch_size=batch_size, shuffle=False, drop_remainder=False))
  totals = loop.sum_batches(eval_fn, state, batches)
  count = totals['count']
  return {'loss': totals['loss'] / count, 'accuracy': totals['correct'] / count,
          'top5': totals['correct5'] / count, 'count': int(count)}


class GenotypeFile(loop.Hook):
  """`<workdir>/genotype.json`: the cell trained, written once the workdir is this run's."""

  def __init__(self, genotype: genotypes.AnyGenotype):
    self.genotype = genotype

  def start(self, run, state):
    if run.primary:
      with open(os.path.join(run.workdir, 'genotype.json'), 'w') as f:
        f.write(genotype_text.to_json(self.genotype, indent=1))


class TestEvaluation(loop.Hook):
  """At each epoch's end: the test-split evaluation, recorded as kind='eval'."""

  def __init__(self, eval_fn, dataset, batch_size: int, mesh):
    self.eval_fn, self.dataset, self.batch_size, self.mesh = eval_fn, dataset, batch_size, mesh
    self.last = None  # The latest evaluation of this call; None until an epoch ends.

  def evaluate(self, state) -> dict:
    return evaluate(self.eval_fn, state, self.dataset, self.batch_size, self.mesh)

  def end_epoch(self, run, state):
    self.last = self.evaluate(state)
    run.writer.write(run.step, {**self.last, 'epoch': run.epoch}, kind='eval')
    return state


def train_augment(config, image_shape) -> data_lib.Augment:
  """The training augmentation of `config` for images of `image_shape`.

  Pad-4 random crops are CIFAR's; ImageNet-sized networks get the random-resized
  crop (`train.resized_crop`) or, without it, the resized, centre-cropped images.
  """
  t = config.train
  resized = int(image_shape[0]) if t.resized_crop else 0
  padded = 4 if network_kind(config) == 'cifar' and not resized else 0
  return data_lib.Augment(crop_padding=padded, flip=bool(config.data.flip),
                          cutout_length=int(t.cutout), resized_crop=resized,
                          color_jitter=tuple(float(v) for v in t.color_jitter))


def train_and_evaluate(config, workdir: str, *, stop_after: int | None = None) -> dict | None:
  """Retrains `config.train.genotype` and evaluates it on the test split.

  Args:
    config: the run's ConfigDict (configs/base.py).
    workdir: output directory; an existing checkpoint in it is resumed.
    stop_after: stop once this many steps are done (with a checkpoint), e.g. to
      split a long run over several jobs; None runs all `train.epochs`.

  Returns:
    The contents of `result.json` ({'test_accuracy', 'test_top5', 'test_loss',
    'params', 'macs', ...}), or None when stopped by `stop_after` before the end.
  """
  t = config.train
  mesh = parallel.data_mesh()
  # Everything that can be wrong with the input fails here, before a step compiles.
  with errors.user_input():
    config_lib.validate_train(config)
    eval_bs = t.eval_batch_size or t.batch_size
    genotype = load_genotype(config.train.genotype)
    parallel.check_batch(t.batch_size, mesh, 'train.batch_size')
    parallel.check_batch(eval_bs, mesh, 'train.eval_batch_size')
    c = config.model.c
    if c == 0 and network_kind(config) != 'imagenet':
      raise ValueError('model.c=0 (choose the width) is for ImageNet networks only; '
                       'give model.c >= 1')
    if c == 0:
      image_size = int(config.data.image_size) or 224
      width = flops.choose_width(genotype, num_cells=config.model.cells,
                                 image_size=image_size)
      c = width.c
      logging.info('mobile setting: %s', flops.format_profile(width))
    create_network(config, genotype, num_classes=1, c=c)  # Validates depth, width, ops.

    train_ds = config_lib.image_dataset(config, 'train')
    test_ds = config_lib.image_dataset(config, 'test')
    if t.batch_size > len(train_ds):
      raise ValueError(f'train.batch_size={t.batch_size} is larger than the training data '
                       f'({len(train_ds)} examples): no step would run')
  net = create_network(config, genotype, train_ds.num_classes, c)
  steps_per_epoch = data_lib.steps_per_epoch(len(train_ds), t.batch_size)
  hp = step_config(config, steps_per_epoch)
  train_fn, eval_fn = loop.cached(compile_steps, net, hp, mesh)

  augment = train_augment(config, train_ds.image_shape)

  def get(epoch, index):
    return parallel.put_batch(data_lib.batch_at(
        train_ds, epoch, index, batch_size=t.batch_size, seed=config.seed, augment=augment),
        mesh)

  state = init_state(net, hp, config.seed, train_ds.image_shape)
  logging.info('C=%d, %d parameters; %d steps of %d examples (%d epochs)', c,
               flops.count_params(state.params), hp.epochs * steps_per_epoch, t.batch_size,
               hp.epochs)
  test_eval = TestEvaluation(eval_fn, test_ds, eval_bs, mesh)
  hooks = [GenotypeFile(genotype),
           loop.LogMetrics(lambda m: f"loss {m['loss']:.3f} acc {m['accuracy']:.3f}"),
           test_eval]
  result = loop.run(state, train_fn, loop.Batches.fixed(hp.epochs, steps_per_epoch, get),
                    hooks, workdir, config=config, mesh=mesh, stop_after=stop_after,
                    fingerprint={'genotype': genotype_text.to_json(genotype)},
                    blame=lambda parts: 'train.w_lr')
  if not result.finished:
    return None
  # Restarted after the last epoch: its evaluation is not at hand.
  test = test_eval.last or test_eval.evaluate(result.state)
  size = flops.network_profile(
      dataclasses.replace(net, module=net.module.clone(depthwise='native')),
      train_ds.image_shape)
  out = {
      'test_accuracy': test['accuracy'], 'test_top5': test['top5'],
      'test_loss': test['loss'], 'test_examples': test['count'], 'steps': result.step,
      'epochs': hp.epochs, 'c': c, 'params': size.params, 'macs': size.macs,
      'genotype': json.loads(genotype_text.to_json(genotype)),
  }
  if parallel.is_primary():
    with open(os.path.join(workdir, 'result.json'), 'w') as f:
      json.dump(out, f, indent=1)
  print(f'test accuracy {100 * test["accuracy"]:.2f}% (top-5 {100 * test["top5"]:.2f}%) '
        f'on {test["count"]} examples; {flops.format_profile(size)}')
  return out
