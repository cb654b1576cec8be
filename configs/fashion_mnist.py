"""The offline default: a real amended-gradient search on Fashion-MNIST, on CPU.

    make search        # = python experiments/search.py --config=configs/fashion_mnist.py \
                       #       --workdir=workdirs/fashion_mnist

Data: Debian's `dataset-fashion-mnist` IDX files (`make data` installs them). The
paper's S3 space (sep_conv_3x3, skip_connect, none) with pruned edges, 5 cells of 4
nodes, C=8, on a 3,000-image slice of the training set halved into search-train and
search-val; shifted depthwise convolutions, the fast path on XLA:CPU. Prints the
derived genotype; metrics.jsonl, genotype.json/.txt/.png and search_curves.png land
in the workdir. Measured wall time and result: see README.md.
"""

from configs import base


def get_config():
  c = base.get_config()
  c.data.name = 'fashion_mnist'
  c.data.max_examples = 3000
  c.data.flip = True
  c.space.name = 's3'
  c.search.cells = 5
  c.search.c = 8
  c.search.epochs = 3
  c.search.batch_size = 32
  c.search.eval_batches = 8
  c.log_every_steps = 5
  c.checkpoint_every_steps = 25
  return c
