// Advantages, HAPO components, the policy loss, aggregation, the config and the sampler: the
// invariants of papers.md §4 (items 10–16) and the formulas of §1.5, §2, §3.
#include <gtest/gtest.h>

#include <cmath>
#include <numeric>
#include <set>
#include <tuple>

#include "core/error.hpp"
#include "model_fixture.hpp"
#include "rl/advantage.hpp"
#include "rl/config.hpp"
#include "rl/data.hpp"
#include "rl/hapo.hpp"
#include "rl/loss.hpp"
#include "rl/policy_eval.hpp"

using namespace bupo::rl;

// ---------------------------------------------------------------- GRPO (§3, invariant 10)
TEST(Advantage, GrpoSumsToZeroAndUsesUnbiasedStd) {
  const std::vector<double> r = {1, 0, 0, 1, 1, 0, 0, 0, /*group 2*/ 1, 1, 1, 1, 1, 1, 1, 1};
  const auto a = grpo_advantages(r, 8);
  double s1 = 0;
  for (int i = 0; i < 8; ++i) s1 += a[i];
  EXPECT_NEAR(s1, 0.0, 1e-12);
  // mean 3/8, unbiased std sqrt(15/56)
  const double sd = std::sqrt((3 * (5.0 / 8) * (5.0 / 8) + 5 * (3.0 / 8) * (3.0 / 8)) / 7);
  EXPECT_NEAR(a[0], (1 - 3.0 / 8) / (sd + 1e-6), 1e-12);
  for (int i = 8; i < 16; ++i) EXPECT_EQ(a[i], 0.0);  // all-equal group: zero
}

TEST(Advantage, GroupOfOneHasMeanZeroStdOne) {
  const auto a = grpo_advantages({0.7, -0.2}, 1);
  EXPECT_NEAR(a[0], 0.7 / (1 + 1e-6), 1e-12);
  EXPECT_NEAR(a[1], -0.2 / (1 + 1e-6), 1e-12);
}

// ---------------------------------------------------------------- RLOO, REINFORCE++ (baselines)
TEST(Advantage, RlooIsTheLeaveOneOutBaseline) {
  // group {1, 0, 0, 1}: R_i - mean of the other three
  const auto a = rloo_advantages({1, 0, 0, 1, /*group 2*/ 0.5, 0.5, 0.5, 2.5}, 4);
  EXPECT_NEAR(a[0], 1 - 1.0 / 3, 1e-12);
  EXPECT_NEAR(a[1], 0 - 2.0 / 3, 1e-12);
  EXPECT_NEAR(a[3], 1 - 1.0 / 3, 1e-12);
  EXPECT_NEAR(a[4], 0.5 - 3.5 / 3, 1e-12);
  EXPECT_NEAR(a[7], 2.5 - 0.5, 1e-12);
  const auto one = rloo_advantages({0.7, -0.2}, 1);  // a group of one keeps its reward (verl)
  EXPECT_EQ(one[0], 0.7);
  EXPECT_EQ(one[1], -0.2);
}

TEST(Advantage, ReinforcePlusPlusWhitensReturnsOverTheBatch) {
  // returns {1, 1, 1} and {-1, -1}: mean 0.2, unbiased variance 4.8 / 4 = 1.2
  const auto a = reinforce_pp_advantages({{0, 0, 1}, {0, -1}});
  const double sd = std::sqrt(1.2 + 1e-8);
  ASSERT_EQ(a.size(), 2u);
  ASSERT_EQ(a[0].size(), 3u);
  ASSERT_EQ(a[1].size(), 2u);
  for (double v : a[0]) EXPECT_NEAR(v, 0.8 / sd, 1e-12);
  for (double v : a[1]) EXPECT_NEAR(v, -1.2 / sd, 1e-12);
  // a per-token penalty and a discount: returns {0.25·1 - 0.1·... } by hand
  const auto b = reinforce_pp_advantages({{-0.1, -0.1, 1.0}, {-0.2}}, 0.5);
  // returns: t2 = 1, t1 = -0.1 + 0.5, t0 = -0.1 + 0.5·0.4; and -0.2
  const double g[4] = {-0.1 + 0.5 * 0.4, 0.4, 1.0, -0.2};
  const double mean = (g[0] + g[1] + g[2] + g[3]) / 4;
  double ss = 0;
  for (double x : g) ss += (x - mean) * (x - mean);
  const double s = std::sqrt(ss / 3 + 1e-8);
  EXPECT_NEAR(b[0][0], (g[0] - mean) / s, 1e-12);
  EXPECT_NEAR(b[0][1], (g[1] - mean) / s, 1e-12);
  EXPECT_NEAR(b[0][2], (g[2] - mean) / s, 1e-12);
  EXPECT_NEAR(b[1][0], (g[3] - mean) / s, 1e-12);
}

