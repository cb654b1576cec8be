// CPU kernels for the super-net's hot ops, called through the XLA FFI from
// amdarts/primitives.py: depthwise 2-D convolution (forward, input gradient, kernel
// gradient) and 3x3 max pooling (forward, the gather of a tangent at each window's
// argmax, and its transpose, the scatter).
//
// Layouts (row-major): x [Lx, B, H, W, C], kernel [Lk, K, K, C], y [L, B, Ho, Wo, C].
// The leading "edge" axis L batches independent convolutions (the super-net runs
// the edges of a cell as one call); Lx and Lk are 1 or L, a size-1 axis being shared
// by every edge. Padding is explicit and symmetric (PyTorch semantics):
//   y[l, b, ho, wo, c] = sum_{i, j} x[l, b, ho*s - p + i*d, wo*s - p + j*d, c] * k[l, i, j, c]
// with out-of-range x reading as zero. The three kernels are the three bilinear maps
// of that one trilinear form, so every derivative order maps onto them.
//
// Work is split over (edge, image) pairs on XLA's intra-op thread pool; the caller
// thread takes chunks too and only waits for chunks already started elsewhere, so
// a busy pool can never deadlock it.

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <thread>
#include <vector>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

struct Geometry {
  int64_t L, Lx, Lk, B, H, W, C, K, Ho, Wo, s, p, d;
};

// Runs fn(i) for i in [0, n) on the pool and the calling thread.
void ParallelFor(ffi::ThreadPool& pool, int64_t n, const std::function<void(int64_t)>& fn) {
  int64_t threads = std::min<int64_t>(n, std::max<int64_t>(1, pool.num_threads()));
  if (threads <= 1) {
    for (int64_t i = 0; i < n; ++i) fn(i);
    return;
  }
  struct State {
    std::atomic<int64_t> next{0}, done{0};
    int64_t n;
    std::function<void(int64_t)> fn;
  };
  auto state = std::make_shared<State>();
  state->n = n;
  state->fn = fn;
  auto work = [state]() {
    for (int64_t i; (i = state->next.fetch_add(1)) < state->n;) {
      state->fn(i);
      state->done.fetch_add(1, std::memory_order_release);
    }
  };
  for (int64_t t = 1; t < threads; ++t) pool.Schedule(decltype(work)(work));
  work();
  while (state->done.load(std::memory_order_acquire) < n) std::this_thread::yield();
}

// Vectors of one cache line (16 floats / 8 doubles) through GCC's vector extension:
// AVX-512 registers where the machine has them, pairs of AVX2 registers otherwise.
template <typename T>
struct Vec {
  static constexpr int64_t kLanes = 64 / sizeof(T);
  typedef T type __attribute__((vector_size(64)));
  static type Load(const T* p) {
    type v;
    std::memcpy(&v, p, sizeof(v));
    return v;
  }
  static void Store(T* p, type v) { std::memcpy(p, &v, sizeof(v)); }
  static type Zero() { return type{}; }
};

// xp [Hp, Wp, C] (already padded) -> out [Ho, Wo, C] (+)= sum_ij xp[ho*s + i*d,
// wo*s + j*d, :] * k[i, j, :]. kK > 0 fixes the kernel size at compile time, so the
// taps unroll and a channel block's kernel stays in registers.
template <typename T, int kK>
void ConvValid(int64_t K_, const T* __restrict__ xp, int64_t Wp, const T* __restrict__ k,
               int64_t s, int64_t d, int64_t Ho, int64_t Wo, int64_t C, T* __restrict__ out,
               bool accumulate) {
  using V = Vec<T>;
  const int64_t K = kK > 0 ? kK : K_;
  const int64_t blocks = C / V::kLanes;
  for (int64_t cb = 0; cb < blocks; ++cb) {
    const int64_t c0 = cb * V::kLanes;
    for (int64_t ho = 0; ho < Ho; ++ho) {
      for (int64_t wo = 0; wo < Wo; ++wo) {
        T* o = out + (ho * Wo + wo) * C + c0;
        typename V::type acc = accumulate ? V::Load(o) : V::Zero();
        const T* base = xp + ((ho * s) * Wp + wo * s) * C + c0;
        for (int64_t i = 0; i < K; ++i)
          for (int64_t j = 0; j < K; ++j)
            acc += V::Load(base + (i * d * Wp + j * d) * C) * V::Load(k + (i * K + j) * C + c0);
        V::Store(o, acc);
      }
    }
  }
  for (int64_t c = blocks * V::kLanes; c < C; ++c) {  // Channels past the last block.
    for (int64_t ho = 0; ho < Ho; ++ho)
      for (int64_t wo = 0; wo < Wo; ++wo) {
        T acc = accumulate ? out[(ho * Wo + wo) * C + c] : T(0);
        for (int64_t i = 0; i < K; ++i)
          for (int64_t j = 0; j < K; ++j)
            acc += xp[((ho * s + i * d) * Wp + wo * s + j * d) * C + c] * k[(i * K + j) * C + c];
        out[(ho * Wo + wo) * C + c] = acc;
      }
  }
}

