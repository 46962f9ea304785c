#include "lens/lens.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "core/error.hpp"
#include "kernels/cpu/linear.hpp"
#include "kernels/cpu/rmsnorm.hpp"

namespace bupo {

LensMode lens_mode_from_string(const std::string& s) {
  if (s == "raw") return LensMode::Raw;
  if (s == "normed") return LensMode::Normed;
  fail("lens: expected 'raw' or 'normed', got '", s, "'");
}
const char* lens_mode_name(LensMode m) {
  return m == LensMode::Raw ? "raw" : "normed";
}

int64_t Lens::chunk_for(int64_t n) const {
  if (chunk_rows > 0) return std::min(chunk_rows, std::max<int64_t>(n, 1));
  // about 8 M logits (32 MiB) per chunk, at least 4 rows
  const int64_t c =
      std::max<int64_t>(4, (int64_t{8} << 20) / std::max<int64_t>(unembed->shape[0], 1));
  return std::min(c, std::max<int64_t>(n, 1));
}

namespace {

struct ChunkStats {      // per row of a chunk, after the TP reductions
  std::vector<float> m;  // row max of z
  std::vector<float>
      packed;  // 3 per row: S = Σe^{z−m}, T = Σe^{z−m}(z−m), z_t − m (0 if no target)
};

// Prepare lens inputs for a chunk: the normed rows when mode == Normed, otherwise x itself.
const float* lens_input(const Lens& L, const float* x, int64_t rows, int64_t d,
                        std::vector<float>& xn, std::vector<float>& rstd) {
  if (L.mode == LensMode::Raw) return x;
  xn.resize(static_cast<size_t>(rows * d));
  rstd.resize(static_cast<size_t>(rows));
  cpu::rmsnorm_forward(xn.data(), rstd.data(), x, L.norm->w, rows, d, L.eps);
  return xn.data();
}

// z (rows, Vl) = xin E_uᵀ, then the reductions. targets (rows) global ids or null.
void chunk_stats(const Lens& L, const float* xin, int64_t rows, const int32_t* targets,
                 std::vector<float>& z, ChunkStats& st) {
  const int64_t Vl = L.unembed->shape[0], d = L.unembed->shape[1], v0 = L.unembed->shard_offset;
  if (targets != nullptr) {
    const int64_t V = L.unembed->full_shape[0];
    for (int64_t r = 0; r < rows; ++r)
      BUPO_CHECK(targets[r] >= 0 && targets[r] < V, "lens: target id ", targets[r],
                 " outside the vocabulary [0, ", V, ")");
  }
  z.resize(static_cast<size_t>(rows * Vl));
  cpu::gemm_nt(rows, Vl, d, 1.0f, xin, d, L.unembed->w, d, 0.0f, z.data(), Vl);
  st.m.assign(static_cast<size_t>(rows), -std::numeric_limits<float>::infinity());
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    const float* zr = z.data() + r * Vl;
    float m = -std::numeric_limits<float>::infinity();
    for (int64_t j = 0; j < Vl; ++j) m = std::max(m, zr[j]);
    st.m[static_cast<size_t>(r)] = m;
  }
  if (L.tp && L.tp->size() > 1) L.tp->allreduce_max(st.m.data(), st.m.size());
  st.packed.assign(static_cast<size_t>(3 * rows), 0.0f);
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    const float* zr = z.data() + r * Vl;
    const float m = st.m[static_cast<size_t>(r)];
    double S = 0.0, T = 0.0;
    for (int64_t j = 0; j < Vl; ++j) {
      const float w = zr[j] - m;
      const float e = std::exp(w);
      S += e;
      T += static_cast<double>(e) * w;
    }
    st.packed[3 * r] = static_cast<float>(S);
    st.packed[3 * r + 1] = static_cast<float>(T);
    if (targets) {
      const int64_t t = static_cast<int64_t>(targets[r]) - v0;
      if (t >= 0 && t < Vl) st.packed[3 * r + 2] = zr[t] - m;
    }
  }
  if (L.tp && L.tp->size() > 1) L.tp->allreduce_sum(st.packed.data(), st.packed.size());
}

}  // namespace

