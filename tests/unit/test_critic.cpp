// PPO with a learned critic (algorithm.adv_estimator = "gae", rl/critic.hpp) end to end on the
// tiny fixture: the advantages and returns are GAE of the critic's rollout-time values, those
// values are the saved critic's forward, its gradient is the value loss's (finite differences),
// critic.warmup_steps holds the actor, a smaller critic works, the checkpoint holds the critic and
// a resume is bit-exact; the value model's config.json round trip; bad critic settings.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>

#include "core/error.hpp"
#include "io/json_util.hpp"
#include "model/model.hpp"
#include "rl/advantage.hpp"
#include "rl/checkpoint.hpp"
#include "rl/critic.hpp"
#include "rl/loss.hpp"
#include "rl/policy_eval.hpp"
#include "trainer_fixture.hpp"

namespace fs = std::filesystem;
using namespace bupo;
using namespace bupo::rl;

namespace {

// The values of `rolls` under `critic` (one forward per rollout, on the CPU).
std::vector<std::vector<float>> values_of(Model& critic, const std::vector<Rollout>& rolls) {
  std::vector<std::vector<float>> out;
  for (const Rollout& x : rolls) {
    const Packed p = pack({&x});
    Activations acts;
    critic.forward(p.b, acts, /*keep=*/false);
    ArenaScope scope(critic.backend().scratch());
    std::vector<float> v;
    value_head_forward(critic, gather_response_rows(critic.backend(), acts.final_out, p), v);
    out.push_back(v);
  }
  return out;
}

std::vector<float> weights_of(Model& m) {
  return m.params().weights_to_host();
}

}  // namespace

TEST(Critic, GaeAdvantagesComeFromTheSavedCriticsValues) {
  const std::string dir = tmpdir("ppo_gae");
  Trainer t(
      tiny(dir, {"trainer.steps=2", "trainer.checkpoint_every=1", "algorithm.adv_estimator=\"gae\"",
                 "algorithm.gamma=0.95", "algorithm.lam=0.9", "critic.lr=1e-3"}),
      quiet());
  ASSERT_EQ(t.run(), 0);
  const auto& rs = t.last_rollouts();
  ASSERT_FALSE(rs.empty());
  // the advantages and returns: GAE of the sequence reward on the last token and the values
  std::vector<std::vector<double>> tr, vals;
  for (const auto& x : rs) {
    ASSERT_EQ(static_cast<int64_t>(x.values.size()), x.resp_len());
    ASSERT_EQ(static_cast<int64_t>(x.returns.size()), x.resp_len());
    ASSERT_EQ(static_cast<int64_t>(x.adv_tok.size()), x.resp_len());
    tr.emplace_back(static_cast<size_t>(x.resp_len()), 0.0);
    tr.back().back() = x.reward;
    vals.emplace_back(x.values.begin(), x.values.end());
  }
  const GaeResult g = gae_advantages(tr, vals, 0.95, 0.9);
  for (size_t i = 0; i < rs.size(); ++i)
    for (size_t j = 0; j < rs[i].values.size(); ++j) {
      EXPECT_NEAR(rs[i].adv_tok[j], g.advantages[i][j], 1e-5) << i << "," << j;
      EXPECT_NEAR(rs[i].returns[j], g.returns[i][j], 1e-6) << i << "," << j;
    }
  // step 2's values are the forward of the critic step 1 saved (a Hugging Face value model)
  const fs::path ck1 = fs::path(dir) / "checkpoints" / "step_00000001";
  ASSERT_TRUE(fs::exists(ck1 / kCriticDir / "optimizer.bin"));
  const json cj = read_json_file((ck1 / kCriticDir / "config.json").string());
  EXPECT_EQ(cj["architectures"][0], "Qwen3ForTokenClassification");
  EXPECT_EQ(verify_checkpoint(ck1.string()), "");  // the manifest covers critic/ too
  auto c1 = Model::load((ck1 / kCriticDir).string(), ParallelContext::single());
  ASSERT_TRUE(c1->has_value_head());
  const auto v1 = values_of(*c1, rs);
  double dmax = 0, vabs = 0;
  for (size_t i = 0; i < rs.size(); ++i)
    for (size_t j = 0; j < rs[i].values.size(); ++j) {
      dmax = std::max(dmax, std::fabs(static_cast<double>(v1[i][j]) - rs[i].values[j]));
      vabs = std::max(vabs, std::fabs(static_cast<double>(rs[i].values[j])));
    }
  EXPECT_LE(dmax, 1e-5 * std::max(1.0, vabs));
  // the critic learned at step 2 (its checkpoint's weights moved), 2 AdamW steps a training step
  auto c2 = t.gathered_critic();
  ASSERT_TRUE(c2);
  EXPECT_NE(weights_of(*c1), weights_of(*c2));
  const auto m = metrics(dir);
  ASSERT_EQ(m.size(), 2u);
  for (const auto& row : m) {
    EXPECT_EQ(row["critic_optimizer_steps"].get<double>(), 2.0);
    EXPECT_EQ(row["optimizer_steps"].get<double>(), 2.0);
    EXPECT_TRUE(std::isfinite(row["critic_vf_loss"].get<double>()));
    EXPECT_GT(row["critic_vf_loss"].get<double>(), 0.0);
    EXPECT_GE(row["critic_vf_clipfrac"].get<double>(), 0.0);
  }
}