// acc [K, K, C] += sum_{ho, wo} xp[ho*s + i*d, wo*s + j*d, :] * dy[ho, wo, :], one
// channel block at a time with the K*K accumulators in registers.
template <typename T, int kK>
void KernelGradValid(int64_t K_, const T* __restrict__ xp, int64_t Wp, const T* __restrict__ dy,
                     int64_t s, int64_t d, int64_t Ho, int64_t Wo, int64_t C, T* __restrict__ acc) {
  using V = Vec<T>;
  constexpr int kTaps = kK > 0 ? kK * kK : 1;
  const int64_t blocks = C / V::kLanes;
  if (kK > 0) {
    for (int64_t cb = 0; cb < blocks; ++cb) {
      const int64_t c0 = cb * V::kLanes;
      typename V::type a[kTaps];
      for (int t = 0; t < kTaps; ++t) a[t] = V::Load(acc + t * C + c0);
      for (int64_t ho = 0; ho < Ho; ++ho) {
        for (int64_t wo = 0; wo < Wo; ++wo) {
          const typename V::type g = V::Load(dy + (ho * Wo + wo) * C + c0);
          const T* base = xp + ((ho * s) * Wp + wo * s) * C + c0;
          for (int i = 0; i < kK; ++i)
            for (int j = 0; j < kK; ++j)
              a[i * kK + j] += V::Load(base + (i * d * Wp + j * d) * C) * g;
        }
      }
      for (int t = 0; t < kTaps; ++t) V::Store(acc + t * C + c0, a[t]);
    }
  }
  const int64_t K = kK > 0 ? kK : K_;
  for (int64_t c = kK > 0 ? blocks * V::kLanes : 0; c < C; ++c)
    for (int64_t ho = 0; ho < Ho; ++ho)
      for (int64_t wo = 0; wo < Wo; ++wo) {
        const T g = dy[(ho * Wo + wo) * C + c];
        for (int64_t i = 0; i < K; ++i)
          for (int64_t j = 0; j < K; ++j)
            acc[(i * K + j) * C + c] += xp[((ho * s + i * d) * Wp + wo * s + j * d) * C + c] * g;
      }
}

// Runs F<T, K> with the kernel size as a compile-time constant for the sizes the
// spaces use (avg pooling is a 3x3 one), and a runtime one otherwise.
#define AMDARTS_BY_K(F, T, K, ...)                  \
  switch (K) {                                      \
    case 1: F<T, 1>(K, __VA_ARGS__); break;         \
    case 3: F<T, 3>(K, __VA_ARGS__); break;         \
    case 5: F<T, 5>(K, __VA_ARGS__); break;         \
    case 7: F<T, 7>(K, __VA_ARGS__); break;         \
    default: F<T, 0>(K, __VA_ARGS__); break;        \
  }

// Copies img [H, W, C] into a zeroed [Hp, Wp, C] buffer at (top, left), every
// `step`-th row and column (step 2 dilates a stride-2 gradient for its transpose).
template <typename T>
void Place(const T* img, int64_t H, int64_t W, int64_t C, int64_t top, int64_t left,
           int64_t step, int64_t Wp, T* out) {
  for (int64_t h = 0; h < H; ++h)
    for (int64_t w = 0; w < W; ++w)
      std::memcpy(out + ((top + h * step) * Wp + left + w * step) * C, img + (h * W + w) * C,
                  sizeof(T) * C);
}

