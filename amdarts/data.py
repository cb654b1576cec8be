"""Image datasets, DARTS splits, augmentation and deterministic batches, on the host in NumPy.

Sources (all NHWC, labels int32):
  * `synthetic`: random images, deterministic from a seed (tests, benchmarks).
  * `fashion_mnist`: the IDX files of Debian's `dataset-fashion-mnist`
    (`/usr/share/datasets/fashion-mnist`) or any directory with the same files.
  * any other name: a tfds image classification dataset (`cifar10`, `cifar100`,
    `imagenet2012`, ...) read through tfds's random-access data source, which needs
    no TensorFlow. The dataset must already be prepared in ArrayRecord format under
    `data_dir`; nothing here ever downloads (the machines running this are offline).

Public API:
  Datasets
    ArrayDataset(images, labels, num_classes, mean, std, name='')     in memory
    StreamingDataset(source, *, num_classes, mean, std, image_shape, ...)   by index
      both: len(ds), ds.take(indices) -> (u8[B,H,W,C], i32[B]), ds.subset(indices),
            ds.image_shape, ds.num_classes, ds.mean, ds.std, ds.name
    load_dataset(name, split, *, data_dir=None, streaming=None, image_size=None,
                 num_examples=None, image_shape=(32, 32, 3), num_classes=10, seed=0)
    load_tfds(name, split, *, data_dir=None, streaming=None, image_size=None, num_threads=8)
    load_fashion_mnist(split, data_dir=None) -> ArrayDataset
    synthetic(num_examples, image_shape=(32, 32, 3), num_classes=10, seed=0)
    read_idx(path) -> np.ndarray
    search_split(dataset, train_portion=0.5, seed=None) -> (search_train, search_val)
  Preprocessing (pure functions of (batch, rng); rng is a np.random.Generator)
    channel_stats(images) -> (mean, std);  normalize(images, mean, std) -> f32
    random_crop(images, rng, padding=4, offsets=None)
    random_flip(images, rng, flips=None)
    cutout(images, rng, length, centers=None)
    Augment(crop_padding=4, flip=True, cutout_length=0)
    augment_batch(images, rng, augment, mean, std) -> f32
  Batches (a batch is {'image': f32[B,H,W,C], 'label': i32[B]}, plus 'mask': f32[B]
  when drop_remainder=False)
    steps_per_epoch(num_examples, batch_size, drop_remainder=True)
    epoch_permutation(num_examples, seed, epoch);  batch_rng(seed, epoch, index)
    batch_at(dataset, epoch, index, *, batch_size, seed, augment=None, shuffle=True,
             drop_remainder=True)
    epoch_batches(dataset, epoch=0, *, batch_size, seed=0, ...) -> one epoch, in order
    Batches(dataset, batch_size, *, seed, ..., epoch=0, index=0): endless iterator whose
      `position` (epoch, index) is what a checkpoint stores to resume the same stream.

Batch `index` of `epoch` depends only on (seed, epoch, index), never on what was drawn
before, so a resumed run sees exactly the batches of an uninterrupted one. Batches are
global; splitting them across devices is the caller's job.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import gzip
import math
import os
from typing import Any, Iterator, Protocol, Sequence

import numpy as np

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

# Streaming images are resized so the shorter side is image_size / _CROP_FRACTION, then
# centre-cropped: the usual ImageNet evaluation transform (256 -> 224).
_CROP_FRACTION = 0.875

# Stream tags keep the RNG streams for permutations, augmentation and splits apart
# although all derive from the same user seed.
_PERMUTATION, _AUGMENT, _SPLIT, _SYNTHETIC = 0, 1, 2, 3


class Dataset(Protocol):
  """What the batch functions need from a dataset."""

  name: str
  num_classes: int
  mean: tuple[float, ...]
  std: tuple[float, ...]

  def __len__(self) -> int:
    ...

  @property
  def image_shape(self) -> tuple[int, int, int]:
    ...

  def take(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ...

  def subset(self, indices: np.ndarray) -> 'Dataset':
    ...


@dataclasses.dataclass(frozen=True, eq=False)
class ArrayDataset:
  """A dataset held in memory.

  Attributes:
    images: u8[N, H, W, C].
    labels: i32[N], in [0, num_classes).
    num_classes: number of classes.
    mean: per-channel mean in [0, 1] pixel units, used by `normalize`.
    std: per-channel standard deviation in [0, 1] pixel units.
    name: dataset name, for messages.
  """

  images: np.ndarray
  labels: np.ndarray
  num_classes: int
  mean: tuple[float, ...]
  std: tuple[float, ...]
  name: str = ''

  def __post_init__(self):
    if self.images.dtype != np.uint8 or self.images.ndim != 4:
      got = f'{self.images.dtype}{list(self.images.shape)}'
      raise ValueError(f'{self.name}: images must be u8[N,H,W,C], got {got}')
    if self.labels.shape != self.images.shape[:1]:
      raise ValueError(
          f'{self.name}: {len(self.labels)} labels for {len(self.images)} images'
      )
    if len(self.mean) != self.images.shape[-1] or len(self.std) != self.images.shape[-1]:
      raise ValueError(f'{self.name}: mean/std need one value per channel')
    object.__setattr__(self, 'labels', self.labels.astype(np.int32, copy=False))
    if self.labels.size and (self.labels.min() < 0 or self.labels.max() >= self.num_classes):
      raise ValueError(f'{self.name}: labels outside [0, {self.num_classes})')

  def __len__(self) -> int:
    return len(self.labels)

  @property
  def image_shape(self) -> tuple[int, int, int]:
    return tuple(self.images.shape[1:])

  def take(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Returns (u8[B,H,W,C], i32[B]) for the given example indices."""
    return self.images[indices], self.labels[indices]

  def subset(self, indices: np.ndarray) -> ArrayDataset:
    """Returns the examples at `indices` as a new dataset with the same stats."""
    return dataclasses.replace(self, images=self.images[indices], labels=self.labels[indices])


