#include "backend/cpu/lens.hpp"

#include "backend/device_math.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "backend/cpu/linear.hpp"
#include "backend/cpu/vec_exp.hpp"

namespace bupo::cpu {
namespace {
// z (rows, V_local) = x Eᵀ in the caller's workspace (or an owned one).
struct Logits {
  std::vector<float> own;
  float* z;
  Logits(float* work, int64_t n) : z(work) {
    if (z == nullptr) {
      own.resize(static_cast<size_t>(n));
      z = own.data();
    }
  }
};
// The row reductions, 16 logits at a time (vec_exp.hpp; a row's tail through
// vec::load_shifted's padded lanes). Sums in fp64, in lane order.
float row_max(const float* z, int64_t n) {
  vec::f32x16 vm = vec::splat(-std::numeric_limits<float>::infinity());
  int64_t j = 0;
  for (; j + vec::kLanes <= n; j += vec::kLanes) vm = vec::max(vm, vec::load(z + j));
  float mr = vec::hmax(vm);
  for (; j < n; ++j) mr = z[j] > mr ? z[j] : mr;
  return mr;
}

// S = Σ e^{z−m}, T = Σ e^{z−m}(z−m)
void row_sums(const float* z, int64_t n, float mr, double& S, double& T) {
  vec::f64x8 s0{}, s1{}, t0{}, t1{};
  for (int64_t j = 0; j < n; j += vec::kLanes) {
    const vec::f32x16 w = vec::load_shifted(z + j, std::min<int64_t>(vec::kLanes, n - j), mr);
    const vec::f32x16 e = vec::exp(w);
    const vec::f64x8 el = vec::low_half(e), eh = vec::high_half(e);
    s0 += el;
    s1 += eh;
    t0 += el * vec::low_half(w);
    t1 += eh * vec::high_half(w);
  }
  S = vec::hsum(s0) + vec::hsum(s1);
  T = vec::hsum(t0) + vec::hsum(t1);
}

// z ← −g_lp·p − g_ent·p·(w − c), p = e^w / S, w = z − m, c = log S − H
void row_grad(float* z, int64_t n, float mr, float S, float c, float glp, float gent) {
  const vec::f32x16 vS = vec::splat(S), vc = vec::splat(c), vglp = vec::splat(glp),
                    vgent = vec::splat(gent);
  for (int64_t j = 0; j < n; j += vec::kLanes) {
    const int64_t k = std::min<int64_t>(vec::kLanes, n - j);
    const vec::f32x16 w = vec::load_shifted(z + j, k, mr);
    const vec::f32x16 p = vec::exp(w) / vS;
    const vec::f32x16 g = -vglp * p - vgent * p * (w - vc);
    vec::store_first(z + j, g, k);
  }
}
}  // namespace

void lens_stats(float* m, float* packed, const float* x, int64_t rows, const float* E, int64_t Vl,
                int64_t d, const int32_t* targets, int64_t v0, float* z_work) {
  Logits L(z_work, lens_work(rows, Vl));
  float* const z = L.z;
  gemm_nt(rows, Vl, d, 1.0f, x, d, E, d, 0.0f, z, Vl);
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    const float* zr = z + r * Vl;
    const float mr = row_max(zr, Vl);
    m[r] = mr;
    double S = 0.0, T = 0.0;
    row_sums(zr, Vl, mr, S, T);
    packed[3 * r] = static_cast<float>(S);
    packed[3 * r + 1] = static_cast<float>(T);
    packed[3 * r + 2] = 0.0f;
    if (targets) {
      const int64_t t = static_cast<int64_t>(targets[r]) - v0;
      if (t >= 0 && t < Vl) packed[3 * r + 2] = zr[t] - mr;
    }
  }
}

void lens_rescale(float* packed, const float* m_local, const float* m_global,
                  const int32_t* targets, int64_t v0, int64_t Vl, int64_t rows) {
  for (int64_t r = 0; r < rows; ++r) {
    const float delta = m_local[r] - m_global[r];  // <= 0
    const float c = std::exp(delta);
    const float S = packed[3 * r], T = packed[3 * r + 1];
    packed[3 * r] = S * c;
    packed[3 * r + 1] = c * (T + delta * S);
    if (targets) {
      const int64_t t = static_cast<int64_t>(targets[r]) - v0;
      if (t >= 0 && t < Vl) packed[3 * r + 2] += delta;
    }
  }
}

void lens_outputs(float* entropy, float* logprob, const float* packed, int64_t rows) {
  for (int64_t r = 0; r < rows; ++r) {
    const float S = packed[3 * r], T = packed[3 * r + 1];
    const float logS = std::log(S);
    if (entropy) entropy[r] = dmath::clamp_entropy(logS - T / S);  // H = log S − Σp(z−m); NaN kept
    if (logprob) logprob[r] = packed[3 * r + 2] - logS;
  }
}

void lens_backward(float* dx, float* dE, const float* x, int64_t rows, const float* E, int64_t Vl,
                   int64_t d, const float* m, const float* packed, const int32_t* targets,
                   int64_t v0, const float* g_logprob, const float* g_entropy, float* z_work) {
  Logits L(z_work, lens_work(rows, Vl));
  float* const z = L.z;
  gemm_nt(rows, Vl, d, 1.0f, x, d, E, d, 0.0f, z, Vl);
  // z ← dL/dz = g_lp (δ_jt − p_j) − g_ent · p_j (log p_j + H)
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    float* zr = z + r * Vl;
    const float mr = m[r], S = packed[3 * r], T = packed[3 * r + 1];
    const float logS = std::log(S), H = logS - T / S;
    const float glp = g_logprob ? g_logprob[r] : 0.0f;
    const float gent = g_entropy ? g_entropy[r] : 0.0f;
    row_grad(zr, Vl, mr, S, logS - H, glp, gent);
    if (g_logprob) {
      const int64_t t = static_cast<int64_t>(targets[r]) - v0;
      if (t >= 0 && t < Vl) zr[t] += glp;
    }
  }
  // dE_u (Vl, d) += dzᵀ x ; dx (rows, d) = dz E_u  (partial over vocab shards)
  gemm_tn(Vl, d, rows, 1.0f, z, Vl, x, d, 1.0f, dE, d);
  gemm_nn(rows, d, Vl, 1.0f, z, Vl, E, d, 0.0f, dx, d);
}

void lens_expectation(float* ebar, const float* x, int64_t rows, const float* E, int64_t Vl,
                      int64_t d, const float* m, const float* packed, float* z_work) {
  Logits L(z_work, lens_work(rows, Vl));
  float* const z = L.z;
  gemm_nt(rows, Vl, d, 1.0f, x, d, E, d, 0.0f, z, Vl);
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r)  // z ← p = e^{z−m}/S  (row_grad with g_lp = −1, g_ent = 0)
    row_grad(z + r * Vl, Vl, m[r], packed[3 * r], 0.0f, -1.0f, 0.0f);
  gemm_nn(rows, d, Vl, 1.0f, z, Vl, E, d, 0.0f, ebar, d);
}

}  // namespace bupo::cpu
