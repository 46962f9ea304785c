// AdamW against torch.optim.AdamW's update rule written out in double; skipping of no-grad
// parameters; global norm clipping (torch.nn.utils.clip_grad_norm_).
#include <gtest/gtest.h>

#include <cmath>

#include "optim/adamw.hpp"
#include "parallel/zero.hpp"

namespace bupo {
namespace {

TEST(AdamW, MatchesTorchUpdateRuleOverSeveralSteps) {
  ParamStore ps;
  ps.add("a", {3}, {3});
  ps.finalize();
  ps.allocate_grads();
  Param& p = ps.at(0);
  const double w0[3] = {0.5, -1.0, 2.0};
  for (int i = 0; i < 3; ++i) p.w[i] = static_cast<float>(w0[i]);
  const AdamWConfig cfg{1e-2, 0.9, 0.999, 1e-8, 0.1};
  AdamW opt(ps, cfg);
  double w[3] = {w0[0], w0[1], w0[2]}, m[3] = {}, v[3] = {};
  for (int t = 1; t <= 4; ++t) {
    for (int i = 0; i < 3; ++i) p.g[i] = static_cast<float>(0.3 * (i + 1) * (t % 2 ? 1 : -1));
    p.has_grad = true;
    opt.step();
    for (int i = 0; i < 3; ++i) {
      const double g = 0.3 * (i + 1) * (t % 2 ? 1 : -1);
      w[i] *= 1 - cfg.lr * cfg.weight_decay;
      m[i] = cfg.beta1 * m[i] + (1 - cfg.beta1) * g;
      v[i] = cfg.beta2 * v[i] + (1 - cfg.beta2) * g * g;
      const double bc1 = 1 - std::pow(cfg.beta1, t), bc2 = 1 - std::pow(cfg.beta2, t);
      w[i] -= cfg.lr / bc1 * m[i] / (std::sqrt(v[i]) / std::sqrt(bc2) + cfg.eps);
      EXPECT_NEAR(p.w[i], w[i], 1e-6) << "step " << t << " element " << i;
    }
  }
  EXPECT_EQ(opt.step_count(0), 4);
}

TEST(AdamW, SkipsParametersWithoutGradientIncludingWeightDecay) {
  ParamStore ps;
  ps.add("used", {2}, {2});
  ps.add("frozen", {2}, {2});
  ps.finalize();
  ps.allocate_grads();
  for (auto& p : ps.all()) p.w[0] = p.w[1] = 1.0f;
  AdamW opt(ps, AdamWConfig{1e-2, 0.9, 0.999, 1e-8, 0.5});
  ps.at(0).g[0] = ps.at(0).g[1] = 1.0f;
  ps.at(0).has_grad = true;
  opt.step();
  EXPECT_NE(ps.at(0).w[0], 1.0f);
  EXPECT_EQ(ps.at(1).w[0], 1.0f);  // no (1 - lr·wd) shrink: papers.md §1.5
  EXPECT_EQ(ps.at(1).w[1], 1.0f);
  EXPECT_EQ(opt.step_count(1), 0);
}

TEST(ClipGradNorm, ScalesToMaxNormOnlyWhenAbove) {
  ParamStore ps;
  ps.add("a", {2}, {2});
  ps.add("b", {1}, {1});
  ps.add("nograd", {1}, {1});
  ps.finalize();
  ps.allocate_grads();
  ps.at(0).g[0] = 3.0f;
  ps.at(0).g[1] = 0.0f;
  ps.at(1).g[0] = 4.0f;
  ps.at(2).g[0] = 100.0f;  // ignored: has_grad false
  ps.at(0).has_grad = ps.at(1).has_grad = true;
  EXPECT_DOUBLE_EQ(grad_norm(ps), 5.0);
  EXPECT_DOUBLE_EQ(clip_grad_norm(ps, 1.0), 5.0);
  EXPECT_NEAR(grad_norm(ps), 1.0, 1e-6);
  EXPECT_NEAR(clip_grad_norm(ps, 10.0), 1.0, 1e-6);
  EXPECT_NEAR(ps.at(1).g[0], 0.8f, 1e-6);
}

// ZeRO-1's partition: every arena element owned by exactly one rank, parts aligned, shards of one
// size on every rank, for_owned and slice_shard consistent with owned().
TEST(ZeroLayout, PartitionsTheArenaOnceInAlignedParts) {
  for (int64_t total : {0, 1, 17, 1000, 4099})
    for (int ranks : {1, 2, 3, 5})
      for (int64_t bucket : {1, 40, 333, 100000}) {
        std::vector<int> owner(static_cast<size_t>(total), -1);
        int64_t shard = -1;
        for (int r = 0; r < ranks; ++r) {
          const ZeroLayout z(total, ranks, r, bucket);
          if (shard >= 0) {
            EXPECT_EQ(z.shard_elements(), shard);
          }
          shard = z.shard_elements();
          std::vector<float> full(static_cast<size_t>(total));
          for (int64_t i = 0; i < total; ++i) full[static_cast<size_t>(i)] = static_cast<float>(i);
          const std::vector<float> mine = slice_shard(full, z);
          int64_t covered = 0;
          for (size_t b = 0; b < z.buckets().size(); ++b) {
            const auto& k = z.buckets()[b];
            EXPECT_EQ(k.part % 16, 0);
            EXPECT_GE(ranks * k.part, k.len);
            const auto [lo, hi] = z.owned(b);
            for (int64_t i = lo; i < hi; ++i) {
              EXPECT_EQ(owner[static_cast<size_t>(i)], -1) << i;
              owner[static_cast<size_t>(i)] = r;
              EXPECT_EQ(mine[static_cast<size_t>(k.shard_offset + i - lo)], static_cast<float>(i));
            }
          }
          z.for_owned(0, total, [&](int64_t a, int64_t s, int64_t n) {
            for (int64_t i = 0; i < n; ++i)
              EXPECT_EQ(mine[static_cast<size_t>(s + i)], static_cast<float>(a + i));
            covered += n;
          });
          int64_t want = 0;
          for (int64_t i = 0; i < total; ++i) want += owner[static_cast<size_t>(i)] == r;
          EXPECT_EQ(covered, want);
        }
        for (int64_t i = 0; i < total; ++i)
          ASSERT_GE(owner[static_cast<size_t>(i)], 0) << total << " " << ranks << " " << bucket;
      }
}

}  // namespace
}  // namespace bupo