// GAE by hand (verl's compute_gae_advantage_return): rewards {0, 0, 1} and {0, 0.5}, values
// {0.2, 0.4, 0.6} and {0.1, -0.3}, γ = 0.9, λ = 0.8; V = 0 past each end.
TEST(Advantage, GaeMatchesTheRecursionByHandAndWhitensOverTheBatch) {
  const double gm = 0.9, lm = 0.8;
  const GaeResult g = gae_advantages({{0, 0, 1}, {0, 0.5}}, {{0.2, 0.4, 0.6}, {0.1, -0.3}}, gm, lm);
  // response 0: δ2 = 1 - 0.6 = 0.4; δ1 = 0 + 0.9·0.6 - 0.4 = 0.14; δ0 = 0.9·0.4 - 0.2 = 0.16
  //   A2 = 0.4; A1 = 0.14 + 0.72·0.4 = 0.428; A0 = 0.16 + 0.72·0.428 = 0.46816
  // response 1: δ1 = 0.5 + 0.3 = 0.8; δ0 = 0 + 0.9·(-0.3) - 0.1 = -0.37
  //   A1 = 0.8; A0 = -0.37 + 0.72·0.8 = 0.206
  const double a[5] = {0.46816, 0.428, 0.4, 0.206, 0.8};
  const double v[5] = {0.2, 0.4, 0.6, 0.1, -0.3};
  ASSERT_EQ(g.returns.size(), 2u);
  ASSERT_EQ(g.returns[0].size(), 3u);
  ASSERT_EQ(g.returns[1].size(), 2u);
  const double* ret[5] = {&g.returns[0][0], &g.returns[0][1], &g.returns[0][2], &g.returns[1][0],
                          &g.returns[1][1]};
  for (int i = 0; i < 5; ++i) EXPECT_NEAR(*ret[i], a[i] + v[i], 1e-12) << i;  // not whitened
  double mean = 0, ss = 0;
  for (double x : a) mean += x / 5;
  for (double x : a) ss += (x - mean) * (x - mean);
  const double sd = std::sqrt(ss / 4 + 1e-8);
  const double* adv[5] = {&g.advantages[0][0], &g.advantages[0][1], &g.advantages[0][2],
                          &g.advantages[1][0], &g.advantages[1][1]};
  for (int i = 0; i < 5; ++i) EXPECT_NEAR(*adv[i], (a[i] - mean) / sd, 1e-12) << i;
}

// γ = λ = 1 (verl's defaults): the advantage before whitening is the Monte-Carlo return minus the
// value, and the return is the sum of the rewards to go whatever the values.
TEST(Advantage, GaeWithGammaAndLambdaOneIsMonteCarlo) {
  const GaeResult g = gae_advantages({{0, 0, 0, 1}}, {{0.3, -0.2, 0.5, 0.9}}, 1.0, 1.0);
  for (double r : g.returns[0]) EXPECT_NEAR(r, 1.0, 1e-12);
  // raw advantages 0.7, 1.2, 0.5, 0.1: whitened
  const double a[4] = {0.7, 1.2, 0.5, 0.1};
  double mean = 0, ss = 0;
  for (double x : a) mean += x / 4;
  for (double x : a) ss += (x - mean) * (x - mean);
  for (int i = 0; i < 4; ++i)
    EXPECT_NEAR(g.advantages[0][static_cast<size_t>(i)], (a[i] - mean) / std::sqrt(ss / 3 + 1e-8),
                1e-12);
  EXPECT_THROW(gae_advantages({{0, 1}}, {{0.5}}, 1.0, 1.0), bupo::Error);  // a value per token
}

// ---------------------------------------------------------------- HAPO B (§2.3, invariant 11)
TEST(Advantage, TokenGroupEqualLengthsIsGrpoTimesSqrtGOverGMinus1) {
  const std::vector<double> r = {1, 0, 0, 1, 0, 0};
  const std::vector<int64_t> len(6, 10);
  const auto tg = token_group_advantages(r, len, 6);
  const auto g = grpo_advantages(r, 6);
  EXPECT_EQ(tg.fell_back[0], 0);
  for (int i = 0; i < 6; ++i) EXPECT_NEAR(tg.advantages[i], g[i] * std::sqrt(6.0 / 5.0), 1e-5);
}

TEST(Advantage, TokenGroupSumsToZeroWithUnitTokenVariance) {
  const std::vector<double> r = {1, -1, -1, 1, -1};
  const std::vector<int64_t> len = {3, 40, 17, 8, 25};
  const auto tg = token_group_advantages(r, len, 5);
  double s = 0, ss = 0, n = 0;
  for (int i = 0; i < 5; ++i) {
    s += len[i] * tg.advantages[i];
    ss += len[i] * tg.advantages[i] * tg.advantages[i];
    n += len[i];
  }
  EXPECT_NEAR(s, 0.0, 1e-9);
  EXPECT_NEAR(ss / n, 1.0, 1e-5);
}

TEST(Advantage, TokenGroupFallbackRuleAtOneIn26) {
  // binary rewards: fallback iff the correct token share p < 1/26 or p > 25/26 (§2.3)
  auto fb = [](int64_t correct_len, int64_t wrong_len) {
    return token_group_advantages({1, 0}, {correct_len, wrong_len}, 2).fell_back[0];
  };
  EXPECT_EQ(fb(1, 30), 1);  // p = 1/31
  EXPECT_EQ(fb(1, 20), 0);  // p = 1/21
  EXPECT_EQ(fb(30, 1), 1);  // p = 30/31
  EXPECT_EQ(fb(20, 1), 0);
  const auto tg = token_group_advantages({1, 0}, {1, 30}, 2);
  const auto g = grpo_advantages({1, 0}, 2);
  EXPECT_EQ(tg.advantages[0], g[0]);  // the fallback is the GRPO advantage
}

