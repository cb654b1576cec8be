"""Image preprocessing on the host: normalisation, resizing and training augmentation.

All functions take u8 (or, after normalisation, f32) NHWC batches and a
`np.random.Generator`, and are pure functions of both: the batch functions give each
batch its own generator (`batching.batch_rng`), so augmentation never depends on the
order in which batches are drawn. Optional arguments (`offsets`, `flips`, `centers`)
fix the random choices for tests.

    Augment(crop_padding=4, flip=True, cutout_length=0)    the DARTS CIFAR recipe
    IMAGENET_AUGMENT                                       DARTS's ImageNet recipe
    augment_batch(images, rng, augment, mean, std) -> f32  crop, flip, jitter,
                                                           normalise, cutout

The random-resized crop works on each decoded image before the batch is stacked
(images vary in size), so `batching.batch_at` draws one seed per example and hands
`random_resized_crop` to the dataset's `take`; the rest works on the stacked batch.

A new augmentation (e.g. ImageNet's random-resized crop and colour jitter) is one
function here and, when it is part of a recipe, one field of `Augment` and one line
of `augment_batch`, which fixes the order of the draws.
"""

from __future__ import annotations

import dataclasses
import math
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


def random_resized_crop(
    image: np.ndarray,
    rng: np.random.Generator,
    size: int,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
) -> np.ndarray:
  """torchvision's RandomResizedCrop(size): a random box, resized (bilinear) to size².

  The box covers a uniform fraction `scale` of the area with a log-uniform aspect
  ratio in `ratio`; after 10 draws that do not fit, the centre crop of the largest
  box with an aspect ratio in `ratio` (torchvision's fallback).

  Args:
    image: u8[H, W, C], any H and W.
    rng: draws the box.
    size: output side.
    scale: range of the box's area as a fraction of the image's.
    ratio: range of the box's width / height.

  Returns:
    u8[size, size, C].
  """
  import PIL.Image  # Only ImageNet-style training needs PIL.

  h, w, c = image.shape
  for _ in range(10):
    area = h * w * rng.uniform(*scale)
    aspect = math.exp(rng.uniform(math.log(ratio[0]), math.log(ratio[1])))
    box_w, box_h = round(math.sqrt(area * aspect)), round(math.sqrt(area / aspect))
    if 0 < box_w <= w and 0 < box_h <= h:
      top, left = rng.integers(0, h - box_h + 1), rng.integers(0, w - box_w + 1)
      break
  else:
    box_w, box_h = w, h
    if w / h < ratio[0]:
      box_h = round(w / ratio[0])
    elif w / h > ratio[1]:
      box_w = round(h * ratio[1])
    top, left = (h - box_h) // 2, (w - box_w) // 2
  crop = image[top:top + box_h, left:left + box_w]
  pil = PIL.Image.fromarray(crop[..., 0] if c == 1 else crop)
  out = np.asarray(pil.resize((size, size), PIL.Image.BILINEAR))
  return out[..., None] if c == 1 else out


def _grayscale(x: np.ndarray) -> np.ndarray:
  """ITU-R 601-2 luma of f[..., 3] (torchvision's rgb_to_grayscale), keepdims."""
  return x @ np.array([0.299, 0.587, 0.114], x.dtype)[:, None]


