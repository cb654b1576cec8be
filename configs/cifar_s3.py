"""S3 on CIFAR-10: ops {sep_conv_3x3, skip_connect, none}, the R-DARTS space (App. C.2).

    python experiments/search.py --config=configs/cifar_s3.py --workdir=/tmp/s3

Otherwise the method's S1 setting (configs/cifar_s1.py): 8 cells, C=16, pruned
edges, the retraining regularisers in the search. The paper reports 2.55% test
error for its best search (Section 3.1.1; random search: 3.05%) and 2.69±0.06%
averaged over three seeds with pruned edges (Table 5).
"""

from configs import cifar_s1


def get_config():
  c = cifar_s1.get_config()
  c.space.name = 's3'
  return c
