// bupo's own packed fp32 GEMM (gemm_packed_impl.hpp), one instantiation per x86 ISA chosen at run
// time from the CPU's features — not from OPENBLAS_CORETYPE, which some machines set to keep
// OpenBLAS on AVX2 kernels. docs/benchmarks.md has the measurements that led to it.
//
// Results are bit-identical for any thread count on one machine; an AVX-512 and an AVX2 machine
// slice K differently (KC 512 and 256) and so differ in the last bits, as OpenBLAS's kernels do.
// Its packing buffers (6 MiB of B per calling thread, 0.6 MiB of A per worker at AVX-512) are
// carved once per thread on first use, outside the counted arenas.
#pragma once
#include <cstdint>

namespace bupo::cpu {

// The packed kernel this CPU runs: "avx512", "avx2", or "" when neither ISA is present.
const char* gemm_packed_isa();

// C (M, N) = alpha · op(A) · op(B) + beta · C (row-major; ta: A stored (K, M); tb: B stored
// (N, K)) with `threads` OpenMP threads (1 inside a parallel region). Bit-identical for any
// thread count. Requires gemm_packed_isa()[0] != '\0'.
void gemm_packed(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
                 int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc,
                 int threads);

// The ISA instantiations (gemm_avx512.cpp, gemm_avx2.cpp).
namespace avx512 {
void gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
          int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc, int threads);
}
namespace avx2 {
void gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
          int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc, int threads);
}

}  // namespace bupo::cpu
