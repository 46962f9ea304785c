#include "backend/cpu/attention.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "backend/cpu/linear.hpp"
#include "backend/cpu/vec_exp.hpp"
#include "core/error.hpp"

namespace bupo::cpu {
namespace {
void check_shape(std::span<const int64_t> cu, const AttnShape& s) {
  BUPO_CHECK(cu.size() >= 2 && cu.front() == 0 && cu.back() == s.N,
             "attention: cu_seqlens must start at 0 and end at N=", s.N);
  BUPO_CHECK(s.Hkv > 0 && s.H % s.Hkv == 0, "attention: H=", s.H, " not a multiple of Hkv=", s.Hkv);
}
int64_t max_len(std::span<const int64_t> cu) {
  int64_t m = 0;
  for (size_t i = 0; i + 1 < cu.size(); ++i) m = std::max(m, cu[i + 1] - cu[i]);
  return m;
}

struct Geometry {
  int64_t D, ldq, ldk, group, Tm;
  float scale;
  Geometry(std::span<const int64_t> cu, const AttnShape& s)
      : D(s.D),
        ldq(s.H * s.D),
        ldk(s.Hkv * s.D),
        group(s.H / std::max<int64_t>(s.Hkv, 1)),
        Tm(max_len(cu)),
        scale(1.0f / std::sqrt(static_cast<float>(s.D))) {
    check_shape(cu, s);
  }
};

// f(t0, T, h, hk) for every sequence [t0, t0+T) and query head h (KV head hk), in a fixed order:
// heads of one KV group run one after another, so dk/dv accumulate deterministically.
template <typename F>
void for_each_head(std::span<const int64_t> cu, const AttnShape& s, const Geometry& g, F&& f) {
  for (size_t seg = 0; seg + 1 < cu.size(); ++seg) {
    const int64_t t0 = cu[seg], T = cu[seg + 1] - t0;
    if (T <= 0) continue;
    for (int64_t h = 0; h < s.H; ++h) f(t0, T, h, h / g.group);
  }
}

// The caller's workspace, or an owned one of n floats.
struct Work {
  std::vector<float> own;
  float* p;
  Work(float* w, int64_t n) : p(w) {
    if (p == nullptr) {
      own.resize(static_cast<size_t>(n));
      p = own.data();
    }
  }
  float* data() const { return p; }
};
}  // namespace

int64_t attention_cached_keys(std::span<const int64_t> cu, const int32_t* pos) {
  int64_t max_keys = 0;
  for (size_t seg = 0; seg + 1 < cu.size(); ++seg)
    if (cu[seg + 1] > cu[seg]) max_keys = std::max<int64_t>(max_keys, pos[cu[seg + 1] - 1] + 1);
  return max_keys;
}

void attention_forward(float* o, float* lse, const float* q, const float* k, const float* v,
                       std::span<const int64_t> cu, const AttnShape& s, float* work) {
  const Geometry g(cu, s);
  const int64_t D = g.D, ldq = g.ldq, ldk = g.ldk;
  const Work WS(work, attention_forward_work(g.Tm));
  float* const S = WS.data();  // (Bq, keys) scores of one query block of one head
  for_each_head(cu, s, g, [&](int64_t t0, int64_t T, int64_t h, int64_t hk) {
    const float* kh = k + t0 * ldk + hk * D;
    const float* vh = v + t0 * ldk + hk * D;
    // query blocks: block [i0, i0 + Bq) sees keys [0, i0 + Bq), so the fully masked key tiles
    // above the diagonal are never computed
    for (int64_t i0 = 0; i0 < T; i0 += kAttnQueryBlock) {
      const int64_t Bq = std::min(kAttnQueryBlock, T - i0), keys = i0 + Bq;
      gemm_nt(Bq, keys, D, g.scale, q + (t0 + i0) * ldq + h * D, ldq, kh, ldk, 0.0f, S,
              keys);  // S = q kᵀ / √D
#pragma omp parallel for schedule(static)
      for (int64_t r = 0; r < Bq; ++r) {
        const int64_t i = i0 + r;  // the query's position: keys 0..i are visible
        float* row = S + r * keys;
        float m = -std::numeric_limits<float>::infinity();
        for (int64_t j = 0; j <= i; ++j) m = std::max(m, row[j]);
        const double sum = vec::exp_shifted_sum(row, i + 1, m);
        const float inv = static_cast<float>(1.0 / sum);
        for (int64_t j = 0; j <= i; ++j) row[j] *= inv;
        for (int64_t j = i + 1; j < keys; ++j) row[j] = 0.0f;  // causal mask
        lse[(t0 + i) * s.H + h] = m + static_cast<float>(std::log(sum));
      }
      gemm_nn(Bq, D, keys, 1.0f, S, keys, vh, ldk, 0.0f, o + (t0 + i0) * ldq + h * D,
              ldq);  // O = P v
    }
  });
}

void attention_backward(float* dq, float* dk, float* dv, const float* dout, const float* q,
                        const float* k, const float* v, const float* o, const float* lse,
                        std::span<const int64_t> cu, const AttnShape& s, float* work) {
  const Geometry g(cu, s);
  const int64_t D = g.D, ldq = g.ldq, ldk = g.ldk;
  const Work W(work, attention_backward_work(g.Tm));
  float* const P = W.data();                 // (Bq, keys)
  float* const dP = W.data() + g.Tm * g.Tm;  // (Bq, keys)
  std::fill(dk, dk + s.N * ldk, 0.0f);
  std::fill(dv, dv + s.N * ldk, 0.0f);
  for_each_head(cu, s, g, [&](int64_t t0, int64_t T, int64_t h, int64_t hk) {
    const float* kh = k + t0 * ldk + hk * D;
    const float* vh = v + t0 * ldk + hk * D;
    float* dkh = dk + t0 * ldk + hk * D;
    float* dvh = dv + t0 * ldk + hk * D;
    // the forward's query blocks, in order (dk and dv accumulate deterministically)
    for (int64_t i0 = 0; i0 < T; i0 += kAttnQueryBlock) {
      const int64_t Bq = std::min(kAttnQueryBlock, T - i0), keys = i0 + Bq;
      const float* qb = q + (t0 + i0) * ldq + h * D;
      const float* ob = o + (t0 + i0) * ldq + h * D;
      const float* gb = dout + (t0 + i0) * ldq + h * D;
      gemm_nt(Bq, keys, D, g.scale, qb, ldq, kh, ldk, 0.0f, P, keys);
      gemm_nt(Bq, keys, D, 1.0f, gb, ldq, vh, ldk, 0.0f, dP, keys);  // dP = dO vᵀ
#pragma omp parallel for schedule(static)
      for (int64_t r = 0; r < Bq; ++r) {
        const int64_t i = i0 + r;
        const float l = lse[(t0 + i) * s.H + h];
        float* prow = P + r * keys;
        float* dprow = dP + r * keys;
        double d = 0.0;  // D_i = Σ_c dO_ic·O_ic = Σ_j P_ij dP_ij
        for (int64_t c = 0; c < D; ++c) d += static_cast<double>(gb[r * ldq + c]) * ob[r * ldq + c];
        const float di = static_cast<float>(d);
        vec::exp_shifted_sum(prow, i + 1, l);                                   // P = e^{S − lse}
        for (int64_t j = 0; j <= i; ++j) dprow[j] = prow[j] * (dprow[j] - di);  // dS
        for (int64_t j = i + 1; j < keys; ++j) prow[j] = dprow[j] = 0.0f;
      }
      gemm_tn(keys, D, Bq, 1.0f, P, keys, gb, ldq, 1.0f, dvh, ldk);  // dv += Pᵀ dO
      gemm_nn(Bq, D, keys, g.scale, dP, keys, kh, ldk, 0.0f, dq + (t0 + i0) * ldq + h * D,
              ldq);                                                      // dq = dS k
      gemm_tn(keys, D, Bq, g.scale, dP, keys, qb, ldq, 1.0f, dkh, ldk);  // dk += dSᵀ q
    }
  });
}

void attention_cached_forward(float* o, const float* q, const float* kc, const float* vc,
                              int64_t slot_stride, std::span<const int64_t> cu, const int32_t* pos,
                              std::span<const int64_t> slots, const AttnShape& s, float* work) {
  const Geometry g(cu, s);
  BUPO_CHECK(slots.size() + 1 == cu.size(), "attention: one cache slot per sequence expected");
  const int64_t D = g.D, ldq = g.ldq, ldk = g.ldk;
  const int64_t max_keys = attention_cached_keys(cu, pos);
  const Work WS(work, attention_cached_work(g.Tm, max_keys));
  float* const S = WS.data();  // (T, keys)
  for_each_head(cu, s, g, [&](int64_t t0, int64_t T, int64_t h, int64_t hk) {
    const size_t seg =
        static_cast<size_t>(std::upper_bound(cu.begin(), cu.end(), t0) - cu.begin() - 1);
    const int64_t Lk = pos[t0 + T - 1] + 1;
    const float* kh = kc + slots[seg] * slot_stride + hk * D;
    const float* vh = vc + slots[seg] * slot_stride + hk * D;
    gemm_nt(T, Lk, D, g.scale, q + t0 * ldq + h * D, ldq, kh, ldk, 0.0f, S, Lk);
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < T; ++i) {
      float* row = S + i * Lk;
      const int64_t last = pos[t0 + i];  // keys 0..last are visible
      float m = -std::numeric_limits<float>::infinity();
      for (int64_t j = 0; j <= last; ++j) m = std::max(m, row[j]);
      const double sum = vec::exp_shifted_sum(row, last + 1, m);
      const float inv = static_cast<float>(1.0 / sum);
      for (int64_t j = 0; j <= last; ++j) row[j] *= inv;
      for (int64_t j = last + 1; j < Lk; ++j) row[j] = 0.0f;
    }
    gemm_nn(T, D, Lk, 1.0f, S, Lk, vh, ldk, 0.0f, o + t0 * ldq + h * D, ldq);
  });
}

}  // namespace bupo::cpu
