// Helpers shared by the backend-ops cases (naive fp64 references, device arrays), and the case
// families, one per file: cases_model.cpp (linear algebra, norms, RoPE, attention, SwiGLU),
// cases_policy.cpp (rows, elementwise and optimizer, lens, sampling).
#pragma once
#include <cmath>
#include <vector>

#include "backend_ops.hpp"

namespace bupo::test::ops::detail {

inline Tensor zeros(Backend& be, Dims s) {
  const Tensor t = be.scratch().alloc_f32(s);
  be.zero(t);
  return t;
}
inline Array from_double(Dims s, const std::vector<double>& v) {
  std::vector<float> f(v.begin(), v.end());
  return f32(s, std::move(f));
}

// ---------------------------------------------------------------------------- naive references
// C (M, N) = alpha op(A) op(B) + beta C, all row-major, contiguous operands.
inline std::vector<double> ref_gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, double alpha,
                                    const Array& A, const Array& B, double beta, const Array& C) {
  std::vector<double> out(static_cast<size_t>(M * N));
  for (int64_t i = 0; i < M; ++i)
    for (int64_t j = 0; j < N; ++j) {
      double s = 0;
      for (int64_t k = 0; k < K; ++k)
        s += A.at(ta ? k * M + i : i * K + k) * B.at(tb ? j * K + k : k * N + j);
      out[static_cast<size_t>(i * N + j)] = alpha * s + beta * C.at(i * N + j);
    }
  return out;
}

struct Softmax {  // of one row z (n) in fp64
  std::vector<double> p;
  double lse = 0, entropy = 0, max = 0;
  explicit Softmax(const std::vector<double>& z) {
    max = *std::max_element(z.begin(), z.end());
    double s = 0;
    for (double v : z) s += std::exp(v - max);
    lse = max + std::log(s);
    for (double v : z) {
      p.push_back(std::exp(v - lse));
      if (p.back() > 0) entropy -= p.back() * (v - lse);
    }
  }
};

// Causal GQA attention of packed sequences; returns o (N, H·D) and lse (N, H).
inline void ref_attention(const Array& q, const Array& k, const Array& v,
                          const std::vector<int64_t>& cu, int64_t H, int64_t Hkv, int64_t D,
                          std::vector<double>& o, std::vector<double>& lse) {
  const int64_t N = cu.back(), g = H / Hkv;
  o.assign(static_cast<size_t>(N * H * D), 0.0);
  lse.assign(static_cast<size_t>(N * H), 0.0);
  for (size_t s = 0; s + 1 < cu.size(); ++s)
    for (int64_t i = cu[s]; i < cu[s + 1]; ++i)
      for (int64_t h = 0; h < H; ++h) {
        std::vector<double> sc;
        for (int64_t j = cu[s]; j <= i; ++j) {
          double dd = 0;
          for (int64_t c = 0; c < D; ++c)
            dd += q.at((i * H + h) * D + c) * k.at((j * Hkv + h / g) * D + c);
          sc.push_back(dd / std::sqrt(static_cast<double>(D)));
        }
        const Softmax sm(sc);
        lse[static_cast<size_t>(i * H + h)] = sm.lse;
        for (int64_t j = cu[s]; j <= i; ++j)
          for (int64_t c = 0; c < D; ++c)
            o[static_cast<size_t>((i * H + h) * D + c)] +=
                sm.p[static_cast<size_t>(j - cu[s])] * v.at((j * Hkv + h / g) * D + c);
      }
}

inline SeqIndex seq_index(const std::vector<int64_t>& cu) {
  SeqIndex s;
  s.cu = cu.data();
  s.S = static_cast<int64_t>(cu.size()) - 1;
  for (int64_t i = 0; i < s.S; ++i)
    s.max_len = std::max(s.max_len, cu[static_cast<size_t>(i + 1)] - cu[static_cast<size_t>(i)]);
  return s;
}

// ---------------------------------------------------------------------------- the cases

void add_gemm(std::vector<Case>& cs);
void add_linear(std::vector<Case>& cs);
void add_rmsnorm(std::vector<Case>& cs);
void add_rope(std::vector<Case>& cs);
void add_attention(std::vector<Case>& cs);
void add_decode(std::vector<Case>& cs);
void add_swiglu(std::vector<Case>& cs);
void add_rows(std::vector<Case>& cs);
void add_elementwise(std::vector<Case>& cs);
void add_lens(std::vector<Case>& cs);
void add_sampling(std::vector<Case>& cs);

}  // namespace bupo::test::ops::detail