// The critic's gradient through the whole value model is the value loss's: the trainer's loss
// weights through value_head_backward and backward_from_output against central differences of
// L = Σ_t c_t·v_t (fp32 forward, h = 3e-3).
TEST(Critic, ValueModelGradientMatchesFiniteDifferences) {
  ModelConfig mc = ModelConfig::qwen3_shape(32, 16, 32, 2, 2, 1, 8, 64, true);
  mc.value_head = true;
  Model c(mc, ParallelContext::single());
  c.init_random(11, 0.2f);
  c.params().allocate_grads();
  Rollout x;
  x.ids = {1, 5, 7, 2, 9, 3, 4};
  x.prompt_len = 3;
  const std::vector<double> coef = {0.7, -1.3, 0.4, 2.0};
  auto loss = [&]() {
    const Packed p = pack({&x});
    Activations acts;
    c.forward(p.b, acts, false);
    ArenaScope scope(c.backend().scratch());
    std::vector<float> v;
    value_head_forward(c, gather_response_rows(c.backend(), acts.final_out, p), v);
    double l = 0;
    for (size_t t = 0; t < v.size(); ++t) l += coef[t] * v[t];
    return l;
  };
  {  // the analytic gradient
    c.params().zero_grad();
    const Packed p = pack({&x});
    Activations acts;
    c.forward(p.b, acts, true);
    ArenaScope scope(c.backend().scratch());
    Tensor rows;
    const Tensor X = gather_response_rows(c.backend(), acts.final_out, p, &rows);
    std::vector<float> v, g(coef.begin(), coef.end());
    value_head_forward(c, X, v);
    const Tensor dX = c.backend().scratch().alloc(X.dtype, {X.dim(0), X.dim(1)});
    value_head_backward(c, X, g, dX);
    c.backend().zero(acts.d_policy);
    c.backend().scatter_add_rows(acts.d_policy, rows, dX);
    c.backward_from_output(p.b, acts, acts.d_policy);
  }
  int checked = 0;
  for (const char* name :
       {"score.weight", "score.bias", "model.norm.weight", "model.layers.1.mlp.down_proj.weight",
        "model.layers.0.self_attn.q_proj.weight", "model.embed_tokens.weight"}) {
    Param* p = c.params().find(name);
    ASSERT_NE(p, nullptr) << name;
    ASSERT_TRUE(p->has_grad) << name;
    for (int64_t i = 0; i < std::min<int64_t>(p->numel(), 40); i += 7) {
      const float w0 = p->w[i];
      const float h = 3e-3f * std::max(1.0f, std::fabs(w0));
      p->w[i] = w0 + h;
      const double lp = loss();
      p->w[i] = w0 - h;
      const double lm = loss();
      p->w[i] = w0;
      const double fd = (lp - lm) / (2.0 * static_cast<double>(h));
      // (measured: within 5.3e-5 absolute, 0.25% relative; a 1% error in dL/dX is caught)
      EXPECT_NEAR(p->g[i], fd, 1e-4 + 2e-3 * std::fabs(fd)) << name << "[" << i << "]";
      ++checked;
    }
  }
  EXPECT_GT(checked, 20);
}

