"""Deterministic batches: batch `index` of `epoch` is a pure function of (seed, epoch, index).

A batch is {'image': f32[B,H,W,C], 'label': i32[B]}, plus 'mask': f32[B] when
drop_remainder=False.

    steps_per_epoch(num_examples, batch_size, drop_remainder=True)
    epoch_permutation(num_examples, seed, epoch);  batch_rng(seed, epoch, index)
    batch_at(dataset, epoch, index, *, batch_size, seed, augment=None, shuffle=True,
             drop_remainder=True)
    epoch_batches(dataset, epoch=0, *, batch_size, seed=0, ...) -> one epoch, in order
    Batches(dataset, batch_size, *, seed, ..., epoch=0, index=0): endless iterator whose
      `position` (epoch, index) is what a checkpoint stores to resume the same stream.

A batch never depends on what was drawn before, so a resumed run sees exactly the
batches of an uninterrupted one. Batches are global; splitting them across devices
is the caller's job.
"""

from __future__ import annotations

import functools
from typing import Iterator

import numpy as np

from amdarts.data import augment as augment_lib
from amdarts.data import datasets
from amdarts.data import seeds


def steps_per_epoch(num_examples: int, batch_size: int, drop_remainder: bool = True) -> int:
  """Batches per epoch: floor(N / B), or ceil(N / B) keeping the last partial batch."""
  if batch_size < 1:
    raise ValueError(f'batch_size must be positive, got {batch_size}')
  return num_examples // batch_size if drop_remainder else -(-num_examples // batch_size)


@functools.lru_cache(maxsize=8)
def epoch_permutation(num_examples: int, seed: int, epoch: int) -> np.ndarray:
  """The example order of `epoch`: a permutation depending only on (seed, epoch).

  Cached, since every batch of an epoch needs it; the result is read-only.
  """
  rng = np.random.default_rng(seeds.sequence(seed, seeds.PERMUTATION, epoch))
  order = rng.permutation(num_examples)
  order.flags.writeable = False
  return order


def batch_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
  """The augmentation generator of batch `index` of `epoch`."""
  return np.random.default_rng(seeds.sequence(seed, seeds.AUGMENT, epoch, index))


def batch_at(
    dataset: datasets.Dataset,
    epoch: int,
    index: int,
    *,
    batch_size: int,
    seed: int,
    augment: augment_lib.Augment | None = None,
    shuffle: bool = True,
    drop_remainder: bool = True,
) -> dict[str, np.ndarray]:
  """Batch number `index` of `epoch`: a pure function of its arguments.

  Args:
    dataset: the examples.
    epoch: epoch number (selects the permutation).
    index: batch number within the epoch, in [0, steps_per_epoch).
    batch_size: global batch size B.
    seed: seed of the stream; use different seeds for different streams (e.g.
      search-train and search-val) so their orders are independent.
    augment: augmentation to apply; None only normalises (evaluation).
    shuffle: permute each epoch; False keeps the dataset order (evaluation).
    drop_remainder: drop the last partial batch; when False it is padded to B by
      repeating its first example and the batch gets 'mask' (1 real, 0 padding).

  Returns:
    {'image': f32[B, H, W, C], 'label': i32[B]} (+ 'mask': f32[B]).
  """
  n = len(dataset)
  steps = steps_per_epoch(n, batch_size, drop_remainder)
  if not 0 <= index < steps:
    raise IndexError(f'batch {index} out of range: {steps} batches of {batch_size} in {n} examples')
  order = epoch_permutation(n, seed, epoch) if shuffle else np.arange(n)
  indices = order[index * batch_size:(index + 1) * batch_size]
  if augment is None:
    images, labels = dataset.take(indices)
    x = augment_lib.normalize(images, dataset.mean, dataset.std)
  else:
    rng = batch_rng(seed, epoch, index)
    crop = None
    if augment.resized_crop:
      # One generator per example: the reading threads' order cannot change the crops.
      crop_seeds = rng.integers(0, 2**63, len(indices))
      crop = lambda image, k: augment_lib.random_resized_crop(
          image, np.random.default_rng(crop_seeds[k]), augment.resized_crop)
    images, labels = dataset.take(indices, crop)
    x = augment_lib.augment_batch(images, rng, augment, dataset.mean, dataset.std)
  batch = {'image': x, 'label': labels.astype(np.int32, copy=False)}
  if not drop_remainder:
    real = len(indices)
    # Fixed shapes keep a jitted eval step from recompiling on the last batch.
    pad = np.zeros(batch_size - real, np.int64)
    batch = {k: np.concatenate([v, v[pad]]) for k, v in batch.items()}
    batch['mask'] = (np.arange(batch_size) < real).astype(np.float32)
  return batch


def epoch_batches(
    dataset: datasets.Dataset,
    epoch: int = 0,
    *,
    batch_size: int,
    seed: int = 0,
    augment: augment_lib.Augment | None = None,
    shuffle: bool = True,
    drop_remainder: bool = True,
) -> Iterator[dict[str, np.ndarray]]:
  """Yields the batches of one epoch in order (see `batch_at`)."""
  for index in range(steps_per_epoch(len(dataset), batch_size, drop_remainder)):
    yield batch_at(
        dataset,
        epoch,
        index,
        batch_size=batch_size,
        seed=seed,
        augment=augment,
        shuffle=shuffle,
        drop_remainder=drop_remainder,
    )


class Batches:
  """Endless training stream of `batch_at` batches, resumable from `position`.

  Example:
    batches = data_lib.Batches(train, 64, seed=1, augment=data_lib.Augment(), epoch=e,
                               index=i)
    batch = next(batches)          # batch i of epoch e
    checkpoint(batches.position)   # the (epoch, index) of the next batch
  """

  def __init__(
      self,
      dataset: datasets.Dataset,
      batch_size: int,
      *,
      seed: int,
      augment: augment_lib.Augment | None = None,
      shuffle: bool = True,
      epoch: int = 0,
      index: int = 0,
  ):
    """Starts the stream at batch `index` of `epoch`.

    Args:
      dataset: the examples.
      batch_size: global batch size.
      seed: seed of the stream.
      augment: augmentation, or None.
      shuffle: permute each epoch.
      epoch: epoch of the first batch.
      index: index of the first batch within `epoch`.
    """
    self.dataset = dataset
    self.batch_size = batch_size
    self.seed = seed
    self.augment = augment
    self.shuffle = shuffle
    self.steps_per_epoch = steps_per_epoch(len(dataset), batch_size)
    if self.steps_per_epoch == 0:
      raise ValueError(f'{len(dataset)} examples make no batch of {batch_size}')
    if not 0 <= index < self.steps_per_epoch:
      raise ValueError(f'index {index} not in [0, {self.steps_per_epoch})')
    self.epoch, self.index = epoch, index

  @property
  def position(self) -> tuple[int, int]:
    """(epoch, index) of the next batch."""
    return self.epoch, self.index

  def __iter__(self) -> Batches:
    return self

  def __next__(self) -> dict[str, np.ndarray]:
    batch = batch_at(
        self.dataset,
        self.epoch,
        self.index,
        batch_size=self.batch_size,
        seed=self.seed,
        augment=self.augment,
        shuffle=self.shuffle,
    )
    self.index += 1
    if self.index == self.steps_per_epoch:
      self.epoch, self.index = self.epoch + 1, 0
    return batch
