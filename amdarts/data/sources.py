"""Where datasets come from: synthetic images, Fashion-MNIST IDX files and tfds.

Sources (all NHWC, labels int32):
  * `synthetic`: random images, deterministic from a seed (tests, benchmarks).
  * `fashion_mnist`: the IDX files of Debian's `dataset-fashion-mnist`
    (`/usr/share/datasets/fashion-mnist`) or any directory with the same files.
  * any other name: a tfds image classification dataset (`cifar10`, `cifar100`,
    `imagenet2012`, ...) read through tfds's random-access data source, which needs
    no TensorFlow. The dataset must already be prepared in ArrayRecord format under
    `data_dir`; nothing here ever downloads (the machines running this are offline).

    load_dataset(name, split, *, data_dir=None, streaming=None, image_size=None,
                 num_examples=None, image_shape=(32, 32, 3), num_classes=10, seed=0)
    load_tfds(name, split, *, data_dir=None, streaming=None, image_size=None, num_threads=8)
    load_fashion_mnist(split, data_dir=None) -> ArrayDataset
    synthetic(num_examples, image_shape=(32, 32, 3), num_classes=10, seed=0)
    read_idx(path) -> np.ndarray

A new source is one loader function here, one branch of `load_dataset` and, when its
statistics are published, one entry of `DATASET_STATS`.
"""

from __future__ import annotations

import gzip
import math
import os
from typing import Sequence

import numpy as np

from amdarts.data import datasets
from amdarts.data import seeds

# Channel statistics of the train splits, in [0, 1] pixel units. CIFAR-10 is the DARTS
# reference's (utils._data_transforms_cifar10); Fashion-MNIST matches channel_stats of
# the train IDX file (0.28604, 0.35302); ImageNet is torchvision's.
DATASET_STATS = {
    'cifar10': ((0.49139968, 0.48215827, 0.44653124), (0.24703233, 0.24348505, 0.26158768)),
    'cifar100': ((0.50707516, 0.48654887, 0.44091784), (0.26733429, 0.25643846, 0.27615047)),
    'fashion_mnist': ((0.2860,), (0.3530,)),
    'mnist': ((0.1307,), (0.3081,)),
    'imagenet2012': ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}

FASHION_MNIST_DIR = '/usr/share/datasets/fashion-mnist'

# tfds datasets whose held-out split is not called 'test'.
_TEST_SPLIT = {'imagenet2012': 'validation', 'imagenette': 'validation'}


def synthetic(
    num_examples: int,
    image_shape: Sequence[int] = (32, 32, 3),
    num_classes: int = 10,
    seed: int | np.random.SeedSequence = 0,
    name: str = 'synthetic',
) -> datasets.ArrayDataset:
  """Random images whose class shifts their colour, so tiny runs can still learn.

  Args:
    num_examples: N.
    image_shape: (H, W, C).
    num_classes: number of classes; labels are uniform in [0, num_classes).
    seed: non-negative seed; the same seed gives the same dataset.
    name: dataset name.

  Returns:
    An ArrayDataset with stats computed from its own images.
  """
  rng = np.random.default_rng(seeds.sequence(seed, seeds.SYNTHETIC))
  h, w, c = image_shape
  labels = rng.integers(0, num_classes, num_examples).astype(np.int32)
  class_colour_KxC = rng.integers(0, 128, (num_classes, c))
  noise = rng.integers(0, 128, (num_examples, h, w, c))
  images = (noise + class_colour_KxC[labels][:, None, None, :]).astype(np.uint8)
  mean, std = datasets.channel_stats(images)
  return datasets.ArrayDataset(images, labels, num_classes, mean, std, name)


def read_idx(path: str | os.PathLike) -> np.ndarray:
  """Parses an IDX file (the MNIST format), gzipped or not.

  Format: two zero bytes, a type code, the number of dimensions D, D big-endian u32
  sizes, then the data in big-endian C order.

  Args:
    path: the file; gzip is detected from its content, not its name.

  Returns:
    The array, native byte order.

  Raises:
    ValueError: bad magic number, unknown type code, or wrong data size.
  """
  with open(path, 'rb') as f:
    raw = f.read()
  if raw[:2] == b'\x1f\x8b':
    try:
      raw = gzip.decompress(raw)
    except (OSError, EOFError) as e:
      raise ValueError(f'{path}: corrupt gzip data ({e})') from e
  dtypes = {0x08: '>u1', 0x09: '>i1', 0x0B: '>i2', 0x0C: '>i4', 0x0D: '>f4', 0x0E: '>f8'}
  if len(raw) < 4 or raw[:2] != b'\x00\x00' or raw[2] not in dtypes:
    raise ValueError(f'{path}: not an IDX file (magic number {raw[:4].hex() or "missing"})')
  ndim = raw[3]
  header = 4 + 4 * ndim
  if len(raw) < header:
    raise ValueError(f'{path}: IDX header truncated')
  shape = tuple(int(d) for d in np.frombuffer(raw, '>u4', ndim, offset=4))
  dtype = np.dtype(dtypes[raw[2]])
  expected = math.prod(shape) * dtype.itemsize
  if len(raw) - header != expected:
    raise ValueError(
        f'{path}: IDX data has {len(raw) - header} bytes, shape {shape} needs {expected}'
    )
  data = np.frombuffer(raw, dtype, offset=header).reshape(shape)
  return data.astype(dtype.newbyteorder('='))


