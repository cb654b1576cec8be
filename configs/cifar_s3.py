"""S3 on CIFAR-10: ops {sep_conv_3x3, skip_connect, none}, the R-DARTS space (App. C.2).

    python experiments/search.py --config=configs/cifar_s3.py --workdir=/tmp/s3

Otherwise DARTS's S1 setting (8 cells, C=16, pruned edges). The paper reports 2.55%
test error after retraining, against 3.05% for random search.
"""

from configs import base


def get_config():
  c = base.get_config()
  c.space.name = 's3'
  return c