def _rgb_to_hsv(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  maxc, minc = x.max(-1), x.min(-1)
  delta = maxc - minc
  s = np.where(maxc > 0, delta / np.where(maxc > 0, maxc, 1), 0)
  d = np.where(delta > 0, delta, 1)
  rc, gc, bc = [(maxc - x[..., i]) / d for i in range(3)]
  h = np.where(maxc == x[..., 0], bc - gc,
               np.where(maxc == x[..., 1], 2 + rc - bc, 4 + gc - rc))
  return np.where(delta > 0, (h / 6) % 1, 0), s, maxc


def _hsv_to_rgb(h: np.ndarray, s: np.ndarray, v: np.ndarray) -> np.ndarray:
  i = np.floor(h * 6)
  f = h * 6 - i
  i = i.astype(np.int64) % 6
  p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
  channels = [(v, q, p, p, t, v), (t, v, v, q, p, p), (p, p, t, v, v, q)]
  return np.stack([np.choose(i, ch) for ch in channels], axis=-1)


def adjust_hue(x: np.ndarray, shift: np.ndarray) -> np.ndarray:
  """Rotates the hue of f[B, H, W, 3] in [0, 1] by shift[B] turns (in [-0.5, 0.5])."""
  h, s, v = _rgb_to_hsv(x)
  return _hsv_to_rgb((h + shift[:, None, None]) % 1, s, v).astype(x.dtype)


def color_jitter(
    images: np.ndarray,
    rng: np.random.Generator,
    brightness: float,
    contrast: float,
    saturation: float,
    hue: float,
) -> np.ndarray:
  """torchvision's ColorJitter: each image gets the 4 adjustments in a random order.

  Factors are uniform in [max(0, 1 − b), 1 + b] for brightness, contrast and
  saturation and the hue shift uniform in [−hue, hue] turns, drawn per image.
  Brightness scales the pixels, contrast blends with the image's mean gray,
  saturation with each pixel's gray, hue rotates in HSV; values are clipped to
  [0, 255] after each, as on the PIL images DARTS jitters.

  Args:
    images: u8[B, H, W, 3].
    rng: draws the factors and orders.
    brightness, contrast, saturation: jitter strengths (0 = off).
    hue: maximal hue shift in turns, in [0, 0.5].

  Returns:
    u8[B, H, W, 3].
  """
  b = len(images)
  factor = lambda j: rng.uniform(max(0.0, 1 - j), 1 + j, b).astype(np.float32)
  f_b, f_c, f_s = factor(brightness), factor(contrast), factor(saturation)
  shift = rng.uniform(-hue, hue, b).astype(np.float32)
  order = np.argsort(rng.random((b, 4)), axis=1)  # A random permutation per image.
  x = images.astype(np.float32) / 255
  blend = lambda x, f, other: np.clip(f[:, None, None, None] * (x - other) + other, 0, 1)
  adjust = (
      lambda x, k: np.clip(x * f_b[k, None, None, None], 0, 1),
      lambda x, k: blend(x, f_c[k], _grayscale(x).mean((1, 2, 3), keepdims=True)),
      lambda x, k: blend(x, f_s[k], _grayscale(x)),
      lambda x, k: adjust_hue(x, shift[k]),
  )
  active = (brightness > 0, contrast > 0, saturation > 0, hue > 0)
  for position in range(4):
    for op in range(4):
      k = np.flatnonzero(order[:, position] == op)
      if active[op] and len(k):
        x[k] = adjust[op](x[k], k)
  return np.round(x * 255).astype(np.uint8)


@dataclasses.dataclass(frozen=True)
class Augment:
  """Training augmentation: DARTS's CIFAR recipe by default.

  In order: random-resized crop or padded crop, flip, colour jitter, normalisation,
  cutout.

  Attributes:
    crop_padding: zero padding of the random crop; 0 disables the crop.
    flip: random horizontal flips (right for CIFAR, wrong for e.g. digits).
    cutout_length: side of the cutout square; 0 disables cutout.
    resized_crop: output side of `random_resized_crop`, done per example while the
      batch is read (`batching.batch_at`); 0 disables it.
    color_jitter: (brightness, contrast, saturation, hue) of `color_jitter`; all
      0 disables it.
  """

  crop_padding: int = 4
  flip: bool = True
  cutout_length: int = 0
  resized_crop: int = 0
  color_jitter: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)


# DARTS's train_imagenet.py: RandomResizedCrop(224), RandomHorizontalFlip and
# ColorJitter(brightness=0.4, contrast=0.4, saturation=0.4, hue=0.2).
IMAGENET_AUGMENT = Augment(crop_padding=0, flip=True, resized_crop=224,
                           color_jitter=(0.4, 0.4, 0.4, 0.2))


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
  if any(augment.color_jitter):
    images = color_jitter(images, rng, *augment.color_jitter)
  x = normalize(images, mean, std)
  if augment.cutout_length:
    x = cutout(x, rng, augment.cutout_length)
  return x