def _find_file(directory: str, stem: str) -> str | None:
  for candidate in (stem + '.gz', stem):
    path = os.path.join(directory, candidate)
    if os.path.isfile(path):
      return path
  return None


def load_fashion_mnist(split: str, data_dir: str | None = None) -> datasets.ArrayDataset:
  """Loads Fashion-MNIST from its IDX files.

  Args:
    split: 'train' (60000 images) or 'test' (10000).
    data_dir: directory with `{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]`;
      Debian's `dataset-fashion-mnist` location by default.

  Returns:
    ArrayDataset with u8[N, 28, 28, 1] images.

  Raises:
    FileNotFoundError: the files are missing.
    ValueError: unknown split or malformed files.
  """
  prefix = {'train': 'train', 'test': 't10k'}.get(split)
  if prefix is None:
    raise ValueError(f"fashion_mnist split must be 'train' or 'test', got {split!r}")
  directory = data_dir or FASHION_MNIST_DIR
  paths = [
      _find_file(directory, f'{prefix}-{kind}-ubyte') for kind in ('images-idx3', 'labels-idx1')
  ]
  if None in paths:
    raise FileNotFoundError(
        f'Fashion-MNIST {prefix}-*-ubyte[.gz] files not found in {directory}: run '
        '`apt-get install dataset-fashion-mnist` or pass --config.data.data_dir=DIR '
        'with the IDX files'
    )
  images, labels = read_idx(paths[0]), read_idx(paths[1])
  if images.ndim != 3 or labels.ndim != 1 or images.dtype != np.uint8:
    raise ValueError(
        f'{paths[0]}, {paths[1]}: expected u8[N,H,W] images and [N] labels, got '
        f'{images.dtype}{list(images.shape)} and {list(labels.shape)}'
    )
  mean, std = DATASET_STATS['fashion_mnist']
  return datasets.ArrayDataset(images[..., None], labels, 10, mean, std, 'fashion_mnist')


def _not_prepared_message(name: str, data_dir: str) -> str:
  manual = (
      ' (imagenet2012 first needs ILSVRC2012_img_{train,val}.tar in DIR/downloads/manual)'
      if name.startswith('imagenet')
      else ''
  )
  return (
      f'tfds dataset {name!r} is not prepared in {data_dir}: on a connected machine run '
      f'`tfds build {name} --data_dir=DIR --file_format=array_record`{manual}, copy DIR '
      'here and pass --config.data.data_dir=DIR'
  )


