r"""PROVISIONAL (being calibrated)."""

from configs import study_cifar


def get_config():
  c = study_cifar.get_config()
  c.data.name = 'fashion_mnist'
  c.data.max_examples = 2000
  c.space.name = 's3'
  c.space.steps = 3
  c.model.depthwise = 'auto'
  c.search.cells = 3
  c.search.c = 4
  c.search.batch_size = 16
  c.search.epochs = 10
  c.search.a_lr = 3e-3
  c.search.eval_batches = 8
  c.search.diag_every = 200
  c.search.hessian_every = 2
  c.search.implicit_maxiter = 10
  c.model.cells = 3
  c.model.c = 8
  c.train.epochs = 3
  c.train.batch_size = 64
  c.train.cutout = 0
  c.train.drop_path = 0.0
  c.train.auxiliary = False
  c.study.seeds = (0, 1)
  c.study.random_samples = 4
  c.log_every_steps = 5
  c.checkpoint_every_steps = 100
  return c
