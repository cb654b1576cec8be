"""The method in S1, the DARTS space on CIFAR-10 with pruned edges.

    python experiments/search.py --config=configs/cifar_s1.py --workdir=/tmp/s1
    python experiments/train.py --config=configs/cifar_s1.py \
        --config.train.genotype=/tmp/s1/genotype.json --workdir=/tmp/s1_train

The amended gradient (eq. 5, η = 0.1) and the retraining regularisers in the search
(cutout 16, drop-path ramping to 0.2 over the search epochs, auxiliary head weighted
0.4) at the search network's own depth and width (8 cells, C=16); 100 search epochs
(Appendix C.1), then 600 epochs of retraining at 20 cells, C=36. Needs the tfds
`cifar10` dataset prepared in --config.data.data_dir. The paper reports 0.02 GPU-days
(V100) per search epoch and 2.71±0.09% test error after retraining (Table 6, S1-A).

Table 1 runs every search for 200 epochs: its "Our Approach" row (2.71%, 3.3M
parameters, #P = 7) is this config with --config.search.epochs=200; the ablations
are configs/cifar_s1_first_order.py ("w/o amending term"),
configs/cifar_s1_no_consistency.py ("w/o consistency") and
configs/cifar_s1_darts_{first,second}_order.py (the DARTS rows).
"""

from configs import base


def get_config():
  return base.get_config()
