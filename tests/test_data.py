"""Tests of amdarts.data: sources, splits, augmentation and deterministic batches."""

import gzip
import json
import os
import shutil
from unittest import mock

import numpy as np
import pytest

from amdarts import data

FASHION_FILES = [
    os.path.join(data.FASHION_MNIST_DIR, f'{p}-{k}-ubyte.gz')
    for p in ('train', 't10k')
    for k in ('images-idx3', 'labels-idx1')
]


def _idx_bytes(array, code):
  """Serialises `array` as IDX with the given type code (big-endian data)."""
  header = bytes([0, 0, code, array.ndim]) + np.asarray(array.shape, '>u4').tobytes()
  return header + array.astype(array.dtype.newbyteorder('>')).tobytes()


def _indexed(n, image_shape=(4, 4, 3)):
  """A dataset whose label is the example's index, so batches reveal which examples."""
  images = np.random.default_rng(0).integers(0, 256, (n, *image_shape), dtype=np.uint8)
  c = image_shape[-1]
  return data.ArrayDataset(images, np.arange(n), n, (0.5,) * c, (0.25,) * c)


# ------------------------------------------------------------------------------- IDX


def test_read_idx_raw_and_gzip(tmp_path):
  images = np.random.default_rng(0).integers(0, 256, (3, 4, 5), dtype=np.uint8)
  ints = np.array([[-70000, 1], [2, 300000]], np.int32)  # multi-byte: checks byte order
  (tmp_path / 'raw').write_bytes(_idx_bytes(images, 0x08))
  (tmp_path / 'g.gz').write_bytes(gzip.compress(_idx_bytes(images, 0x08)))
  (tmp_path / 'ints').write_bytes(_idx_bytes(ints, 0x0C))
  np.testing.assert_array_equal(data.read_idx(tmp_path / 'raw'), images)
  np.testing.assert_array_equal(data.read_idx(tmp_path / 'g.gz'), images)
  np.testing.assert_array_equal(data.read_idx(tmp_path / 'ints'), ints)


def test_read_idx_rejects_bad_files(tmp_path):
  good = _idx_bytes(np.zeros((2, 3), np.uint8), 0x08)
  (tmp_path / 'magic').write_bytes(b'\x01' + good[1:])
  (tmp_path / 'short').write_bytes(good[:-1])
  with pytest.raises(ValueError, match='not an IDX file'):
    data.read_idx(tmp_path / 'magic')
  with pytest.raises(ValueError, match='needs 6'):
    data.read_idx(tmp_path / 'short')


def test_fashion_mnist_from_directory(tmp_path):
  images = np.random.default_rng(1).integers(0, 256, (5, 28, 28), dtype=np.uint8)
  labels = np.array([0, 9, 3, 3, 1], np.uint8)
  # Mixed compression: the loader accepts either form of each file.
  (tmp_path / 't10k-images-idx3-ubyte.gz').write_bytes(gzip.compress(_idx_bytes(images, 0x08)))
  (tmp_path / 't10k-labels-idx1-ubyte').write_bytes(_idx_bytes(labels, 0x08))
  ds = data.load_dataset('fashion_mnist', 'test', data_dir=str(tmp_path))
  np.testing.assert_array_equal(ds.images, images[..., None])
  np.testing.assert_array_equal(ds.labels, labels)
  assert ds.labels.dtype == np.int32 and ds.num_classes == 10
  with pytest.raises(FileNotFoundError, match='apt-get install dataset-fashion-mnist'):
    data.load_fashion_mnist('train', str(tmp_path))


@pytest.mark.skipif(
    not all(os.path.exists(f) for f in FASHION_FILES), reason='dataset-fashion-mnist not installed'
)
def test_fashion_mnist_debian_files():
  train, test = data.load_fashion_mnist('train'), data.load_fashion_mnist('test')
  assert train.images.shape == (60000, 28, 28, 1) and test.images.shape == (10000, 28, 28, 1)
  np.testing.assert_array_equal(np.bincount(train.labels), [6000] * 10)
  np.testing.assert_array_equal(np.bincount(test.labels), [1000] * 10)
  mean, std = data.channel_stats(train.images)
  np.testing.assert_allclose(mean, data.DATASET_STATS['fashion_mnist'][0], atol=1e-4)
  np.testing.assert_allclose(std, data.DATASET_STATS['fashion_mnist'][1], atol=1e-4)


# ------------------------------------------------------------------------------ tfds


