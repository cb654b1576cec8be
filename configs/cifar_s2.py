"""S2 on CIFAR-10: 20 cells, C=36, one α per cell, ops {skip_connect, sep_conv_3x3}.

Searches directly in the retrain network (hyper-parameter consistency of both
kinds: the same depth and width, and the same cutout, drop-path schedule and
auxiliary head in search and retraining).
Fixed edges (node j <- c_{k-2} and its predecessor) by default; searched edges are
the two-stage search of Appendix B.2 (S2-A/B/C of Table 6):

    # fixed edges (Table 2: 2.60±0.15% after retraining; S2-F of Table 6)
    python experiments/search.py --config=configs/cifar_s2.py --workdir=/tmp/s2f
    # searched edges: stage 1 (β over input pairs, eq. 16) in /tmp/s2e/stage1, then
    # operator search on the kept edges in /tmp/s2e/stage2, resumable throughout
    python experiments/search.py --config=configs/cifar_s2.py \
        --config.space.edge_mode=two_stage --workdir=/tmp/s2e
    python experiments/train.py --config=configs/cifar_s2.py \
        --genotype=/tmp/s2f/genotype.json --workdir=/tmp/s2f_train

The paper reports 1.1 GPU-days (fixed) and 3.1 (searched) on V100s.
"""

from configs import cifar_s1


def get_config():
  c = cifar_s1.get_config()
  c.space.name = 's2'
  c.space.shared = False
  c.space.edge_mode = 'fixed'
  c.search.consistent_size = True  # 20 cells, C=36; regularisers as in cifar_s1.
  return c
