// The internal-policy lens: values against a naive softmax, bounds (papers.md §4 invariant 4),
// chunk invariance and the backward by finite differences, raw and normed.
#include <gtest/gtest.h>

#include <cmath>

#include "../test_util.hpp"
#include "lens/lens.hpp"

namespace bupo {
namespace {
using test::randn;

struct LensFixture {
  ParamStore ps;
  Param *E = nullptr, *g = nullptr;
  LensFixture(int64_t V, int64_t d, uint64_t seed, float scale = 1.0f) {
    ps.add("E", {V, d}, {V, d});
    ps.add("norm", {d}, {d});
    ps.finalize();
    ps.allocate_grads();
    E = &ps.at(0);
    g = &ps.at(1);
    auto e = randn(V * d, seed, scale);
    std::copy(e.begin(), e.end(), E->w);
    auto gg = randn(d, seed + 1, 0.3f);
    for (int64_t i = 0; i < d; ++i) g->w[i] = 1.0f + gg[i];
  }
  Lens lens(LensMode m, int64_t chunk = 0) { return Lens{E, g, m, 1e-6f, nullptr, chunk}; }
};

TEST(Lens, MatchesNaiveSoftmaxForEveryChunkSize) {
  const int64_t V = 37, d = 8, n = 10;
  LensFixture f(V, d, 1);
  auto x = randn(n * d, 2);
  std::vector<int32_t> tgt(n);
  for (int64_t r = 0; r < n; ++r) tgt[r] = static_cast<int32_t>((r * 7) % V);
  std::vector<float> ent0, lp0;
  for (int64_t chunk : {1, 3, 4, 1000}) {
    std::vector<float> ent(n), lp(n);
    f.lens(LensMode::Raw, chunk)
        .forward(Tensor::host(x.data(), {n, d}), tgt.data(), ent.data(), lp.data());
    for (int64_t r = 0; r < n; ++r) {
      std::vector<double> z(V);
      double m = -1e300, s = 0.0, h = 0.0;
      for (int64_t j = 0; j < V; ++j) {
        z[j] = 0.0;
        for (int64_t c = 0; c < d; ++c)
          z[j] += static_cast<double>(x[r * d + c]) * f.E->w[j * d + c];
        m = std::max(m, z[j]);
      }
      for (double v : z) s += std::exp(v - m);
      for (double v : z) {
        const double p = std::exp(v - m) / s;
        h -= p * std::log(p);
      }
      EXPECT_NEAR(ent[r], h, 1e-5);
      EXPECT_NEAR(lp[r], z[tgt[r]] - m - std::log(s), 1e-5);
    }
    if (ent0.empty()) {
      ent0 = ent;
      lp0 = lp;
    }
    for (int64_t r = 0; r < n; ++r) {
      EXPECT_NEAR(ent[r], ent0[r], 1e-6);
      EXPECT_NEAR(lp[r], lp0[r], 1e-6);
    }
  }
}

TEST(Lens, UniformRowGivesLogVAndPeakedRowGivesZero) {
  const int64_t V = 50, d = 4;
  LensFixture f(V, d, 3);
  std::vector<float> x(2 * d, 0.0f);  // row 0: zero hidden state -> uniform logits
  for (int64_t j = 0; j < V; ++j)
    for (int64_t c = 0; c < d; ++c) f.E->w[j * d + c] = (j == 7 && c == 0) ? 1.0f : 0.0f;
  x[d + 0] = 1000.0f;  // row 1: token 7's logit is 1000, all others 0
  std::vector<float> ent(2), lp(2);
  std::vector<int32_t> tgt = {3, 7};
  f.lens(LensMode::Raw).forward(Tensor::host(x.data(), {2, d}), tgt.data(), ent.data(), lp.data());
  EXPECT_NEAR(ent[0], std::log(50.0), 1e-5);
  EXPECT_NEAR(lp[0], -std::log(50.0), 1e-5);
  EXPECT_NEAR(ent[1], 0.0, 1e-6);
  EXPECT_NEAR(lp[1], 0.0, 1e-6);
}

TEST(Lens, EntropyIsWithinZeroAndLogV) {
  const int64_t V = 200, d = 16, n = 64;
  LensFixture f(V, d, 4, 3.0f);
  auto x = randn(n * d, 5, 2.0f);
  std::vector<float> ent(n);
  for (LensMode m : {LensMode::Raw, LensMode::Normed}) {
    f.lens(m).forward(Tensor::host(x.data(), {n, d}), nullptr, ent.data(), nullptr);
    for (float h : ent) {
      EXPECT_GE(h, 0.0f);
      EXPECT_LE(h, std::log(static_cast<float>(V)) + 1e-5f);
    }
  }
}

void check_backward(LensMode mode) {
  const int64_t V = 23, d = 6, n = 5;
  LensFixture f(V, d, 6);
  auto x = randn(n * d, 7);
  auto a = randn(n, 8), b = randn(n, 9);
  std::vector<int32_t> tgt = {0, 5, 22, 9, 9};
  Lens lens = f.lens(mode, 2);
  std::vector<float> dx(n * d, 0.0f);
  lens.backward(Tensor::host(x.data(), {n, d}), tgt.data(), a.data(), b.data(),
                Tensor::host(dx.data(), {n, d}));
  std::vector<float> dE(f.E->g, f.E->g + V * d), dg(f.g->g, f.g->g + d);
  auto loss = [&] {
    std::vector<float> ent(n), lp(n);
    lens.forward(Tensor::host(x.data(), {n, d}), tgt.data(), ent.data(), lp.data());
    double s = 0.0;
    for (int64_t r = 0; r < n; ++r)
      s += static_cast<double>(a[r]) * lp[r] + static_cast<double>(b[r]) * ent[r];
    return s;
  };
  auto fd = [&](float* p, const std::vector<float>& g, int64_t cnt, const char* what) {
    double gmax = 0.0;
    for (float v : g) gmax = std::max(gmax, static_cast<double>(std::fabs(v)));
    ASSERT_GT(gmax, 0.0) << what;
    for (int64_t i = 0; i < cnt; i += std::max<int64_t>(1, cnt / 40)) {
      const float p0 = p[i], h = 1e-2f;
      p[i] = p0 + h;
      const double lp = loss();
      p[i] = p0 - h;
      const double lm = loss();
      p[i] = p0;
      EXPECT_NEAR(g[i], (lp - lm) / (2 * h), 3e-3 * std::max(1.0, gmax)) << what << " " << i;
    }
  };
  fd(x.data(), dx, n * d, "dx");
  fd(f.E->w, dE, V * d, "dE_u");
  if (mode == LensMode::Normed)
    fd(f.g->w, dg, d, "dnorm");
  else
    EXPECT_FALSE(f.g->has_grad);
}

TEST(Lens, RawBackwardMatchesFiniteDifferences) {
  check_backward(LensMode::Raw);
}
TEST(Lens, NormedBackwardMatchesFiniteDifferences) {
  check_backward(LensMode::Normed);
}

TEST(Lens, RejectsTargetsOutsideTheVocabulary) {
  LensFixture f(10, 4, 11);
  std::vector<float> x(4, 0.5f), e(1), lp(1);
  for (int32_t bad : {10, -1}) {
    EXPECT_THROW(
        f.lens(LensMode::Raw).forward(Tensor::host(x.data(), {1, 4}), &bad, e.data(), lp.data()),
        Error);
  }
}

TEST(Lens, ModeNames) {
  EXPECT_EQ(lens_mode_from_string("raw"), LensMode::Raw);
  EXPECT_EQ(lens_mode_from_string("normed"), LensMode::Normed);
  EXPECT_THROW(lens_mode_from_string("logit"), Error);
}

}  // namespace
}  // namespace bupo