// Edges that read x[lx]: all of them when the input is shared (Lx == 1).
inline int64_t EdgesOf(const Geometry& g) { return g.Lx == 1 ? g.L : 1; }
inline int64_t Edge(const Geometry& g, int64_t lx, int64_t e) { return g.Lx == 1 ? e : lx; }

// Tasks are (input, image) pairs: each pads its image once for all edges reading it.
template <typename T>
void Forward(ffi::ThreadPool& pool, const Geometry& g, const T* x, const T* k, T* y) {
  const int64_t in_size = g.H * g.W * g.C, out_size = g.Ho * g.Wo * g.C;
  const int64_t Hp = g.H + 2 * g.p, Wp = g.W + 2 * g.p;
  ParallelFor(pool, g.Lx * g.B, [&](int64_t xb) {
    const int64_t lx = xb / g.B, b = xb % g.B;
    std::vector<T> xp(static_cast<size_t>(Hp * Wp * g.C), T(0));
    Place(x + xb * in_size, g.H, g.W, g.C, g.p, g.p, 1, Wp, xp.data());
    for (int64_t e = 0; e < EdgesOf(g); ++e) {
      const int64_t l = Edge(g, lx, e);
      const T* kl = k + (g.Lk == 1 ? 0 : l) * g.K * g.K * g.C;
      AMDARTS_BY_K(ConvValid, T, g.K, xp.data(), Wp, kl, g.s, g.d, g.Ho, g.Wo, g.C,
                   y + (l * g.B + b) * out_size, false)
    }
  });
}

// The transpose of the forward: each edge's gradient, dilated by the stride and
// padded for a full correlation, convolved at stride 1 with the flipped kernel;
// dx[lx, b] sums the edges that read x[lx] (all of them when the input is shared).
template <typename T>
void InputGrad(ffi::ThreadPool& pool, const Geometry& g, const T* dy, const T* k, T* dx) {
  const int64_t in_size = g.H * g.W * g.C, out_size = g.Ho * g.Wo * g.C;
  const int64_t lo = g.d * (g.K - 1) - g.p;  // >= 0 for every padding <= d (K - 1).
  const int64_t Hp = g.H + g.d * (g.K - 1), Wp = g.W + g.d * (g.K - 1);
  const int64_t kkc = g.K * g.K * g.C;
  ParallelFor(pool, g.Lx * g.B, [&](int64_t xb) {
    const int64_t lx = xb / g.B, b = xb % g.B;
    std::vector<T> gp(static_cast<size_t>(Hp * Wp * g.C));
    std::vector<T> flipped(static_cast<size_t>(kkc));
    for (int64_t e = 0; e < EdgesOf(g); ++e) {
      const int64_t l = Edge(g, lx, e);
      std::fill(gp.begin(), gp.end(), T(0));
      Place(dy + (l * g.B + b) * out_size, g.Ho, g.Wo, g.C, lo, lo, g.s, Wp, gp.data());
      const T* kl = k + (g.Lk == 1 ? 0 : l) * kkc;
      for (int64_t t = 0; t < g.K * g.K; ++t)
        std::memcpy(flipped.data() + t * g.C, kl + (g.K * g.K - 1 - t) * g.C, sizeof(T) * g.C);
      AMDARTS_BY_K(ConvValid, T, g.K, gp.data(), Wp, flipped.data(), int64_t{1}, g.d, g.H, g.W,
                   g.C, dx + xb * in_size, e > 0)
    }
  });
}

