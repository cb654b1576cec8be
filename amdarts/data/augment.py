"""Image preprocessing on the host: normalisation, resizing and training augmentation.

All functions take u8 (or, after normalisation, f32) NHWC batches and a
`np.random.Generator`, and are pure functions of both: the batch functions give each
batch its own generator (`batching.batch_rng`), so augmentation never depends on the
order in which batches are drawn. Optional arguments (`offsets`, `flips`, `centers`)
fix the random choices for tests.

    Augment(crop_padding=4, flip=True, cutout_length=0)    the DARTS CIFAR recipe
    augment_batch(images, rng, augment, mean, std) -> f32  crop, flip, normalise, cutout

A new augmentation (e.g. ImageNet's random-resized crop and colour jitter) is one
function here and, when it is part of a recipe, one field of `Augment` and one line
of `augment_batch`, which fixes the order of the draws.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

# `resize_center_crop` resizes the shorter side to image_size / _CROP_FRACTION, then
# centre-crops: the usual ImageNet evaluation transform (256 -> 224).
_CROP_FRACTION = 0.875


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
    rng: the batch's generator (see `batching.batch_rng`); draws in a fixed order.
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