void Lens::forward(const float* x, int64_t n, const int32_t* targets, float* entropy,
                   float* logprob) const {
  BUPO_CHECK(unembed != nullptr && (mode == LensMode::Raw || norm != nullptr),
             "lens: not configured");
  BUPO_CHECK(logprob == nullptr || targets != nullptr, "lens: log-probs need target ids");
  const int64_t d = unembed->shape[1], C = chunk_for(n);
  std::vector<float> z, xn, rstd;
  ChunkStats st;
  for (int64_t r0 = 0; r0 < n; r0 += C) {
    const int64_t rows = std::min(C, n - r0);
    const float* xin = lens_input(*this, x + r0 * d, rows, d, xn, rstd);
    chunk_stats(*this, xin, rows, targets ? targets + r0 : nullptr, z, st);
    for (int64_t r = 0; r < rows; ++r) {
      const float S = st.packed[3 * r], T = st.packed[3 * r + 1];
      const float logS = std::log(S);
      if (entropy) entropy[r0 + r] = std::max(0.0f, logS - T / S);  // H = log S − Σp(z−m)
      if (logprob) logprob[r0 + r] = st.packed[3 * r + 2] - logS;
    }
  }
}

void Lens::backward(const float* x, int64_t n, const int32_t* targets, const float* g_logprob,
                    const float* g_entropy, float* dx) const {
  BUPO_CHECK(unembed != nullptr && unembed->g != nullptr,
             "lens backward: E_u has no gradient buffer");
  BUPO_CHECK(g_logprob == nullptr || targets != nullptr,
             "lens backward: log-probs need target ids");
  const int64_t Vl = unembed->shape[0], d = unembed->shape[1], v0 = unembed->shard_offset,
                C = chunk_for(n);
  std::vector<float> z, xn, rstd, dxin;
  ChunkStats st;
  for (int64_t r0 = 0; r0 < n; r0 += C) {
    const int64_t rows = std::min(C, n - r0);
    const float* xr = x + r0 * d;
    const float* xin = lens_input(*this, xr, rows, d, xn, rstd);
    chunk_stats(*this, xin, rows, targets ? targets + r0 : nullptr, z, st);
    // z ← dL/dz = g_lp (δ_jt − p_j) − g_ent · p_j (log p_j + H)
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < rows; ++r) {
      float* zr = z.data() + r * Vl;
      const float m = st.m[static_cast<size_t>(r)], S = st.packed[3 * r], T = st.packed[3 * r + 1];
      const float logS = std::log(S), H = logS - T / S;
      const float glp = g_logprob ? g_logprob[r0 + r] : 0.0f;
      const float gent = g_entropy ? g_entropy[r0 + r] : 0.0f;
      for (int64_t j = 0; j < Vl; ++j) {
        const float w = zr[j] - m;
        const float p = std::exp(w) / S;
        zr[j] = -glp * p - gent * p * (w - logS + H);
      }
      if (g_logprob) {
        const int64_t t = static_cast<int64_t>(targets[r0 + r]) - v0;
        if (t >= 0 && t < Vl) zr[t] += glp;
      }
    }
    // dE_u (Vl, d) += dzᵀ xin ; dxin (rows, d) = dz E_u  (partial over vocab shards)
    cpu::gemm_tn(Vl, d, rows, 1.0f, z.data(), Vl, xin, d, 1.0f, unembed->g, d);
    unembed->has_grad = true;
    dxin.assign(static_cast<size_t>(rows * d), 0.0f);
    cpu::gemm_nn(rows, d, Vl, 1.0f, z.data(), Vl, unembed->w, d, 0.0f, dxin.data(), d);
    if (tp && tp->size() > 1) tp->allreduce_sum(dxin.data(), dxin.size());
    if (mode == LensMode::Raw) {
      for (int64_t i = 0; i < rows * d; ++i) dx[r0 * d + i] += dxin[static_cast<size_t>(i)];
    } else {
      BUPO_CHECK(norm->g != nullptr, "lens backward: final norm has no gradient buffer");
      cpu::rmsnorm_backward(dx + r0 * d, norm->g, dxin.data(), xr, norm->w, rstd.data(), rows, d,
                            /*accumulate_dx=*/true);
      norm->has_grad = true;
    }
  }
}

void Lens::logits(const float* x, int64_t n, float* out) const {
  const int64_t Vl = unembed->shape[0], d = unembed->shape[1];
  std::vector<float> xn, rstd;
  const float* xin = lens_input(*this, x, n, d, xn, rstd);
  cpu::gemm_nt(n, Vl, d, 1.0f, xin, d, unembed->w, d, 0.0f, out, Vl);
}

}  // namespace bupo
