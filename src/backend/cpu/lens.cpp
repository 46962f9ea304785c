#include "backend/cpu/lens.hpp"

#include "backend/device_math.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "backend/cpu/linear.hpp"

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
}  // namespace

void lens_stats(float* m, float* packed, const float* x, int64_t rows, const float* E, int64_t Vl,
                int64_t d, const int32_t* targets, int64_t v0, float* z_work) {
  Logits L(z_work, lens_work(rows, Vl));
  float* const z = L.z;
  gemm_nt(rows, Vl, d, 1.0f, x, d, E, d, 0.0f, z, Vl);
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    const float* zr = z + r * Vl;
    float mr = -std::numeric_limits<float>::infinity();
    for (int64_t j = 0; j < Vl; ++j) mr = std::max(mr, zr[j]);
    m[r] = mr;
    double S = 0.0, T = 0.0;
    for (int64_t j = 0; j < Vl; ++j) {
      const float w = zr[j] - mr;
      const float e = std::exp(w);
      S += e;
      T += static_cast<double>(e) * w;
    }
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
    for (int64_t j = 0; j < Vl; ++j) {
      const float w = zr[j] - mr;
      const float p = std::exp(w) / S;
      zr[j] = -glp * p - gent * p * (w - logS + H);
    }
    if (g_logprob) {
      const int64_t t = static_cast<int64_t>(targets[r]) - v0;
      if (t >= 0 && t < Vl) zr[t] += glp;
    }
  }
  // dE_u (Vl, d) += dzᵀ x ; dx (rows, d) = dz E_u  (partial over vocab shards)
  gemm_tn(Vl, d, rows, 1.0f, z, Vl, x, d, 1.0f, dE, d);
  gemm_nn(rows, d, Vl, 1.0f, z, Vl, E, d, 0.0f, dx, d);
}

}  // namespace bupo::cpu
