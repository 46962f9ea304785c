// The GEMM both ways it runs (bupo's packed kernel, OpenBLAS on fixed tiles): every transpose
// form, edge tiles in M, N and K (past one KC slice and one NC block), alpha and beta, leading
// dimensions wider than the matrices — against a float64 loop; and bit-identical for 1 and 2
// threads and inside an enclosing parallel region.
#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "../test_util.hpp"
#include "backend/cpu/gemm_packed.hpp"
#include "backend/cpu/linear.hpp"
#include "core/threads.hpp"

namespace bupo {
namespace {
using test::randn;

struct Problem {
  bool ta, tb;
  int64_t M, N, K;
  float alpha, beta;
  int64_t pad = 3;  // leading dimensions exceed the stored widths by this
  int64_t lda() const { return (ta ? M : K) + pad; }
  int64_t ldb() const { return (tb ? K : N) + pad; }
  int64_t ldc() const { return N + pad; }
};

struct Data {
  std::vector<float> A, B, C0;
};
Data make(const Problem& p, uint64_t seed) {
  Data d;
  d.A = randn(static_cast<size_t>((p.ta ? p.K : p.M) * p.lda()), seed);
  d.B = randn(static_cast<size_t>((p.tb ? p.N : p.K) * p.ldb()), seed + 1);
  d.C0 = randn(static_cast<size_t>(p.M * p.ldc()), seed + 2);
  return d;
}

using GemmFn = void (*)(bool, bool, int64_t, int64_t, int64_t, float, const float*, int64_t,
                        const float*, int64_t, float, float*, int64_t);
void via_dispatch(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
                  int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  cpu::gemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}
GemmFn g_fn = via_dispatch;

std::vector<float> run(const Problem& p, const Data& d) {
  std::vector<float> C = d.C0;
  if (p.beta == 0.0f)  // beta = 0 must not read C
    for (int64_t i = 0; i < p.M; ++i)
      for (int64_t j = 0; j < p.N; ++j)
        C[i * p.ldc() + j] = std::numeric_limits<float>::quiet_NaN();
  g_fn(p.ta, p.tb, p.M, p.N, p.K, p.alpha, d.A.data(), p.lda(), d.B.data(), p.ldb(), p.beta,
       C.data(), p.ldc());
  return C;
}

void expect_matches_float64(const Problem& p, const Data& d, const std::vector<float>& C,
                            const std::string& what) {
  for (int64_t i = 0; i < p.M; ++i)
    for (int64_t j = 0; j < p.N; ++j) {
      double s = 0.0, mag = 0.0;
      for (int64_t k = 0; k < p.K; ++k) {
        const double a = p.ta ? d.A[k * p.lda() + i] : d.A[i * p.lda() + k];
        const double b = p.tb ? d.B[j * p.ldb() + k] : d.B[k * p.ldb() + j];
        s += a * b;
        mag += std::fabs(a * b);
      }
      const double c0 = d.C0[i * p.ldc() + j];
      const double want = p.alpha * s + (p.beta == 0.0f ? 0.0 : p.beta * c0);
      const double tol = 1e-6 * (std::fabs(p.alpha) * mag + std::fabs(p.beta * c0)) + 1e-6;
      ASSERT_NEAR(C[i * p.ldc() + j], want, tol) << what << " at (" << i << "," << j << ")";
    }
  // Padding columns are never written.
  for (int64_t i = 0; i < p.M; ++i)
    for (int64_t j = p.N; j < p.ldc(); ++j)
      ASSERT_EQ(C[i * p.ldc() + j], d.C0[i * p.ldc() + j]) << what << ": wrote padding";
}

std::vector<Problem> problems() {
  std::vector<Problem> ps;
  const int64_t shapes[][3] = {{1, 1, 1},       {5, 7, 3},      {13, 37, 300},
                               {16, 33, 17},    {37, 70, 513},  {145, 65, 40},
                               {300, 130, 257}, {30, 2100, 20}, {64, 64, 64}};
  const float ab[][2] = {{1.0f, 0.0f}, {1.0f, 1.0f}, {0.5f, -0.75f}};
  int n = 0;
  for (const auto& s : shapes)
    for (int t = 0; t < 4; ++t) {
      const auto& c = ab[n++ % 3];
      ps.push_back({(t & 1) != 0, (t & 2) != 0, s[0], s[1], s[2], c[0], c[1]});
    }
  return ps;
}

std::string name(const Problem& p) {
  return std::string(p.ta ? "T" : "N") + (p.tb ? "T" : "N") + " " + std::to_string(p.M) + "x" +
         std::to_string(p.N) + "x" + std::to_string(p.K) + " alpha " + std::to_string(p.alpha) +
         " beta " + std::to_string(p.beta);
}

struct PathGuard {
  explicit PathGuard(cpu::GemmPath p) { cpu::set_gemm_path(p); }
  ~PathGuard() {
    cpu::set_gemm_path(cpu::GemmPath::automatic);
    set_num_threads(0);
  }
};

void check_path(cpu::GemmPath path) {
  PathGuard guard(path);
  uint64_t seed = 11;
  for (const Problem& p : problems()) {
    const Data d = make(p, seed += 3);
    set_num_threads(1);
    const std::vector<float> one = run(p, d);
    expect_matches_float64(p, d, one, name(p));
    set_num_threads(2);
    const std::vector<float> two = run(p, d);
    std::vector<float> nested;
#pragma omp parallel num_threads(2)
    {
#pragma omp single
      nested = run(p, d);
    }
    for (size_t i = 0; i < one.size(); ++i) {
      if (std::isnan(one[i]) && std::isnan(two[i])) continue;
      ASSERT_EQ(one[i], two[i]) << name(p) << ": 1 and 2 threads differ at " << i;
      ASSERT_EQ(one[i], nested[i]) << name(p) << ": inside a parallel region differs at " << i;
    }
  }
}

TEST(Gemm, PackedKernelMatchesFloat64AndIsThreadCountInvariant) {
  if (cpu::gemm_packed_isa()[0] == '\0') GTEST_SKIP() << "no AVX2/AVX-512 on this CPU";
  check_path(cpu::GemmPath::packed);
}

// The AVX2 instantiation directly, on any CPU that has AVX2 (an AVX-512 machine would otherwise
// never run it).
TEST(Gemm, Avx2KernelMatchesFloat64AndIsThreadCountInvariant) {
#if defined(__x86_64__)
  if (!__builtin_cpu_supports("avx2") || !__builtin_cpu_supports("fma"))
    GTEST_SKIP() << "no AVX2 on this CPU";
  g_fn = [](bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
            int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
    cpu::avx2::gemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc,
                    omp_in_parallel() ? 1 : num_threads());
  };
  check_path(cpu::GemmPath::automatic);
  g_fn = via_dispatch;
#else
  GTEST_SKIP() << "not x86-64";
#endif
}

TEST(Gemm, OpenBlasTilesMatchFloat64AndAreThreadCountInvariant) {
  check_path(cpu::GemmPath::openblas_tiles);
}

TEST(Gemm, AutomaticPathTakesThePackedKernelWhereItRepaysPacking) {
  if (cpu::gemm_packed_isa()[0] == '\0') GTEST_SKIP() << "no AVX2/AVX-512 on this CPU";
  const char* packed = cpu::gemm_packed_isa();
  EXPECT_STREQ(cpu::gemm_path_name(false, true, 511, 3072, 1024), "openblas-tiles");  // x · Wᵀ
  EXPECT_STREQ(cpu::gemm_path_name(false, true, 512, 3072, 1024), packed);
  EXPECT_STREQ(cpu::gemm_path_name(false, false, 255, 1024, 3072), "openblas-tiles");  // dy · W
  EXPECT_STREQ(cpu::gemm_path_name(false, false, 256, 1024, 3072), packed);
  EXPECT_STREQ(cpu::gemm_path_name(true, false, 16, 1024, 64), packed);     // dyᵀ · x
  EXPECT_STREQ(cpu::gemm_path_name(false, true, 170, 49152, 576), packed);  // a lens chunk
  EXPECT_STREQ(cpu::gemm_path_name(false, true, 32, 151936, 1024), "openblas-tiles");
}

TEST(Gemm, ZeroDepthScalesC) {
  std::vector<float> C = {1.0f, 2.0f, 3.0f, std::numeric_limits<float>::quiet_NaN()};
  cpu::gemm(false, false, 2, 2, 0, 1.0f, nullptr, 1, nullptr, 2, 0.5f, C.data(), 2);
  EXPECT_EQ(C[0], 0.5f);
  EXPECT_EQ(C[2], 1.5f);
  cpu::gemm(false, false, 2, 2, 0, 1.0f, nullptr, 1, nullptr, 2, 0.0f, C.data(), 2);
  EXPECT_EQ(C[3], 0.0f);  // beta = 0 overwrites, even a NaN
}

}  // namespace
}  // namespace bupo
