r"""A tiny study on synthetic data: the whole pipeline in a few minutes (tests, smoke runs).

    python experiments/study.py --config=configs/study_tiny.py --workdir=/tmp/study_tiny

Two search arms (first-order and amended, η = 0.5) at one seed, 2 epochs of 3 steps on
48 synthetic 8×8 images, S3 with one node per cell, 3 cells of C=4; one random
genotype; each genotype retrained for 1 epoch. Its numbers mean nothing: it shows the
grid, the resume, the report and the figures end to end.
"""

from configs import study_cpu


def get_config():
  c = study_cpu.get_config()
  c.data.name = 'synthetic'
  c.data.max_examples = 48  # 24 + 24 search examples: 3 steps of batch 8 per epoch.
  c.data.image_shape = (8, 8, 3)
  c.data.flip = False
  c.space.steps = 1  # One node: 2 edges per cell, 2 genes per normal cell.
  c.search.cells = 3
  c.search.c = 4
  c.search.batch_size = 8
  c.search.epochs = 2
  c.search.eval_batches = 1
  c.search.diag_every = 3  # Once per epoch.
  c.search.hessian_every = 1
  c.search.hessian_iters = 5
  c.search.implicit_maxiter = 3
  c.model.cells = 3
  c.model.c = 4
  c.train.epochs = 1
  c.train.batch_size = 16
  c.study.arms = ('first_order', 'amended_exact_eta0.5', 'random')
  c.study.seeds = (0,)
  c.study.random_samples = 1
  c.study.toy = False
  c.log_every_steps = 1
  c.checkpoint_every_steps = 0
  return c
