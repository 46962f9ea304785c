// The CUDA backend's host-side decisions (backend/cuda/plans.hpp), checked without a GPU: the
// row-major → column-major cuBLASLt problem (run here by a naive column-major GEMM with cuBLAS's
// semantics against the CPU backend's gemm), the algorithm-cache key, the launch shapes of the
// attention kernels and the vocabulary tiles of the lens.
#include <gtest/gtest.h>

#include <unordered_map>

#include "../backend_ops/backend_ops.hpp"
#include "backend/cuda/plans.hpp"

namespace bupo::test::ops {
namespace {

using cuda::LtProblem;

// D = op(A')·op(B') + beta·C, column-major, as cublasLtMatmul computes it: element (i, j) of a
// matrix with leading dimension ld lives at i + j·ld.
void colmajor_gemm(const LtProblem& p, float alpha, const float* A, const float* B, float beta,
                   float* C) {
  for (int64_t j = 0; j < p.n; ++j)
    for (int64_t i = 0; i < p.m; ++i) {
      double acc = 0;
      for (int64_t l = 0; l < p.k; ++l) {
        const float a = p.trans_a ? A[l + i * p.lda] : A[i + l * p.lda];
        const float b = p.trans_b ? B[j + l * p.ldb] : B[l + j * p.ldb];
        acc += double{a} * b;
      }
      C[i + j * p.ldc] = static_cast<float>(alpha * acc + beta * C[i + j * p.ldc]);
    }
}

TEST(CudaPlans, LtProblemComputesTheRowMajorGemm) {
  const int64_t M = 5, N = 7, K = 3;
  for (bool ta : {false, true})
    for (bool tb : {false, true}) {
      // padded leading dimensions, as the model's views into fused buffers have
      const int64_t lda = (ta ? M : K) + 2, ldb = (tb ? K : N) + 1, ldc = N + 3;
      const int64_t a_rows = ta ? K : M, b_rows = tb ? N : K;
      const Array A = randn({a_rows, lda}, 1), B = randn({b_rows, ldb}, 2), C0 = randn({M, ldc}, 3);
      ArenaScope sc(cpu_backend().scratch());
      const Tensor Ct = to_device(cpu_backend(), C0);
      cpu_backend().gemm(ta, tb, M, N, K, 0.5f, to_device(cpu_backend(), A), lda,
                         to_device(cpu_backend(), B), ldb, 0.25f, Ct, ldc);
      const Array want = to_host(cpu_backend(), Ct);
      const LtProblem p = cuda::lt_problem(ta, tb, M, N, K, lda, ldb, ldc);
      EXPECT_EQ(p.m, N);
      EXPECT_EQ(p.n, M);
      EXPECT_EQ(p.k, K);
      // the stored shapes cuBLASLt's layouts are created with fit the leading dimensions
      EXPECT_LE(p.a_rows, p.lda);
      EXPECT_LE(p.b_rows, p.ldb);
      EXPECT_LE(p.c_rows, p.ldc);
      EXPECT_EQ(p.trans_a ? p.a_cols : p.a_rows, p.m);
      EXPECT_EQ(p.trans_b ? p.b_rows : p.b_cols, p.n);
      std::vector<float> got = C0.f;
      colmajor_gemm(p, 0.5f, B.f.data(), A.f.data(), 0.25f, got.data());
      for (int64_t r = 0; r < M; ++r)
        for (int64_t c = 0; c < ldc; ++c)  // padding columns untouched
          EXPECT_NEAR(got[r * ldc + c], want.f[r * ldc + c], 1e-5)
              << "ta " << ta << " tb " << tb << " (" << r << ", " << c << ")";
    }
}

TEST(CudaPlans, GemmKeysDifferInEveryFieldAndHashConsistently) {
  cuda::GemmKey base;
  base.a_type = base.b_type = 14;  // CUDA_R_16BF
  base.c_type = 0;                 // CUDA_R_32F
  base.p = cuda::lt_problem(false, true, 128, 256, 64, 64, 64, 256);
  std::vector<cuda::GemmKey> keys = {base};
  auto vary = [&](auto f) {
    cuda::GemmKey k = base;
    f(k);
    keys.push_back(k);
  };
  vary([](cuda::GemmKey& k) { k.a_type = 0; });
  vary([](cuda::GemmKey& k) { k.c_type = 14; });
  vary([](cuda::GemmKey& k) { k.p.m += 1; });
  vary([](cuda::GemmKey& k) { k.p.n += 1; });
  vary([](cuda::GemmKey& k) { k.p.k += 1; });
  vary([](cuda::GemmKey& k) { k.p.lda += 8; });
  vary([](cuda::GemmKey& k) { k.p.ldc += 8; });
  vary([](cuda::GemmKey& k) { k.p.trans_a = !k.p.trans_a; });
  vary([](cuda::GemmKey& k) { k.epilogue = cuda::Epilogue::Bias; });
  vary([](cuda::GemmKey& k) { k.epilogue = cuda::Epilogue::BiasGradB; });
  vary([](cuda::GemmKey& k) { k.beta_zero = false; });
  vary([](cuda::GemmKey& k) { k.alignment = 4; });
  std::unordered_map<cuda::GemmKey, int, cuda::GemmKeyHash> cache;
  for (size_t i = 0; i < keys.size(); ++i) {
    for (size_t j = 0; j < keys.size(); ++j) EXPECT_EQ(keys[i] == keys[j], i == j) << i << " " << j;
    cache[keys[i]] = static_cast<int>(i);
  }
  EXPECT_EQ(cache.size(), keys.size());
  cuda::GemmKey again = base;  // the same problem finds the cached entry
  EXPECT_EQ(cache.at(again), 0);
  EXPECT_EQ(cuda::GemmKeyHash{}(again), cuda::GemmKeyHash{}(base));
}

TEST(CudaPlans, PointerAlignmentIsTheLargestCommonPowerOfTwoUpTo16) {
  alignas(64) static char buf[256];
  EXPECT_EQ(cuda::pointer_alignment(buf, buf + 32, buf + 64), 16);
  EXPECT_EQ(cuda::pointer_alignment(buf, buf + 8, buf + 64), 8);
  EXPECT_EQ(cuda::pointer_alignment(buf + 2, buf, buf), 2);
  EXPECT_EQ(cuda::pointer_alignment(buf + 1, buf, buf), 1);
  EXPECT_EQ(cuda::pointer_alignment(nullptr, nullptr, nullptr), 16);
}

TEST(CudaPlans, AttentionLaunchCoversEveryRowHeadAndDimension) {
  for (int64_t rows : {1, 3, 4, 5, 4096, 4097})
    for (int64_t heads : {1, 8, 32})
      for (int64_t D : {1, 31, 32, 64, 128, 256}) {
        const cuda::AttnLaunch l = cuda::attention_launch(rows, heads, D);
        EXPECT_GE(int64_t{l.grid_x} * cuda::AttnLaunch::kWarps, rows);
        EXPECT_LT((int64_t{l.grid_x} - 1) * cuda::AttnLaunch::kWarps, rows);  // no idle block
        EXPECT_EQ(l.grid_y, heads);
        EXPECT_EQ(l.threads, 32u * cuda::AttnLaunch::kWarps);
        EXPECT_GE(32 * l.per_lane, D);
        EXPECT_LE(l.per_lane, cuda::kMaxHeadDim / 32);  // fits the kernels' register rows
      }
  try {
    cuda::attention_launch(8, 8, 512);
    FAIL() << "head_dim 512 accepted";
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find("head_dim 512"), std::string::npos) << e.what();
  }
}

TEST(CudaPlans, LensTilesNeverHoldTheWholeVocabularyOfALargeChunk) {
  // Qwen3's vocabulary, chunks of 1..4096 rows, the default tile budget
  for (int64_t rows : {1, 64, 512, 4096}) {
    const cuda::LensTiles t = cuda::lens_tiles(rows, 151936, cuda::kLensTileBytes);
    EXPECT_GE(t.tile * t.count, 151936);
    EXPECT_LT((t.count - 1) * t.tile, 151936);
    EXPECT_TRUE(t.tile % 256 == 0 || t.tile == 151936) << t.tile;
    EXPECT_LE(static_cast<size_t>(t.tile * rows * 4),
              std::max(cuda::kLensTileBytes, static_cast<size_t>(256 * rows * 4)));
    if (rows >= 512) {
      EXPECT_GT(t.count, 1) << rows;
    }
  }
  const cuda::LensTiles small = cuda::lens_tiles(8, 100, cuda::kLensTileBytes);
  EXPECT_EQ(small.tile, 100);  // a small vocabulary in one tile
  EXPECT_EQ(small.count, 1);
  const cuda::LensTiles huge_rows = cuda::lens_tiles(1 << 20, 1000, 1024);
  EXPECT_EQ(huge_rows.tile, 256);  // at least 256 columns, whatever the budget
  EXPECT_EQ(huge_rows.count, 4);
}

}  // namespace
}  // namespace bupo::test::ops