@pytest.fixture(scope='module')
def prepared_cifar10(tmp_path_factory):
  """A real, 12-example cifar10 in ArrayRecord format, written without TensorFlow."""
  import PIL.Image
  import tensorflow_datasets as tfds

  data_dir = str(tmp_path_factory.mktemp('tfds'))
  images = np.random.default_rng(2).integers(0, 256, (12, 32, 32, 3), dtype=np.uint8)

  def split_generators(self, dl_manager):
    del self, dl_manager
    return {'train': examples(0, 8), 'test': examples(8, 12)}

  def examples(start, stop):
    for i in range(start, stop):
      yield str(i), {'id': str(i), 'image': PIL.Image.fromarray(images[i]), 'label': i % 10}

  with mock.patch.object(tfds.builder_cls('cifar10'), '_split_generators', split_generators):
    tfds.builder('cifar10', data_dir=data_dir).download_and_prepare(
        file_format='array_record',
        download_config=tfds.download.DownloadConfig(
            compute_stats=tfds.download.ComputeStatsMode.SKIP
        ),
    )
  return data_dir, images


@pytest.fixture
def no_download(monkeypatch):
  """Fails any attempt to download: offline, one would hang for minutes."""
  import tensorflow_datasets as tfds

  def fail(*args, **kwargs):
    raise AssertionError('download attempted')

  monkeypatch.setattr(tfds.core.DatasetBuilder, 'download_and_prepare', fail)
  monkeypatch.setattr(tfds.core.download.DownloadManager, 'download', fail)


def _by_content(images, labels):
  return sorted((im.tobytes(), int(lab)) for im, lab in zip(images, labels))


def test_tfds_prepared_dataset_in_memory_and_streaming(prepared_cifar10, no_download):
  data_dir, images = prepared_cifar10
  train = data.load_dataset('cifar10', 'train', data_dir=data_dir)
  test = data.load_dataset('cifar10', 'test', data_dir=data_dir)
  assert isinstance(train, data.ArrayDataset)
  assert train.images.shape == (8, 32, 32, 3) and train.images.dtype == np.uint8
  assert train.labels.dtype == np.int32 and train.num_classes == 10
  assert train.mean == data.DATASET_STATS['cifar10'][0]
  # tfds shuffles examples on write, so compare as sets of (image, label).
  assert _by_content(train.images, train.labels) == _by_content(images[:8], np.arange(8) % 10)
  assert _by_content(test.images, test.labels) == _by_content(images[8:], np.arange(8, 12) % 10)

  stream = data.load_tfds('cifar10', 'train', data_dir=data_dir, streaming=True)
  assert isinstance(stream, data.StreamingDataset) and len(stream) == 8
  half = stream.subset(np.array([5, 1]))
  got_images, got_labels = half.take(np.array([1, 0]))
  np.testing.assert_array_equal(got_images, train.images[[1, 5]])
  np.testing.assert_array_equal(got_labels, train.labels[[1, 5]])
  small = data.load_tfds('cifar10', 'train', data_dir=data_dir, image_size=16, streaming=True)
  assert small.take(np.arange(3))[0].shape == (3, 16, 16, 3)


def test_tfds_mock_data(prepared_cifar10, no_download):
  import tensorflow_datasets as tfds

  # mock_data redirects every builder to its data_dir, whose metadata marks the dataset
  # prepared; the examples themselves are random, num_examples of them.
  with tfds.testing.mock_data(num_examples=6, data_dir=prepared_cifar10[0]):
    ds = data.load_dataset('cifar10', 'train', data_dir='/nonexistent')
  assert ds.images.shape == (6, 32, 32, 3) and ds.images.dtype == np.uint8
  assert ds.labels.shape == (6,) and ds.labels.dtype == np.int32
  assert ds.labels.min() >= 0 and ds.labels.max() < 10
  batch = data.batch_at(ds, 0, 0, batch_size=4, seed=0, augment=data.Augment(cutout_length=8))
  assert batch['image'].shape == (4, 32, 32, 3) and batch['image'].dtype == np.float32
  assert batch['label'].dtype == np.int32


def test_tfds_missing_dataset_fails_without_download(tmp_path, no_download):
  command = 'tfds build cifar10 --data_dir=DIR --file_format=array_record'
  with pytest.raises(FileNotFoundError, match=command):
    data.load_dataset('cifar10', 'train', data_dir=str(tmp_path))
  with pytest.raises(FileNotFoundError, match='downloads/manual'):
    data.load_dataset('imagenet2012', 'train', data_dir=str(tmp_path), image_size=224)
  with pytest.raises(ValueError, match="unknown dataset 'no_such_set'"):
    data.load_dataset('no_such_set', 'train', data_dir=str(tmp_path))


def test_tfds_tfrecord_format_is_rejected(prepared_cifar10, tmp_path, no_download):
  shutil.copytree(prepared_cifar10[0], tmp_path, dirs_exist_ok=True)
  info_path = tmp_path / 'cifar10' / '3.0.2' / 'dataset_info.json'
  info = json.loads(info_path.read_text())
  info['fileFormat'] = 'tfrecord'
  info_path.write_text(json.dumps(info))
  with pytest.raises(ValueError, match='stored as tfrecord, which needs TensorFlow'):
    data.load_dataset('cifar10', 'train', data_dir=str(tmp_path))


