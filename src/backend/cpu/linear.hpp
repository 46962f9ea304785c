// Dense linear layer through BLAS (fp32), forward and backward side by side.
//   y (N, out) = x (N, in) · W (out, in)^T + b (out)      [HF/PyTorch nn.Linear layout]
#pragma once
#include <cstdint>

namespace bupo::cpu {

// b may be null. accumulate=true adds into y instead of overwriting it.
void linear_forward(float* y, const float* x, const float* W, const float* b, int64_t N, int64_t in,
                    int64_t out, bool accumulate = false);

// dx (N, in) = dy · W   (accumulate_dx: +=);  dW (out, in) += dy^T · x;  db (out) += Σ_n dy.
// Any of dx, dW, db may be null to skip that gradient.
void linear_backward(float* dx, float* dW, float* db, const float* dy, const float* x,
                     const float* W, int64_t N, int64_t in, int64_t out,
                     bool accumulate_dx = false);

// C (M, N) = alpha · op(A) · op(B) + beta · C, row-major with leading dimensions; ta: A is stored
// (K, M), tb: B is stored (N, K). Bit-identical results for any thread count, on either path:
//  - packed: bupo's packed kernel for the CPU's ISA (gemm_packed.hpp), K never split;
//  - openblas_tiles: OpenBLAS single-threaded on fixed tiles of C taken by OpenMP threads.
// automatic takes the packed kernel where it measured faster (enough rows of C to repay packing
// op(B): linear.cpp), OpenBLAS below.
enum class GemmPath { automatic, packed, openblas_tiles };
void set_gemm_path(GemmPath p);  // for benchmarks and tests; automatic by default
// What a call of this form and shape runs: "avx512", "avx2" or "openblas-tiles".
const char* gemm_path_name(bool ta, bool tb, int64_t M, int64_t N, int64_t K);
void gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
          int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc);

// The three forms attention and the lens use.
// C (M, N) = alpha · A (M, K) · B(N, K)^T + beta · C, with leading dimensions.
void gemm_nt(int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
             const float* B, int64_t ldb, float beta, float* C, int64_t ldc);
// C (M, N) = alpha · A (M, K) · B (K, N) + beta · C
void gemm_nn(int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
             const float* B, int64_t ldb, float beta, float* C, int64_t ldc);
// C (M, N) = alpha · A(K, M)^T · B (K, N) + beta · C
void gemm_tn(int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
             const float* B, int64_t ldb, float beta, float* C, int64_t ldc);

}  // namespace bupo::cpu
