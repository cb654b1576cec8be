"""S1, the DARTS space on CIFAR-10 with pruned edges (Table 2, first Amended-DARTS row).

    python experiments/search.py --config=configs/cifar_s1.py --workdir=/tmp/s1
    python experiments/train.py --config=configs/cifar_s1.py \
        --config.train.genotype=/tmp/s1/genotype.json --workdir=/tmp/s1_train

Needs the tfds `cifar10` dataset prepared in --config.data.data_dir. The paper reports
0.02 GPU-days (V100) per search epoch and 2.71±0.09% test error after retraining.
"""

from configs import base


def get_config():
  return base.get_config()
