"""Primitive ops of the DARTS space, NHWC, defined as in the DARTS reference.

Order inside each op is ReLU-Conv-BN. Padding is explicit and symmetric as in
PyTorch (XLA's 'SAME' pads asymmetrically at stride 2). Batch norm uses PyTorch's
momentum 0.1 (flax momentum 0.9) and eps 1e-5; `affine=False` inside search cells.
Convolutions carry no bias and use PyTorch's default init, U(±1/√fan_in).

Depthwise convolutions can run as XLA's grouped convolution (`native`, right on GPU)
or as a sum of k² shifted element-wise products (`shifted`, much faster on XLA:CPU);
both share the same kernel layout, so parameters are interchangeable.
"""

from __future__ import annotations

import functools
from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

DEPTHWISE_IMPLS = ('native', 'shifted')

# PyTorch's kaiming_uniform_(a=√5) default for conv and linear weights.
torch_init = nn.initializers.variance_scaling(1 / 3, 'fan_in', 'uniform')


def _pad(p: int):
  return ((p, p), (p, p))


def batch_norm(train: bool, affine: bool, name: str | None = None) -> nn.BatchNorm:
  return nn.BatchNorm(
      use_running_average=not train, momentum=0.9, epsilon=1e-5,
      use_bias=affine, use_scale=affine, name=name)


class Conv(nn.Module):
  """k×k convolution without bias, explicit symmetric padding; a 1×1 one is a matmul.

  Named and laid out as flax's nn.Conv (`Conv_<i>`, kernel f32[k, k, C_in, C_out],
  same initialiser), so parameter trees and their initial values are unchanged. A
  1×1 convolution at stride s is x[:, ::s, ::s] · kernel: under `nn.vmap` over the
  super-net's edges this stays a batched matmul, where `conv_general_dilated` with a
  batched kernel becomes a grouped convolution, slow on XLA:CPU.
  """

  features: int
  k: int
  stride: int = 1
  padding: int = 0
  dilation: int = 1

  @nn.compact
  def __call__(self, x_BxHxWxC):
    kernel = self.param('kernel', torch_init,
                        (self.k, self.k, x_BxHxWxC.shape[-1], self.features))
    s = self.stride
    if self.k == 1 and self.padding == 0:
      x = x_BxHxWxC[:, ::s, ::s, :] if s > 1 else x_BxHxWxC
      return jnp.einsum('bhwc,cd->bhwd', x, kernel[0, 0])
    return jax.lax.conv_general_dilated(
        x_BxHxWxC, kernel, (s, s), _pad(self.padding),
        rhs_dilation=(self.dilation, self.dilation),
        dimension_numbers=('NHWC', 'HWIO', 'NHWC'))


def conv(features: int, k: int, stride: int = 1, padding: int = 0, dilation: int = 1,
         name: str | None = None) -> Conv:
  return Conv(features, k, stride, padding, dilation, name=name)


class DepthwiseConv(nn.Module):
  """Per-channel k×k convolution; kernel f32[k, k, 1, C] as flax's grouped conv."""

  k: int
  stride: int = 1
  padding: int = 0
  dilation: int = 1
  impl: str = 'native'

  @nn.compact
  def __call__(self, x_BxHxWxC):
    c = x_BxHxWxC.shape[-1]
    kernel = self.param('kernel', torch_init, (self.k, self.k, 1, c))
    if self.impl == 'native':
      return jax.lax.conv_general_dilated(
          x_BxHxWxC, kernel, (self.stride, self.stride), _pad(self.padding),
          rhs_dilation=(self.dilation, self.dilation),
          dimension_numbers=('NHWC', 'HWIO', 'NHWC'), feature_group_count=c)
    if self.impl != 'shifted':
      raise ValueError(f'depthwise impl must be one of {DEPTHWISE_IMPLS}, got {self.impl!r}')
    p, s, d = self.padding, self.stride, self.dilation
    x = jnp.pad(x_BxHxWxC, ((0, 0), (p, p), (p, p), (0, 0)))
    h_out = (x.shape[1] - d * (self.k - 1) - 1) // s + 1
    w_out = (x.shape[2] - d * (self.k - 1) - 1) // s + 1
    out = 0.0
    for i in range(self.k):
      for j in range(self.k):
        window = x[:, i * d: i * d + s * (h_out - 1) + 1: s,
                   j * d: j * d + s * (w_out - 1) + 1: s, :]
        out = out + window * kernel[i, j, 0]
    return out


class ReLUConvBN(nn.Module):
  c_out: int
  k: int
  stride: int = 1
  padding: int = 0
  affine: bool = True

  @nn.compact
  def __call__(self, x, train: bool):
    x = conv(self.c_out, self.k, self.stride, self.padding)(nn.relu(x))
    return batch_norm(train, self.affine)(x)


class DilConv(nn.Module):
  """ReLU, depthwise dilated k×k, pointwise 1×1, BN."""

  c_out: int
  k: int
  stride: int
  padding: int
  dilation: int
  affine: bool = True
  depthwise: str = 'native'

  @nn.compact
  def __call__(self, x, train: bool):
    x = DepthwiseConv(self.k, self.stride, self.padding, self.dilation, self.depthwise)(
        nn.relu(x))
    x = conv(self.c_out, 1)(x)
    return batch_norm(train, self.affine)(x)


