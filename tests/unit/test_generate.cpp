// Generation: KV-cache decoding equals full recomputation, sampling semantics, counter-based
// randomness independent of batch composition, stop conditions and the temperature hook.
#include <gtest/gtest.h>

#include <cmath>

#include "../test_util.hpp"
#include "backend/cpu/sampling.hpp"
#include "gen/generate.hpp"
#include "lens/lens.hpp"
#include "model_fixture.hpp"

namespace bupo {
namespace {

TEST(KVCache, PrefillPlusDecodeEqualsFullForward) {
  auto m = test::tiny_model(Arch::Qwen3, true);
  const std::vector<int32_t> seq = {3, 17, 42, 8, 8, 60, 1, 29, 33};
  Activations full;
  m->forward(Batch::from_sequences({seq}), full, false);
  KVCache cache = m->make_cache(2, 16);
  const int64_t d = m->hidden(), split = 4;
  Activations a;
  // slot 1, prefill the first `split` tokens, then one token at a time
  m->forward_cached(Batch::from_sequences({std::vector<int32_t>(seq.begin(), seq.begin() + split)}),
                    a, cache, {1});
  for (int64_t t = 0; t < split; ++t)
    for (int64_t c = 0; c < d; ++c)
      EXPECT_NEAR(a.final_out.f32()[t * d + c], full.final_out.f32()[t * d + c], 1e-5);
  for (size_t t = split; t < seq.size(); ++t) {
    Batch b;
    b.ids = {seq[t]};
    b.pos = {static_cast<int32_t>(t)};
    b.cu_seqlens = {0, 1};
    m->forward_cached(b, a, cache, {1});
    for (int64_t c = 0; c < d; ++c)
      EXPECT_NEAR(a.final_out.f32()[c], full.final_out.f32()[t * d + c], 1e-5) << t;
  }
}

TEST(Sampling, GreedyTopKOneAndReportedLogprobs) {
  const std::vector<float> z = {0.1f, 2.0f, -1.0f, 1.5f};
  float lp, ent;
  EXPECT_EQ(cpu::sample_token(z.data(), 4, 0.0f, 1.0f, 0, 0.99, &lp, &ent), 1);
  double S = 0;
  for (float v : z) S += std::exp(v);
  EXPECT_NEAR(lp, 2.0 - std::log(S), 1e-6);
  EXPECT_NEAR(ent, cpu::entropy_of_logits(z.data(), 4), 1e-6);
  for (double u : {0.0, 0.3, 0.999})
    EXPECT_EQ(cpu::sample_token(z.data(), 4, 1.0f, 1.0f, 1, u, &lp, &ent), 1);
  // top-p small enough keeps only the most likely token
  EXPECT_EQ(cpu::sample_token(z.data(), 4, 1.0f, 0.1f, 0, 0.99, &lp, &ent), 1);
  EXPECT_NEAR(lp, 2.0 - std::log(S), 1e-6) << "log-prob is that of the tempered full distribution";
}

TEST(Sampling, EmpiricalFrequenciesFollowTheTemperedDistribution) {
  const std::vector<float> z = {0.0f, 1.0f, 2.0f, -0.5f, 0.7f};
  const float T = 0.7f;
  std::vector<double> p(5);
  double S = 0;
  for (size_t i = 0; i < 5; ++i) S += (p[i] = std::exp(z[i] / T));
  std::vector<int> count(5, 0);
  const int n = 20000;
  float lp, ent;
  for (int i = 0; i < n; ++i)
    ++count[cpu::sample_token(z.data(), 5, T, 1.0f, 0, sampling_uniform(7, 0, 0, i), &lp, &ent)];
  for (size_t i = 0; i < 5; ++i)
    EXPECT_NEAR(count[i] / static_cast<double>(n), p[i] / S, 0.012) << i;
  // top-k = 2 renormalises over the two most likely tokens
  std::fill(count.begin(), count.end(), 0);
  for (int i = 0; i < n; ++i)
    ++count[cpu::sample_token(z.data(), 5, T, 1.0f, 2, sampling_uniform(8, 0, 0, i), &lp, &ent)];
  EXPECT_EQ(count[0] + count[3] + count[4], 0);
  EXPECT_NEAR(count[2] / static_cast<double>(n), p[2] / (p[1] + p[2]), 0.012);
}

TEST(Generate, ResponsesDoNotDependOnBatchCompositionOrOrder) {
  auto m = test::tiny_model(Arch::Llama);
  const std::vector<std::vector<int32_t>> prompts = {{1, 2, 3}, {9, 8, 7, 6, 5}, {40}};
  GenerateOptions o;
  o.max_new_tokens = 12;
  o.seed = 11;
  const auto all = generate(*m, prompts, 2, o);
  ASSERT_EQ(all.size(), 6u);
  for (size_t p = 0; p < prompts.size(); ++p) {
    GenerateOptions lone = o;
    lone.prompt_keys = {static_cast<int64_t>(p)};  // the same random key as in the batch
    const auto alone = generate(*m, {prompts[p]}, 2, lone);
    for (int64_t s = 0; s < 2; ++s) {
      const auto& a = all[p * 2 + static_cast<size_t>(s)];
      const auto& b = alone[static_cast<size_t>(s)];
      EXPECT_EQ(a.ids, b.ids) << "prompt " << p << " sample " << s;
    }
  }
  EXPECT_NE(all[0].ids, all[1].ids) << "two samples of one prompt should differ";
  o.max_batch_tokens = 3;  // different prefill packing
  const auto packed = generate(*m, prompts, 2, o);
  for (size_t i = 0; i < all.size(); ++i) EXPECT_EQ(packed[i].ids, all[i].ids);
  GenerateOptions rev = o;  // reversed prompt order, keys travel with the prompts
  rev.prompt_keys = {2, 1, 0};
  const auto reversed = generate(*m, {prompts[2], prompts[1], prompts[0]}, 2, rev);
  for (size_t p = 0; p < 3; ++p)
    for (size_t s = 0; s < 2; ++s) EXPECT_EQ(reversed[(2 - p) * 2 + s].ids, all[p * 2 + s].ids);
}

TEST(Generate, StopsOnStopIdsAndLengthAndCallsTheTemperatureHook) {
  auto m = test::tiny_model(Arch::Qwen3);
  GenerateOptions o;
  o.max_new_tokens = 5;
  o.temperature = 0.0f;
  const auto g = generate(*m, {{5, 6, 7}}, 1, o);
  ASSERT_EQ(g[0].ids.size(), 5u);
  EXPECT_EQ(g[0].finish_reason, "length");
  o.stop_ids = {g[0].ids[2]};
  o.max_new_tokens = 50;
  const auto g2 = generate(*m, {{5, 6, 7}}, 1, o);
  EXPECT_EQ(g2[0].finish_reason, "eos");
  EXPECT_LE(g2[0].ids.size(), 3u);
  int calls = 0;
  o.temperature_hook = [&](const TokenContext& c) {
    ++calls;
    EXPECT_GT(c.entropy, 0.0f);
    return 1.5f;
  };
  o.stop_ids.clear();
  o.max_new_tokens = 4;
  const auto g3 = generate(*m, {{5, 6, 7}}, 1, o);
  EXPECT_EQ(calls, 4);
  for (float t : g3[0].temperatures) EXPECT_EQ(t, 1.5f);
}

}  // namespace
}  // namespace bupo