// dk[lk] sums over the edges of lk and all images; every (edge, image) pair
// accumulates into its own slot first, so threads never share an accumulator.
template <typename T>
void KernelGrad(ffi::ThreadPool& pool, const Geometry& g, const T* x, const T* dy, T* dk) {
  const int64_t in_size = g.H * g.W * g.C, out_size = g.Ho * g.Wo * g.C;
  const int64_t kkc = g.K * g.K * g.C;
  const int64_t Hp = g.H + 2 * g.p, Wp = g.W + 2 * g.p;
  std::vector<T> partial(static_cast<size_t>(g.L * g.B * kkc), T(0));
  ParallelFor(pool, g.Lx * g.B, [&](int64_t xb) {
    const int64_t lx = xb / g.B, b = xb % g.B;
    std::vector<T> xp(static_cast<size_t>(Hp * Wp * g.C), T(0));
    Place(x + xb * in_size, g.H, g.W, g.C, g.p, g.p, 1, Wp, xp.data());
    for (int64_t e = 0; e < EdgesOf(g); ++e) {
      const int64_t lb = Edge(g, lx, e) * g.B + b;
      AMDARTS_BY_K(KernelGradValid, T, g.K, xp.data(), Wp, dy + lb * out_size, g.s, g.d, g.Ho,
                   g.Wo, g.C, partial.data() + lb * kkc)
    }
  });
  std::memset(dk, 0, sizeof(T) * g.Lk * kkc);
  for (int64_t lb = 0; lb < g.L * g.B; ++lb) {
    T* __restrict__ out = dk + (g.Lk == 1 ? 0 : lb / g.B) * kkc;
    const T* __restrict__ a = partial.data() + lb * kkc;
    for (int64_t t = 0; t < kkc; ++t) out[t] += a[t];
  }
}

// Reads the geometry from the 5-D x / 5-D y / 4-D kernel dimensions.
Geometry MakeGeometry(ffi::AnyBuffer::Dimensions xd, ffi::AnyBuffer::Dimensions kd,
                      ffi::AnyBuffer::Dimensions yd, int64_t s, int64_t p, int64_t d) {
  Geometry g;
  g.Lx = xd[0]; g.B = xd[1]; g.H = xd[2]; g.W = xd[3]; g.C = xd[4];
  g.Lk = kd[0]; g.K = kd[1];
  g.L = yd[0]; g.Ho = yd[2]; g.Wo = yd[3];
  g.s = s; g.p = p; g.d = d;
  return g;
}

ffi::Error Check(const Geometry& g, ffi::AnyBuffer::Dimensions xd, ffi::AnyBuffer::Dimensions kd,
                 ffi::AnyBuffer::Dimensions yd) {
  if (xd.size() != 5 || kd.size() != 4 || yd.size() != 5)
    return ffi::Error::InvalidArgument("depthwise: expected ranks 5 (x), 4 (kernel), 5 (y)");
  if ((g.Lx != 1 && g.Lx != g.L) || (g.Lk != 1 && g.Lk != g.L) || kd[2] != g.K ||
      kd[3] != g.C || yd[1] != g.B || yd[4] != g.C)
    return ffi::Error::InvalidArgument("depthwise: inconsistent shapes");
  if (g.p > g.d * (g.K - 1))
    return ffi::Error::InvalidArgument("depthwise: padding beyond the kernel's reach");
  if (g.Ho != (g.H + 2 * g.p - g.d * (g.K - 1) - 1) / g.s + 1 ||
      g.Wo != (g.W + 2 * g.p - g.d * (g.K - 1) - 1) / g.s + 1)
    return ffi::Error::InvalidArgument("depthwise: output size does not match the geometry");
  return ffi::Error::Success();
}


// Calls fn(T{}) with T the buffers' element type, float or double.
template <typename Fn>
ffi::Error ForFloatType(ffi::DataType type, Fn fn) {
  if (type == ffi::DataType::F32) {
    fn(float{});
  } else if (type == ffi::DataType::F64) {
    fn(double{});
  } else {
    return ffi::Error::InvalidArgument("amdarts kernels: float32 or float64 only");
  }
  return ffi::Error::Success();
}

ffi::Error ForwardImpl(ffi::ThreadPool pool, ffi::AnyBuffer x, ffi::AnyBuffer k,
                       ffi::Result<ffi::AnyBuffer> y, int64_t stride, int64_t padding,
                       int64_t dilation) {
  Geometry g = MakeGeometry(x.dimensions(), k.dimensions(), y->dimensions(), stride, padding,
                            dilation);
  if (auto e = Check(g, x.dimensions(), k.dimensions(), y->dimensions()); e.failure()) return e;
  return ForFloatType(x.element_type(), [&](auto zero) {
    using T = decltype(zero);
    Forward(pool, g, x.typed_data<T>(), k.typed_data<T>(), y->typed_data<T>());
  });
}

