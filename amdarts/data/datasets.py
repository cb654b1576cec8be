"""What a dataset is: examples by index, with the channel statistics that normalise them.

    Dataset                 the protocol the batch functions need
    ArrayDataset            images and labels held in memory
    StreamingDataset        examples read and decoded on demand from a random-access
                            source (e.g. ImageNet through tfds)
    channel_stats(images)   exact per-channel mean and std, for datasets without
                            published statistics
    search_split(dataset)   DARTS's search-train / search-val halves

Both dataset kinds answer len(ds), ds.take(indices) -> (u8[B,H,W,C], i32[B]),
ds.subset(indices), ds.image_shape, ds.num_classes, ds.mean, ds.std and ds.name.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
from typing import Any, Callable, Protocol, Sequence

import numpy as np

from amdarts.data import augment as augment_lib
from amdarts.data import seeds


# crop(image, k): the k-th example of a `take`, u8[h, w, C] as decoded, to u8[H, W, C]
# (the training crop of images of any size, e.g. `augment.random_resized_crop`).
Crop = Callable[[np.ndarray, int], np.ndarray]


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

  def take(self, indices: np.ndarray, crop: Crop | None = None) -> tuple[np.ndarray, np.ndarray]:
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

  def take(self, indices: np.ndarray, crop: Crop | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Returns (u8[B,H,W,C], i32[B]) for the given example indices, each `crop`ped."""
    if crop is None:
      return self.images[indices], self.labels[indices]
    images = [crop(self.images[i], k) for k, i in enumerate(np.asarray(indices))]
    return np.stack(images), self.labels[indices]

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

  def _read(self, i: int, k: int, crop: Crop | None) -> tuple[np.ndarray, int]:
    example = self.source[int(i)]
    image = np.asarray(example[self.image_key])
    if image.ndim == 2:
      image = image[..., None]
    if crop is not None:  # Instead of the resize: from the image as decoded.
      image = crop(image, k)
    elif self.resize:
      image = augment_lib.resize_center_crop(image, self._image_shape[:2])
    if image.shape != self._image_shape:
      raise ValueError(
          f'{self.name}: example {i} has image shape {image.shape}, expected '
          f'{self._image_shape}; set image_size to resize'
      )
    return image, int(example[self.label_key])

  def take(self, indices: np.ndarray, crop: Crop | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Returns (u8[B,H,W,C], i32[B]) for the given example indices.

    Each image is `crop`ped as decoded when `crop` is given, else resized and
    centre-cropped when the dataset resizes.
    """
    source_indices = self.indices[np.asarray(indices)]
    with concurrent.futures.ThreadPoolExecutor(self.num_threads) as pool:
      pairs = list(pool.map(self._read, source_indices, range(len(source_indices)),
                            [crop] * len(source_indices)))
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
    order = np.random.default_rng(seeds.sequence(seed, seeds.SPLIT)).permutation(n)
  return dataset.subset(order[:cut]), dataset.subset(order[cut:])
