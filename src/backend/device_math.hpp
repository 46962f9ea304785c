// The arithmetic of the CUDA kernels, written once as __host__ __device__ functions: nvcc compiles
// them into the kernels, g++ into the CPU test binary (tests/unit/test_cuda_math.cpp), where they
// are checked against the CPU backend's ops. A kernel is then its indexing and its reduction
// order around these functions. Plain C++ (no CUDA headers needed on the host side).
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>

#if defined(__CUDACC__)
#define BUPO_HD __host__ __device__ inline
#else
#define BUPO_HD inline
#endif

namespace bupo::dmath {

// ---------------------------------------------------------------------------- bf16
// Round to nearest even, NaN kept quiet (as torch and io/dtype.hpp).
BUPO_HD uint16_t f32_to_bf16_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40);
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}
BUPO_HD float bf16_bits_to_f32(uint16_t h) {
  const uint32_t u = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// ---------------------------------------------------------------------------- softmax statistics
// Online statistics of a set of logits: m = max, S = Σ e^{z−m}, T = Σ e^{z−m}(z−m). Two sets merge
// exactly (up to rounding) into the statistics of their union — the lens reduces vocabulary tiles
// and warps this way, and vocabulary shards through lens_rescale.
struct SoftmaxStats {
  float m = -INFINITY;
  float S = 0, T = 0;
};
BUPO_HD SoftmaxStats stats_of(float z) {
  return {z, 1.0f, 0.0f};
}
// The statistics of a relative to a new maximum M >= a.m.
BUPO_HD void stats_shift(float& S, float& T, float m, float M) {
  if (S == 0) return;         // empty set (m = -inf)
  const float delta = m - M;  // <= 0
  const float c = expf(delta);
  T = c * (T + delta * S);
  S = S * c;
}
BUPO_HD SoftmaxStats stats_merge(SoftmaxStats a, SoftmaxStats b) {
  if (a.S == 0) return b;
  if (b.S == 0) return a;
  const float M = a.m > b.m ? a.m : b.m;
  stats_shift(a.S, a.T, a.m, M);
  stats_shift(b.S, b.T, b.m, M);
  return {M, a.S + b.S, a.T + b.T};
}
// A computed entropy clamped at 0 (rounding can make it slightly negative) — NaN stays NaN, so
// that non-finite weights or logits show as NaN and are counted, never as a plausible 0.
BUPO_HD float clamp_entropy(float h) {
  return h < 0.0f ? 0.0f : h;
}
BUPO_HD double clamp_entropy(double h) {
  return h < 0.0 ? 0.0 : h;
}
BUPO_HD float entropy_of(float S, float T) {  // H = log S − T/S
  return clamp_entropy(logf(S) - T / S);
}
// p = e^{w}/S at one logit w = z − m of a row with Σe^{z−m} = S.
BUPO_HD float lens_prob(float w, float S) {
  return expf(w) / S;
}
// dL/dz of Σ g_lp·log p_t + g_ent·H at one logit w = z − m (logS, H of the row).
BUPO_HD float lens_dlogit(float w, float S, float logS, float H, float glp, float gent,
                          bool is_target) {
  const float p = lens_prob(w, S);
  float dz = -glp * p - gent * p * (w - logS + H);
  if (is_target) dz += glp;
  return dz;
}

// ---------------------------------------------------------------------------- per-element ops
BUPO_HD float rms_rstd(double sum_squares, int64_t C, float eps) {
  return 1.0f / sqrtf(static_cast<float>(sum_squares / static_cast<double>(C)) + eps);
}
// dx = s·(dy·w − x̂·mean(dy·w·x̂)) for one element, with x̂ = x·s
BUPO_HD float rms_dx(float dy, float w, float x, float s, float mean_dot) {
  return s * (dy * w - x * s * mean_dot);
}
// rotate_half of one pair (a, b) = (v[i], v[i + D/2]); inverse: the transposed rotation
BUPO_HD void rope_pair(float& a, float& b, float c, float s, bool inverse) {
  const float si = inverse ? -s : s;
  const float x = a, y = b;
  a = x * c - y * si;
  b = y * c + x * si;
}
BUPO_HD float sigmoid(float g) {
  return 1.0f / (1.0f + expf(-g));
}
BUPO_HD float swiglu(float g, float u) {
  return g * sigmoid(g) * u;
}
BUPO_HD void swiglu_backward(float da, float g, float u, float& dg, float& du) {
  const float sg = sigmoid(g), silu = g * sg;
  du = da * silu;
  dg = da * u * sg * (1.0f + g * (1.0f - sg));
}
// torch.optim.AdamW on one element (decoupled decay, bias corrections precomputed).
BUPO_HD void adamw(float& w, float g, float& m, float& v, float step_size, float bc2_sqrt,
                   float decay, float b1, float b2, float eps) {
  w *= decay;
  m = b1 * m + (1.0f - b1) * g;
  v = b2 * v + (1.0f - b2) * g * g;
  w -= step_size * m / (sqrtf(v) / bc2_sqrt + eps);
}

// ---------------------------------------------------------------------------- attention
// Online softmax of one query row over keys: running max m, sum l, and the output accumulator
// rescaled by `scale_acc` when a key raises the max.
struct OnlineRow {
  float m = -INFINITY, l = 0;
};
// Adds score s; returns (p, scale_acc): acc ← acc·scale_acc + p·v.
BUPO_HD void online_push(OnlineRow& r, float s, float& p, float& scale_acc) {
  const float m_new = s > r.m ? s : r.m;
  scale_acc = expf(r.m - m_new);  // 0 for the first key (m = -inf)
  p = expf(s - m_new);
  r.l = r.l * scale_acc + p;
  r.m = m_new;
}
BUPO_HD float online_lse(const OnlineRow& r) {
  return r.m + logf(r.l);
}

// ---------------------------------------------------------------------------- randomness
// splitmix64 finaliser and the sampler's counter-based uniform (gen/generate.cpp uses the same).
BUPO_HD uint64_t mix64(uint64_t z) {
  z += 0x9e3779b97f4a7c15ull;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}
BUPO_HD double sampling_uniform(uint64_t seed, int64_t prompt, int64_t sample, int64_t position) {
  uint64_t h = mix64(seed);
  h = mix64(h ^ static_cast<uint64_t>(prompt));
  h = mix64(h ^ static_cast<uint64_t>(sample));
  h = mix64(h ^ static_cast<uint64_t>(position));
  return static_cast<double>(h >> 11) * (1.0 / 9007199254740992.0);
}

// ---------------------------------------------------------------------------- sampling, per row
// The CPU sampler's (backend/cpu/sampling.cpp) choice of a token from tempered weights p_j =
// e^{(z_j − m)/T} with sum S, at the row's uniform number u. Without a cut: the inverse CDF in
// token-id order. With one: `sp`/`order` are the weights and ids sorted by weight (descending,
// ties by id); the cut keeps the top_k first (0: all), then the shortest prefix of probability
// mass >= top_p (at least one token), and the inverse CDF runs over the kept mass.
BUPO_HD int32_t pick_in_id_order(const double* p, int64_t cols, double S, double u) {
  const double target = u * S;
  double c = 0;
  for (int64_t j = 0; j < cols; ++j) {
    c += p[j];
    if (c > target) return static_cast<int32_t>(j);
  }
  return static_cast<int32_t>(cols - 1);
}
BUPO_HD int64_t cut_keep(const double* sp, int64_t cols, double S, float top_p, int64_t top_k) {
  int64_t keep = top_k > 0 && top_k < cols ? top_k : cols;
  if (top_p < 1.0f) {
    double c = 0;
    for (int64_t i = 0; i < keep; ++i) {
      c += sp[i] / S;
      if (c >= top_p) return i + 1;
    }
  }
  return keep;
}
BUPO_HD int32_t pick_sorted(const double* sp, const int32_t* order, int64_t keep, double u) {
  double mass = 0;
  for (int64_t i = 0; i < keep; ++i) mass += sp[i];
  const double target = u * mass;
  double c = 0;
  for (int64_t i = 0; i < keep; ++i) {
    c += sp[i];
    if (c > target) return order[i];
  }
  return order[keep - 1];
}
// log-prob of token logit z_tok under the tempered distribution (inv_t = 1/T, or 1 when greedy)
BUPO_HD double tempered_logprob(float z_tok, float m, double inv_t, double logS) {
  return (static_cast<double>(z_tok) - m) * inv_t - logS;
}

// ---------------------------------------------------------------------------- index helpers
// The sequence holding packed row n: the last s with cu[s] <= n (binary search, S >= 1).
BUPO_HD int64_t sequence_of(const int32_t* cu, int64_t S, int64_t n) {
  int64_t lo = 0, hi = S - 1;
  while (lo < hi) {
    const int64_t mid = (lo + hi + 1) / 2;
    if (cu[mid] <= n)
      lo = mid;
    else
      hi = mid - 1;
  }
  return lo;
}

}  // namespace bupo::dmath
