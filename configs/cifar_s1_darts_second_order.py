"""Table 1, "DARTS (second-order)": DARTS's own search, its unrolled second-order gradient.

    python experiments/search.py --config=configs/cifar_s1_darts_second_order.py \
        --config.search.epochs=200 --workdir=/tmp/s1_darts_second_order

DARTS's estimator: g2 with H⁻¹ replaced by the identity, through one unrolled SGD
step and finite differences (Section 2.4), and DARTS's search without cutout,
drop-path or auxiliary head (configs/cifar_s1_no_consistency.py with that
estimator). The paper reports 5.15% test error, 1.5M parameters and #P = 0 after
200 search epochs.
"""

from configs import cifar_s1_no_consistency


def get_config():
  c = cifar_s1_no_consistency.get_config()
  c.search.estimator = 'darts_second_order'
  return c