TEST(Advantage, TokenGroupFallbackCanIncludeThePaddingAsTheReleasedCode) {
  // issue 15, 1.8: overlong penalties make rewards non-binary; 15 responses of 50 tokens at -1 and
  // one of 60 at -1.2, padded to 64 tokens
  std::vector<double> r(15, -1.0);
  r.push_back(-1.2);
  std::vector<int64_t> len(15, 50);
  len.push_back(60);
  const auto ours = token_group_advantages(r, len, 16);
  EXPECT_EQ(ours.fell_back[0], 0);
  EXPECT_NEAR(ours.advantages[0], 0.283, 1e-3);
  EXPECT_NEAR(ours.advantages[15], -3.536, 1e-3);
  // the padded positions hold 0, |(0 - mu) / sigma| = 19.4 >= 5: the released code falls back
  const auto ref = token_group_advantages(r, len, 16, 5.0, 1e-6, 64);
  EXPECT_EQ(ref.fell_back[0], 1);
  EXPECT_NEAR(ref.advantages[0], 0.25, 1e-4);
  EXPECT_NEAR(ref.advantages[15], -3.75, 1e-4);
  // without padding (every response at the pad length) nothing changes
  EXPECT_EQ(token_group_advantages(r, std::vector<int64_t>(16, 64), 16, 5.0, 1e-6, 64).fell_back[0],
            token_group_advantages(r, std::vector<int64_t>(16, 64), 16).fell_back[0]);
}

// ---------------------------------------------------------------- DAPO (§3, invariant 15)
TEST(Advantage, OverlongPenaltyBreakpoints) {
  EXPECT_EQ(overlong_penalty(100, 200, 50), 0.0);
  EXPECT_EQ(overlong_penalty(150, 200, 50), 0.0);  // exactly Lmax - Lcache
  EXPECT_DOUBLE_EQ(overlong_penalty(175, 200, 50), -0.5);
  EXPECT_DOUBLE_EQ(overlong_penalty(200, 200, 50), -1.0);  // exactly Lmax
  EXPECT_EQ(overlong_penalty(201, 200, 50), -1.0);
  EXPECT_DOUBLE_EQ(overlong_penalty(175, 200, 50, 0.5), -0.25);
  EXPECT_THROW(overlong_penalty(1, 10, 0), bupo::Error);
}

TEST(Advantage, DynamicSamplingNeverKeepsAllEqualGroups) {
  const std::vector<double> acc = {1, 0, 1, 0, 0, 0, 1, 1, 1, 0, 1, 0};
  const auto keep = informative_groups(acc, 3);
  EXPECT_EQ(keep, (std::vector<int64_t>{0, 3}));
}

TEST(Advantage, PassAtK) {
  EXPECT_DOUBLE_EQ(pass_at_k(2, 1, 1), 0.5);
  EXPECT_DOUBLE_EQ(pass_at_k(2, 1, 2), 1.0);
  EXPECT_DOUBLE_EQ(pass_at_k(10, 0, 5), 0.0);
  EXPECT_NEAR(pass_at_k(10, 3, 2), 1.0 - (7.0 * 6) / (10.0 * 9), 1e-12);
  EXPECT_THROW(pass_at_k(4, 1, 5), bupo::Error);
}

// The papers' largest: pass@k up to k = 256 of n = 300 samples (papers.md §1.9), against
// 1 - C(n-c, k)/C(n, k) through log-gamma in long double.
TEST(Advantage, PassAtKUpTo256Of300MatchesTheBinomialRatio) {
  const int64_t n = 300;
  for (int64_t k : {1, 16, 64, 128, 256})
    for (int64_t c : {0, 1, 3, 10, 44, 100, 200, 284, 299, 300}) {
      long double want = 1.0L;
      if (n - c >= k)
        want = 1.0L - std::exp(std::lgamma(static_cast<long double>(n - c + 1)) -
                               std::lgamma(static_cast<long double>(n - c - k + 1)) -
                               std::lgamma(static_cast<long double>(n + 1)) +
                               std::lgamma(static_cast<long double>(n - k + 1)));
      EXPECT_NEAR(pass_at_k(n, c, k), static_cast<double>(want), 1e-12) << "c=" << c << " k=" << k;
    }
  EXPECT_DOUBLE_EQ(pass_at_k(300, 0, 256), 0.0);
  EXPECT_DOUBLE_EQ(pass_at_k(300, 45, 256), 1.0);  // fewer than k wrong samples
}

// ---------------------------------------------------------------- HAPO h~ (§2.1, invariant 12)
namespace {
const float kH[10] = {0.001f, 0.01f, 0.05f, 0.1f, 0.3f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f};
// torch.quantile(..., interpolation='nearest') reference (float64), the released code's formula
const double kCode[10] = {1.0,       0.6851476, 0.4650752, 0.3702952, 0.2200724,
                          0.1502228, 0.0554428, 0.0,       0.4150375, 1.0};
}  // namespace

TEST(Hapo, EntropyHGoldenCodeVariant) {
  float ht[10];
  EntropyStats s;
  entropy_h(kH, 10, 0.8, HSign::Code, ht, &s);
  EXPECT_NEAR(s.pivot, 0.4054651081081644, 1e-7);  // log 1.5: index round(0.8*9) = 7
  EXPECT_NEAR(s.std, 3.193997390398524, 1e-6);     // RMS deviation from the pivot
  for (int i = 0; i < 10; ++i) EXPECT_NEAR(ht[i], kCode[i], 2e-6) << i;
  for (int i = 0; i < 10; ++i) EXPECT_GE(ht[i], 0.0f);  // V-shape: never negative
}

