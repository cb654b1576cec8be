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


# ----------------------------------------------------------------- ImageNet recipe


def test_random_resized_crop_boxes_and_fallback():
  rng = np.random.default_rng(0)
  image = rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)
  for seed in range(5):
    out = data_lib.random_resized_crop(image, np.random.default_rng(seed), 16)
    assert out.shape == (16, 16, 3) and out.dtype == np.uint8
  gray = rng.integers(0, 256, (20, 30, 1), dtype=np.uint8)
  assert data_lib.random_resized_crop(gray, rng, 8).shape == (8, 8, 1)
  # Whole area at the image's own aspect ratio: the box is the image.
  import PIL.Image
  whole = data_lib.random_resized_crop(image, rng, 16, scale=(1, 1), ratio=(53 / 37, 53 / 37))
  np.testing.assert_array_equal(
      whole, np.asarray(PIL.Image.fromarray(image).resize((16, 16), PIL.Image.BILINEAR)))
  # 10×100 cannot hold the whole area at ratio <= 4/3: torchvision's fallback is the
  # centre 10×13 box (columns 43..55), which a column-index image reveals.
  columns = np.broadcast_to(np.arange(100, dtype=np.uint8)[None, :, None], (10, 100, 3)).copy()
  out = data_lib.random_resized_crop(columns, rng, 13, scale=(1, 1))
  assert out.min() >= 43 and out.max() <= 55


def test_color_jitter_each_adjustment():
  rng = np.random.default_rng(1)
  images = rng.integers(0, 256, (6, 5, 5, 3), dtype=np.uint8)
  off = data_lib.color_jitter(images, np.random.default_rng(0), 0, 0, 0, 0)
  np.testing.assert_array_equal(off, images)
  # Brightness only: every pixel of an image scaled by one factor in [0.6, 1.4].
  mid = np.full((8, 2, 2, 3), 100, np.uint8)
  bright = data_lib.color_jitter(mid, np.random.default_rng(2), 0.4, 0, 0, 0).astype(float)
  assert (bright == bright[:, :1, :1, :1]).all()
  assert 60 <= bright.min() < bright.max() <= 140
  # Saturation and hue leave gray pixels gray; contrast keeps the mean gray.
  gray = np.repeat(rng.integers(0, 256, (4, 3, 3, 1), dtype=np.uint8), 3, axis=-1)
  np.testing.assert_array_equal(
      data_lib.color_jitter(gray, np.random.default_rng(3), 0, 0, 0.4, 0.2), gray)
  flat = np.full((4, 3, 3, 3), 77, np.uint8)
  np.testing.assert_array_equal(data_lib.color_jitter(flat, rng, 0, 0.4, 0, 0), flat)
  # A hue turn of 1/3 maps red to green, 2/3 red to blue.
  red = np.zeros((2, 1, 1, 3), np.float32)
  red[..., 0] = 1
  turned = data_lib.augment.adjust_hue(red, np.array([1 / 3, 2 / 3], np.float32))
  np.testing.assert_allclose(turned[:, 0, 0], [[0, 1, 0], [0, 0, 1]], atol=1e-6)
  x = rng.random((3, 4, 4, 3)).astype(np.float32)
  np.testing.assert_allclose(data_lib.augment.adjust_hue(x, np.zeros(3, np.float32)), x,
                             atol=1e-6)
  # All four: u8 of the same shape, different images.
  both = data_lib.color_jitter(images, np.random.default_rng(4), 0.4, 0.4, 0.4, 0.2)
  assert both.shape == images.shape and both.dtype == np.uint8
  assert not np.array_equal(both, images)
