"""Image datasets, DARTS splits, augmentation and deterministic batches, on the host in NumPy.

One idea per module; the names a caller needs are re-exported here, so callers write
`data_lib.load_dataset(...)`, `data_lib.batch_at(...)`:

  sources    where datasets come from: `load_dataset` (synthetic, Fashion-MNIST IDX
             files, prepared tfds/ArrayRecord datasets), `DATASET_STATS`
  datasets   what a dataset is: `ArrayDataset` (in memory), `StreamingDataset` (read
             by index), `channel_stats`, the DARTS `search_split`
  augment    per-batch preprocessing: `normalize`, `random_crop`, `random_flip`,
             `cutout`, `random_resized_crop`, `color_jitter`, `Augment`,
             `IMAGENET_AUGMENT`, `augment_batch`, `resize_center_crop`
  batching   `batch_at(dataset, epoch, index, ...)`, `epoch_batches`, the resumable
             `Batches` stream
  seeds      the seed sequences that keep the random streams apart

Batch `index` of `epoch` depends only on (seed, epoch, index), never on what was drawn
before, so a resumed run sees exactly the batches of an uninterrupted one.
"""

from amdarts.data.augment import Augment
from amdarts.data.augment import IMAGENET_AUGMENT
from amdarts.data.augment import augment_batch
from amdarts.data.augment import color_jitter
from amdarts.data.augment import cutout
from amdarts.data.augment import normalize
from amdarts.data.augment import random_crop
from amdarts.data.augment import random_flip
from amdarts.data.augment import random_resized_crop
from amdarts.data.augment import resize_center_crop
from amdarts.data.batching import Batches
from amdarts.data.batching import batch_at
from amdarts.data.batching import batch_rng
from amdarts.data.batching import epoch_batches
from amdarts.data.batching import epoch_permutation
from amdarts.data.batching import steps_per_epoch
from amdarts.data.datasets import ArrayDataset
from amdarts.data.datasets import channel_stats
from amdarts.data.datasets import Dataset
from amdarts.data.datasets import search_split
from amdarts.data.datasets import StreamingDataset
from amdarts.data.sources import DATASET_STATS
from amdarts.data.sources import FASHION_MNIST_DIR
from amdarts.data.sources import load_dataset
from amdarts.data.sources import load_fashion_mnist
from amdarts.data.sources import load_tfds
from amdarts.data.sources import read_idx
from amdarts.data.sources import synthetic
