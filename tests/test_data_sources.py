"""Tests of amdarts.data.sources: IDX files, Fashion-MNIST, tfds and synthetic data."""

import dataclasses
import gzip
import json
import os
import shutil
from unittest import mock

import numpy as np
import pytest

from amdarts import data as data_lib

FASHION_FILES = [
    os.path.join(data_lib.FASHION_MNIST_DIR, f'{p}-{k}-ubyte.gz')
    for p in ('train', 't10k')
    for k in ('images-idx3', 'labels-idx1')
]


def _idx_bytes(array, code):
  """Serialises `array` as IDX with the given type code (big-endian data)."""
  header = bytes([0, 0, code, array.ndim]) + np.asarray(array.shape, '>u4').tobytes()
  return header + array.astype(array.dtype.newbyteorder('>')).tobytes()


# ------------------------------------------------------------------------------- IDX


def test_read_idx_raw_and_gzip(tmp_path):
  images = np.random.default_rng(0).integers(0, 256, (3, 4, 5), dtype=np.uint8)
  ints = np.array([[-70000, 1], [2, 300000]], np.int32)  # multi-byte: checks byte order
  (tmp_path / 'raw').write_bytes(_idx_bytes(images, 0x08))
  (tmp_path / 'g.gz').write_bytes(gzip.compress(_idx_bytes(images, 0x08)))
  (tmp_path / 'ints').write_bytes(_idx_bytes(ints, 0x0C))
  np.testing.assert_array_equal(data_lib.read_idx(tmp_path / 'raw'), images)
  np.testing.assert_array_equal(data_lib.read_idx(tmp_path / 'g.gz'), images)
  np.testing.assert_array_equal(data_lib.read_idx(tmp_path / 'ints'), ints)


def test_read_idx_rejects_bad_files(tmp_path):
  good = _idx_bytes(np.zeros((2, 3), np.uint8), 0x08)
  (tmp_path / 'magic').write_bytes(b'\x01' + good[1:])
  (tmp_path / 'short').write_bytes(good[:-1])
  with pytest.raises(ValueError, match='not an IDX file'):
    data_lib.read_idx(tmp_path / 'magic')
  with pytest.raises(ValueError, match='needs 6'):
    data_lib.read_idx(tmp_path / 'short')


def test_fashion_mnist_from_directory(tmp_path):
  images = np.random.default_rng(1).integers(0, 256, (5, 28, 28), dtype=np.uint8)
  labels = np.array([0, 9, 3, 3, 1], np.uint8)
  # Mixed compression: the loader accepts either form of each file.
  (tmp_path / 't10k-images-idx3-ubyte.gz').write_bytes(gzip.compress(_idx_bytes(images, 0x08)))
  (tmp_path / 't10k-labels-idx1-ubyte').write_bytes(_idx_bytes(labels, 0x08))
  ds = data_lib.load_dataset('fashion_mnist', 'test', data_dir=str(tmp_path))
  np.testing.assert_array_equal(ds.images, images[..., None])
  np.testing.assert_array_equal(ds.labels, labels)
  assert ds.labels.dtype == np.int32 and ds.num_classes == 10
  with pytest.raises(FileNotFoundError, match='apt-get install dataset-fashion-mnist'):
    data_lib.load_fashion_mnist('train', str(tmp_path))


@pytest.mark.skipif(
    not all(os.path.exists(f) for f in FASHION_FILES), reason='dataset-fashion-mnist not installed'
)
def test_fashion_mnist_debian_files():
  train, test = data_lib.load_fashion_mnist('train'), data_lib.load_fashion_mnist('test')
  assert train.images.shape == (60000, 28, 28, 1) and test.images.shape == (10000, 28, 28, 1)
  np.testing.assert_array_equal(np.bincount(train.labels), [6000] * 10)
  np.testing.assert_array_equal(np.bincount(test.labels), [1000] * 10)
  mean, std = data_lib.channel_stats(train.images)
  np.testing.assert_allclose(mean, data_lib.DATASET_STATS['fashion_mnist'][0], atol=1e-4)
  np.testing.assert_allclose(std, data_lib.DATASET_STATS['fashion_mnist'][1], atol=1e-4)


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
  train = data_lib.load_dataset('cifar10', 'train', data_dir=data_dir)
  test = data_lib.load_dataset('cifar10', 'test', data_dir=data_dir)
  assert isinstance(train, data_lib.ArrayDataset)
  assert train.images.shape == (8, 32, 32, 3) and train.images.dtype == np.uint8
  assert train.labels.dtype == np.int32 and train.num_classes == 10
  assert train.mean == data_lib.DATASET_STATS['cifar10'][0]
  # tfds shuffles examples on write, so compare as sets of (image, label).
  assert _by_content(train.images, train.labels) == _by_content(images[:8], np.arange(8) % 10)
  assert _by_content(test.images, test.labels) == _by_content(images[8:], np.arange(8, 12) % 10)

  stream = data_lib.load_tfds('cifar10', 'train', data_dir=data_dir, streaming=True)
  assert isinstance(stream, data_lib.StreamingDataset) and len(stream) == 8
  half = stream.subset(np.array([5, 1]))
  got_images, got_labels = half.take(np.array([1, 0]))
  np.testing.assert_array_equal(got_images, train.images[[1, 5]])
  np.testing.assert_array_equal(got_labels, train.labels[[1, 5]])
  small = data_lib.load_tfds('cifar10', 'train', data_dir=data_dir, image_size=16, streaming=True)
  assert small.take(np.arange(3))[0].shape == (3, 16, 16, 3)


