"""Table 1, "w/o amending term": the method with the first-order gradient g1 only.

    python experiments/search.py --config=configs/cifar_s1_first_order.py \
        --config.search.epochs=200 --workdir=/tmp/s1_first_order

configs/cifar_s1.py with the amending term g2′ (eq. 5) switched off, i.e. η = 0,
which the paper equates with first-order DARTS (Appendix C.1; Appendix A.2 calls
ignoring g2 the search "without the amending term"): α follows g1 = ∇α L_val alone.
The retraining regularisers stay in the search. The paper reports 3.15% test error,
3.9M parameters and #P = 6 after 200 search epochs.
"""

from configs import cifar_s1


def get_config():
  c = cifar_s1.get_config()
  c.search.estimator = 'first_order'  # g1 only: amended with η = 0, without its cost.
  return c