# -------------------------------------------------------------------- synthetic, splits


def test_synthetic_is_deterministic():
  kw = dict(num_examples=20, image_shape=(8, 8, 2), num_classes=3)
  a = data.load_dataset('synthetic', 'train', **kw)
  b = data.load_dataset('synthetic', 'train', **kw)
  test = data.load_dataset('synthetic', 'test', **kw)
  assert a.images.shape == (20, 8, 8, 2) and a.labels.max() < 3
  np.testing.assert_array_equal(a.images, b.images)
  np.testing.assert_array_equal(a.labels, b.labels)
  assert not np.array_equal(a.images, test.images)
  assert not np.array_equal(a.images, data.synthetic(20, (8, 8, 2), 3, seed=1).images)


@pytest.mark.parametrize('seed', [None, 3])
def test_search_split_halves(seed):
  ds = _indexed(11)
  train, val = data.search_split(ds, 0.5, seed=seed)
  assert len(train) == 5 and len(val) == 6  # floor(0.5 * 11), as DARTS
  assert not set(train.labels) & set(val.labels)
  assert sorted([*train.labels, *val.labels]) == list(range(11))
  np.testing.assert_array_equal(train.images, ds.images[train.labels])
  if seed is None:  # DARTS: plain first half
    np.testing.assert_array_equal(train.labels, np.arange(5))
  else:
    assert not np.array_equal(train.labels, np.arange(5))
  with pytest.raises(ValueError, match='empty half'):
    data.search_split(ds, 0.05)


# --------------------------------------------------------------------- preprocessing


def test_channel_stats_and_normalize():
  images = np.random.default_rng(3).integers(0, 256, (6, 5, 5, 2), dtype=np.uint8)
  mean, std = data.channel_stats(images)
  as_float = images.astype(np.float64) / 255
  np.testing.assert_allclose(mean, as_float.mean(axis=(0, 1, 2)), rtol=1e-12)
  np.testing.assert_allclose(std, as_float.std(axis=(0, 1, 2)), rtol=1e-12)
  x = data.normalize(images, mean, std)
  assert x.dtype == np.float32
  np.testing.assert_allclose(x.mean(axis=(0, 1, 2)), 0, atol=1e-5)
  np.testing.assert_allclose(x.std(axis=(0, 1, 2)), 1, atol=1e-5)
  corners = data.normalize(np.array([0, 255], np.uint8).reshape(1, 1, 2, 1), [0.5], [0.25])
  np.testing.assert_allclose(corners.ravel(), [-2, 2], rtol=1e-6)


def test_random_crop():
  images = np.arange(2 * 6 * 6 * 1, dtype=np.uint8).reshape(2, 6, 6, 1) + 1  # no zero pixels
  same = data.random_crop(images, None, padding=2, offsets=np.array([[2, 2], [2, 2]]))
  np.testing.assert_array_equal(same, images)
  moved = data.random_crop(images, None, padding=2, offsets=np.array([[0, 0], [4, 3]]))
  # Corner (0, 0): content shifts down-right, zero padding enters top and left.
  np.testing.assert_array_equal(moved[0, 2:, 2:], images[0, :4, :4])
  assert not moved[0, :2].any() and not moved[0, :, :2].any()
  # Corner (4, 3): content shifts up by 2 and left by 1.
  np.testing.assert_array_equal(moved[1, :4, :5], images[1, 2:, 1:])
  assert not moved[1, 4:].any() and not moved[1, :, 5:].any()
  # Random offsets: every output is one of the (2p+1)^2 possible crops.
  out = data.random_crop(images, np.random.default_rng(0), padding=2)
  padded = np.pad(images, ((0, 0), (2, 2), (2, 2), (0, 0)))
  for b in range(2):
    crops = [padded[b, r:r + 6, c:c + 6] for r in range(5) for c in range(5)]
    assert any(np.array_equal(out[b], crop) for crop in crops)


def test_random_flip():
  image = np.array([1, 2, 3], np.uint8).reshape(1, 1, 3, 1)
  images = np.concatenate([image, image])
  out = data.random_flip(images, None, flips=np.array([True, False]))
  np.testing.assert_array_equal(out[0].ravel(), [3, 2, 1])
  np.testing.assert_array_equal(out[1].ravel(), [1, 2, 3])
  rng_out = data.random_flip(np.repeat(image, 64, axis=0), np.random.default_rng(0))
  flipped = rng_out[:, 0, 0, 0] == 3
  assert 0 < flipped.sum() < 64
  kept = rng_out[~flipped, 0, :, 0]
  np.testing.assert_array_equal(kept, np.tile([1, 2, 3], (len(kept), 1)))


