"""Tests of amdarts.data.datasets: the DARTS search split."""

import numpy as np
import pytest

from amdarts import data as data_lib


@pytest.mark.parametrize('seed', [None, 3])
def test_search_split_halves(seed, indexed_dataset):
  ds = indexed_dataset(11)
  train, val = data_lib.search_split(ds, 0.5, seed=seed)
  assert len(train) == 5 and len(val) == 6  # floor(0.5 * 11), as DARTS
  assert not set(train.labels) & set(val.labels)
  assert sorted([*train.labels, *val.labels]) == list(range(11))
  np.testing.assert_array_equal(train.images, ds.images[train.labels])
  if seed is None:  # DARTS: plain first half
    np.testing.assert_array_equal(train.labels, np.arange(5))
  else:
    assert not np.array_equal(train.labels, np.arange(5))
  with pytest.raises(ValueError, match='empty half'):
    data_lib.search_split(ds, 0.05)
