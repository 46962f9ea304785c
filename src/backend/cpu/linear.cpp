#include "backend/cpu/linear.hpp"

#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <climits>
#include <mutex>

#include "backend/cpu/gemm_packed.hpp"
#include "core/error.hpp"
#include "core/threads.hpp"

namespace bupo::cpu {
namespace {
int to_int(int64_t v, const char* what) {
  BUPO_CHECK(v >= 0 && v <= INT_MAX, "gemm: dimension ", what, "=", v,
             " exceeds the BLAS int range");
  return static_cast<int>(v);
}

// OpenBLAS's sgemm picks different kernels for different thread counts, so its results change in
// the last bits with the number of threads. We therefore run OpenBLAS single-threaded and tile C
// into fixed-size blocks (kTileM × kTileN) that OpenMP threads take: every block is computed by
// the same code on the same sub-problem whatever the thread count, and K is never split.
constexpr int64_t kTileM = 128;
constexpr int64_t kTileN = 1024;

void gemm_tiled(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
                int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  static std::once_flag once;
  std::call_once(once, [] { openblas_set_num_threads(1); });
  to_int(lda, "lda");
  to_int(ldb, "ldb");
  to_int(ldc, "ldc");
  to_int(K, "K");
  const int64_t tm = (M + kTileM - 1) / kTileM, tn = (N + kTileN - 1) / kTileN;
  auto tile = [&](int64_t bi, int64_t bj) {
    const int64_t m0 = bi * kTileM, n0 = bj * kTileN;
    const int64_t mb = std::min(kTileM, M - m0), nb = std::min(kTileN, N - n0);
    const float* a = ta ? A + m0 : A + m0 * lda;
    const float* b = tb ? B + n0 * ldb : B + n0;
    cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans,
                static_cast<int>(mb), static_cast<int>(nb), static_cast<int>(K), alpha, a,
                static_cast<int>(lda), b, static_cast<int>(ldb), beta, C + m0 * ldc + n0,
                static_cast<int>(ldc));
  };
  if (tm * tn == 1) {
    tile(0, 0);
    return;
  }
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t bi = 0; bi < tm; ++bi)
    for (int64_t bj = 0; bj < tn; ++bj) tile(bi, bj);
}

// The packed kernel packs all of op(B) (N × K) once per call, so its cost over OpenBLAS's unpacked
// small-M kernels shrinks as 1/M. Measured crossovers (BM_GemmPath, docs/benchmarks.md): op(B)
// stored transposed (the forward, x · Wᵀ: B packed through a transpose) from 512 rows of C,
// B stored (K, N) (dx = dy · W) from 256, Aᵀ · B (dW = dyᵀ · x, M = out features) at any size.
// And above 128 rows when op(B) is large (≥ 8 M elements: a lens chunk against E_u): the OpenBLAS
// tiles read B again for every 128-row tile of C, from memory at that size.
int64_t packed_min_rows(bool ta, bool tb) {
  if (ta) return 16;
  return tb ? 512 : 256;
}
constexpr int64_t kLargeB = int64_t{8} << 20;

GemmPath g_path = GemmPath::automatic;

bool use_packed(bool ta, bool tb, int64_t M, int64_t N, int64_t K) {
  if (gemm_packed_isa()[0] == '\0') return false;
  switch (g_path) {
    case GemmPath::packed:
      return true;
    case GemmPath::openblas_tiles:
      return false;
    case GemmPath::automatic:
      break;
  }
  return M >= packed_min_rows(ta, tb) || (M > 128 && N * K >= kLargeB);
}
}  // namespace

void set_gemm_path(GemmPath p) {
  g_path = p;
}
const char* gemm_path_name(bool ta, bool tb, int64_t M, int64_t N, int64_t K) {
  return use_packed(ta, tb, M, N, K) ? gemm_packed_isa() : "openblas-tiles";
}

void gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
          int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  if (M == 0 || N == 0) return;
  if (K == 0) {  // C = beta · C, without reading C when beta = 0
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < M; ++i)
      for (int64_t j = 0; j < N; ++j) C[i * ldc + j] = beta == 0.0f ? 0.0f : beta * C[i * ldc + j];
    return;
  }
  if (use_packed(ta, tb, M, N, K)) {
    gemm_packed(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc,
                omp_in_parallel() ? 1 : num_threads());
    return;
  }
  gemm_tiled(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}
void gemm_nt(int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
             const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  gemm(false, true, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}
void gemm_nn(int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
             const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  gemm(false, false, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}
void gemm_tn(int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
             const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  gemm(true, false, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
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
