"""ImageNet (ILSVRC2012) transfer under the mobile setting (Section 3.2, Table 3).

    python experiments/train.py --config=configs/imagenet.py \
        --genotype=/tmp/s1/genotype.json --workdir=/tmp/s1_imagenet \
        --config.data.data_dir=/data/tensorflow_datasets

Needs tfds `imagenet2012` prepared in ArrayRecord format under data.data_dir. The
CIFAR-searched cells are stacked into DARTS's NetworkImageNet (14 cells, stride-8
stems); `model.c = 0` picks the widest even C whose 224×224 forward pass stays within
600M multiply-adds (amdarts.flops.choose_width, counting as ptflops; DARTS_V2 gets
C=50, 588.8M, where DARTS set C=48 by hand). Schedule as the paper: 250 epochs of
SGD, lr 0.5 decaying linearly per epoch, momentum 0.9, weight decay 3e-5; as DARTS's
train_imagenet.py, label smoothing 0.1, the auxiliary head, RandomResizedCrop(224) +
flip + ColorJitter(0.4, 0.4, 0.4, 0.2) in training and the 256 -> 224 centre crop
at test. The paper reports 24.7% / 24.3% / 24.3%
top-1 error for S1 pruned / S2 fixed / S2 searched edges (5.2M-5.5M params,
586M-596M multiply-adds).

DARTS's own ImageNet schedule: --config.train.w_lr=0.1 --config.train.batch_size=128
--config.train.w_lr_schedule=exponential --config.train.warmup_epochs=0 --config.model.c=48.
"""

from configs import base


def get_config():
  c = base.get_config()
  c.data.name = 'imagenet2012'
  c.data.image_size = 224  # Test: shorter side to 256, centre crop 224.
  c.data.flip = True

  c.model.cells = 14
  c.model.c = 0  # 0 = the widest even C within the 600M multiply-add budget.

  c.train.epochs = 250
  c.train.batch_size = 1024  # Not stated in the paper; PC-DARTS's with lr 0.5.
  c.train.eval_batch_size = 1024  # The last batch is padded and masked.
  c.train.w_lr = 0.5
  c.train.w_lr_schedule = 'linear'  # w_lr·(1 - epoch/epochs); 'cosine', 'exponential'.
  c.train.w_lr_gamma = 0.97  # Per-epoch factor of the exponential schedule (DARTS).
  c.train.warmup_epochs = 5  # PC-DARTS warms up 5 epochs at batch 1024; unstated in the paper.
  c.train.w_lr_min = 0.0
  c.train.w_wd = 3e-5
  c.train.cutout = 0
  # DARTS's train_imagenet.py: RandomResizedCrop(224), flip, ColorJitter(0.4, 0.4, 0.4, 0.2).
  c.train.resized_crop = True
  c.train.color_jitter = (0.4, 0.4, 0.4, 0.2)
  c.train.drop_path = 0.0  # DARTS's ImageNet default.
  c.train.auxiliary = True
  c.train.aux_weight = 0.4
  c.train.label_smoothing = 0.1

  c.log_every_steps = 100
  c.checkpoint_every_steps = 1000
  return c
