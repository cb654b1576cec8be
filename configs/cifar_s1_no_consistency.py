"""Table 1, "w/o consistency": the method without the retraining regularisers in search.

    python experiments/search.py --config=configs/cifar_s1_no_consistency.py \
        --config.search.epochs=200 --workdir=/tmp/s1_no_consistency

configs/cifar_s1.py with `search.consistent_regularisers=False`: the amended
gradient (η = 0.1), but the search runs without cutout, drop-path and the auxiliary
head, as DARTS's search does; retraining is unchanged. The paper reports 3.08% test
error, 3.3M parameters and #P = 5 after 200 search epochs (its Figure 5, middle).
"""

from configs import cifar_s1


def get_config():
  c = cifar_s1.get_config()
  c.search.consistent_regularisers = False
  return c
