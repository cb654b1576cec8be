"""The offline default: a real amended-gradient search on Fashion-MNIST, on CPU.

    make search        # = python experiments/search.py --config=configs/fashion_mnist.py \
                       #       --workdir=workdirs/fashion_mnist

Data: Debian's `dataset-fashion-mnist` IDX files (`make data` installs them). The
paper's S3 space (sep_conv_3x3, skip_connect, none) with pruned edges, 5 cells of 4
nodes, C=8, on a 3,000-image slice of the training set halved into search-train and
search-val; depthwise convolutions by amdarts's C++ CPU kernels. Prints the
derived genotype; metrics.jsonl, genotype.json/.txt/.png and search_curves.png land
in the workdir. Measured wall time and result: see README.md.

What differs from the paper's method (configs/cifar_s1.py), and why: the data set
and its size, 5 cells of C=8 instead of 8 of C=16 and 3 epochs instead of 100 make
a search of minutes on two CPU cores; S3's three ops keep its compile short. The
search runs without the retraining regularisers (Table 1's "w/o consistency"
setting): cutout 16 would hide a third of a 28×28 image, and README.md's measured
time and accuracies are for this setting. The method's regularisers fit these
images too (the auxiliary head sits after cell 3, on 7×7 features):
--config.search.consistent_regularisers=True.
"""

from configs import base


def get_config():
  c = base.get_config()
  c.data.name = 'fashion_mnist'
  c.data.max_examples = 3000
  c.data.flip = True
  c.space.name = 's3'
  c.search.consistent_regularisers = False  # See the docstring.
  c.search.cells = 5
  c.search.c = 8
  c.search.epochs = 3
  c.search.batch_size = 32
  c.search.eval_batches = 8
  c.log_every_steps = 5
  c.checkpoint_every_steps = 25
  return c