TEST(Hapo, EntropyHGoldenPaperVariant) {
  float ht[10];
  entropy_h(kH, 10, 0.8, HSign::Paper, ht);
  for (int i = 0; i < 7; ++i) EXPECT_NEAR(ht[i], -kCode[i], 2e-6) << i;  // low entropy: negative
  EXPECT_NEAR(ht[7], 0.0, 1e-7);
  EXPECT_NEAR(ht[8], kCode[8], 2e-6);
  EXPECT_NEAR(ht[9], 1.0, 1e-7);
}

TEST(Hapo, PivotIndexRoundsHalfToEven) {
  // torch.quantile nearest: n=2,q=.5 -> index 0; n=4 -> 2; n=6 -> 2 (banker's rounding)
  auto pivot_index = [](int n) {
    std::vector<float> H(n);
    for (int i = 0; i < n; ++i) H[i] = std::exp(static_cast<float>(i));
    return static_cast<int>(std::lround(entropy_stats(H.data(), n, 0.5).pivot));
  };
  EXPECT_EQ(pivot_index(2), 0);
  EXPECT_EQ(pivot_index(4), 2);
  EXPECT_EQ(pivot_index(6), 2);
}

TEST(Hapo, ClipAndRedistributionReduceToBase) {
  float el, er;
  adaptive_clip(0.0f, 0.2, 0.28, 1.0, &el, &er);
  EXPECT_FLOAT_EQ(el, 0.2f);
  EXPECT_FLOAT_EQ(er, 0.28f);
  adaptive_clip(0.7f, 0.2, 0.28, 0.0, &el, &er);  // alpha = 0
  EXPECT_FLOAT_EQ(el, 0.2f);
  EXPECT_FLOAT_EQ(er, 0.28f);
  adaptive_clip(0.5f, 0.2, 0.2, 1.0, &el, &er);  // high entropy: upper bound up
  EXPECT_FLOAT_EQ(er, 0.3f);
  EXPECT_FLOAT_EQ(el, 0.2f);
  adaptive_clip(-0.5f, 0.2, 0.2, 1.0, &el, &er);  // low entropy (paper sign): lower bound down
  EXPECT_FLOAT_EQ(el, 0.3f);
  for (float h : {-1.0f, -0.3f, 0.0f, 0.4f, 1.0f})
    for (double r : {0.5, 0.95, 1.0, 1.05, 1.5})
      EXPECT_EQ(redistribute_advantage(0.8, h, r, 0.2f, 0.2f, 0.0), 0.8);
}

TEST(Hapo, RedistributionWithRatioOne) {
  // code variant (h~ >= 0): nothing changes at ratio 1; paper variant: low-entropy tokens shrink
  for (float h : {0.0f, 0.2f, 1.0f})
    EXPECT_EQ(redistribute_advantage(1.5, h, 1.0, 0.2f, 0.2f, 1.0), 1.5);
  EXPECT_NEAR(redistribute_advantage(1.5, -0.4f, 1.0, 0.2f, 0.2f, 1.0), 1.5 * 0.6, 1e-7);
  // high entropy and a decided ratio (outside (0.9, 1.1)): amplified; inside: unchanged
  EXPECT_DOUBLE_EQ(redistribute_advantage(1.0, 0.5f, 1.2, 0.2f, 0.2f, 1.0), 1.5);
  EXPECT_DOUBLE_EQ(redistribute_advantage(1.0, 0.5f, 0.85, 0.2f, 0.2f, 1.0), 1.5);
  EXPECT_DOUBLE_EQ(redistribute_advantage(1.0, 0.5f, 1.05, 0.2f, 0.2f, 1.0), 1.0);
  // low entropy (paper sign) outside the zone: unchanged
  EXPECT_DOUBLE_EQ(redistribute_advantage(1.0, -0.5f, 1.3, 0.2f, 0.2f, 1.0), 1.0);
}

TEST(Hapo, AdaptiveTemperatureRange) {
  const EntropyStats none;
  EXPECT_EQ(adaptive_temperature(2.0, none, 1.0, 0.1, HSign::Code), 1.0);  // step 1: T_base
  EntropyStats s;
  entropy_h(kH, 10, 0.8, HSign::Code, std::vector<float>(10).data(), &s);
  for (double H : {1e-9, 0.001, 0.5, 1.5, 3.0, 100.0}) {
    const double tc = adaptive_temperature(H, s, 1.0, 0.1, HSign::Code);
    const double tp = adaptive_temperature(H, s, 1.0, 0.1, HSign::Paper);
    EXPECT_GE(tc, 1.0);
    EXPECT_LE(tc, 1.1 + 1e-12);
    EXPECT_GE(tp, 0.9 - 1e-12);
    EXPECT_LE(tp, 1.1 + 1e-12);
  }
  EXPECT_LT(adaptive_temperature(0.001, s, 1.0, 0.1, HSign::Paper), 1.0);
}

