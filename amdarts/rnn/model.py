"""The DARTS recurrent language model as pure functions of (ω, α, tokens, hidden).

    model = RNNModel(RNNSpec(vocab_size=10000, nhid=300))        # search cell
    params = model.init(rng)
    alpha_ExO = model.init_alpha(rng)                             # f32[36, 5]
    logits_TxBxV, hidden_BxH = model.apply(params, alpha_ExO, tokens_TxB, hidden_BxH,
                                           train=True, rng=rng)

One layer of the DARTS cell (Liu et al., 2019, Section 2.1; the reference's
rnn/model.py and rnn/model_search.py). Per time step, from x_t and h_{t-1}:

    c0, h0 = split([x_t·m_x, h_{t-1}·m_h] W0);  s0 = h_{t-1} + σ(c0)(tanh(h0) − h_{t-1})
    node i: c, h = split((s_j·m_h) W_i);        s = s_j + σ(c)(f(h) − s_j)
    h_t = mean of the intermediate nodes (the genotype's `concat` states).

The search cell mixes every edge j→i (j = 0..i, 36 edges for 8 nodes, rows
i(i+1)/2 + j of α) over {none, tanh, relu, sigmoid, identity} with softmax(α),
all edges into a node summed, and normalises s0 and every node with one shared,
non-affine batch norm as the reference does; the discrete cell (from a genotype)
keeps one edge per node and has no batch norm. Embedding and decoder weights are
tied. Dropout follows the reference: whole words dropped from the embedding
matrix, locked (variational) masks fixed across time on the embeddings, the cell
inputs, the recurrent states and the outputs.

α is an argument and never a parameter, so `jax.grad` can take ω or α. Time is a
`jax.lax.scan`; chunks may be padded to a fixed length and given their true
`length`, so one compiled step serves every chunk length.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, NamedTuple

import flax
import jax
import jax.numpy as jnp
import numpy as np

from amdarts import losses
from amdarts.rnn import genotype as genotype_lib

PRIMITIVES = genotype_lib.PRIMITIVES
ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    'tanh': jnp.tanh,
    'relu': jax.nn.relu,
    'sigmoid': jax.nn.sigmoid,
    'identity': lambda x: x,
}
INIT_RANGE = 0.04  # The reference's uniform init range for every weight.

Params = dict[str, Any]


@dataclasses.dataclass(frozen=True)
class Dropouts:
  """Dropout rates, named by the reference's flags.

  Attributes:
    output: `dropout`, locked dropout on the cell outputs before the decoder.
    hidden: `dropouth`, on h_{t-1} and on every state entering a W_i.
    x: `dropoutx`, on the cell input x_t.
    input: `dropouti`, locked dropout on the embeddings.
    embed: `dropoute`, drops whole words (rows of the embedding matrix).
  """

  output: float = 0.75
  hidden: float = 0.25
  x: float = 0.75
  input: float = 0.2
  embed: float = 0.1

  def __post_init__(self):
    for name, rate in dataclasses.asdict(self).items():
      if not 0.0 <= rate < 1.0:
        raise ValueError(f'dropout rate {name}={rate} must be in [0, 1)')


NO_DROPOUT = Dropouts(0.0, 0.0, 0.0, 0.0, 0.0)


@dataclasses.dataclass(frozen=True)
class RNNSpec:
  """Static description of a model; hashable, so jitted closures can capture it.

  Attributes:
    vocab_size: V, the number of word types.
    nhid: embedding and hidden size (the reference requires them equal for tying).
    steps: intermediate nodes of the search cell (ignored with a genotype).
    ops: candidate ops of the search cell, α's columns.
    genotype: a discrete cell; None for the search cell.
    dropouts: dropout rates, used in training mode only.
    bn_momentum: running-statistics momentum of the search cell's batch norm.
    bn_eps: its variance epsilon.
  """

  vocab_size: int
  nhid: int
  steps: int = 8
  ops: tuple[str, ...] = PRIMITIVES
  genotype: genotype_lib.Genotype | None = None
  dropouts: Dropouts = Dropouts()
  bn_momentum: float = 0.1
  bn_eps: float = 1e-5

  def __post_init__(self):
    unknown = [o for o in self.ops if o not in PRIMITIVES]
    if unknown:
      raise ValueError(f'unknown recurrent op {unknown[0]!r}; known: {list(PRIMITIVES)}')
    if self.genotype is not None:
      object.__setattr__(self, 'genotype', genotype_lib.validate(self.genotype))

  @property
  def is_search(self) -> bool:
    return self.genotype is None

  @property
  def num_nodes(self) -> int:
    return self.steps if self.is_search else self.genotype.steps

  @property
  def num_edges(self) -> int:
    return genotype_lib.num_edges(self.steps)


class BNStats(NamedTuple):
  """Running statistics of the search cell's batch norm (f[H] each)."""

  mean: jax.Array
  var: jax.Array