class SepConv(nn.Module):
  """Two stacked DilConv blocks with dilation 1; only the first is strided."""

  c_out: int
  k: int
  stride: int
  padding: int
  affine: bool = True
  depthwise: str = 'native'

  @nn.compact
  def __call__(self, x, train: bool):
    c_in = x.shape[-1]
    x = DilConv(c_in, self.k, self.stride, self.padding, 1, self.affine, self.depthwise)(
        x, train)
    return DilConv(self.c_out, self.k, 1, self.padding, 1, self.affine, self.depthwise)(
        x, train)


class FactorizedReduce(nn.Module):
  """ReLU, two 1×1 stride-2 convs on x and on x shifted by one pixel, concat, BN."""

  c_out: int
  affine: bool = True

  @nn.compact
  def __call__(self, x, train: bool):
    if self.c_out % 2:
      raise ValueError(f'FactorizedReduce needs an even channel count, got {self.c_out}')
    x = nn.relu(x)
    a = conv(self.c_out // 2, 1, stride=2)(x)
    b = conv(self.c_out // 2, 1, stride=2)(x[:, 1:, 1:, :])
    return batch_norm(train, self.affine)(jnp.concatenate([a, b], axis=-1))


class Zero(nn.Module):
  stride: int = 1

  def __call__(self, x, train: bool):
    del train
    return x[:, ::self.stride, ::self.stride, :] * 0.0


class Identity(nn.Module):

  def __call__(self, x, train: bool):
    del train
    return x


class Pool(nn.Module):
  """3×3 pooling, padding 1; average excludes the padding (count_include_pad=False)."""

  kind: str
  stride: int = 1

  def __call__(self, x, train: bool):
    del train
    pool = nn.max_pool if self.kind == 'max' else functools.partial(
        nn.avg_pool, count_include_pad=False)
    return pool(x, (3, 3), strides=(self.stride, self.stride), padding=_pad(1))


# name -> (C, stride, affine, depthwise impl, **module kwargs such as name) -> module
# taking (x, train).
OPS: dict[str, Callable[..., nn.Module]] = {
    'none': lambda c, s, affine, dw, **kw: Zero(s, **kw),
    'max_pool_3x3': lambda c, s, affine, dw, **kw: Pool('max', s, **kw),
    'avg_pool_3x3': lambda c, s, affine, dw, **kw: Pool('avg', s, **kw),
    'skip_connect': lambda c, s, affine, dw, **kw: (
        Identity(**kw) if s == 1 else FactorizedReduce(c, affine, **kw)),
    'sep_conv_3x3': lambda c, s, affine, dw, **kw: SepConv(c, 3, s, 1, affine, dw, **kw),
    'sep_conv_5x5': lambda c, s, affine, dw, **kw: SepConv(c, 5, s, 2, affine, dw, **kw),
    'sep_conv_7x7': lambda c, s, affine, dw, **kw: SepConv(c, 7, s, 3, affine, dw, **kw),
    'dil_conv_3x3': lambda c, s, affine, dw, **kw: DilConv(c, 3, s, 2, 2, affine, dw, **kw),
    'dil_conv_5x5': lambda c, s, affine, dw, **kw: DilConv(c, 5, s, 4, 2, affine, dw, **kw),
}

PARAMETRIC_OPS = frozenset(
    {'sep_conv_3x3', 'sep_conv_5x5', 'sep_conv_7x7', 'dil_conv_3x3', 'dil_conv_5x5'})


def drop_path(x, rate: float, rng: jax.Array):
  """Drops whole samples with probability `rate`, scaling survivors by 1/(1-rate)."""
  keep = 1.0 - rate
  mask = jax.random.bernoulli(rng, keep, (x.shape[0], 1, 1, 1))
  return jnp.where(mask, x / keep, 0.0)


class Preprocess(nn.Module):
  """Brings the two cell inputs to C channels and a common resolution."""

  c: int
  reduction_prev: bool
  affine: bool

  @nn.compact
  def __call__(self, s0, s1, train: bool):
    if self.reduction_prev:
      s0 = FactorizedReduce(self.c, self.affine, name='pre0')(s0, train)
    else:
      s0 = ReLUConvBN(self.c, 1, affine=self.affine, name='pre0')(s0, train)
    s1 = ReLUConvBN(self.c, 1, affine=self.affine, name='pre1')(s1, train)
    return s0, s1


class StemCIFAR(nn.Module):
  """3×3 conv to stem_multiplier·C channels, then BN (affine)."""

  c: int

  @nn.compact
  def __call__(self, x, train: bool):
    return batch_norm(train, True)(conv(self.c, 3, padding=1)(x))


class AuxiliaryHeadCIFAR(nn.Module):
  """Auxiliary classifier at 2/3 depth, for 8×8 inputs (DARTS reference)."""

  num_classes: int

  @nn.compact
  def __call__(self, x, train: bool):
    x = nn.relu(x)
    x = nn.avg_pool(x, (5, 5), strides=(3, 3), padding='VALID')
    x = nn.relu(batch_norm(train, True)(conv(128, 1)(x)))
    x = nn.relu(batch_norm(train, True)(conv(768, 2)(x)))
    x = x.reshape(x.shape[0], -1)
    return nn.Dense(self.num_classes, kernel_init=torch_init)(x)