ffi::Error InputGradImpl(ffi::ThreadPool pool, ffi::AnyBuffer dy, ffi::AnyBuffer k,
                         ffi::Result<ffi::AnyBuffer> dx, int64_t stride, int64_t padding,
                         int64_t dilation) {
  Geometry g = MakeGeometry(dx->dimensions(), k.dimensions(), dy.dimensions(), stride, padding,
                            dilation);
  if (auto e = Check(g, dx->dimensions(), k.dimensions(), dy.dimensions()); e.failure()) return e;
  return ForFloatType(dy.element_type(), [&](auto zero) {
    using T = decltype(zero);
    InputGrad(pool, g, dy.typed_data<T>(), k.typed_data<T>(), dx->typed_data<T>());
  });
}

ffi::Error KernelGradImpl(ffi::ThreadPool pool, ffi::AnyBuffer x, ffi::AnyBuffer dy,
                          ffi::Result<ffi::AnyBuffer> dk, int64_t stride, int64_t padding,
                          int64_t dilation) {
  Geometry g = MakeGeometry(x.dimensions(), dk->dimensions(), dy.dimensions(), stride, padding,
                            dilation);
  if (auto e = Check(g, x.dimensions(), dk->dimensions(), dy.dimensions()); e.failure()) return e;
  return ForFloatType(x.element_type(), [&](auto zero) {
    using T = decltype(zero);
    KernelGrad(pool, g, x.typed_data<T>(), dy.typed_data<T>(), dk->typed_data<T>());
  });
}


// ------------------------------------------------------------------ 3x3 max pooling
// x [L, B, H, W, C] -> y [L, B, Ho, Wo, C], window 3, padding 1 (padding never wins:
// every window holds at least one input), stride s. The argmax of a window is its
// first maximum in row-major order, as PyTorch's; NaN propagates as a maximum.

struct PoolGeometry {
  int64_t N, H, W, C, Ho, Wo, s;  // N = L * B images.
};

// Offset (h * W + w) of the argmax of the window of output (ho, wo), channel c.
template <typename T>
inline int64_t ArgMax(const PoolGeometry& g, const T* __restrict__ img, int64_t ho, int64_t wo,
                      int64_t c) {
  int64_t best = -1;
  T v = T(0);
  for (int64_t i = 0; i < 3; ++i) {
    const int64_t h = ho * g.s - 1 + i;
    if (h < 0 || h >= g.H) continue;
    for (int64_t j = 0; j < 3; ++j) {
      const int64_t w = wo * g.s - 1 + j;
      if (w < 0 || w >= g.W) continue;
      const T x = img[(h * g.W + w) * g.C + c];
      if (best < 0 || x > v || (x != x && v == v)) {
        best = h * g.W + w;
        v = x;
      }
    }
  }
  return best;
}

// out[ho, wo, c] = t[argmax(x window), c]: the pool's Jacobian applied to t.
template <typename T>
void MaxPoolGather(ffi::ThreadPool& pool, const PoolGeometry& g, const T* t, const T* x, T* y) {
  ParallelFor(pool, g.N, [&](int64_t n) {
    const T* __restrict__ img = x + n * g.H * g.W * g.C;
    const T* __restrict__ tan = t + n * g.H * g.W * g.C;
    T* __restrict__ out = y + n * g.Ho * g.Wo * g.C;
    for (int64_t ho = 0; ho < g.Ho; ++ho)
      for (int64_t wo = 0; wo < g.Wo; ++wo)
        for (int64_t c = 0; c < g.C; ++c)
          out[(ho * g.Wo + wo) * g.C + c] = tan[ArgMax(g, img, ho, wo, c) * g.C + c];
  });
}

// dx[argmax(window), c] += ct[ho, wo, c]: the transpose of the gather.
template <typename T>
void MaxPoolScatter(ffi::ThreadPool& pool, const PoolGeometry& g, const T* ct, const T* x,
                    T* dx) {
  ParallelFor(pool, g.N, [&](int64_t n) {
    const T* __restrict__ img = x + n * g.H * g.W * g.C;
    const T* __restrict__ cot = ct + n * g.Ho * g.Wo * g.C;
    T* __restrict__ out = dx + n * g.H * g.W * g.C;
    std::memset(out, 0, sizeof(T) * g.H * g.W * g.C);
    for (int64_t ho = 0; ho < g.Ho; ++ho)
      for (int64_t wo = 0; wo < g.Wo; ++wo)
        for (int64_t c = 0; c < g.C; ++c)
          out[ArgMax(g, img, ho, wo, c) * g.C + c] += cot[(ho * g.Wo + wo) * g.C + c];
  });
}

