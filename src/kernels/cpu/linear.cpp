#include "kernels/cpu/linear.hpp"

#include <cblas.h>

#include <climits>

#include "core/error.hpp"

namespace bupo::cpu {
namespace {
int to_int(int64_t v, const char* what) {
  BUPO_CHECK(v >= 0 && v <= INT_MAX, "gemm: dimension ", what, "=", v, " exceeds the BLAS int range");
  return static_cast<int>(v);
}
}  // namespace

void gemm_nt(int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
             const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  if (M == 0 || N == 0) return;
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, to_int(M, "M"), to_int(N, "N"),
              to_int(K, "K"), alpha, A, to_int(lda, "lda"), B, to_int(ldb, "ldb"), beta, C,
              to_int(ldc, "ldc"));
}
void gemm_nn(int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
             const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  if (M == 0 || N == 0) return;
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, to_int(M, "M"), to_int(N, "N"),
              to_int(K, "K"), alpha, A, to_int(lda, "lda"), B, to_int(ldb, "ldb"), beta, C,
              to_int(ldc, "ldc"));
}
void gemm_tn(int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
             const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  if (M == 0 || N == 0) return;
  cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, to_int(M, "M"), to_int(N, "N"),
              to_int(K, "K"), alpha, A, to_int(lda, "lda"), B, to_int(ldb, "ldb"), beta, C,
              to_int(ldc, "ldc"));
}

void linear_forward(float* y, const float* x, const float* W, const float* b, int64_t N, int64_t in,
                    int64_t out, bool accumulate) {
  if (b != nullptr && !accumulate) {
#pragma omp parallel for schedule(static)
    for (int64_t n = 0; n < N; ++n)
      for (int64_t o = 0; o < out; ++o) y[n * out + o] = b[o];
    gemm_nt(N, out, in, 1.0f, x, in, W, in, 1.0f, y, out);
    return;
  }
  gemm_nt(N, out, in, 1.0f, x, in, W, in, accumulate ? 1.0f : 0.0f, y, out);
  if (b != nullptr) {
#pragma omp parallel for schedule(static)
    for (int64_t n = 0; n < N; ++n)
      for (int64_t o = 0; o < out; ++o) y[n * out + o] += b[o];
  }
}

void linear_backward(float* dx, float* dW, float* db, const float* dy, const float* x,
                     const float* W, int64_t N, int64_t in, int64_t out, bool accumulate_dx) {
  if (dx != nullptr) gemm_nn(N, in, out, 1.0f, dy, out, W, in, accumulate_dx ? 1.0f : 0.0f, dx, in);
  if (dW != nullptr) gemm_tn(out, in, N, 1.0f, dy, out, x, in, 1.0f, dW, in);
  if (db != nullptr) {
    // Each thread owns a range of output columns and sums rows in order: thread-count invariant.
#pragma omp parallel for schedule(static)
    for (int64_t o = 0; o < out; ++o) {
      float s = 0.0f;
      for (int64_t n = 0; n < N; ++n) s += dy[n * out + o];
      db[o] += s;
    }
  }
}

}  // namespace bupo::cpu
