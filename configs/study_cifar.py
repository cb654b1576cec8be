r"""The stability study in the paper's setting: S1 on CIFAR-10, 200 search epochs, for a GPU.

    python experiments/study.py --config=configs/study_cifar.py --workdir=/tmp/study_cifar \
        --config.data.data_dir=/data/tensorflow_datasets
    python experiments/study.py --config=configs/study_cifar.py --workdir=/tmp/study_cifar \
        --dry_run                                   # the grid and its step counts
    # one cell per machine, then a plain run (same command, no --only) for the report:
    python experiments/study.py --config=configs/study_cifar.py --workdir=/shared/study_cifar \
        --only=amended_exact_eta0.1/seed_2

Table 1's arms (Section 3.1.1) and Fig. 5's η sweep (Appendix C.1): first- and
second-order DARTS, the amended gradient at η ∈ {0.1, 0.25, 0.5, 1.0}, the implicit
(CG) gradient, and random search over the same space, each search arm at 3 seeds
(as Table 5). Search as Section 3.1: DARTS's 8-cell, C=16 super-net of S1 with
pruned edges, batch 96, α by Adam (lr 3e-4, betas (0.5, 0.999), L2 1e-3), ω by SGD
(lr 0.025 cosine to 0.001), 200 epochs "to guarantee convergence". Every arm
searches without the regularisers of retraining (search.consistent_regularisers =
False), so arms differ only in the α estimator: compare the amended arms with Table 1's "w/o consistency"
row (3.08%), first-order DARTS with its 6.18%, #P 0. Evaluation as Section 3.1:
20 cells, C=36, 600 epochs, cutout, drop-path 0.2, auxiliary head; a shorter budget
is `--config.train.epochs=100` (it changes the numbers, not the ranking in DARTS's
experience; say so when you report them).

Cost: the paper gives 0.02 V100-days per search epoch for the amended gradient (so
4 days per 200-epoch search; 18 searches) plus the retrains (DARTS: ~1.5 V100-days
per 600 epochs; 21 of them). `study.cost` is not calibrated on a GPU yet (all 0):
--dry_run prints the step counts and says the estimate is missing; measure a few
hundred steps per estimator and fill it in. Needs tfds `cifar10` prepared in
ArrayRecord format under data.data_dir (README, "Data").
"""

import ml_collections

from configs import base


def get_config():
  c = base.get_config()
  c.model.depthwise = 'native'  # Grouped convolutions: the fast path on GPU.
  c.search.consistent_regularisers = False  # Arms differ only in the α estimator.
  c.search.epochs = 200  # Section 3.1.1: 200 search epochs for every competitor.
  c.search.diag_every = 520  # cos(g2′, g2) etc. every 2 epochs (260 steps each): 100 points.
  c.search.hessian_every = 1  # λ_max of ∇²α L_val every epoch, as R-DARTS tracks it.
  c.search.hessian_iters = 20  # Power-iteration products per λ_max.
  c.search.eval_batches = 0  # Super-net accuracy on all of search-val each epoch.
  c.checkpoint_every_steps = 1000  # Also at every epoch end.

  c.study = ml_collections.ConfigDict()
  # Grid arms: 'random', a hypergrad.ESTIMATORS name, or <estimator>_eta<η>.
  c.study.arms = ('first_order', 'darts_second_order', 'amended_exact_eta0.1',
                  'amended_exact_eta0.25', 'amended_exact_eta0.5', 'amended_exact_eta1.0',
                  'implicit', 'random')
  c.study.seeds = (0, 1, 2)  # Seeds of every search arm (and of its retrain).
  c.study.random_samples = 3  # Genotypes of the random arm, cells random/seed_0..K-1.
  c.study.toy = True  # Also write the toy problem's Fig. 4 into W/toy.

  # Measured costs for --dry_run's estimate, seconds; 0 = not measured.
  c.study.cost = ml_collections.ConfigDict()
  c.study.cost.measured = 'not calibrated on a GPU yet'  # Where and how, under what load.
  c.study.cost.step_s = ml_collections.ConfigDict(  # One search step (α + ω) per estimator.
      {'first_order': 0.0, 'darts_second_order': 0.0, 'amended_exact': 0.0, 'implicit': 0.0})
  c.study.cost.compile_s = ml_collections.ConfigDict(  # Its first compilation.
      {'first_order': 0.0, 'darts_second_order': 0.0, 'amended_exact': 0.0, 'implicit': 0.0})
  c.study.cost.cache_hit_s = 0.0  # Tracing a step XLA's persistent cache then serves.
  c.study.cost.epoch_eval_s = 0.0  # Super-net evaluation at an epoch's end.
  c.study.cost.diag_s = 0.0  # One hypergrad.diagnose call.
  c.study.cost.diag_compile_s = 0.0  # Its compilation (once per η: a constant in it).
  c.study.cost.hessian_s = 0.0  # One λ_max (hessian_iters products).
  c.study.cost.hessian_compile_s = 0.0  # Its compilation (once: the same in every arm).
  c.study.cost.retrain_step_s = 0.0  # One retraining step.
  c.study.cost.retrain_compile_s = 0.0  # Compiling a retrain network (every genotype).
  c.study.cost.test_eval_s = 0.0  # Test-split evaluation at a retrain epoch's end.
  return c
