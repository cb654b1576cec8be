"""The DARTS search super-net and its steps in PyTorch, for side-by-side benchmarks.

Written from the DARTS definitions (Liu et al., 2019: ops, MixedOp, search cell,
network, the unrolled second-order architecture step) so `bench/compare.py` can time
the same network, batch and estimator in both frameworks on one machine. It mirrors
the reference code's choices: NCHW, `none` computed as x·0, BatchNorm without affine
in the search cells, momentum SGD with the weight gradient clipped to norm 5, Adam
on α. Benchmark only: nothing in `amdarts/` or `tests/` imports torch.

    python bench/compare.py --space=s3 --cells=3 --nodes=2 --c=8 --batch=16
"""

from __future__ import annotations

import torch
from torch import nn
import torch.nn.functional as F


class ReLUConvBN(nn.Sequential):

  def __init__(self, c_in, c_out, k, stride, padding, affine):
    super().__init__(nn.ReLU(inplace=False),
                     nn.Conv2d(c_in, c_out, k, stride, padding, bias=False),
                     nn.BatchNorm2d(c_out, affine=affine))


class DilConv(nn.Sequential):

  def __init__(self, c_in, c_out, k, stride, padding, dilation, affine):
    super().__init__(nn.ReLU(inplace=False),
                     nn.Conv2d(c_in, c_in, k, stride, padding, dilation=dilation, groups=c_in,
                               bias=False),
                     nn.Conv2d(c_in, c_out, 1, bias=False),
                     nn.BatchNorm2d(c_out, affine=affine))


class SepConv(nn.Sequential):

  def __init__(self, c_in, c_out, k, stride, padding, affine):
    super().__init__(DilConv(c_in, c_in, k, stride, padding, 1, affine),
                     DilConv(c_in, c_out, k, 1, padding, 1, affine))


class Zero(nn.Module):

  def __init__(self, stride):
    super().__init__()
    self.stride = stride

  def forward(self, x):
    return x[:, :, ::self.stride, ::self.stride].mul(0.0)