PoolGeometry MakePoolGeometry(ffi::AnyBuffer::Dimensions xd, ffi::AnyBuffer::Dimensions yd,
                              int64_t stride) {
  return PoolGeometry{xd[0] * xd[1], xd[2], xd[3], xd[4], yd[2], yd[3], stride};
}

ffi::Error CheckPool(ffi::AnyBuffer::Dimensions xd, ffi::AnyBuffer::Dimensions yd,
                     int64_t stride) {
  if (xd.size() != 5 || yd.size() != 5 || xd[0] != yd[0] || xd[1] != yd[1] || xd[4] != yd[4] ||
      yd[2] != (xd[2] - 1) / stride + 1 || yd[3] != (xd[3] - 1) / stride + 1)
    return ffi::Error::InvalidArgument("max_pool: inconsistent shapes");
  return ffi::Error::Success();
}

ffi::Error MaxPoolGatherImpl(ffi::ThreadPool pool, ffi::AnyBuffer t, ffi::AnyBuffer x,
                             ffi::Result<ffi::AnyBuffer> y, int64_t stride) {
  if (auto e = CheckPool(x.dimensions(), y->dimensions(), stride); e.failure()) return e;
  PoolGeometry g = MakePoolGeometry(x.dimensions(), y->dimensions(), stride);
  return ForFloatType(x.element_type(), [&](auto zero) {
    using T = decltype(zero);
    MaxPoolGather(pool, g, t.typed_data<T>(), x.typed_data<T>(), y->typed_data<T>());
  });
}

// The pool is its own Jacobian applied to x.
ffi::Error MaxPoolForwardImpl(ffi::ThreadPool pool, ffi::AnyBuffer x,
                              ffi::Result<ffi::AnyBuffer> y, int64_t stride) {
  return MaxPoolGatherImpl(pool, x, x, y, stride);
}

ffi::Error MaxPoolScatterImpl(ffi::ThreadPool pool, ffi::AnyBuffer ct, ffi::AnyBuffer x,
                              ffi::Result<ffi::AnyBuffer> dx, int64_t stride) {
  if (auto e = CheckPool(x.dimensions(), ct.dimensions(), stride); e.failure()) return e;
  PoolGeometry g = MakePoolGeometry(x.dimensions(), ct.dimensions(), stride);
  return ForFloatType(x.element_type(), [&](auto zero) {
    using T = decltype(zero);
    MaxPoolScatter(pool, g, ct.typed_data<T>(), x.typed_data<T>(), dx->typed_data<T>());
  });
}

}  // namespace

#define AMDARTS_BIND(NAME, IMPL)                                              \
  XLA_FFI_DEFINE_HANDLER_SYMBOL(NAME, IMPL,                                   \
                                ffi::Ffi::Bind()                              \
                                    .Ctx<ffi::ThreadPool>()                   \
                                    .Arg<ffi::AnyBuffer>()                    \
                                    .Arg<ffi::AnyBuffer>()                    \
                                    .Ret<ffi::AnyBuffer>()                    \
                                    .Attr<int64_t>("stride")                  \
                                    .Attr<int64_t>("padding")                 \
                                    .Attr<int64_t>("dilation"));

AMDARTS_BIND(AmdartsDepthwiseForward, ForwardImpl)
AMDARTS_BIND(AmdartsDepthwiseInputGrad, InputGradImpl)
AMDARTS_BIND(AmdartsDepthwiseKernelGrad, KernelGradImpl)

XLA_FFI_DEFINE_HANDLER_SYMBOL(AmdartsMaxPoolForward, MaxPoolForwardImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Attr<int64_t>("stride"));
XLA_FFI_DEFINE_HANDLER_SYMBOL(AmdartsMaxPoolGather, MaxPoolGatherImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Attr<int64_t>("stride"));
XLA_FFI_DEFINE_HANDLER_SYMBOL(AmdartsMaxPoolScatter, MaxPoolScatterImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Attr<int64_t>("stride"));
