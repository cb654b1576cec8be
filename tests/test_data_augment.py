"""Tests of amdarts.data.augment: normalisation and the DARTS augmentations."""

import numpy as np

from amdarts import data as data_lib


def test_channel_stats_and_normalize():
  images = np.random.default_rng(3).integers(0, 256, (6, 5, 5, 2), dtype=np.uint8)
  mean, std = data_lib.channel_stats(images)
  as_float = images.astype(np.float64) / 255
  np.testing.assert_allclose(mean, as_float.mean(axis=(0, 1, 2)), rtol=1e-12)
  np.testing.assert_allclose(std, as_float.std(axis=(0, 1, 2)), rtol=1e-12)
  x = data_lib.normalize(images, mean, std)
  assert x.dtype == np.float32
  np.testing.assert_allclose(x.mean(axis=(0, 1, 2)), 0, atol=1e-5)
  np.testing.assert_allclose(x.std(axis=(0, 1, 2)), 1, atol=1e-5)
  corners = data_lib.normalize(np.array([0, 255], np.uint8).reshape(1, 1, 2, 1), [0.5], [0.25])
  np.testing.assert_allclose(corners.ravel(), [-2, 2], rtol=1e-6)


def test_random_crop():
  images = np.arange(2 * 6 * 6 * 1, dtype=np.uint8).reshape(2, 6, 6, 1) + 1  # no zero pixels
  same = data_lib.random_crop(images, None, padding=2, offsets=np.array([[2, 2], [2, 2]]))
  np.testing.assert_array_equal(same, images)
  moved = data_lib.random_crop(images, None, padding=2, offsets=np.array([[0, 0], [4, 3]]))
  # Corner (0, 0): content shifts down-right, zero padding enters top and left.
  np.testing.assert_array_equal(moved[0, 2:, 2:], images[0, :4, :4])
  assert not moved[0, :2].any() and not moved[0, :, :2].any()
  # Corner (4, 3): content shifts up by 2 and left by 1.
  np.testing.assert_array_equal(moved[1, :4, :5], images[1, 2:, 1:])
  assert not moved[1, 4:].any() and not moved[1, :, 5:].any()
  # Random offsets: every output is one of the (2p+1)^2 possible crops.
  out = data_lib.random_crop(images, np.random.default_rng(0), padding=2)
  padded = np.pad(images, ((0, 0), (2, 2), (2, 2), (0, 0)))
  for b in range(2):
    crops = [padded[b, r:r + 6, c:c + 6] for r in range(5) for c in range(5)]
    assert any(np.array_equal(out[b], crop) for crop in crops)


def test_random_flip():
  image = np.array([1, 2, 3], np.uint8).reshape(1, 1, 3, 1)
  images = np.concatenate([image, image])
  out = data_lib.random_flip(images, None, flips=np.array([True, False]))
  np.testing.assert_array_equal(out[0].ravel(), [3, 2, 1])
  np.testing.assert_array_equal(out[1].ravel(), [1, 2, 3])
  rng_out = data_lib.random_flip(np.repeat(image, 64, axis=0), np.random.default_rng(0))
  flipped = rng_out[:, 0, 0, 0] == 3
  assert 0 < flipped.sum() < 64
  kept = rng_out[~flipped, 0, :, 0]
  np.testing.assert_array_equal(kept, np.tile([1, 2, 3], (len(kept), 1)))


def test_cutout_square():
  ones = np.ones((2, 8, 8, 3), np.float32)
  out = data_lib.cutout(ones, None, length=4, centers=np.array([[4, 4], [1, 6]]))
  expected = np.ones((2, 8, 8), np.float32)
  expected[0, 2:6, 2:6] = 0  # rows/cols [4 - 2, 4 + 2)
  expected[1, 0:3, 4:8] = 0  # rows [-1, 3) and cols [4, 8), clipped at the borders
  np.testing.assert_array_equal(out, np.repeat(expected[..., None], 3, axis=-1))
  # Random centres: at most length^2 pixels, zeroed in all channels alike.
  rand = data_lib.cutout(np.ones((16, 8, 8, 3), np.float32), np.random.default_rng(0), length=4)
  zeros = (rand == 0).sum(axis=(1, 2))
  assert (zeros[:, 0] == zeros[:, 1]).all() and (zeros[:, 0] <= 16).all() and zeros.min() > 0


def test_augment_batch_is_deterministic_from_rng(indexed_dataset):
  images = indexed_dataset(4, (8, 8, 3)).images
  aug = data_lib.Augment(crop_padding=2, flip=True, cutout_length=3)
  a = data_lib.augment_batch(images, np.random.default_rng(7), aug, (0.5,) * 3, (0.25,) * 3)
  b = data_lib.augment_batch(images, np.random.default_rng(7), aug, (0.5,) * 3, (0.25,) * 3)
  c = data_lib.augment_batch(images, np.random.default_rng(8), aug, (0.5,) * 3, (0.25,) * 3)
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, c)
  off = data_lib.Augment(crop_padding=0, flip=False, cutout_length=0)
  plain = data_lib.augment_batch(images, np.random.default_rng(7), off, (0.5,) * 3, (0.25,) * 3)
  np.testing.assert_array_equal(plain, data_lib.normalize(images, (0.5,) * 3, (0.25,) * 3))