TEST(Critic, WarmupHoldsTheActorAndResumeIsBitExact) {
  const std::vector<std::string> ov = {"trainer.steps=3", "algorithm.adv_estimator=\"gae\"",
                                       "critic.warmup_steps=1", "critic.lr_warmup_steps=2",
                                       "critic.lr=1e-3"};
  const std::string a = tmpdir("ppo_whole"), b = tmpdir("ppo_resumed");
  Trainer ta(tiny(a, ov), quiet());
  ASSERT_EQ(ta.run(), 0);
  std::vector<float> before;
  {
    TrainOptions o = quiet();
    o.stop_after_step = 1;
    Trainer tb(tiny(b, ov), o);
    before = weights_of(tb.model());
    ASSERT_EQ(tb.run(), 0);
    EXPECT_EQ(weights_of(tb.model()), before) << "the actor learned during the critic's warm-up";
  }
  TrainOptions o = quiet();
  o.overwrite = false;
  o.resume = true;
  Trainer tb(tiny(b, ov), o);
  ASSERT_EQ(tb.run(), 0);
  EXPECT_EQ(weights_of(ta.model()), weights_of(tb.model()));
  auto ca = ta.gathered_critic(), cb = tb.gathered_critic();
  ASSERT_TRUE(ca && cb);
  EXPECT_EQ(weights_of(*ca), weights_of(*cb));
  const auto ma = metrics(a);
  ASSERT_EQ(ma.size(), 3u);
  EXPECT_EQ(ma[0]["optimizer_steps"].get<double>(), 0.0);  // step 1: the critic alone
  EXPECT_EQ(ma[0]["critic_optimizer_steps"].get<double>(), 2.0);
  EXPECT_EQ(ma[0]["critic_lr"].get<double>(), 0.0);  // its LR warm-up starts at 0, as verl's
  EXPECT_NEAR(ma[1]["critic_lr"].get<double>(), 0.5e-3, 1e-15);
  EXPECT_EQ(ma[1]["optimizer_steps"].get<double>(), 2.0);
  const auto mb = metrics(b);
  ASSERT_EQ(mb.size(), 3u);
  for (size_t s = 0; s < 3; ++s)
    for (const char* k : {"critic_vf_loss", "critic_values_mean", "pg_loss", "reward"})
      EXPECT_EQ(ma[s][k], mb[s][k]) << "step " << s + 1 << " " << k;
}

// critic.model: another (smaller) model of the same vocabulary gives the critic's layers; its
// shape is checked against the tokenizer; a critic needs adv_estimator = "gae".
TEST(Critic, CriticModelFromAnotherFolderAndItsChecks) {
  const std::string dir = tmpdir("ppo_small_critic");
  int64_t vocab = 0;
  {
    Trainer t(tiny(dir, {"trainer.steps=1"}), quiet());
    vocab = t.model().config().vocab_size;
  }
  const std::string small = tmpdir("ppo_small_critic_model"), tiny_vocab = tmpdir("ppo_v16");
  {
    Model m(ModelConfig::qwen3_shape(vocab, 32, 64, 2, 2, 1, 16, 4096, true),
            ParallelContext::single());
    m.init_random(4);
    m.save(small, DType::F32);
    Model w(ModelConfig::qwen3_shape(16, 32, 64, 2, 2, 1, 16, 4096, true),
            ParallelContext::single());
    w.init_random(4);
    w.save(tiny_vocab, DType::F32);
  }
  Trainer t(tiny(dir, {"trainer.steps=1", "algorithm.adv_estimator=\"gae\"",
                       "critic.model=\"" + small + "\""}),
            quiet());
  ASSERT_EQ(t.run(), 0);
  auto c = t.gathered_critic();
  ASSERT_TRUE(c);
  EXPECT_EQ(c->num_layers(), 2);
  EXPECT_EQ(c->hidden(), 32);
  EXPECT_TRUE(std::isfinite(metrics(dir)[0]["critic_vf_loss"].get<double>()));
  try {
    Trainer bad(
        tiny(dir, {"algorithm.adv_estimator=\"gae\"", "critic.model=\"" + tiny_vocab + "\""}),
        quiet());
    FAIL() << "a critic with a 16-token vocabulary was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("critic.model"), std::string::npos) << e.what();
  }
  EXPECT_THROW(tiny(dir, {"critic.model=\"" + small + "\""}), Error);  // no gae
  EXPECT_THROW(tiny(dir, {"algorithm.lam=1.5"}), Error);
}

// config.json of a value model: transformers' *ForTokenClassification with one label, both ways.
TEST(Critic, ValueModelConfigRoundTrip) {
  ModelConfig c = ModelConfig::qwen3_shape(64, 16, 32, 2, 2, 1, 8, 128, false);
  c.value_head = true;
  const json j = c.to_json();
  EXPECT_EQ(j["architectures"][0], "Qwen3ForTokenClassification");
  EXPECT_EQ(j["id2label"].size(), 1u);
  const ModelConfig back = ModelConfig::from_json(j, "config.json");
  EXPECT_TRUE(back.value_head);
  EXPECT_EQ(back.arch, Arch::Qwen3);
  Model m(back, ParallelContext::single());
  EXPECT_NE(m.params().find("score.weight"), nullptr);
  EXPECT_EQ(m.params().find("lm_head.weight"), nullptr);  // untied: no unembedding at all
  EXPECT_THROW(m.unembedding(), Error);
  json two = j;
  two["id2label"] = {{"0", "A"}, {"1", "B"}};
  EXPECT_THROW(ModelConfig::from_json(two, "config.json"), Error);
}