// ---------------------------------------------------------------- the PPO loss (§1.5)
TEST(Loss, PpoDualClip) {
  auto t = ppo_token_loss(-1.0, -1.0, 2.0, 0.2, 0.2, 10.0);
  EXPECT_DOUBLE_EQ(t.ratio, 1.0);
  EXPECT_DOUBLE_EQ(t.loss, -2.0);
  EXPECT_DOUBLE_EQ(t.dlogp, -2.0);
  t = ppo_token_loss(std::log(1.5), 0.0, 1.0, 0.2, 0.2, 10.0);  // A>0, r above 1+eps: clipped
  EXPECT_TRUE(t.clipped_high);
  EXPECT_DOUBLE_EQ(t.loss, -1.2);
  EXPECT_EQ(t.dlogp, 0.0);
  t = ppo_token_loss(std::log(0.5), 0.0, 1.0, 0.2, 0.2, 10.0);  // A>0, r low: not clipped
  EXPECT_FALSE(t.clipped);
  EXPECT_NEAR(t.dlogp, -0.5, 1e-12);
  t = ppo_token_loss(std::log(0.5), 0.0, -1.0, 0.2, 0.2, 10.0);  // A<0, r low: clipped low
  EXPECT_TRUE(t.clipped_low);
  EXPECT_DOUBLE_EQ(t.loss, 0.8);
  t = ppo_token_loss(std::log(20.0), 0.0, -1.0, 0.2, 0.2, 10.0);  // A<0, r huge: dual clip
  EXPECT_TRUE(t.dual_clipped);
  EXPECT_DOUBLE_EQ(t.loss, 10.0);
  EXPECT_EQ(t.dlogp, 0.0);
  t = ppo_token_loss(std::log(20.0), 0.0, -1.0, 0.2, 0.2, 0.0);  // dual clip off
  EXPECT_NEAR(t.loss, 20.0, 1e-9);
  t = ppo_token_loss(50.0, 0.0, 1.0, 0.2, 100.0, 0.0, 20.0);  // log-ratio clamp at 20
  EXPECT_NEAR(t.ratio, std::exp(20.0), 1e-3);
  EXPECT_EQ(t.dlogp, 0.0);
}

// verl's compute_value_loss per token: ½·max((v − R)², (clip(v, v_old ± c) − R)²).
TEST(Loss, ClippedValueLoss) {
  // inside the band: both branches equal, the plain gradient
  auto t = value_token_loss(0.6, 0.5, 1.0, 0.2);
  EXPECT_NEAR(t.loss, 0.5 * 0.16, 1e-12);
  EXPECT_NEAR(t.dv, -0.4, 1e-12);
  EXPECT_FALSE(t.clipped);
  // outside the band, moving away from the return's side: the clipped loss is larger, no gradient
  t = value_token_loss(0.0, 0.5, 1.0, 0.2);  // v̂ = 0.3: (0.3 − 1)² = 0.49 < (0 − 1)² = 1
  EXPECT_NEAR(t.loss, 0.5, 1e-12);           // the unclipped branch wins
  EXPECT_NEAR(t.dv, -1.0, 1e-12);
  EXPECT_FALSE(t.clipped);
  t = value_token_loss(1.2, 0.5, 1.0, 0.2);  // v̂ = 0.7: (0.7 − 1)² = 0.09 > (1.2 − 1)² = 0.04
  EXPECT_NEAR(t.loss, 0.045, 1e-12);
  EXPECT_EQ(t.dv, 0.0);
  EXPECT_TRUE(t.clipped);
  // c = 0: no clipping
  t = value_token_loss(1.2, 0.5, 1.0, 0.0);
  EXPECT_NEAR(t.loss, 0.02, 1e-12);
  EXPECT_NEAR(t.dv, 0.2, 1e-12);
  EXPECT_FALSE(t.clipped);
}

TEST(Loss, KlEstimators) {
  double d;
  EXPECT_EQ(kl_value(KlKind::K3, -1.0, -1.0, &d), 0.0);
  EXPECT_EQ(d, 0.0);
  EXPECT_GT(kl_value(KlKind::K3, -1.0, -2.0, &d), 0.0);
  EXPECT_DOUBLE_EQ(kl_value(KlKind::K1, -1.0, -1.5, &d), 0.5);
  EXPECT_EQ(d, 1.0);
  // derivative by central differences
  for (auto k : {KlKind::K1, KlKind::K2, KlKind::K3}) {
    const double h = 1e-6;
    double dd;
    kl_value(k, -0.7, -1.3, &dd);
    const double fd = (kl_value(k, -0.7 + h, -1.3, &d) - kl_value(k, -0.7 - h, -1.3, &d)) / (2 * h);
    EXPECT_NEAR(dd, fd, 1e-6);
  }
}

TEST(Loss, K3IsClampedAsVerlsLowVarKl) {
  // verl core_algos.kl_penalty("low_var_kl"): kl = clamp(ref - logp, -20, 20),
  // clamp(exp(kl) - kl - 1, -10, 10); issue 15, 1.8
  double d = 7;
  EXPECT_EQ(kl_value(KlKind::K3, 0.0, 3.0, &d), 10.0);  // e^3 - 4 = 16.09 before the clamp
  EXPECT_EQ(d, 0.0) << "no gradient through a clamp";
  EXPECT_DOUBLE_EQ(kl_value(KlKind::K3, 2.0, 0.0, &d), std::exp(-2.0) + 1.0);  // inside: as is
  EXPECT_DOUBLE_EQ(d, 1.0 - std::exp(-2.0));
  // log(ref/π) beyond -20: the estimate of the clamped value, flat
  EXPECT_DOUBLE_EQ(kl_value(KlKind::K3, 25.0, 0.0, &d), std::min(10.0, std::exp(-20.0) + 19.0));
  EXPECT_EQ(d, 0.0);
}