class Output(NamedTuple):
  """Everything a forward pass computes.

  Attributes:
    logits: f[T, B, V] next-word logits.
    hidden: f[B, H] the state after the last valid step, to carry to the next chunk.
    raw: f[T, B, H] cell outputs before output dropout (for the slowness penalty).
    dropped: f[T, B, H] cell outputs after output dropout (for the activation penalty).
    bn: updated batch-norm statistics (unchanged outside training or without BN).
  """

  logits: jax.Array
  hidden: jax.Array
  raw: jax.Array
  dropped: jax.Array
  bn: BNStats


def locked_dropout(x_TxBxD: jax.Array, rate: float, rng: jax.Array) -> jax.Array:
  """Variational dropout: one mask per sequence, the same at every time step."""
  if rate == 0.0:
    return x_TxBxD
  return x_TxBxD * _mask(rng, x_TxBxD.shape[1:], rate, x_TxBxD.dtype)[None]


def embedding_dropout(table_VxD: jax.Array, tokens: jax.Array, rate: float,
                      rng: jax.Array) -> jax.Array:
  """Embeddings of `tokens` with whole words dropped: each row of the table is kept
  (scaled by 1/(1 − rate)) or zeroed, for all its occurrences at once.

  Gathering the row mask at the tokens gives the same values and gradients as
  masking the whole table, without a V×D product.
  """
  emb = table_VxD[tokens]
  if rate == 0.0:
    return emb
  return emb * _mask(rng, (table_VxD.shape[0],), rate, table_VxD.dtype)[tokens][..., None]


def _mask(rng, shape, rate, dtype):
  keep = 1.0 - rate
  return jax.random.bernoulli(rng, keep, shape).astype(dtype) / keep


def _batch_norm(x_BxH, stats: BNStats, *, train: bool, valid, momentum: float, eps: float):
  """Non-affine batch norm over the batch, as torch's BatchNorm1d(affine=False).

  Training normalises with the batch statistics (biased variance) and moves the
  running ones (unbiased variance) by `momentum`, only on valid steps; evaluation
  normalises with the running statistics.
  """
  if not train:
    return (x_BxH - stats.mean) * jax.lax.rsqrt(stats.var + eps), stats
  mean = x_BxH.mean(0)
  var = x_BxH.var(0)
  y = (x_BxH - mean) * jax.lax.rsqrt(var + eps)
  n = x_BxH.shape[0]
  mean, var = jax.lax.stop_gradient((mean, var * n / max(n - 1, 1)))
  new = BNStats((1 - momentum) * stats.mean + momentum * mean,
                (1 - momentum) * stats.var + momentum * var)
  return y, jax.tree.map(lambda a, b: jnp.where(valid, a, b), new, stats)


