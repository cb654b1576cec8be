"""Tests of amdarts.data.batching: batches are pure functions of (seed, epoch, index)."""

import numpy as np

from amdarts import data as data_lib


def test_batch_at_is_a_function_of_seed_epoch_index(indexed_dataset):
  ds = indexed_dataset(50)
  kw = dict(batch_size=8, seed=5, augment=data_lib.Augment(crop_padding=1, cutout_length=2))
  assert data_lib.steps_per_epoch(50, 8) == 6
  first = data_lib.batch_at(ds, 2, 3, **kw)
  data_lib.batch_at(ds, 0, 0, **kw)  # drawing other batches in between changes nothing
  again = data_lib.batch_at(ds, 2, 3, **kw)
  for key in ('image', 'label'):
    np.testing.assert_array_equal(first[key], again[key])
  assert first['image'].shape == (8, 4, 4, 3) and first['image'].dtype == np.float32
  assert first['label'].dtype == np.int32
  orders = [np.concatenate([b['label'] for b in data_lib.epoch_batches(ds, e, **kw)]) for e in (0, 1)]
  for order in orders:  # 48 of 50 examples (drop_remainder), none twice
    assert len(order) == 48 and len(set(order)) == 48
  assert not np.array_equal(orders[0], orders[1])
  other_seed = data_lib.batch_at(ds, 2, 3, **{**kw, 'seed': 6})
  assert not np.array_equal(first['label'], other_seed['label'])
  # Identical examples: batches differ only if each batch draws its own augmentation.
  same = data_lib.ArrayDataset(np.repeat(ds.images[:1], 16, axis=0), np.zeros(16), 1, ds.mean, ds.std)
  a, b = (data_lib.batch_at(same, 0, i, **kw)['image'] for i in (0, 1))
  assert not np.array_equal(a, b)


def test_eval_batches_keep_remainder_with_mask(indexed_dataset):
  ds = indexed_dataset(10)
  batches = list(data_lib.epoch_batches(ds, batch_size=4, shuffle=False, drop_remainder=False))
  assert len(batches) == 3 == data_lib.steps_per_epoch(10, 4, drop_remainder=False)
  np.testing.assert_array_equal(batches[2]['mask'], [1, 1, 0, 0])
  assert batches[2]['image'].shape == (4, 4, 4, 3)
  real = np.concatenate([b['label'][b['mask'] == 1] for b in batches])
  np.testing.assert_array_equal(real, np.arange(10))
  np.testing.assert_array_equal(batches[0]['image'], data_lib.normalize(ds.images[:4], ds.mean, ds.std))


def test_batches_resume_from_position(indexed_dataset):
  ds = indexed_dataset(20)
  aug = data_lib.Augment(crop_padding=1)
  stream = data_lib.Batches(ds, 6, seed=1, augment=aug)  # 3 batches per epoch
  run = [next(stream) for _ in range(8)]
  assert stream.position == (2, 2)
  resumed = data_lib.Batches(ds, 6, seed=1, augment=aug, epoch=1, index=1)
  for expected in run[4:]:
    got = next(resumed)
    np.testing.assert_array_equal(got['label'], expected['label'])
    np.testing.assert_array_equal(got['image'], expected['image'])
  assert resumed.position == stream.position