// ---------------------------------------------------------------- aggregation (invariant 16)
TEST(Loss, AggregationModes) {
  const std::vector<int64_t> equal = {4, 4, 4};
  const auto tm = aggregation_weights(Aggregation::TokenMean, equal);
  const auto sm = aggregation_weights(Aggregation::SeqMeanTokenMean, equal);
  for (size_t i = 0; i < tm.size(); ++i) EXPECT_DOUBLE_EQ(tm[i], sm[i]);
  const std::vector<int64_t> lens = {1, 5, 2};
  const auto w = aggregation_weights(Aggregation::SeqMeanTokenSum, lens);
  EXPECT_EQ(w.size(), 8u);
  EXPECT_DOUBLE_EQ(w[0], 1.0 / 3);
  const auto t = aggregation_weights(Aggregation::TokenMean, lens);
  EXPECT_NEAR(std::accumulate(t.begin(), t.end(), 0.0), 1.0, 1e-15);
}

TEST(Loss, VerlMicroBatchMeanDiffersFromGlobalTokenMean) {
  const std::vector<int64_t> lens = {1, 9, 5, 5};
  // split into two micro-batches {0,1} and {2,3}: verl's weights depend on the split
  const auto a = verl_microbatch_token_mean_weights(lens, {0, 0, 1, 1});
  const auto b = verl_microbatch_token_mean_weights(lens, {0, 1, 1, 1});
  const auto g = aggregation_weights(Aggregation::TokenMean, lens);
  EXPECT_NE(a, b);
  EXPECT_DOUBLE_EQ(a[0], 0.5 / 10);  // micro-batch 0: 10 tokens, 2 of 4 sequences
  EXPECT_DOUBLE_EQ(g[0], 1.0 / 20);
  // with equal lengths and equal splits they agree
  const auto c = verl_microbatch_token_mean_weights({5, 5, 5, 5}, {0, 0, 1, 1});
  const auto d = aggregation_weights(Aggregation::TokenMean, {5, 5, 5, 5});
  for (size_t i = 0; i < c.size(); ++i) EXPECT_DOUBLE_EQ(c[i], d[i]);
}

// ---------------------------------------------------------------- the config
namespace {
const char* kMin = "[model]\ninit = { layers = 2 }\n[data]\ntrain = \"builtin:arithmetic\"\n";
std::string error_of(const std::string& text, std::vector<std::string> ov = {}) {
  try {
    parse_train_config(text, "run.toml", ov);
  } catch (const bupo::Error& e) {
    return e.what();
  }
  return "";
}
}  // namespace

TEST(Config, DefaultsAndOverrides) {
  const auto c = parse_train_config(kMin, "run.toml",
                                    {"optim.lr=3e-5", "rollout.n=4", "bupo.lens=normed",
                                     "rollout.stop=[\"###\"]", "model.template=plain"});
  EXPECT_DOUBLE_EQ(c.optim.lr, 3e-5);
  EXPECT_EQ(c.rollout.n, 4);
  EXPECT_EQ(c.bupo.lens, "normed");
  EXPECT_EQ(c.rollout.stop, std::vector<std::string>{"###"});
  EXPECT_EQ(c.model.template_name, "plain");
  EXPECT_EQ(c.algorithm.clip_low, 0.2);
  // the effective TOML parses back to the same configuration
  const auto again = parse_train_config(c.to_toml(), "effective.toml");
  EXPECT_EQ(again.to_toml(), c.to_toml());
}

// The papers' per-benchmark validation (AIME Avg@32, MATH Avg@16 at their own temperatures): the
// per-set arrays parse, print and parse back, and every way of getting them wrong is named.
TEST(Config, PerSetValidationSettings) {
  const std::vector<std::string> ov = {
      "validation.sets=[\"aime24.jsonl\", \"math500.jsonl\"]", "validation.n_per_set=[32, 16]",
      "validation.temperature_per_set=[0.6, 1]", "validation.k=[1, 16, 32]"};
  const auto c = parse_train_config(kMin, "run.toml", ov);
  EXPECT_EQ(c.validation.n_per_set, (std::vector<int64_t>{32, 16}));
  EXPECT_EQ(c.validation.temperature_per_set, (std::vector<double>{0.6, 1.0}));
  const auto again = parse_train_config(c.to_toml(), "effective.toml");
  EXPECT_EQ(again.validation.temperature_per_set, c.validation.temperature_per_set);
  EXPECT_EQ(again.to_toml(), c.to_toml());
  auto with = [&](std::vector<std::string> more) {
    std::vector<std::string> o = ov;
    o.insert(o.end(), more.begin(), more.end());
    return error_of(kMin, o);
  };
  EXPECT_NE(with({"validation.n_per_set=[32]"})
                .find("'validation.n_per_set' has 1 value(s) but validation.sets names 2"),
            std::string::npos);
  EXPECT_NE(with({"validation.temperature_per_set=[0.6, 1, 1]"})
                .find("'validation.temperature_per_set' has 3 value(s)"),
            std::string::npos);
  EXPECT_NE(with({"validation.temperature_per_set=[0.6, \"hot\"]"})
                .find("key 'validation.temperature_per_set': expected an array of numbers"),
            std::string::npos);
  EXPECT_NE(with({"validation.temperature_per_set=[0.6, 101]"}).find("out of range"),
            std::string::npos);
  EXPECT_NE(with({"validation.k=[64]"})
                .find("validation.k value 64 exceeds every value of validation.n_per_set "
                      "(largest 32)"),
            std::string::npos);
  EXPECT_NE(with({"validation.k=[20]", "validation.n_per_set=[32, 16]"})
                .find("16 (for 'math500.jsonl') is below every validation.k"),
            std::string::npos);
  EXPECT_NE(with({"validation.k=[]"}).find("'validation.k' is empty"), std::string::npos);
  EXPECT_NE(with({"validation.sets=[\"a/math.jsonl\", \"b/math.jsonl\"]"})
                .find("two sets have the group name 'math'"),
            std::string::npos);
}