def load_tfds(
    name: str,
    split: str,
    *,
    data_dir: str | None = None,
    streaming: bool | None = None,
    image_size: int | None = None,
    num_threads: int = 8,
) -> datasets.ArrayDataset | datasets.StreamingDataset:
  """Loads a prepared tfds image classification dataset without TensorFlow.

  Reads through `builder.as_data_source`, tfds's random-access reader of ArrayRecord
  files, which parses and decodes examples with NumPy and PIL. It never calls
  `download_and_prepare`: a dataset that is not on disk is an immediate error.

  Args:
    name: tfds name, e.g. 'cifar10', 'cifar100', 'imagenet2012' (optionally with
      config/version, 'name/config:1.2.3').
    split: tfds split ('train', 'test', 'train[:10%]', ...); 'test' means
      'validation' for datasets without a test split (imagenet2012).
    data_dir: tfds data directory; tfds's default (TFDS_DATA_DIR or
      ~/tensorflow_datasets) when None.
    streaming: read examples on demand instead of loading all into memory. Default:
      streaming exactly when the images have no fixed size (imagenet2012).
    image_size: resize + centre-crop every image to this square size (required when
      the images have no fixed size).
    num_threads: decoding threads.

  Returns:
    An ArrayDataset, or a StreamingDataset when streaming.

  Raises:
    FileNotFoundError: the dataset is not prepared under `data_dir`.
    ValueError: unknown dataset, unusable format or features.
  """
  import tensorflow_datasets as tfds  # Heavy; only this source needs it.

  base, _, after = name.split('/')[0].partition(':')
  if after and not after[0].isdigit():
    # 'namespace:name' (community, huggingface) resolves over the network; 'name:1.2.3'
    # is only a version.
    raise ValueError(f'namespaced tfds dataset {name!r} is not supported offline')
  try:
    builder = tfds.builder(name, data_dir=data_dir)
  except tfds.core.registered.DatasetNotFoundError as e:
    raise ValueError(
        f"unknown dataset {name!r}: use 'synthetic', 'fashion_mnist' or a tfds image "
        'classification dataset name'
    ) from e
  if not builder.is_prepared():
    raise FileNotFoundError(_not_prepared_message(name, builder.data_dir))
  info = builder.info
  random_access = set(tfds.core.file_adapters.FileFormat.with_random_access())
  if not set(info.available_file_formats()) & random_access:
    stored = getattr(info.file_format, 'value', info.file_format)
    raise ValueError(
        f'tfds dataset {name!r} in {builder.data_dir} is stored as {stored}, which needs '
        f'TensorFlow to read; rebuild it with `tfds build {name} --data_dir=DIR '
        '--file_format=array_record`'
    )
  image_key, label_key = info.supervised_keys or ('image', 'label')
  features = info.features
  if image_key not in features or label_key not in features:
    raise ValueError(f'{name}: no {image_key!r}/{label_key!r} features; not an image classifier')
  feature_shape = tuple(features[image_key].shape)
  num_classes = features[label_key].num_classes
  if split == 'test' and base in _TEST_SPLIT:
    split = _TEST_SPLIT[base]
  source = builder.as_data_source(split=split)

  fixed = None not in feature_shape
  if not fixed and image_size is None:
    raise ValueError(f'{name} images vary in size: set image_size')
  resize = image_size is not None
  image_shape = (image_size, image_size, feature_shape[-1]) if resize else feature_shape
  if streaming is None:
    streaming = not fixed
  # Unknown datasets get placeholder stats until measured below.
  placeholder = ((0.5,) * image_shape[-1], (0.25,) * image_shape[-1])
  mean, std = DATASET_STATS.get(base, placeholder)
  stream = datasets.StreamingDataset(
      source,
      num_classes=num_classes,
      mean=mean,
      std=std,
      image_shape=image_shape,
      image_key=image_key,
      label_key=label_key,
      resize=resize,
      name=name,
      num_threads=num_threads,
  )
  if base not in DATASET_STATS:
    # Unknown datasets: stats of a fixed prefix of the split, cheap even when streaming.
    sample, _ = stream.take(np.arange(min(len(stream), 4096)))
    stream.mean, stream.std = datasets.channel_stats(sample)
  if streaming:
    return stream
  images, labels = stream.take(np.arange(len(stream)))
  return datasets.ArrayDataset(images, labels, num_classes, stream.mean, stream.std, name)


def load_dataset(
    name: str,
    split: str,
    *,
    data_dir: str | None = None,
    streaming: bool | None = None,
    image_size: int | None = None,
    num_examples: int | None = None,
    image_shape: Sequence[int] = (32, 32, 3),
    num_classes: int = 10,
    seed: int = 0,
) -> datasets.ArrayDataset | datasets.StreamingDataset:
  """Loads split 'train' or 'test' (or a tfds split string) of a named dataset.

  Args:
    name: 'synthetic', 'fashion_mnist' (IDX files) or a tfds dataset name.
    split: 'train' or 'test'; tfds datasets also take tfds split strings.
    data_dir: directory of the IDX files or the tfds data directory.
    streaming: tfds only, see `load_tfds`.
    image_size: tfds only, see `load_tfds`.
    num_examples: synthetic only: dataset size (required).
    image_shape: synthetic only: (H, W, C).
    num_classes: synthetic only.
    seed: synthetic only; train and test use different streams of it.

  Returns:
    The dataset.
  """
  if name == 'synthetic':
    if num_examples is None:
      raise ValueError('synthetic dataset needs num_examples')
    split_id = {'train': 0, 'test': 1}.get(split)
    if split_id is None:
      raise ValueError(f"synthetic split must be 'train' or 'test', got {split!r}")
    return synthetic(num_examples, image_shape, num_classes, seeds.sequence(seed, split_id), name)
  if name == 'fashion_mnist':
    return load_fashion_mnist(split, data_dir)
  return load_tfds(name, split, data_dir=data_dir, streaming=streaming, image_size=image_size)