class StreamingDataset:
  """A dataset read example by example from a random-access source (e.g. ImageNet).

  Only the example indices live in memory; `take` reads and decodes the requested
  examples in a thread pool (PIL and the ArrayRecord reader release the GIL).
  """

  def __init__(
      self,
      source: Sequence[dict[str, Any]],
      *,
      num_classes: int,
      mean: Sequence[float],
      std: Sequence[float],
      image_shape: Sequence[int],
      image_key: str = 'image',
      label_key: str = 'label',
      resize: bool = False,
      indices: np.ndarray | None = None,
      name: str = '',
      num_threads: int = 8,
  ):
    """Wraps `source`.

    Args:
      source: random-access sequence of examples (dicts of numpy values), e.g. a tfds
        data source.
      num_classes: number of classes.
      mean: per-channel mean in [0, 1] pixel units.
      std: per-channel standard deviation in [0, 1] pixel units.
      image_shape: (H, W, C) of the images `take` returns.
      image_key: key of the image in an example.
      label_key: key of the label in an example.
      resize: resize the shorter side to H / 0.875 and centre-crop to (H, W); needed
        when the source's images vary in size.
      indices: the source indices this dataset consists of; all by default.
      name: dataset name, for messages.
      num_threads: decoding threads used by `take`.
    """
    self.source = source
    self.num_classes = num_classes
    self.mean = tuple(mean)
    self.std = tuple(std)
    self._image_shape = tuple(int(d) for d in image_shape)
    self.image_key = image_key
    self.label_key = label_key
    self.resize = resize
    self.indices = np.arange(len(source)) if indices is None else np.asarray(indices)
    self.name = name
    self.num_threads = num_threads

  def __len__(self) -> int:
    return len(self.indices)

  @property
  def image_shape(self) -> tuple[int, int, int]:
    return self._image_shape

  def _read(self, i: int) -> tuple[np.ndarray, int]:
    example = self.source[int(i)]
    image = np.asarray(example[self.image_key])
    if image.ndim == 2:
      image = image[..., None]
    if self.resize:
      image = resize_center_crop(image, self._image_shape[:2])
    if image.shape != self._image_shape:
      raise ValueError(
          f'{self.name}: example {i} has image shape {image.shape}, expected '
          f'{self._image_shape}; set image_size to resize'
      )
    return image, int(example[self.label_key])

  def take(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Returns (u8[B,H,W,C], i32[B]) for the given example indices."""
    source_indices = self.indices[np.asarray(indices)]
    with concurrent.futures.ThreadPoolExecutor(self.num_threads) as pool:
      pairs = list(pool.map(self._read, source_indices))
    if not pairs:
      return np.zeros((0, *self._image_shape), np.uint8), np.zeros((0,), np.int32)
    images = np.stack([p[0] for p in pairs]).astype(np.uint8, copy=False)
    return images, np.array([p[1] for p in pairs], np.int32)

  def subset(self, indices: np.ndarray) -> StreamingDataset:
    """Returns the examples at `indices` (no data is read)."""
    return StreamingDataset(
        self.source,
        num_classes=self.num_classes,
        mean=self.mean,
        std=self.std,
        image_shape=self._image_shape,
        image_key=self.image_key,
        label_key=self.label_key,
        resize=self.resize,
        indices=self.indices[np.asarray(indices)],
        name=self.name,
        num_threads=self.num_threads,
    )


def resize_center_crop(image: np.ndarray, size: Sequence[int]) -> np.ndarray:
  """Resizes the shorter side to size / 0.875 (bicubic) and centre-crops to `size`.

  Args:
    image: u8[H, W, C].
    size: (height, width) of the output.

  Returns:
    u8[size[0], size[1], C].
  """
  import PIL.Image  # Only the streaming path needs PIL.

  out_h, out_w = size
  h, w, c = image.shape
  scale = max(out_h, out_w) / _CROP_FRACTION / min(h, w)
  new_h, new_w = max(out_h, round(h * scale)), max(out_w, round(w * scale))
  pil = PIL.Image.fromarray(image[..., 0] if c == 1 else image)
  resized = np.asarray(pil.resize((new_w, new_h), PIL.Image.BICUBIC))
  if c == 1:
    resized = resized[..., None]
  top, left = (new_h - out_h) // 2, (new_w - out_w) // 2
  return resized[top:top + out_h, left:left + out_w]


# ----------------------------------------------------------------------------- sources


def synthetic(
    num_examples: int,
    image_shape: Sequence[int] = (32, 32, 3),
    num_classes: int = 10,
    seed: int | np.random.SeedSequence = 0,
    name: str = 'synthetic',
) -> ArrayDataset:
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
  rng = np.random.default_rng(_seed_seq(seed, _SYNTHETIC))
  h, w, c = image_shape
  labels = rng.integers(0, num_classes, num_examples).astype(np.int32)
  class_colour_KxC = rng.integers(0, 128, (num_classes, c))
  noise = rng.integers(0, 128, (num_examples, h, w, c))
  images = (noise + class_colour_KxC[labels][:, None, None, :]).astype(np.uint8)
  mean, std = channel_stats(images)
  return ArrayDataset(images, labels, num_classes, mean, std, name)


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


def load_fashion_mnist(split: str, data_dir: str | None = None) -> ArrayDataset:
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
  return ArrayDataset(images[..., None], labels, 10, mean, std, 'fashion_mnist')


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
) -> ArrayDataset | StreamingDataset:
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
  stream = StreamingDataset(
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
    stream.mean, stream.std = channel_stats(sample)
  if streaming:
    return stream
  images, labels = stream.take(np.arange(len(stream)))
  return ArrayDataset(images, labels, num_classes, stream.mean, stream.std, name)


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
) -> ArrayDataset | StreamingDataset:
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
    return synthetic(num_examples, image_shape, num_classes, _seed_seq(seed, split_id), name)
  if name == 'fashion_mnist':
    return load_fashion_mnist(split, data_dir)
  return load_tfds(name, split, data_dir=data_dir, streaming=streaming, image_size=image_size)


def search_split(
    dataset: Dataset, train_portion: float = 0.5, seed: int | None = None
) -> tuple[Dataset, Dataset]:
  """DARTS search split: the train set cut into search-train and search-val.

  Args:
    dataset: the full train split.
    train_portion: fraction for search-train; search-train gets
      floor(train_portion * N) examples as in the DARTS reference.
    seed: None keeps the dataset order (DARTS's first/second half); otherwise the
      halves come from a permutation seeded by `seed`.

  Returns:
    (search_train, search_val), disjoint, together the whole dataset.
  """
  n = len(dataset)
  cut = int(np.floor(train_portion * n))
  if not 0 < cut < n:
    raise ValueError(f'train_portion={train_portion} leaves an empty half of {n} examples')
  if seed is None:
    order = np.arange(n)
  else:
    order = np.random.default_rng(_seed_seq(seed, _SPLIT)).permutation(n)
  return dataset.subset(order[:cut]), dataset.subset(order[cut:])


# ------------------------------------------------------------------------ preprocessing


def channel_stats(images: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
  """Exact per-channel mean and std (population) of u8 images in [0, 1] units.

  Counts the 256 pixel values per channel, so it is exact and needs no float copy of
  the images.

  Args:
    images: u8[..., C].

  Returns:
    (mean, std), tuples of C floats.
  """
  values = np.arange(256) / 255.0
  mean, std = [], []
  for c in range(images.shape[-1]):
    counts = np.bincount(images[..., c].ravel(), minlength=256)
    m = counts @ values / counts.sum()
    mean.append(float(m))
    std.append(float(np.sqrt(max(counts @ values**2 / counts.sum() - m * m, 0.0))))
  return tuple(mean), tuple(std)


def normalize(images: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
  """(images / 255 - mean) / std per channel, as torchvision ToTensor + Normalize.

  Args:
    images: u8[B, H, W, C].
    mean: C channel means in [0, 1] units.
    std: C channel standard deviations in [0, 1] units.

  Returns:
    f32[B, H, W, C].
  """
  scale = np.float32(1 / 255) / np.asarray(std, np.float32)
  shift = np.asarray(mean, np.float32) / np.asarray(std, np.float32)
  return images.astype(np.float32) * scale - shift


def random_crop(
    images: np.ndarray,
    rng: np.random.Generator | None,
    padding: int = 4,
    offsets: np.ndarray | None = None,
) -> np.ndarray:
  """Zero-pads by `padding` pixels and crops back to the input size at a random place.

  Zero padding happens on the raw pixels, before normalisation, as torchvision's
  RandomCrop(32, padding=4) in DARTS.

  Args:
    images: [B, H, W, C].
    rng: draws the offsets (unused when `offsets` is given).
    padding: pixels of zero padding on each side.
    offsets: optional i[B, 2] (row, column) crop corners in the padded image, each in
      [0, 2 * padding]; drawn uniformly when None.

  Returns:
    Cropped images, same shape and dtype.
  """
  b, h, w, _ = images.shape
  if offsets is None:
    offsets = rng.integers(0, 2 * padding + 1, (b, 2))
  padded = np.pad(images, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
  rows_BxH = offsets[:, :1] + np.arange(h)
  cols_BxW = offsets[:, 1:] + np.arange(w)
  return padded[np.arange(b)[:, None, None], rows_BxH[:, :, None], cols_BxW[:, None, :]]


def random_flip(
    images: np.ndarray, rng: np.random.Generator | None, flips: np.ndarray | None = None
) -> np.ndarray:
  """Mirrors each image left-right with probability 1/2.

  Args:
    images: [B, H, W, C].
    rng: draws the coin flips (unused when `flips` is given).
    flips: optional bool[B], which images to mirror.

  Returns:
    Images, same shape and dtype.
  """
  if flips is None:
    flips = rng.random(len(images)) < 0.5
  return np.where(flips[:, None, None, None], images[:, :, ::-1], images)


def cutout(
    images: np.ndarray,
    rng: np.random.Generator | None,
    length: int,
    centers: np.ndarray | None = None,
) -> np.ndarray:
  """Zeroes one square per image (DeVries & Taylor 2017), as DARTS's Cutout.

  The centre (y, x) is uniform over the pixels; the square spans rows
  [y - length//2, y + length//2) and the same columns, clipped at the borders. Applied
  after normalisation, so the zeroed pixels are the dataset mean.

  Args:
    images: [B, H, W, C].
    rng: draws the centres (unused when `centers` is given).
    length: side of the square.
    centers: optional i[B, 2] (row, column) centres.

  Returns:
    Images, same shape and dtype.
  """
  b, h, w, _ = images.shape
  if centers is None:
    centers = np.stack([rng.integers(0, h, b), rng.integers(0, w, b)], axis=1)
  y, x = centers[:, :1], centers[:, 1:]
  rows_BxH = (np.arange(h) >= y - length // 2) & (np.arange(h) < y + length // 2)
  cols_BxW = (np.arange(w) >= x - length // 2) & (np.arange(w) < x + length // 2)
  square_BxHxW = rows_BxH[:, :, None] & cols_BxW[:, None, :]
  return np.where(square_BxHxW[..., None], np.zeros((), images.dtype), images)


@dataclasses.dataclass(frozen=True)
class Augment:
  """Training augmentation of DARTS: crop, flip, then (after normalising) cutout.

  Attributes:
    crop_padding: zero padding of the random crop; 0 disables the crop.
    flip: random horizontal flips (right for CIFAR, wrong for e.g. digits).
    cutout_length: side of the cutout square; 0 disables cutout.
  """

  crop_padding: int = 4
  flip: bool = True
  cutout_length: int = 0


def augment_batch(
    images: np.ndarray,
    rng: np.random.Generator,
    augment: Augment,
    mean: Sequence[float],
    std: Sequence[float],
) -> np.ndarray:
  """Augments and normalises a batch.

  Args:
    images: u8[B, H, W, C].
    rng: the batch's generator (see `batch_rng`); draws in a fixed order.
    augment: which augmentations.
    mean: channel means for `normalize`.
    std: channel standard deviations for `normalize`.

  Returns:
    f32[B, H, W, C].
  """
  if augment.crop_padding:
    images = random_crop(images, rng, augment.crop_padding)
  if augment.flip:
    images = random_flip(images, rng)
  x = normalize(images, mean, std)
  if augment.cutout_length:
    x = cutout(x, rng, augment.cutout_length)
  return x


# ------------------------------------------------------------------------------ batches


def _seed_seq(seed: int | np.random.SeedSequence, *words: int) -> np.random.SeedSequence:
  """A SeedSequence from the seed and fixed-length tags, so streams never collide."""
  if isinstance(seed, np.random.SeedSequence):
    entropy = seed.entropy
    entropy = list(entropy) if isinstance(entropy, (list, tuple)) else [entropy]
    return np.random.SeedSequence([*entropy, *words])
  if seed < 0:
    raise ValueError(f'seed must be non-negative, got {seed}')
  return np.random.SeedSequence([seed, *words])


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
  order = np.random.default_rng(_seed_seq(seed, _PERMUTATION, epoch)).permutation(num_examples)
  order.flags.writeable = False
  return order


def batch_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
  """The augmentation generator of batch `index` of `epoch`."""
  return np.random.default_rng(_seed_seq(seed, _AUGMENT, epoch, index))


def batch_at(
    dataset: Dataset,
    epoch: int,
    index: int,
    *,
    batch_size: int,
    seed: int,
    augment: Augment | None = None,
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
  images, labels = dataset.take(indices)
  if augment is None:
    x = normalize(images, dataset.mean, dataset.std)
  else:
    x = augment_batch(images, batch_rng(seed, epoch, index), augment, dataset.mean, dataset.std)
  batch = {'image': x, 'label': labels.astype(np.int32, copy=False)}
  if not drop_remainder:
    real = len(indices)
    # Fixed shapes keep a jitted eval step from recompiling on the last batch.
    pad = np.zeros(batch_size - real, np.int64)
    batch = {k: np.concatenate([v, v[pad]]) for k, v in batch.items()}
    batch['mask'] = (np.arange(batch_size) < real).astype(np.float32)
  return batch


def epoch_batches(
    dataset: Dataset,
    epoch: int = 0,
    *,
    batch_size: int,
    seed: int = 0,
    augment: Augment | None = None,
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
    batches = Batches(train, 64, seed=1, augment=Augment(), epoch=e, index=i)
    batch = next(batches)          # batch i of epoch e
    checkpoint(batches.position)   # the (epoch, index) of the next batch
  """

  def __init__(
      self,
      dataset: Dataset,
      batch_size: int,
      *,
      seed: int,
      augment: Augment | None = None,
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