TEST(Config, ErrorsNameTheFileAndKey) {
  EXPECT_NE(
      error_of(std::string(kMin) + "[optim]\nlrr = 1\n").find("run.toml: unknown key 'optim.lrr'"),
      std::string::npos);
  EXPECT_NE(error_of(std::string(kMin) + "[optim]\nlrr = 1\n").find("optim.lr"), std::string::npos);
  EXPECT_NE(error_of(std::string(kMin) + "[optim]\nlr = \"fast\"\n")
                .find("key 'optim.lr': expected a number"),
            std::string::npos);
  EXPECT_NE(
      error_of(std::string(kMin) + "[rollout]\nn = 0\n").find("key 'rollout.n': 0 is out of range"),
      std::string::npos);
  EXPECT_NE(error_of(std::string(kMin) + "[algorithm]\nloss_agg = \"mean\"\n")
                .find("'mean' is not one of"),
            std::string::npos);
  EXPECT_NE(error_of(std::string(kMin) + "[bupo]\ninternal_layer = 2\n").find("internal_steps"),
            std::string::npos);
  EXPECT_NE(
      error_of(std::string(kMin) + "[trainer]\nprompts_per_step = 10\nmini_batch_prompts = 4\n")
          .find("multiple"),
      std::string::npos);
  EXPECT_NE(error_of(std::string(kMin) + "[model\n").find("run.toml:"), std::string::npos);
  EXPECT_NE(error_of(kMin, {"nope.x=1"}).find("--set 'nope.x=1': unknown key"), std::string::npos);
  EXPECT_NE(error_of(kMin, {"optim.lr"}).find("expected key=value"), std::string::npos);
  EXPECT_NE(error_of("[data]\ntrain = \"x.jsonl\"\n").find("model.path"), std::string::npos);
}

TEST(Config, VerlMicrobatchMeanDoesNotSilentlyReplaceASeqMeanAggregation) {
  // issue 15, 1.8: it was ignored in silence
  const std::string e = error_of(std::string(kMin) + "[algorithm]\nverl_microbatch_mean = true\n" +
                                 "loss_agg = \"seq-mean-token-mean\"\n");
  EXPECT_NE(e.find("run.toml: algorithm.verl_microbatch_mean = true"), std::string::npos) << e;
  EXPECT_NE(e.find("algorithm.loss_agg = 'seq-mean-token-mean'"), std::string::npos) << e;
  EXPECT_EQ(error_of(std::string(kMin) + "[algorithm]\nverl_microbatch_mean = true\n"), "");
}

TEST(PolicyEval, LogprobsAreTemperedByTheRolloutTemperature) {
  // issue 15, 1.6: verl's old and new log-probs are of softmax(z / T). Scaling the final norm's
  // weight by 1/T scales the logits of the full policy by 1/T: the untempered log-probs of that
  // model are the tempered ones of the first
  const float T = 0.7f;
  auto a = bupo::test::tiny_model(bupo::Arch::Qwen3, true);
  auto b = bupo::test::tiny_model(bupo::Arch::Qwen3, true);
  bupo::Param& w = b->final_norm();
  for (int64_t i = 0; i < w.numel(); ++i) w.w[i] /= T;
  b->params().refresh_working_copy();
  Rollout r;
  r.ids = {1, 5, 9, 33, 2, 60, 7};
  r.prompt_len = 3;
  std::vector<float> la, lb, l1, ea, eb, e1;
  policy_logprobs(*a, {&r}, PolicyPath{0, bupo::LensMode::Raw, 1.0f / T}, la, &ea);
  policy_logprobs(*b, {&r}, PolicyPath{0, bupo::LensMode::Raw, 1.0f}, lb, &eb);
  policy_logprobs(*a, {&r}, PolicyPath{0, bupo::LensMode::Raw, 1.0f}, l1, &e1);
  ASSERT_EQ(la.size(), 4u);
  for (size_t i = 0; i < la.size(); ++i) {
    EXPECT_NEAR(la[i], lb[i], 1e-5) << i;
    EXPECT_NEAR(ea[i], eb[i], 1e-5) << i;
    EXPECT_GT(std::fabs(la[i] - l1[i]), 1e-4) << i << ": T = 0.7 must change the log-prob";
  }
  // the config: tempered by default, as verl; a normed lens cannot be tempered
  EXPECT_NE(
      error_of(std::string(kMin) + "[rollout]\ntemperature = 0.7\n[bupo]\ninternal_layer = 1\n" +
               "internal_steps = 1\nlens = \"normed\"\n")
          .find("a normed lens is invariant to scaling its input"),
      std::string::npos);
}

// ---------------------------------------------------------------- the sampler
TEST(Sampler, EpochsArePermutationsAndStateResumes) {
  Sampler s(10, 3, true);
  const auto a = s.next(25);
  std::set<int64_t> e0;
  for (int i = 0; i < 10; ++i) e0.insert(a[i].index);
  EXPECT_EQ(e0.size(), 10u);  // every row once per epoch
  for (int i = 0; i < 25; ++i) EXPECT_EQ(a[i].key, i);
  Sampler t(10, 3, true);
  t.next(13);
  const SamplerState st = t.state();
  Sampler u(10, 3, true);
  u.set_state(st);
  const auto b = u.next(12);
  for (int i = 0; i < 12; ++i) EXPECT_EQ(b[i].index, a[13 + i].index);
  Sampler plain(5, 3, false);
  const auto p = plain.next(5);
  for (int i = 0; i < 5; ++i) EXPECT_EQ(p[i].index, i);
}