def test_tfds_mock_data(prepared_cifar10, no_download):
  import tensorflow_datasets as tfds

  # mock_data redirects every builder to its data_dir, whose metadata marks the dataset
  # prepared; the examples themselves are random, num_examples of them.
  with tfds.testing.mock_data(num_examples=6, data_dir=prepared_cifar10[0]):
    ds = data_lib.load_dataset('cifar10', 'train', data_dir='/nonexistent')
  assert ds.images.shape == (6, 32, 32, 3) and ds.images.dtype == np.uint8
  assert ds.labels.shape == (6,) and ds.labels.dtype == np.int32
  assert ds.labels.min() >= 0 and ds.labels.max() < 10
  batch = data_lib.batch_at(ds, 0, 0, batch_size=4, seed=0, augment=data_lib.Augment(cutout_length=8))
  assert batch['image'].shape == (4, 32, 32, 3) and batch['image'].dtype == np.float32
  assert batch['label'].dtype == np.int32


def test_tfds_missing_dataset_fails_without_download(tmp_path, no_download):
  command = 'tfds build cifar10 --data_dir=DIR --file_format=array_record'
  with pytest.raises(FileNotFoundError, match=command):
    data_lib.load_dataset('cifar10', 'train', data_dir=str(tmp_path))
  with pytest.raises(FileNotFoundError, match='downloads/manual'):
    data_lib.load_dataset('imagenet2012', 'train', data_dir=str(tmp_path), image_size=224)
  with pytest.raises(ValueError, match="unknown dataset 'no_such_set'"):
    data_lib.load_dataset('no_such_set', 'train', data_dir=str(tmp_path))


def test_tfds_tfrecord_format_is_rejected(prepared_cifar10, tmp_path, no_download):
  shutil.copytree(prepared_cifar10[0], tmp_path, dirs_exist_ok=True)
  info_path = tmp_path / 'cifar10' / '3.0.2' / 'dataset_info.json'
  info = json.loads(info_path.read_text())
  info['fileFormat'] = 'tfrecord'
  info_path.write_text(json.dumps(info))
  with pytest.raises(ValueError, match='stored as tfrecord, which needs TensorFlow'):
    data_lib.load_dataset('cifar10', 'train', data_dir=str(tmp_path))


# ------------------------------------------------------------------------- synthetic


def test_synthetic_is_deterministic():
  kw = dict(num_examples=20, image_shape=(8, 8, 2), num_classes=3)
  a = data_lib.load_dataset('synthetic', 'train', **kw)
  b = data_lib.load_dataset('synthetic', 'train', **kw)
  test = data_lib.load_dataset('synthetic', 'test', **kw)
  assert a.images.shape == (20, 8, 8, 2) and a.labels.max() < 3
  np.testing.assert_array_equal(a.images, b.images)
  np.testing.assert_array_equal(a.labels, b.labels)
  assert not np.array_equal(a.images, test.images)
  assert not np.array_equal(a.images, data_lib.synthetic(20, (8, 8, 2), 3, seed=1).images)


def test_imagenet_augmentation_on_mock_data(prepared_cifar10, no_download):
  """DARTS's ImageNet recipe on tfds mock data and on images of varying size."""
  import tensorflow_datasets as tfds

  with tfds.testing.mock_data(num_examples=6, data_dir=prepared_cifar10[0]):
    ds = data_lib.load_dataset('cifar10', 'train', data_dir='/nonexistent')
  augment = dataclasses.replace(data_lib.IMAGENET_AUGMENT, resized_crop=24)
  batch = data_lib.batch_at(ds, 0, 0, batch_size=4, seed=0, augment=augment)
  assert batch['image'].shape == (4, 24, 24, 3) and batch['image'].dtype == np.float32
  low = (0 - np.array(ds.mean)) / np.array(ds.std)
  high = (1 - np.array(ds.mean)) / np.array(ds.std)
  assert (batch['image'] >= low - 1e-6).all() and (batch['image'] <= high + 1e-6).all()
  again = data_lib.batch_at(ds, 0, 0, batch_size=4, seed=0, augment=augment)
  np.testing.assert_array_equal(batch['image'], again['image'])

  # ImageNet's images vary in size: crops from the decoded images, centre crops at test.
  rng = np.random.default_rng(5)
  source = [{'image': rng.integers(0, 256, (int(h), int(w), 3), dtype=np.uint8), 'label': i}
            for i, (h, w) in enumerate(rng.integers(20, 60, (6, 2)))]
  stream = data_lib.StreamingDataset(source, num_classes=6, mean=ds.mean, std=ds.std,
                                     image_shape=(24, 24, 3), resize=True, num_threads=3)
  train = data_lib.batch_at(stream, 1, 0, batch_size=6, seed=0, augment=augment)
  assert train['image'].shape == (6, 24, 24, 3)
  # The crops follow the examples, not the threads that read them.
  one_thread = data_lib.StreamingDataset(source, num_classes=6, mean=ds.mean, std=ds.std,
                                         image_shape=(24, 24, 3), resize=True, num_threads=1)
  np.testing.assert_array_equal(
      train['image'], data_lib.batch_at(one_thread, 1, 0, batch_size=6, seed=0,
                                        augment=augment)['image'])
  test = data_lib.batch_at(stream, 0, 0, batch_size=6, seed=0, shuffle=False)
  centre = np.stack([data_lib.resize_center_crop(e['image'], (24, 24)) for e in source])
  np.testing.assert_array_equal(test['image'], data_lib.normalize(centre, ds.mean, ds.std))
