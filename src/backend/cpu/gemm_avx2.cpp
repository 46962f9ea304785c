// The packed GEMM for AVX2 + FMA (compiled with -mavx2 -mfma whatever the build's -march).
#include <immintrin.h>

#include "backend/cpu/gemm_packed.hpp"
#define BUPO_GEMM_ISA avx2
#include "backend/cpu/gemm_packed_impl.hpp"

namespace bupo::cpu::avx2 {
namespace {
struct Vec {
  using V = __m256;
  static constexpr int W = 8;
  static V zero() { return _mm256_setzero_ps(); }
  static V load(const float* p) { return _mm256_load_ps(p); }
  static V set1(float x) { return _mm256_set1_ps(x); }
  static V fma(V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); }
  static V mul(V a, V b) { return _mm256_mul_ps(a, b); }
  static V add(V a, V b) { return _mm256_add_ps(a, b); }
  static __m256i mask(int64_t n) {
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(n < W ? n : W)), lane);
  }
  static V load_n(const float* p, int64_t n) {
    return n >= W ? _mm256_loadu_ps(p) : _mm256_maskload_ps(p, mask(n));
  }
  static void store_n(float* p, V v, int64_t n) {
    if (n >= W)
      _mm256_storeu_ps(p, v);
    else
      _mm256_maskstore_ps(p, mask(n), v);
  }
};
// 6 × 16 tile (BLIS's Haswell shape): 12 ymm accumulators, two B vectors and a broadcast per k.
using Kernel = PackedGemm<Vec, 6, 2, 256, 288, 3072>;
}  // namespace

void gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
          int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc,
          int threads) {
  Kernel::run(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, threads);
}
}  // namespace bupo::cpu::avx2
