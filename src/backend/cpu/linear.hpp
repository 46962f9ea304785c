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
// (K, M), tb: B is stored (N, K). OpenBLAS single-threaded on fixed tiles of C taken by OpenMP
// threads: bit-identical results for any thread count.
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