@dataclasses.dataclass(frozen=True)
class RNNModel:
  """The functional language model; ω (`params`) and α are separate pytrees."""

  spec: RNNSpec

  # -------------------------------------------------------------------------------
  # Initial values.

  def init(self, rng: jax.Array, dtype=jnp.float32) -> Params:
    """ω: uniform(±0.04) weights as the reference, a zero decoder bias.

    Returns:
      `{'embedding': f[V, H], 'decoder_bias': f[V], 'W0': f[2H, 2H],
      'Ws': f[N, H, 2H]}` with N = the number of cell nodes.
    """
    s = self.spec
    k_emb, k_w0, k_ws = jax.random.split(rng, 3)
    u = lambda k, shape: jax.random.uniform(k, shape, dtype, -INIT_RANGE, INIT_RANGE)
    return {
        'embedding': u(k_emb, (s.vocab_size, s.nhid)),
        'decoder_bias': jnp.zeros((s.vocab_size,), dtype),
        'W0': u(k_w0, (2 * s.nhid, 2 * s.nhid)),
        'Ws': u(k_ws, (s.num_nodes, s.nhid, 2 * s.nhid)),
    }

  def init_alpha(self, rng: jax.Array, scale: float = 1e-3, dtype=jnp.float32) -> jax.Array:
    """α_ExO ~ scale·N(0, 1) as DARTS; an empty array for a discrete cell."""
    if not self.spec.is_search:
      return jnp.zeros((0, 0), dtype)
    return scale * jax.random.normal(rng, (self.spec.num_edges, len(self.spec.ops)), dtype)

  def init_hidden(self, batch_size: int, dtype=jnp.float32) -> jax.Array:
    return jnp.zeros((batch_size, self.spec.nhid), dtype)

  def init_bn(self, dtype=jnp.float32) -> BNStats:
    return BNStats(jnp.zeros((self.spec.nhid,), dtype), jnp.ones((self.spec.nhid,), dtype))

  # -------------------------------------------------------------------------------
  # The cell.

  def _initial_state(self, params, x_BxH, h_BxH, m_x, m_h):
    xh = jnp.concatenate([x_BxH * m_x, h_BxH * m_h], axis=-1)
    c0, h0 = jnp.split(xh @ params['W0'], 2, axis=-1)
    return h_BxH + jax.nn.sigmoid(c0) * (jnp.tanh(h0) - h_BxH)

  def _search_cell(self, params, w_NxJxK, x, h, m_x, m_h, bn, *, train, valid):
    """One step of the mixed cell; returns (h_t, bn).

    Node i reads states 0..i through its edge weights w_NxJxK[i] (rows of softmax(α)
    without the `none` column, zero for j > i). The states live in a fixed buffer
    and the nodes are a `lax.scan`, so the graph holds one node rather than
    `steps` of them: second-order estimators compile several times faster (about
    5x on CPU for 8 nodes), for about twice the W_i products of the triangular
    layout. The zero rows make the unused (j > i) states contribute exactly nothing.
    """
    s = self.spec
    n = s.steps
    kept = [k for k, name in enumerate(s.ops) if name != 'none']
    acts = [ACTIVATIONS[s.ops[k]] for k in kept]
    norm = lambda y, st: _batch_norm(y, st, train=train, valid=valid,
                                     momentum=s.bn_momentum, eps=s.bn_eps)
    s0, bn = norm(self._initial_state(params, x, h, m_x, m_h), bn)
    states = jnp.zeros((n + 1,) + s0.shape, s0.dtype).at[0].set(s0)

    def node(carry, inputs):
      states, bn = carry
      i, w_Hx2H, w_JxK = inputs
      s_JxBxH = states[:n]
      c, pre = jnp.split(jnp.einsum('jbh,hk->jbk', s_JxBxH * m_h, w_Hx2H), 2, axis=-1)
      c = jax.nn.sigmoid(c)
      # Σ_j Σ_k w_jk (s_j + c_j (f_k(h_j) − s_j))
      #   = Σ_j [(Σ_k w_jk)(1 − c_j) s_j + c_j Σ_k w_jk f_k(h_j)]:
      # one contraction over the ops instead of one highway update per op.
      f_KxJxBxH = jnp.stack([f(pre) for f in acts])
      mixed = jnp.einsum('jk,kjbh->jbh', w_JxK, f_KxJxBxH)
      out = jnp.einsum('j,jbh->bh', w_JxK.sum(-1), (1 - c) * s_JxBxH) + (c * mixed).sum(0)
      out, bn = norm(out, bn)
      return (jax.lax.dynamic_update_index_in_dim(states, out, i + 1, 0), bn), None

    (states, bn), _ = jax.lax.scan(node, (states, bn),
                                   (jnp.arange(n), params['Ws'], w_NxJxK))
    return states[1:].mean(0), bn

  def edge_weights(self, alpha_ExO: jax.Array) -> jax.Array:
    """softmax(α) laid out per node: w[i, j, k] for edge j → i and kept op k.

    Row i(i+1)/2 + j of α is edge j → i (DARTS's order); `none` is dropped after
    the softmax, so it still takes its share of the weight.
    """
    s = self.spec
    kept = np.array([k for k, name in enumerate(s.ops) if name != 'none'])
    i, j = np.meshgrid(np.arange(s.steps), np.arange(s.steps), indexing='ij')
    rows = np.where(j <= i, i * (i + 1) // 2 + j, 0)
    w_ExK = jax.nn.softmax(alpha_ExO, axis=-1)[:, kept]
    return w_ExK[rows] * (j <= i)[..., None].astype(w_ExK.dtype)

  def _genotype_cell(self, params, x, h, m_x, m_h):
    g = self.spec.genotype
    states = [self._initial_state(params, x, h, m_x, m_h)]
    for i, (name, src) in enumerate(g.recurrent):
      prev = states[src]
      c, pre = jnp.split((prev * m_h) @ params['Ws'][i], 2, axis=-1)
      states.append(prev + jax.nn.sigmoid(c) * (ACTIVATIONS[name](pre) - prev))
    return jnp.mean(jnp.stack([states[i] for i in g.concat]), axis=0)

  # -------------------------------------------------------------------------------
  # The network.

  def forward(self, params: Params, alpha_ExO: jax.Array, tokens_TxB: jax.Array,
              hidden_BxH: jax.Array, *, train: bool, rng: jax.Array | None = None,
              bn: BNStats | None = None, length: jax.Array | int | None = None) -> Output:
    """Runs one chunk of T steps.

    Args:
      params: ω from `init`.
      alpha_ExO: architecture logits (ignored by a discrete cell).
      tokens_TxB: int word ids, time-major as the reference's batches.
      hidden_BxH: the state carried from the previous chunk.
      train: dropout on and batch statistics in the search cell's batch norm.
      rng: dropout key; needed when `train` and any rate is non-zero.
      bn: running batch-norm statistics (search cell); defaults to `init_bn()`.
      length: number of valid leading steps (traced is fine); steps past it do not
        change the hidden state or the statistics. None = all T.

    Returns:
      An `Output`.
    """
    s = self.spec
    T, B = tokens_TxB.shape
    dtype = params['embedding'].dtype
    bn = self.init_bn(dtype) if bn is None else bn
    d = s.dropouts if train else NO_DROPOUT
    if train and rng is None and any(dataclasses.astuple(d)):
      raise ValueError('forward(train=True) with dropout needs an rng')
    keys = jax.random.split(rng, 5) if rng is not None else [None] * 5
    ones = jnp.ones((B, s.nhid), dtype)
    # Per-sequence masks of the cell's input and state, fixed across the chunk's steps.
    mask = lambda k, rate: ones if rate == 0 else _mask(k, (B, s.nhid), rate, dtype)

    emb = embedding_dropout(params['embedding'], tokens_TxB, d.embed, keys[0])
    emb = locked_dropout(emb, d.input, keys[1])
    m_x, m_h = mask(keys[2], d.x), mask(keys[3], d.hidden)
    valid_T = jnp.arange(T) < (T if length is None else length)
    w_NxJxK = self.edge_weights(alpha_ExO) if s.is_search else None

    def step(carry, inputs):
      h, stats = carry
      x, valid = inputs
      if s.is_search:
        out, stats = self._search_cell(params, w_NxJxK, x, h, m_x, m_h, stats, train=train,
                                       valid=valid)
      else:
        out = self._genotype_cell(params, x, h, m_x, m_h)
      return (jnp.where(valid, out, h), stats), out

    (hidden, bn), raw_TxBxH = jax.lax.scan(step, (hidden_BxH, bn), (emb, valid_T))
    dropped = locked_dropout(raw_TxBxH, d.output, keys[4])
    logits = dropped @ params['embedding'].T + params['decoder_bias']  # Tied weights.
    return Output(logits, hidden, raw_TxBxH, dropped, bn)

  def apply(self, params: Params, alpha_ExO: jax.Array, tokens_TxB: jax.Array,
            hidden_BxH: jax.Array, *, train: bool, rng: jax.Array | None = None,
            bn: BNStats | None = None, length=None) -> tuple[jax.Array, jax.Array]:
    """Returns (logits f[T, B, V], new hidden f[B, H]); see `forward`."""
    out = self.forward(params, alpha_ExO, tokens_TxB, hidden_BxH, train=train, rng=rng,
                       bn=bn, length=length)
    return out.logits, out.hidden


# ----------------------------------------------------------------------------------
# The loss in the `hypergrad` convention.


@flax.struct.dataclass
class LMState:
  """What the language model carries besides ω: the `model_state` of its loss.

  Attributes:
    bn: the search cell's running batch-norm statistics; None for a discrete cell,
      which has no batch norm.
    hidden: stream name -> f[B, H] hidden state carried from chunk to chunk. The
      search has two streams, 'train' and 'val' (the α stream), each with its own
      state; a chunk's `stream` picks the one it reads and advances.
  """

  bn: BNStats | None
  hidden: dict[str, jax.Array]


def init_state(model: RNNModel, batch_size: int, streams: tuple[str, ...] = ('train',),
               dtype=jnp.float32) -> LMState:
  """Zero hidden states for `streams`; fresh statistics for the search cell only."""
  bn = model.init_bn(dtype) if model.spec.is_search else None
  return LMState(bn, {s: model.init_hidden(batch_size, dtype) for s in streams})


def make_loss_fn(model: RNNModel, *, train: bool = True, ar: float = 0.0, tar: float = 0.0,
                 rngs: dict[str, jax.Array] | None = None):
  """`loss_fn(params, alpha, chunk, state) -> (loss, (new_state, metrics))`.

  The `amdarts.hypergrad` convention with `state` an `LMState`. With ar = tar = 0
  this is the reference's `_loss`, the plain NLL the architecture step
  differentiates; the weight step adds the activation penalties.

  Args:
    model: the model.
    train: dropout and batch statistics on.
    ar: activation-regularisation weight (the reference's `alpha`).
    tar: temporal-activation (slowness) weight (the reference's `beta`).
    rngs: stream name -> dropout key (each stream its own, as the reference draws
      new masks per forward pass); None without dropout.

  Returns:
    The loss function. `chunk` is an `amdarts.rnn.data.Chunk`; the new state has the
    chunk's stream's hidden state advanced and, for the search cell, updated
    statistics. `metrics` = {'nll'}.
  """

  def loss_fn(params, alpha, chunk, state: LMState):
    out = model.forward(params, alpha, chunk.tokens, state.hidden[chunk.stream],
                        train=train, rng=None if rngs is None else rngs[chunk.stream],
                        bn=state.bn, length=chunk.length)
    nll = losses.nll(out.logits, chunk.targets, chunk.length)
    loss = nll
    if ar or tar:
      loss = loss + losses.activation_penalties(out.raw, out.dropped, chunk.length, ar=ar,
                                                tar=tar)
    new_state = state.replace(bn=None if state.bn is None else out.bn,
                              hidden={**state.hidden, chunk.stream: out.hidden})
    return loss, (new_state, {'nll': nll})

  return loss_fn