class FactorizedReduce(nn.Module):

  def __init__(self, c_in, c_out, affine):
    super().__init__()
    self.conv_1 = nn.Conv2d(c_in, c_out // 2, 1, stride=2, bias=False)
    self.conv_2 = nn.Conv2d(c_in, c_out // 2, 1, stride=2, bias=False)
    self.bn = nn.BatchNorm2d(c_out, affine=affine)

  def forward(self, x):
    x = F.relu(x)
    return self.bn(torch.cat([self.conv_1(x), self.conv_2(x[:, :, 1:, 1:])], dim=1))


def make_op(name, c, stride):
  if name == 'none':
    return Zero(stride)
  if name == 'max_pool_3x3':
    return nn.Sequential(nn.MaxPool2d(3, stride, 1), nn.BatchNorm2d(c, affine=False))
  if name == 'avg_pool_3x3':
    return nn.Sequential(nn.AvgPool2d(3, stride, 1, count_include_pad=False),
                         nn.BatchNorm2d(c, affine=False))
  if name == 'skip_connect':
    return nn.Identity() if stride == 1 else FactorizedReduce(c, c, False)
  k = int(name[-1])
  if name.startswith('sep_conv'):
    return SepConv(c, c, k, stride, k // 2, False)
  if name.startswith('dil_conv'):
    return DilConv(c, c, k, stride, k - 1, 2, False)
  raise ValueError(name)


class MixedOp(nn.Module):

  def __init__(self, ops, c, stride):
    super().__init__()
    self.ops = nn.ModuleList([make_op(o, c, stride) for o in ops])

  def forward(self, x, weights):
    return sum(w * op(x) for w, op in zip(weights, self.ops))


class Cell(nn.Module):

  def __init__(self, ops, steps, c_pp, c_p, c, reduction, reduction_prev):
    super().__init__()
    self.reduction, self.steps = reduction, steps
    self.pre0 = (FactorizedReduce(c_pp, c, False) if reduction_prev
                 else ReLUConvBN(c_pp, c, 1, 1, 0, False))
    self.pre1 = ReLUConvBN(c_p, c, 1, 1, 0, False)
    self.edges = nn.ModuleList(
        MixedOp(ops, c, 2 if reduction and j < 2 else 1)
        for i in range(steps) for j in range(2 + i))

  def forward(self, s0, s1, weights):
    states = [self.pre0(s0), self.pre1(s1)]
    offset = 0
    for _ in range(self.steps):
      s = sum(self.edges[offset + j](h, weights[offset + j]) for j, h in enumerate(states))
      offset += len(states)
      states.append(s)
    return torch.cat(states[-self.steps:], dim=1)


class Network(nn.Module):
  """The DARTS search network: stem, cells (reductions at 1/3 and 2/3), classifier."""

  def __init__(self, ops, c=16, num_classes=10, layers=8, steps=4, stem_multiplier=3):
    super().__init__()
    self.ops, self.steps = tuple(ops), steps
    c_curr = stem_multiplier * c
    self.stem = nn.Sequential(nn.Conv2d(3, c_curr, 3, padding=1, bias=False),
                              nn.BatchNorm2d(c_curr))
    c_pp, c_p, c_curr = c_curr, c_curr, c
    self.cells = nn.ModuleList()
    reduction_prev = False
    for i in range(layers):
      reduction = i in (layers // 3, 2 * layers // 3) and layers >= 3
      c_curr = c_curr * 2 if reduction else c_curr
      self.cells.append(Cell(ops, steps, c_pp, c_p, c_curr, reduction, reduction_prev))
      reduction_prev = reduction
      c_pp, c_p = c_p, steps * c_curr
    self.classifier = nn.Linear(c_p, num_classes)
    edges = sum(2 + i for i in range(steps))
    self.alphas_normal = nn.Parameter(1e-3 * torch.randn(edges, len(ops)))
    self.alphas_reduce = nn.Parameter(1e-3 * torch.randn(edges, len(ops)))

  def weights(self):
    return [p for n, p in self.named_parameters() if not n.startswith('alphas')]

  def arch(self):
    return [self.alphas_normal, self.alphas_reduce]

  def forward(self, x):
    s0 = s1 = self.stem(x)
    normal = F.softmax(self.alphas_normal, dim=-1)
    reduce = F.softmax(self.alphas_reduce, dim=-1)
    for cell in self.cells:
      s0, s1 = s1, cell(s0, s1, reduce if cell.reduction else normal)
    return self.classifier(s1.mean(dim=(2, 3)))

  def loss(self, x, y):
    return F.cross_entropy(self(x), y)


class Search:
  """DARTS's optimizers and the α estimators, on one network."""

  def __init__(self, net: Network, w_lr=0.025, momentum=0.9, wd=3e-4, clip=5.0, a_lr=3e-4,
               eta=0.1, eps_scale=0.01):
    self.net, self.w_lr, self.momentum, self.wd, self.clip = net, w_lr, momentum, wd, clip
    self.eta, self.eps_scale = eta, eps_scale
    self.w_opt = torch.optim.SGD(net.weights(), w_lr, momentum=momentum, weight_decay=wd)
    self.a_opt = torch.optim.Adam(net.arch(), a_lr, betas=(0.5, 0.999), weight_decay=1e-3)

  def weight_step(self, x, y):
    self.w_opt.zero_grad()
    loss = self.net.loss(x, y)
    loss.backward()
    nn.utils.clip_grad_norm_(self.net.weights(), self.clip)
    self.w_opt.step()
    return loss.detach()

  def alpha_step(self, estimator, x_train, y_train, x_val, y_val):
    self.a_opt.zero_grad()
    grads = getattr(self, estimator)(x_train, y_train, x_val, y_val)
    for a, g in zip(self.net.arch(), grads):
      a.grad = g
    self.a_opt.step()

  def search_step(self, estimator, x_train, y_train, x_val, y_val):
    self.alpha_step(estimator, x_train, y_train, x_val, y_val)
    return self.weight_step(x_train, y_train)

  # ---------------------------------------------------------------- estimators

  def first_order(self, x_train, y_train, x_val, y_val):
    return torch.autograd.grad(self.net.loss(x_val, y_val), self.net.arch())

  def _arch_grad_at(self, shift, x, y):
    """∇α L at ω + shift, restoring ω afterwards."""
    with torch.no_grad():
      for p, s in zip(self.net.weights(), shift):
        p.add_(s)
    g = torch.autograd.grad(self.net.loss(x, y), self.net.arch())
    with torch.no_grad():
      for p, s in zip(self.net.weights(), shift):
        p.sub_(s)
    return g

  def darts_second_order(self, x_train, y_train, x_val, y_val):
    """The reference's unrolled step: ω′ = ω − ξ(μ·buf + ∇ω L_train + λω), g1 at ω′,
    the second-order term by central differences at ω ± ε∇ω′ L_val."""
    w = self.net.weights()
    xi = self.w_lr
    g_train = torch.autograd.grad(self.net.loss(x_train, y_train), w)
    step = []
    for p, g in zip(w, g_train):
      buf = self.w_opt.state.get(p, {}).get('momentum_buffer')
      d = g + self.wd * p.detach()
      step.append(-xi * (d + self.momentum * buf if buf is not None else d))
    with torch.no_grad():
      for p, s in zip(w, step):
        p.add_(s)
    loss = self.net.loss(x_val, y_val)
    grads = torch.autograd.grad(loss, self.net.arch() + w)
    g1, v = grads[:2], grads[2:]
    with torch.no_grad():
      for p, s in zip(w, step):
        p.sub_(s)
    eps = self.eps_scale / torch.sqrt(sum((t * t).sum() for t in v))
    gp = self._arch_grad_at([eps * t for t in v], x_train, y_train)
    gn = self._arch_grad_at([-eps * t for t in v], x_train, y_train)
    return [a - xi * (p - n) / (2 * eps) for a, p, n in zip(g1, gp, gn)]

  def amended_fd(self, x_train, y_train, x_val, y_val):
    """Eq. 14-15: d = ∇ω L_train(ω + εv) − ∇ω L_train(ω − εv), then ∇α at ω ± d/2."""
    w = self.net.weights()
    grads = torch.autograd.grad(self.net.loss(x_val, y_val), self.net.arch() + w)
    g1, v = grads[:2], grads[2:]
    eps = self.eps_scale / torch.sqrt(sum((t * t).sum() for t in v))

    def grad_w_at(shift):
      with torch.no_grad():
        for p, s in zip(w, shift):
          p.add_(s)
      g = torch.autograd.grad(self.net.loss(x_train, y_train), w)
      with torch.no_grad():
        for p, s in zip(w, shift):
          p.sub_(s)
      return g

    d = [a - b for a, b in zip(grad_w_at([eps * t for t in v]),
                               grad_w_at([-eps * t for t in v]))]
    gp = self._arch_grad_at([t / 2 for t in d], x_train, y_train)
    gn = self._arch_grad_at([-t / 2 for t in d], x_train, y_train)
    return [a - self.eta * (p - n) / (2 * eps) for a, p, n in zip(g1, gp, gn)]

  def amended_exact(self, x_train, y_train, x_val, y_val):
    """g1 − η ∇²αω L_train · H · v by double backward (exact, eq. 5)."""
    w, arch = self.net.weights(), self.net.arch()
    grads = torch.autograd.grad(self.net.loss(x_val, y_val), arch + w)
    g1, v = grads[:2], grads[2:]
    g_w = torch.autograd.grad(self.net.loss(x_train, y_train), w, create_graph=True)
    hv = torch.autograd.grad(g_w, w, grad_outputs=v, retain_graph=True)
    mixed = torch.autograd.grad(g_w, arch, grad_outputs=hv)
    return [a - self.eta * m for a, m in zip(g1, mixed)]
