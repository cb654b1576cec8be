r"""The stability study in miniature, end to end on a 2-core CPU in about an hour.

    python experiments/study.py --config=configs/study_cpu.py --workdir=workdirs/study_cpu
    python experiments/study.py --config=configs/study_cpu.py --workdir=workdirs/study_cpu \
        --dry_run                                   # the grid, its steps, the estimate

Expected wall time: about 64 min on an idle 2-core machine (`--dry_run` adds it up
from `study.cost` below), longer on a shared one. A killed run resumes with the
same command.

The grid is the paper's (configs/study_cifar.py): first- and second-order DARTS, the
amended gradient at η ∈ {0.1, 0.25, 0.5, 1.0} (Fig. 5's sweep), the implicit (CG)
gradient, each at 2 seeds, and random search with 4 samples; every genotype is then
retrained from scratch and tested. What differs from the paper, and why:

- Data: Fashion-MNIST (offline, `make data`), 28×28 grey, the first 1,280 training
  images (640 search-train, 640 search-val) instead of CIFAR-10's 50,000: a search
  step of the 8-cell S1 super-net takes seconds on CPU and its second-order graph
  does not compile in 17 GB; a small set also lets ω fit its half quickly, the
  regime in which DARTS collapses.
- Space S3 (sep_conv_3x3, skip_connect, none; R-DARTS's space where DARTS collapses
  to skip connections) instead of S1: three ops keep compiles short. 3 nodes per
  cell (6 kept normal-cell ops instead of 8), 3 cells of C=4 instead of 8 of C=16.
- 8 search epochs of 40 steps (320 α steps, batch 16) instead of 200 × 260 (batch
  96); α's Adam learning rate 5e-3 instead of 3e-4, so that α can move as far in 320
  steps as DARTS's in thousands (an Adam step moves each entry by about the
  learning rate). 320 steps are where `make search` (S3, amended, η = 0.1) already
  ended with 6 of 8 normal-cell edges skip_connect: room to collapse.
- No retraining regularisers in search (`search.consistent_regularisers = False`,
  as study_cifar): the arms differ only in the α estimator.
- Implicit gradient (the arm and g2 of the diagnostics): 5 CG iterations (ridge
  0.01) instead of 20: each iteration is a Hessian-vector product in ω, and the
  implicit arm would otherwise cost as much as all four amended arms.
- Diagnostics every 80 steps (4 per search), λ_max of ∇²α L_val every 2 epochs
  (and at the start) with 20 power-iteration products on a fixed search-val batch;
  the super-net's per-epoch accuracy on 8 search-val batches (128 images).
- Evaluation: 3 cells of C=8, 3 epochs on the same 1,280 images (batch 64, no
  cutout, drop-path or auxiliary head: 28×28 images, a 60-step budget), tested on
  the full 10,000-image test split, instead of 20 cells of C=36 for 600 epochs.
  Test errors are therefore high and close: read them against the seed-to-seed
  spread the report prints, and the cell statistics (skip count, #P) first.

Calibration (`study.cost`): measured on the 2-core machine under load (load average
5-8, 3 other agents) with `nice`, by timing the jitted steps of this config
(median of 4 runs after the first; the first call is the compile). Under load the
measured process's CPU time per step equalled its wall time (one core's worth), so
CPU seconds are the idle estimate below; an idle machine may run XLA's threads on
both cores and be faster.
"""

from configs import study_cifar


def get_config():
  c = study_cifar.get_config()
  c.data.name = 'fashion_mnist'
  c.data.max_examples = 1280  # 640 + 640 search examples: 40 steps of 16 per epoch.
  c.space.name = 's3'
  c.space.steps = 3
  c.model.depthwise = 'auto'
  c.search.cells = 3
  c.search.c = 4
  c.search.batch_size = 16
  c.search.epochs = 8
  c.search.a_lr = 5e-3
  c.search.eval_batches = 8
  c.search.diag_every = 80
  c.search.hessian_every = 2
  c.search.hessian_iters = 20
  c.search.implicit_maxiter = 5
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

  cost = c.study.cost  # CPU seconds of one process, measured as the docstring says.
  cost.measured = ('2-core CPU under load 5-8, nice, CPU seconds per call (= idle wall '
                   'estimate), 2026-12-01; implicit at 5 CG iterations scaled from 10')
  cost.step_s.first_order = 0.16
  cost.step_s.darts_second_order = 0.32
  cost.step_s.amended_exact = 0.44
  cost.step_s.implicit = 1.14  # 1.82 s at 10 CG iterations, 0.14 s per iteration.
  cost.compile_s.first_order = 21.0
  cost.compile_s.darts_second_order = 35.0
  cost.compile_s.amended_exact = 49.0
  cost.compile_s.implicit = 82.0  # CG is a while loop: its compile does not grow.
  cost.cache_hit_s = 10.0  # Estimate: tracing the step, eval, diag and λ_max graphs.
  cost.epoch_eval_s = 8 * 0.014
  cost.diag_s = 1.46  # 2.16 s at 10 CG iterations.
  cost.diag_compile_s = 105.0
  cost.hessian_s = 0.84
  cost.hessian_compile_s = 28.0
  cost.retrain_step_s = 0.27
  cost.retrain_compile_s = 14.0  # Train step 12 s, test evaluation 2 s.
  cost.test_eval_s = 157 * 0.027  # 10,000 test images in batches of 64.
  return c
