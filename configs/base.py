"""Shared defaults: one config describes both search and retraining.

The paper's method on CIFAR-10 in space S1 (Section 3.1, DARTS's hyper-parameters):
the amended gradient (eq. 5, η = 0.1) and hyper-parameter consistency of the
regularisers: the 8-cell, C=16 search network trains with the retraining network's
cutout, drop-path schedule and auxiliary head (Table 1, Appendix B.1). Variants
import this module (or configs/cifar_s1.py) and override fields; every field is
commented here. `search.consistent_size=True` also searches at the retraining depth
and width (S2, Section 3.1.2).
"""

import ml_collections


def get_config():
  c = ml_collections.ConfigDict()
  c.seed = 0  # Seeds init, α, data order and augmentation.
  c.task = 'image'  # 'image' (CNN cells) or 'ptb' (recurrent cells).

  c.data = ml_collections.ConfigDict()
  c.data.name = 'cifar10'  # tfds name, 'fashion_mnist' (Debian IDX files) or 'synthetic'.
  c.data.data_dir = ''  # tfds data_dir, or the IDX directory; '' = the default place.
  c.data.train_portion = 0.5  # Search splits the train set: search-train / search-val.
  c.data.flip = True  # Random horizontal flips (with pad-4 random crops).
  c.data.max_examples = 0  # Use only the first N training examples (0 = all).
  c.data.image_size = 0  # Streaming tfds (ImageNet): crop size; 0 = native / 224.
  c.data.image_shape = (32, 32, 3)  # Synthetic data only.
  c.data.num_classes = 10  # Synthetic data only.

  c.space = ml_collections.ConfigDict()
  c.space.name = 's1'  # 's1' (8 DARTS ops), 's2' (skip, sep3x3), 's3' (sep3x3, skip, none).
  c.space.ops = ()  # Explicit op list overriding the space's; () = the space's.
  c.space.shared = True  # α shared by cell type (S1/S3) or one α per cell (S2).
  # 'pruned' (14 edges), 'fixed', 'searched' (β, eq. 16), 'two_stage' (searched, then
  # fixed on the searched edges: Appendix B.2 in one run).
  c.space.edge_mode = 'pruned'
  c.space.topology = ''  # JSON of searched input pairs for operator search on them.
  c.space.steps = 4  # Intermediate nodes per cell.

  # The retrain (evaluation) network; also the search network's size with
  # search.consistent_size.
  c.model = ml_collections.ConfigDict()
  c.model.kind = ''  # 'cifar' or 'imagenet' network; '' = from data.name.
  c.model.cells = 20  # Depth.
  c.model.c = 36  # Base width.
  c.model.stem_multiplier = 3  # Stem width = stem_multiplier · C (CIFAR stems).
  # Depthwise convolutions: 'auto' = amdarts.primitives (C++ kernels on CPU, grouped
  # convolutions on GPU); 'native' XLA grouped conv; 'shifted' k² shifted slices.
  c.model.depthwise = 'auto'

  c.search = ml_collections.ConfigDict()
  # Hyper-parameter consistency (Appendix B.1) is two independent switches. The first:
  # search with train.cutout, the train.drop_path ramp (over the search epochs) and the
  # auxiliary head (train.aux_weight); False searches with none, as DARTS ("w/o
  # consistency" in Table 1). The second: search at model.cells / model.c (S2).
  c.search.consistent_regularisers = True  # The retraining regularisers in search.
  c.search.consistent_size = False  # The retraining depth and width in search.
  c.search.cells = 8  # Depth of the search network without consistent_size.
  c.search.c = 16  # Width of the search network without consistent_size.
  c.search.epochs = 100  # Search length (at most).
  c.search.stop_after_unchanged = 0  # Finish once the genotype is unchanged for K epochs.
  c.search.batch_size = 96  # Global batch, split over all devices.
  c.search.estimator = 'amended_exact'  # See amdarts.hypergrad.ESTIMATORS.
  c.search.eta = 0.1  # Amending coefficient η (eq. 5).
  c.search.eps_scale = 0.01  # Finite differences: ε = eps_scale / ‖∇ω L_val‖.
  c.search.w_lr = 0.025  # Weights: SGD, cosine per epoch from w_lr to w_lr_min.
  c.search.w_lr_min = 0.001  # Final weight learning rate.
  c.search.w_momentum = 0.9  # SGD momentum on ω.
  c.search.w_wd = 3e-4  # L2 on ω added to the clipped gradient (torch SGD weight_decay).
  c.search.grad_clip = 5.0  # Global-norm clip of the weight gradient.
  c.search.a_lr = 3e-4  # Architecture: Adam learning rate.
  c.search.a_b1 = 0.5  # Adam β1 on α (DARTS: 0.5).
  c.search.a_b2 = 0.999  # Adam β2 on α.
  c.search.a_wd = 1e-3  # L2 on α added to the gradient, as torch Adam's weight_decay.
  c.search.alpha_init_scale = 1e-3  # α ~ scale · N(0, 1) as DARTS.
  c.search.eval_batches = 0  # Super-net eval on search-val per epoch: N batches (0 = all).
  c.search.diag_every = 0  # Every K steps log cos(g2', g2), cos(g2_darts, g2); 0 = off.
  c.search.hessian_every = 0  # Every N epochs (and at 0) log λ_max of ∇²α L_val; 0 = off.
  c.search.hessian_iters = 20  # Power-iteration products (exact HVPs in α) per λ_max.
  c.search.implicit_solver = 'cg'  # Implicit g2 (estimator and diagnostic): 'cg'/'neumann'.
  c.search.implicit_maxiter = 20  # CG iterations / Neumann terms.
  c.search.implicit_ridge = 1e-2  # Damping: (H + ridge·I)⁻¹.

  c.train = ml_collections.ConfigDict()
  c.train.genotype = ''  # Path to genotype.json / DARTS string file, or a name (DARTS_V2).
  c.train.epochs = 600  # Retraining length.
  c.train.batch_size = 96  # Global batch, split over all devices.
  c.train.w_lr = 0.025  # SGD learning rate, per-epoch schedule from here.
  c.train.w_lr_min = 0.0  # Final learning rate of the cosine schedule.
  c.train.w_lr_schedule = 'cosine'  # 'cosine', 'exponential' (×w_lr_gamma/epoch), 'linear'.
  c.train.w_lr_gamma = 0.97  # Per-epoch factor of the exponential schedule.
  c.train.warmup_epochs = 0  # Linear learning-rate warm-up epochs (0 = none).
  c.train.eval_batch_size = 0  # Test-split batch; 0 = train.batch_size.
  c.train.w_momentum = 0.9  # SGD momentum.
  c.train.w_wd = 3e-4  # L2 on ω added to the clipped gradient (torch SGD weight_decay).
  c.train.grad_clip = 5.0  # Global-norm clip of the weight gradient (0 = off).
  c.train.cutout = 16  # Cutout length (0 = off).
  c.train.resized_crop = False  # RandomResizedCrop to data.image_size, not the padded crop.
  c.train.color_jitter = (0.0, 0.0, 0.0, 0.0)  # ColorJitter brightness, contrast, saturation, hue.
  c.train.drop_path = 0.2  # Final drop-path rate, rising linearly over training (and search).
  c.train.auxiliary = True  # Auxiliary head at 2/3 depth (and in search, see above).
  c.train.aux_weight = 0.4  # Weight of the auxiliary head's loss.
  c.train.label_smoothing = 0.0  # ε of the smoothed training targets (ImageNet: 0.1).

  # The run loop (amdarts.loop), shared by every task.
  c.log_every_steps = 50  # Record train metrics every N steps (and at epoch ends).
  c.checkpoint_every_steps = 200  # Also at every epoch end; 0 = only there.
  c.keep_checkpoints = 2  # Newest checkpoints kept in <workdir>/checkpoints.
  return c