def test_cutout_square():
  ones = np.ones((2, 8, 8, 3), np.float32)
  out = data.cutout(ones, None, length=4, centers=np.array([[4, 4], [1, 6]]))
  expected = np.ones((2, 8, 8), np.float32)
  expected[0, 2:6, 2:6] = 0  # rows/cols [4 - 2, 4 + 2)
  expected[1, 0:3, 4:8] = 0  # rows [-1, 3) and cols [4, 8), clipped at the borders
  np.testing.assert_array_equal(out, np.repeat(expected[..., None], 3, axis=-1))
  # Random centres: at most length^2 pixels, zeroed in all channels alike.
  rand = data.cutout(np.ones((16, 8, 8, 3), np.float32), np.random.default_rng(0), length=4)
  zeros = (rand == 0).sum(axis=(1, 2))
  assert (zeros[:, 0] == zeros[:, 1]).all() and (zeros[:, 0] <= 16).all() and zeros.min() > 0


def test_augment_batch_is_deterministic_from_rng():
  images = _indexed(4, (8, 8, 3)).images
  aug = data.Augment(crop_padding=2, flip=True, cutout_length=3)
  a = data.augment_batch(images, np.random.default_rng(7), aug, (0.5,) * 3, (0.25,) * 3)
  b = data.augment_batch(images, np.random.default_rng(7), aug, (0.5,) * 3, (0.25,) * 3)
  c = data.augment_batch(images, np.random.default_rng(8), aug, (0.5,) * 3, (0.25,) * 3)
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, c)
  off = data.Augment(crop_padding=0, flip=False, cutout_length=0)
  plain = data.augment_batch(images, np.random.default_rng(7), off, (0.5,) * 3, (0.25,) * 3)
  np.testing.assert_array_equal(plain, data.normalize(images, (0.5,) * 3, (0.25,) * 3))


# --------------------------------------------------------------------------- batches


def test_batch_at_is_a_function_of_seed_epoch_index():
  ds = _indexed(50)
  kw = dict(batch_size=8, seed=5, augment=data.Augment(crop_padding=1, cutout_length=2))
  assert data.steps_per_epoch(50, 8) == 6
  first = data.batch_at(ds, 2, 3, **kw)
  data.batch_at(ds, 0, 0, **kw)  # drawing other batches in between changes nothing
  again = data.batch_at(ds, 2, 3, **kw)
  for key in ('image', 'label'):
    np.testing.assert_array_equal(first[key], again[key])
  assert first['image'].shape == (8, 4, 4, 3) and first['image'].dtype == np.float32
  assert first['label'].dtype == np.int32
  orders = [np.concatenate([b['label'] for b in data.epoch_batches(ds, e, **kw)]) for e in (0, 1)]
  for order in orders:  # 48 of 50 examples (drop_remainder), none twice
    assert len(order) == 48 and len(set(order)) == 48
  assert not np.array_equal(orders[0], orders[1])
  other_seed = data.batch_at(ds, 2, 3, **{**kw, 'seed': 6})
  assert not np.array_equal(first['label'], other_seed['label'])
  # Identical examples: batches differ only if each batch draws its own augmentation.
  same = data.ArrayDataset(np.repeat(ds.images[:1], 16, axis=0), np.zeros(16), 1, ds.mean, ds.std)
  a, b = (data.batch_at(same, 0, i, **kw)['image'] for i in (0, 1))
  assert not np.array_equal(a, b)


def test_eval_batches_keep_remainder_with_mask():
  ds = _indexed(10)
  batches = list(data.epoch_batches(ds, batch_size=4, shuffle=False, drop_remainder=False))
  assert len(batches) == 3 == data.steps_per_epoch(10, 4, drop_remainder=False)
  np.testing.assert_array_equal(batches[2]['mask'], [1, 1, 0, 0])
  assert batches[2]['image'].shape == (4, 4, 4, 3)
  real = np.concatenate([b['label'][b['mask'] == 1] for b in batches])
  np.testing.assert_array_equal(real, np.arange(10))
  np.testing.assert_array_equal(batches[0]['image'], data.normalize(ds.images[:4], ds.mean, ds.std))


def test_batches_resume_from_position():
  ds = _indexed(20)
  aug = data.Augment(crop_padding=1)
  stream = data.Batches(ds, 6, seed=1, augment=aug)  # 3 batches per epoch
  run = [next(stream) for _ in range(8)]
  assert stream.position == (2, 2)
  resumed = data.Batches(ds, 6, seed=1, augment=aug, epoch=1, index=1)
  for expected in run[4:]:
    got = next(resumed)
    np.testing.assert_array_equal(got['label'], expected['label'])
    np.testing.assert_array_equal(got['image'], expected['image'])
  assert resumed.position == stream.position
