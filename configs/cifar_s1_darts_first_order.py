"""Table 1, "DARTS (first-order)": DARTS's own search, first-order gradient.

    python experiments/search.py --config=configs/cifar_s1_darts_first_order.py \
        --config.search.epochs=200 --workdir=/tmp/s1_darts_first_order

Neither ingredient of the method: α follows g1 alone and the search has no cutout,
drop-path or auxiliary head (configs/cifar_s1_no_consistency.py with the
first-order estimator). The paper reports 6.18% test error, 1.4M parameters and an
all-skip-connect normal cell (#P = 0) after 200 search epochs (Figure 1, Figure 7).
"""

from configs import cifar_s1_no_consistency


def get_config():
  c = cifar_s1_no_consistency.get_config()
  c.search.estimator = 'first_order'
  return c
