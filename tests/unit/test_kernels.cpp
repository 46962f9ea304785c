// Every CPU kernel against a naive loop, and every backward against central finite differences
// of a random linear functional L = Σ w ⊙ y.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <functional>
#include <limits>
#include <numbers>
#include <tuple>

#include "../test_util.hpp"
#include "backend/cpu/attention.hpp"
#include "backend/cpu/embedding.hpp"
#include "backend/cpu/linear.hpp"
#include "backend/cpu/rmsnorm.hpp"
#include "backend/cpu/rope.hpp"
#include "backend/cpu/swiglu.hpp"
#include "backend/cpu/vec_exp.hpp"
#include "model/rope_frequencies.hpp"

namespace bupo {
namespace {
using test::randn;

double dot(const std::vector<float>& a, const std::vector<float>& b) {
  double s = 0.0;
  for (size_t i = 0; i < a.size(); ++i) s += static_cast<double>(a[i]) * b[i];
  return s;
}

// Checks analytic gradient `g` of loss(x) at x by central differences on up to 48 coordinates.
void check_fd(std::vector<float>& x, const std::vector<float>& g,
              const std::function<double()>& loss, const char* what, float h = 1e-2f,
              double tol = 3e-3) {
  double gmax = 0.0;
  for (float v : g) gmax = std::max(gmax, static_cast<double>(std::fabs(v)));
  ASSERT_GT(gmax, 0.0) << what << ": gradient is identically zero";
  const size_t stride = std::max<size_t>(1, x.size() / 48);
  for (size_t i = 0; i < x.size(); i += stride) {
    const float x0 = x[i];
    x[i] = x0 + h;
    const double lp = loss();
    x[i] = x0 - h;
    const double lm = loss();
    x[i] = x0;
    const double fd = (lp - lm) / (2.0 * h);
    EXPECT_NEAR(g[i], fd, tol * std::max(1.0, gmax)) << what << " at " << i;
  }
}

TEST(Linear, ForwardMatchesNaiveLoop) {
  const int64_t N = 7, in = 13, out = 5;
  auto x = randn(N * in, 1), W = randn(out * in, 2), b = randn(out, 3);
  std::vector<float> y(N * out);
  cpu::linear_forward(y.data(), x.data(), W.data(), b.data(), N, in, out);
  for (int64_t n = 0; n < N; ++n)
    for (int64_t o = 0; o < out; ++o) {
      double s = b[o];
      for (int64_t i = 0; i < in; ++i) s += static_cast<double>(x[n * in + i]) * W[o * in + i];
      EXPECT_NEAR(y[n * out + o], s, 1e-5);
    }
}

TEST(Linear, BackwardMatchesNaiveLoopAndFiniteDifferences) {
  const int64_t N = 6, in = 9, out = 4;
  auto x = randn(N * in, 4), W = randn(out * in, 5), b = randn(out, 6), w = randn(N * out, 7);
  std::vector<float> dx(N * in), dW(out * in, 0.0f), db(out, 0.0f), y(N * out);
  cpu::linear_backward(dx.data(), dW.data(), db.data(), w.data(), x.data(), W.data(), N, in, out);
  for (int64_t o = 0; o < out; ++o) {
    double sb = 0.0;
    for (int64_t n = 0; n < N; ++n) sb += w[n * out + o];
    EXPECT_NEAR(db[o], sb, 1e-5);
    for (int64_t i = 0; i < in; ++i) {
      double s = 0.0;
      for (int64_t n = 0; n < N; ++n) s += static_cast<double>(w[n * out + o]) * x[n * in + i];
      EXPECT_NEAR(dW[o * in + i], s, 1e-5);
    }
  }
  auto loss = [&] {
    cpu::linear_forward(y.data(), x.data(), W.data(), b.data(), N, in, out);
    return dot(y, w);
  };
  check_fd(x, dx, loss, "linear dx");
  check_fd(W, dW, loss, "linear dW");
}

TEST(RmsNorm, ForwardMatchesNaiveLoop) {
  const int64_t R = 5, C = 24;
  auto x = randn(R * C, 8), g = randn(C, 9);
  std::vector<float> y(R * C), rstd(R);
  cpu::rmsnorm_forward(y.data(), rstd.data(), x.data(), g.data(), R, C, 1e-6f);
  for (int64_t r = 0; r < R; ++r) {
    double ss = 0.0;
    for (int64_t c = 0; c < C; ++c) ss += static_cast<double>(x[r * C + c]) * x[r * C + c];
    const double s = 1.0 / std::sqrt(ss / C + 1e-6);
    for (int64_t c = 0; c < C; ++c) EXPECT_NEAR(y[r * C + c], g[c] * x[r * C + c] * s, 1e-5);
  }
}

TEST(RmsNorm, BackwardMatchesFiniteDifferences) {
  const int64_t R = 4, C = 16;
  auto x = randn(R * C, 10), g = randn(C, 11), w = randn(R * C, 12);
  std::vector<float> y(R * C), rstd(R), dx(R * C), dg(C, 0.0f);
  cpu::rmsnorm_forward(y.data(), rstd.data(), x.data(), g.data(), R, C, 1e-6f);
  cpu::rmsnorm_backward(dx.data(), dg.data(), w.data(), x.data(), g.data(), rstd.data(), R, C);
  auto loss = [&] {
    cpu::rmsnorm_forward(y.data(), rstd.data(), x.data(), g.data(), R, C, 1e-6f);
    return dot(y, w);
  };
  check_fd(x, dx, loss, "rmsnorm dx");
  check_fd(g, dg, loss, "rmsnorm dgain");
}

TEST(Rope, ForwardMatchesHfRotateHalf) {
  const int64_t N = 6, H = 3, D = 8;
  auto x = randn(N * H * D, 13);
  const auto orig = x;
  std::vector<int32_t> pos = {0, 1, 2, 7, 100, 3};
  const auto inv = rope_inv_freq(D, 10000.0, {});
  cpu::RopeCache rc;
  rc.build(pos.data(), N, inv);
  cpu::rope_forward(x.data(), rc, N, H, D);
  for (int64_t n = 0; n < N; ++n)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t i = 0; i < D; ++i) {
        const int64_t k = i % (D / 2);
        const double ang = pos[n] * std::pow(10000.0, -2.0 * k / D);
        const float* v = orig.data() + (n * H + h) * D;
        const double rot = i < D / 2 ? -v[i + D / 2] : v[i - D / 2];  // rotate_half
        EXPECT_NEAR(x[(n * H + h) * D + i], v[i] * std::cos(ang) + rot * std::sin(ang), 2e-5);
      }
}

TEST(Rope, BackwardIsTheTransposeRotation) {
  const int64_t N = 5, H = 2, D = 6;
  auto x = randn(N * H * D, 14), w = randn(N * H * D, 15);
  std::vector<int32_t> pos = {0, 3, 9, 1, 2};
  cpu::RopeCache rc;
  rc.build(pos.data(), N, rope_inv_freq(D, 500000.0, {}));
  auto dx = w;
  cpu::rope_backward(dx.data(), rc, N, H, D);
  std::vector<float> y;
  auto loss = [&] {
    y = x;
    cpu::rope_forward(y.data(), rc, N, H, D);
    return dot(y, w);
  };
  check_fd(x, dx, loss, "rope dx");
}

TEST(Rope, Llama3ScalingKeepsHighAndDividesLowFrequencies) {
  RopeScaling sc{8.0, 1.0, 4.0, 8192.0};
  const int64_t D = 128;
  const auto plain = rope_inv_freq(D, 500000.0, {});
  const auto scaled = rope_inv_freq(D, 500000.0, sc);
  for (size_t i = 0; i < plain.size(); ++i) {
    const double wavelen = 2 * std::numbers::pi / plain[i];
    if (wavelen < 8192.0 / 4.0)
      EXPECT_FLOAT_EQ(scaled[i], plain[i]);
    else if (wavelen > 8192.0)
      EXPECT_FLOAT_EQ(scaled[i], plain[i] / 8.0f);
    else
      EXPECT_TRUE(scaled[i] < plain[i] && scaled[i] > plain[i] / 8.0f) << i;
  }
}

// Naive causal GQA attention over packed sequences, materialising all probabilities.
std::vector<float> naive_attention(const std::vector<float>& q, const std::vector<float>& k,
                                   const std::vector<float>& v, const std::vector<int64_t>& cu,
                                   const cpu::AttnShape& s) {
  std::vector<float> o(q.size(), 0.0f);
  const int64_t D = s.D, g = s.H / s.Hkv;
  for (size_t seg = 0; seg + 1 < cu.size(); ++seg)
    for (int64_t i = cu[seg]; i < cu[seg + 1]; ++i)
      for (int64_t h = 0; h < s.H; ++h) {
        const int64_t hk = h / g;
        std::vector<double> sc;
        double m = -1e300;
        for (int64_t j = cu[seg]; j <= i; ++j) {
          double dd = 0.0;
          for (int64_t c = 0; c < D; ++c)
            dd += static_cast<double>(q[(i * s.H + h) * D + c]) * k[(j * s.Hkv + hk) * D + c];
          sc.push_back(dd / std::sqrt(static_cast<double>(D)));
          m = std::max(m, sc.back());
        }
        double z = 0.0;
        for (double& x : sc) z += (x = std::exp(x - m));
        for (int64_t j = cu[seg]; j <= i; ++j)
          for (int64_t c = 0; c < D; ++c)
            o[(i * s.H + h) * D + c] +=
                static_cast<float>(sc[j - cu[seg]] / z * v[(j * s.Hkv + hk) * D + c]);
      }
  return o;
}

TEST(Attention, ForwardMatchesNaiveCausalGqaOverPackedSequences) {
  const std::vector<int64_t> cu = {0, 5, 6, 13};
  const cpu::AttnShape s{13, 4, 2, 8};
  auto q = randn(s.N * s.H * s.D, 16), k = randn(s.N * s.Hkv * s.D, 17),
       v = randn(s.N * s.Hkv * s.D, 18);
  std::vector<float> o(q.size()), lse(s.N * s.H);
  cpu::attention_forward(o.data(), lse.data(), q.data(), k.data(), v.data(), cu, s);
  const auto ref = naive_attention(q, k, v, cu, s);
  EXPECT_LE(test::rel_err(o.data(), ref.data(), static_cast<int64_t>(o.size())), 1e-5);
}

TEST(Attention, BackwardMatchesFiniteDifferences) {
  const std::vector<int64_t> cu = {0, 4, 9};
  const cpu::AttnShape s{9, 4, 2, 4};
  auto q = randn(s.N * s.H * s.D, 19), k = randn(s.N * s.Hkv * s.D, 20),
       v = randn(s.N * s.Hkv * s.D, 21);
  auto w = randn(q.size(), 22);
  std::vector<float> o(q.size()), lse(s.N * s.H), dq(q.size()), dk(k.size()), dv(v.size());
  cpu::attention_forward(o.data(), lse.data(), q.data(), k.data(), v.data(), cu, s);
  cpu::attention_backward(dq.data(), dk.data(), dv.data(), w.data(), q.data(), k.data(), v.data(),
                          o.data(), lse.data(), cu, s);
  auto loss = [&] {
    cpu::attention_forward(o.data(), lse.data(), q.data(), k.data(), v.data(), cu, s);
    return dot(o, w);
  };
  check_fd(q, dq, loss, "attention dq");
  check_fd(k, dk, loss, "attention dk");
  check_fd(v, dv, loss, "attention dv");
}

// Sequences longer than one query block (cpu::kAttnQueryBlock): the blocks' key ranges, the
// masked tail of each block's last rows and dk/dv accumulated over the blocks, forward and
// backward, against a float64 evaluation of the same formulas (P, dS = P ∘ (dP − Σ P∘dP)).
TEST(Attention, QueryBlocksOfLongSequencesMatchTheNaiveForwardAndBackward) {
  const int64_t B = cpu::kAttnQueryBlock;
  const std::vector<int64_t> cu = {0, 2 * B + 76, 2 * B + 76 + 9};  // 3 blocks, then one short
  const cpu::AttnShape s{cu.back(), 2, 1, 4};
  auto q = randn(s.N * s.H * s.D, 41), k = randn(s.N * s.Hkv * s.D, 42),
       v = randn(s.N * s.Hkv * s.D, 43), w = randn(s.N * s.H * s.D, 44);
  std::vector<float> o(q.size()), lse(s.N * s.H), dq(q.size()), dk(k.size()), dv(v.size());
  cpu::attention_forward(o.data(), lse.data(), q.data(), k.data(), v.data(), cu, s);
  const auto ref = naive_attention(q, k, v, cu, s);
  EXPECT_LE(test::rel_err(o.data(), ref.data(), static_cast<int64_t>(o.size())), 1e-5);
  cpu::attention_backward(dq.data(), dk.data(), dv.data(), w.data(), q.data(), k.data(), v.data(),
                          o.data(), lse.data(), cu, s);
  const int64_t D = s.D;
  const double sc = 1.0 / std::sqrt(static_cast<double>(D));
  std::vector<double> rq(q.size(), 0.0), rk(k.size(), 0.0), rv(v.size(), 0.0);
  for (size_t seg = 0; seg + 1 < cu.size(); ++seg)
    for (int64_t h = 0; h < s.H; ++h)
      for (int64_t i = cu[seg]; i < cu[seg + 1]; ++i) {
        const int64_t n = i - cu[seg] + 1;
        std::vector<double> p(n), dp(n);
        double m = -1e300, z = 0, di = 0;
        for (int64_t j = 0; j < n; ++j) {
          double a = 0, b = 0;
          for (int64_t c = 0; c < D; ++c) {
            a += static_cast<double>(q[(i * s.H + h) * D + c]) * k[((cu[seg] + j) * s.Hkv) * D + c];
            b += static_cast<double>(w[(i * s.H + h) * D + c]) * v[((cu[seg] + j) * s.Hkv) * D + c];
          }
          p[j] = a * sc;
          dp[j] = b;
          m = std::max(m, p[j]);
        }
        for (double& x : p) z += (x = std::exp(x - m));
        for (int64_t j = 0; j < n; ++j) di += (p[j] /= z) * dp[j];
        for (int64_t j = 0; j < n; ++j) {
          const double ds = p[j] * (dp[j] - di);
          for (int64_t c = 0; c < D; ++c) {
            const size_t kj = static_cast<size_t>(((cu[seg] + j) * s.Hkv) * D + c),
                         qi = static_cast<size_t>((i * s.H + h) * D + c);
            rq[qi] += sc * ds * k[kj];
            rk[kj] += sc * ds * q[qi];
            rv[kj] += p[j] * w[qi];
          }
        }
      }
  for (const auto& [got, want, what] :
       {std::tuple{&dq, &rq, "dq"}, std::tuple{&dk, &rk, "dk"}, std::tuple{&dv, &rv, "dv"}}) {
    std::vector<float> wf(want->begin(), want->end());
    EXPECT_LE(test::rel_err(got->data(), wf.data(), static_cast<int64_t>(wf.size())), 1e-4) << what;
  }
}

TEST(SwiGlu, ForwardAndBackward) {
  const int64_t n = 64;
  auto g = randn(n, 23, 2.0f), u = randn(n, 24), w = randn(n, 25);
  std::vector<float> a(n), dg(n), du(n);
  cpu::swiglu_forward(a.data(), g.data(), u.data(), n);
  for (int64_t i = 0; i < n; ++i) EXPECT_NEAR(a[i], g[i] / (1.0 + std::exp(-g[i])) * u[i], 1e-5);
  cpu::swiglu_backward(dg.data(), du.data(), w.data(), g.data(), u.data(), n);
  auto loss = [&] {
    cpu::swiglu_forward(a.data(), g.data(), u.data(), n);
    return dot(a, w);
  };
  check_fd(g, dg, loss, "swiglu dgate");
  check_fd(u, du, loss, "swiglu dup");
}

TEST(Embedding, VocabShardLookupAndScatterAdd) {
  const int64_t C = 5, V0 = 10, Vl = 6;  // this shard holds global rows 10..15
  auto E = randn(Vl * C, 26);
  std::vector<int32_t> ids = {10, 3, 15, 12, 12, 16};
  std::vector<float> y(ids.size() * C), dE(Vl * C, 0.0f);
  cpu::embedding_forward(y.data(), ids.data(), E.data(), static_cast<int64_t>(ids.size()), C, V0,
                         Vl);
  for (size_t n = 0; n < ids.size(); ++n)
    for (int64_t c = 0; c < C; ++c) {
      const int64_t r = ids[n] - V0;
      EXPECT_EQ(y[n * C + c], (r >= 0 && r < Vl) ? E[r * C + c] : 0.0f);
    }
  auto dy = randn(ids.size() * C, 27);
  cpu::embedding_backward(dE.data(), ids.data(), dy.data(), static_cast<int64_t>(ids.size()), C, V0,
                          Vl);
  for (int64_t c = 0; c < C; ++c) {
    EXPECT_FLOAT_EQ(dE[2 * C + c], dy[3 * C + c] + dy[4 * C + c]);  // id 12 twice
    EXPECT_FLOAT_EQ(dE[0 * C + c], dy[0 * C + c]);
    EXPECT_FLOAT_EQ(dE[1 * C + c], 0.0f);
  }
}

// vec::exp (the lens's and attention's exp) against std::exp: ≤ 2 ulp on [−86.5, 88.72] at 2^20
// points, 0 below, +inf above, NaN through.
TEST(VecExp, WithinTwoUlpOfStdExpAndItsEdges) {
  auto ulps = [](float a, float b) {
    int32_t ia, ib;
    std::memcpy(&ia, &a, 4);
    std::memcpy(&ib, &b, 4);
    return std::abs(static_cast<int64_t>(ia) - ib);
  };
  const int64_t n = 1 << 20;
  int64_t worst = 0;
  for (int64_t i = 0; i < n; i += cpu::vec::kLanes) {
    cpu::vec::f32x16 x;
    for (int l = 0; l < cpu::vec::kLanes; ++l)
      x[l] = -86.5f + (88.72f + 86.5f) * static_cast<float>(i + l) / static_cast<float>(n);
    const cpu::vec::f32x16 y = cpu::vec::exp(x);
    for (int l = 0; l < cpu::vec::kLanes; ++l) worst = std::max(worst, ulps(y[l], std::exp(x[l])));
  }
  EXPECT_LE(worst, 2);
  cpu::vec::f32x16 e = cpu::vec::splat(0.0f);
  e[0] = -87.0f;
  e[1] = -1000.0f;
  e[2] = -std::numeric_limits<float>::infinity();
  e[3] = 89.0f;
  e[4] = std::numeric_limits<float>::quiet_NaN();
  const cpu::vec::f32x16 y = cpu::vec::exp(e);
  EXPECT_EQ(y[0], 0.0f);
  EXPECT_EQ(y[1], 0.0f);
  EXPECT_EQ(y[2], 0.0f);
  EXPECT_TRUE(std::isinf(y[3]));
  EXPECT_TRUE(std::isnan(y[4]));
  EXPECT_EQ(y[5], 1.0f);
}

}  // namespace
}  // namespace bupo