TEST(Data, ArithmeticTaskIsDeterministicAndCorrect) {
  for (int64_t i = 0; i < 50; ++i) {
    const auto p = arithmetic_problem(3, "+-*", 9, i);
    const auto q = arithmetic_problem(3, "+-*", 9, i);
    EXPECT_EQ(p.prompt, q.prompt);
    long long a = 0, b = 0;
    char op = 0;
    ASSERT_EQ(std::sscanf(p.prompt.c_str(), "%lld%c%lld=", &a, &op, &b), 3);
    EXPECT_GE(a, 100);
    EXPECT_LT(a, 1000);
    const long long c = op == '+' ? a + b : op == '-' ? a - b : a * b;
    EXPECT_EQ(p.answer, std::to_string(c));
  }
}

// Every shipped configuration parses and validates (the paper-mirroring ones need GPUs to run).
TEST(Config, ShippedConfigsParse) {
  int n = 0;
  for (const char* name : {"default", "qwen3-4b-bupo", "qwen3-4b-grpo", "qwen3-4b-ppo",
                           "qwen3-4b-dapo", "qwen3-8b-base-hapo", "qwen3-8b-bupo",
                           "octothinker-3b-bupo", "octothinker-8b-bupo", "experiments/base"}) {
    const auto c = load_train_config(std::string(BUPO_CONFIGS_DIR) + "/" + name + ".toml", {});
    EXPECT_FALSE(c.data.train.empty()) << name;
    ++n;
  }
  // the papers' layers and phase-1 lengths (papers.md §1.6): pi^6 / 20 steps on Qwen3-8B, pi^27 and
  // pi^31 / 20 steps on OctoThinker-3B and -8B
  for (const auto& [name, layer, steps] :
       std::vector<std::tuple<std::string, int64_t, int64_t>>{{"qwen3-8b-bupo", 6, 20},
                                                              {"octothinker-3b-bupo", 27, 20},
                                                              {"octothinker-8b-bupo", 31, 20}}) {
    const auto c = load_train_config(std::string(BUPO_CONFIGS_DIR) + "/" + name + ".toml", {});
    EXPECT_EQ(c.bupo.internal_layer, layer) << name;
    EXPECT_EQ(c.bupo.internal_steps, steps) << name;
  }
  const auto ppo = load_train_config(std::string(BUPO_CONFIGS_DIR) + "/qwen3-4b-ppo.toml", {});
  EXPECT_TRUE(ppo.has_critic());
  EXPECT_EQ(ppo.critic.lr, 1e-5);  // papers.md §1.7
  const auto b = load_train_config(std::string(BUPO_CONFIGS_DIR) + "/qwen3-4b-bupo.toml", {});
  EXPECT_EQ(b.bupo.internal_layer, 6);
  EXPECT_EQ(b.bupo.internal_steps, 30);
  EXPECT_EQ(b.trainer.prompts_per_step / b.trainer.mini_batch_prompts, 4);
  const auto h = load_train_config(std::string(BUPO_CONFIGS_DIR) + "/qwen3-8b-base-hapo.toml", {});
  EXPECT_TRUE(h.hapo.adaptive_temperature && h.hapo.token_advantage && h.hapo.redistribution &&
              h.hapo.adaptive_clip);
  // the papers' rewards (issue 15, 1.2 and 1.3): verl's math.compute_score for BuPO and its
  // baselines; HAPO's math_dapo rows through DAPO's Minerva grader
  EXPECT_EQ(h.algorithm.grader, "by_data_source");
  for (const char* name :
       {"qwen3-4b-bupo", "qwen3-4b-grpo", "qwen3-4b-ppo", "qwen3-4b-dapo", "qwen3-8b-base-hapo"}) {
    const auto c = load_train_config(std::string(BUPO_CONFIGS_DIR) + "/" + name + ".toml", {});
    EXPECT_EQ(c.reward.mode, "verl") << name;
    if (std::string(name) != "qwen3-8b-base-hapo") {
      EXPECT_EQ(c.algorithm.grader, "math") << name;
    }
  }
  EXPECT_EQ(n, 10);  // every shipped training config (qwen3-4b-ppo the tenth)
  // Table 1's per-benchmark Avg@K (MATH500, AMC23 at 16; AIME24/25 at 32), in training and in the
  // evaluation configs; Fig. 6's Pass@K from n = 300
  EXPECT_EQ(b.validation.n_per_set, (std::vector<int64_t>{16, 16, 32, 32}));
  // (bupo eval sets model.path from --model)
  const std::vector<std::string> model = {"model.path=\"models/Qwen3-4B\""};
  const auto t1 = load_train_config(std::string(BUPO_CONFIGS_DIR) + "/eval/bupo-table1.toml", model,
                                    ConfigUse::Evaluate);
  EXPECT_EQ(t1.validation.n_per_set, (std::vector<int64_t>{16, 16, 32, 32}));
  EXPECT_EQ(t1.reward.mode, "verl");
  const auto pk = load_train_config(std::string(BUPO_CONFIGS_DIR) + "/eval/bupo-passk.toml", model,
                                    ConfigUse::Evaluate);
  EXPECT_EQ(pk.validation.n, 300);
  EXPECT_EQ(pk.validation.k, (std::vector<int64_t>{1, 4, 16, 64, 256}));
}
