"""Seeds of the data pipeline's random streams.

Every random draw of the pipeline (the synthetic images, the search split, each
epoch's example order, each batch's augmentation) comes from its own
`np.random.SeedSequence`, built from the user's seed and fixed tags. Streams never
collide, and none depends on what another drew before, which is what makes a batch a
pure function of (seed, epoch, index).
"""

from __future__ import annotations

import numpy as np

# Stream tags keep the RNG streams for permutations, augmentation and splits apart
# although all derive from the same user seed.
PERMUTATION, AUGMENT, SPLIT, SYNTHETIC = 0, 1, 2, 3


def sequence(seed: int | np.random.SeedSequence, *words: int) -> np.random.SeedSequence:
  """A SeedSequence from the seed and fixed-length tags, so streams never collide.

  Args:
    seed: a non-negative user seed, or a SeedSequence whose entropy is extended.
    *words: tags (a stream tag from this module, then e.g. epoch and batch index).

  Returns:
    The stream's SeedSequence.

  Raises:
    ValueError: for a negative seed.
  """
  if isinstance(seed, np.random.SeedSequence):
    entropy = seed.entropy
    entropy = list(entropy) if isinstance(entropy, (list, tuple)) else [entropy]
    return np.random.SeedSequence([*entropy, *words])
  if seed < 0:
    raise ValueError(f'seed must be non-negative, got {seed}')
  return np.random.SeedSequence([seed, *words])
