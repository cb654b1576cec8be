"""A tiny search on synthetic data: smoke tests and benchmarks, seconds per epoch.

    python experiments/search.py --config=configs/synthetic_tiny.py --workdir=/tmp/tiny
"""

from configs import base


def get_config():
  c = base.get_config()
  c.data.name = 'synthetic'
  c.data.max_examples = 64
  c.data.image_shape = (8, 8, 3)
  c.data.flip = False
  c.space.steps = 2
  # 8×8 images: cutout 16 would blank them and the auxiliary head needs 5×5 features.
  c.search.consistent_regularisers = False
  c.search.cells = 3
  c.search.c = 4
  c.search.epochs = 2
  c.search.batch_size = 8
  c.log_every_steps = 1
  c.checkpoint_every_steps = 2
  return c
