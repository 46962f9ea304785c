#include "backend/cpu/gemm_packed.hpp"

namespace bupo::cpu {
namespace {
enum class Isa { none, avx2, avx512 };
Isa detect() {
#if defined(__x86_64__) && defined(__GNUC__)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f")) return Isa::avx512;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return Isa::avx2;
#endif
  return Isa::none;
}
Isa isa() {
  static const Isa i = detect();
  return i;
}
}  // namespace

const char* gemm_packed_isa() {
  switch (isa()) {
    case Isa::avx512:
      return "avx512";
    case Isa::avx2:
      return "avx2";
    case Isa::none:
      break;
  }
  return "";
}

void gemm_packed(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
                 int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc,
                 int threads) {
#if defined(__x86_64__)
  switch (isa()) {
    case Isa::avx512:
      avx512::gemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, threads);
      return;
    case Isa::avx2:
      avx2::gemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, threads);
      return;
    case Isa::none:
      break;
  }
#else
  (void)ta, (void)tb, (void)M, (void)N, (void)K, (void)alpha, (void)A, (void)lda, (void)B;
  (void)ldb, (void)beta, (void)C, (void)ldc, (void)threads;
#endif
}
}  // namespace bupo::cpu
