// The packed GEMM for AVX-512F (compiled with -mavx512f -mfma whatever the build's -march).
#include <immintrin.h>

#include "backend/cpu/gemm_packed.hpp"
#define BUPO_GEMM_ISA avx512
#include "backend/cpu/gemm_packed_impl.hpp"

namespace bupo::cpu::avx512 {
namespace {
struct Vec {
  using V = __m512;
  static constexpr int W = 16;
  static V zero() { return _mm512_setzero_ps(); }
  static V load(const float* p) { return _mm512_load_ps(p); }
  static V set1(float x) { return _mm512_set1_ps(x); }
  static V fma(V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); }
  static V mul(V a, V b) { return _mm512_mul_ps(a, b); }
  static V add(V a, V b) { return _mm512_add_ps(a, b); }
  static __mmask16 mask(int64_t n) {
    return n >= W ? static_cast<__mmask16>(0xFFFF) : static_cast<__mmask16>((1u << n) - 1u);
  }
  static V load_n(const float* p, int64_t n) { return _mm512_maskz_loadu_ps(mask(n), p); }
  static void store_n(float* p, V v, int64_t n) { _mm512_mask_storeu_ps(p, mask(n), v); }
};
// 6 × 64 tile: 24 zmm accumulators, four B vectors and six broadcasts per k (tile shapes and
// blocks measured against each other: docs/benchmarks.md).
using Kernel = PackedGemm<Vec, 6, 4, 512, 288, 3072>;
}  // namespace

void gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
          int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc,
          int threads) {
  Kernel::run(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, threads);
}
}  // namespace bupo::cpu::avx512
