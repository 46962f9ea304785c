// The trainer end to end on the built-in task with a tiny fresh model: BuPO's gradient confinement
// and phase schedule (papers.md §4 items 6–9), ratio exactly 1 on the first mini-batch, bit-exact
// resume, the non-finite guard, preemption, micro-batch invariance, the KL reference, the HDF5
// layout, and that RL raises the reward.
#include <gtest/gtest.h>

#include <cmath>
#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "../test_util.hpp"
#include "core/error.hpp"
#include "io/h5.hpp"
#include "io/json_util.hpp"
#include "rl/advantage.hpp"
#include "rl/checkpoint.hpp"
#include "rl/config.hpp"
#include "rl/diagnostics.hpp"
#include "rl/loss.hpp"
#include "rl/train_log.hpp"
#include "rl/trainer.hpp"
#include "rl/update.hpp"
#include "trainer_fixture.hpp"

namespace fs = std::filesystem;
using namespace bupo;
using namespace bupo::rl;

namespace {

json without_timings(json j) {
  for (auto it = j.begin(); it != j.end();)
    it = it.key().rfind("time_", 0) == 0 ? j.erase(it) : std::next(it);
  return j;
}

std::vector<float> weights(Model& m) {
  return m.params().weights_to_host();
}

// Runs the trainer (expecting success); for every parameter, its name and whether it changed.
std::vector<std::pair<std::string, bool>> run_and_see_what_moved(Trainer& t) {
  std::vector<std::vector<float>> before;
  for (const auto& p : t.model().params().all()) before.emplace_back(p.w, p.w + p.numel());
  EXPECT_EQ(t.run(), 0);
  std::vector<std::pair<std::string, bool>> moved;
  const auto& ps = t.model().params().all();
  for (size_t i = 0; i < ps.size(); ++i)
    moved.emplace_back(ps[i].name, !std::equal(before[i].begin(), before[i].end(), ps[i].w));
  return moved;
}

}  // namespace

// kTiny trains with an entropy bonus: the update stays confined to layers <= l when the bonus is
// pi^l's (bupo.phase1_entropy = "internal"); the reference's full-policy bonus reaches every
// layer (Phase1EntropyBonusOfTheFullPolicyReachesEveryLayer).
TEST(Trainer, BupoPhase1LeavesLayersAboveLBitIdentical) {
  const std::string dir = tmpdir("phase1");
  Trainer t(tiny(dir, {"bupo.internal_layer=1", "bupo.internal_steps=2", "trainer.steps=2",
                       "bupo.phase1_entropy=\"internal\""}),
            quiet());
  int above = 0, below = 0;
  for (const auto& [n, moved] : run_and_see_what_moved(t)) {
    const bool same = !moved;
    if (n.rfind("model.layers.1.", 0) == 0 || n.rfind("model.layers.2.", 0) == 0 ||
        n == "model.norm.weight") {
      EXPECT_TRUE(same) << n << " changed during BuPO phase 1 (l = 1)";
      ++above;
    } else if (n.rfind("model.layers.0.", 0) == 0 && n.find("weight") != std::string::npos &&
               n.find("layernorm") == std::string::npos && n.find("_norm") == std::string::npos) {
      EXPECT_FALSE(same) << n << " (layer 1 = pi^1's own layer) did not change";
      ++below;
    } else if (n == "model.embed_tokens.weight") {
      EXPECT_FALSE(same) << "E_u / the tied embedding did not change";
    }
  }
  EXPECT_GT(above, 10);
  EXPECT_GT(below, 3);
  const auto m = metrics(dir);
  ASSERT_EQ(m.size(), 2u);
  EXPECT_EQ(m[0]["phase"], 1.0);
  EXPECT_EQ(m[1]["phase"], 1.0);
}

// issue 15, 1.7: the reference's phase-1 entropy term is the full policy's (computed from the
// final logits), so with an entropy bonus every layer and the final norm move in phase 1.
TEST(Trainer, Phase1EntropyBonusOfTheFullPolicyReachesEveryLayer) {
  const std::string dir = tmpdir("phase1_full");
  Trainer t(tiny(dir, {"bupo.internal_layer=1", "bupo.internal_steps=2", "trainer.steps=2"}),
            quiet());
  EXPECT_EQ(TrainConfig{}.bupo.phase1_entropy, "full") << "the default follows the reference";
  int moved_above = 0;
  for (const auto& [n, moved] : run_and_see_what_moved(t))
    if (n.rfind("model.layers.2.", 0) == 0 || n == "model.norm.weight") moved_above += moved;
  EXPECT_GT(moved_above, 5) << "the full policy's entropy gradient did not reach layers > l";
  for (const auto& m : metrics(dir)) EXPECT_EQ(m["phase"], 1.0);
}

// With every advantage 0 (an untrained model scores nothing), the phase-1 update is its entropy
// bonus alone: of the full policy it is exactly GRPO's update, whose bonus is the full policy's.
TEST(Trainer, Phase1FullEntropyBonusIsGrposWhenTheAdvantagesVanish) {
  const std::string a = tmpdir("ent_a"), b = tmpdir("ent_b");
  Trainer ta(tiny(a, {"bupo.internal_layer=1", "bupo.internal_steps=1", "trainer.steps=1",
                      "algorithm.entropy_coef=0.05"}),
             quiet());
  Trainer tb(tiny(b, {"trainer.steps=1", "algorithm.entropy_coef=0.05"}), quiet());
  ASSERT_EQ(ta.run(), 0);
  ASSERT_EQ(tb.run(), 0);
  const auto ma = metrics(a), mb = metrics(b);
  ASSERT_EQ(ma[0]["accuracy"].get<double>(), 0.0) << "the premise: no reward, no advantage";
  ASSERT_EQ(mb[0]["accuracy"].get<double>(), 0.0);
  EXPECT_EQ(ma[0]["adv_abs_mean"].get<double>(), 0.0);
  for (const char* k : {"entropy", "grad_norm"}) EXPECT_EQ(ma[0][k], mb[0][k]) << k;
  EXPECT_EQ(weights(ta.model()), weights(tb.model()));
}

// Table 11's alternatives to phase 1 (issue 15 §2): the full policy with layers 1..l frozen, or
// with the layers above l at a fraction of the LR.
TEST(Trainer, Table11FrozenLayersKeepLayersUpToLBitIdentical) {
  const std::string dir = tmpdir("frozen");
  Trainer t(tiny(dir, {"bupo.internal_layer=1", "bupo.internal_steps=2", "trainer.steps=2",
                       "bupo.variant=\"frozen_layers\""}),
            quiet());
  int frozen = 0, moved = 0;
  for (const auto& [n, changed] : run_and_see_what_moved(t)) {
    const bool same = !changed;
    if (n.rfind("model.layers.0.", 0) == 0) {
      EXPECT_TRUE(same) << n << " changed although layers 1..l are frozen";
      ++frozen;
    } else if (n.rfind("model.layers.2.", 0) == 0 || n == "model.norm.weight" ||
               n == "model.embed_tokens.weight") {
      moved += !same;
    }
  }
  EXPECT_GT(frozen, 5);
  EXPECT_GT(moved, 5) << "the full policy above layer l did not train";
  for (const auto& m : metrics(dir)) {
    EXPECT_EQ(m["phase"], 1.0);
    EXPECT_FALSE(m["logprob_mismatch_mean"].is_null()) << "the full policy is recomputed";
  }
}

TEST(Trainer, Table11LayerwiseLrScalesTheUpdateAboveL) {
  // scale 1 is GRPO exactly; scale 0 leaves everything above l (and the final norm) bit-identical
  const std::string a = tmpdir("lw1"), b = tmpdir("lw_grpo"), c = tmpdir("lw0");
  const std::vector<std::string> lw = {"bupo.internal_layer=1", "bupo.internal_steps=1",
                                       "trainer.steps=1", "bupo.variant=\"layerwise_lr\""};
  auto with = [](std::vector<std::string> v, const std::string& kv) {
    v.push_back(kv);
    return v;
  };
  Trainer ta(tiny(a, with(lw, "bupo.layerwise_lr_scale=1")), quiet());
  Trainer tb(tiny(b, {"trainer.steps=1"}), quiet());
  Trainer tc(tiny(c, with(lw, "bupo.layerwise_lr_scale=0")), quiet());
  ASSERT_EQ(ta.run(), 0);
  ASSERT_EQ(tb.run(), 0);
  EXPECT_EQ(weights(ta.model()), weights(tb.model()));
  int above = 0, below = 0;
  for (const auto& [n, moved] : run_and_see_what_moved(tc)) {
    const bool same = !moved;
    if (n.rfind("model.layers.1.", 0) == 0 || n.rfind("model.layers.2.", 0) == 0 ||
        n == "model.norm.weight") {
      EXPECT_TRUE(same) << n << " moved at LR scale 0";
      ++above;
    } else if (n.rfind("model.layers.0.", 0) == 0 && n.find("proj") != std::string::npos) {
      EXPECT_FALSE(same) << n;
      ++below;
    }
  }
  EXPECT_GT(above, 10);
  EXPECT_GT(below, 3);
}

// trainer.balance_batch (issue 15, 1.8): micro-batches of equal sizes and near-equal tokens; the
// update is the same up to the summation order
TEST(Trainer, BalanceBatchEvensTheMicroBatchesTokens) {
  std::vector<Rollout> rolls(6);
  const int64_t lens[] = {10, 10, 1, 1, 9, 2};
  for (size_t i = 0; i < rolls.size(); ++i) rolls[i].ids.assign(static_cast<size_t>(lens[i]), 1);
  std::vector<const Rollout*> seqs;
  for (const auto& x : rolls) seqs.push_back(&x);
  auto tokens = [](const MicroBatch& m) {
    int64_t t = 0;
    for (const Rollout* x : m) t += static_cast<int64_t>(x->ids.size());
    return t;
  };
  const MiniBatch plain = contiguous_micro_batches(seqs, 2), bal = balanced_micro_batches(seqs, 2);
  ASSERT_EQ(plain.size(), 3u);
  ASSERT_EQ(bal.size(), 3u);
  EXPECT_EQ(tokens(plain[0]), 20);  // {10, 10}, {1, 1}, {9, 2}
  std::vector<const Rollout*> all;
  for (const auto& m : bal) {
    EXPECT_EQ(m.size(), 2u);
    EXPECT_LE(tokens(m), 12) << "longest first, each to the emptiest micro-batch: 11, 11, 11";
    all.insert(all.end(), m.begin(), m.end());
  }
  std::sort(all.begin(), all.end());
  EXPECT_TRUE(std::adjacent_find(all.begin(), all.end()) == all.end()) << "a sequence twice";
  EXPECT_EQ(all.size(), seqs.size());
  EXPECT_EQ(balanced_micro_batches(seqs, 4).back().size(), 2u) << "the remainder stays last";

  const std::string a = tmpdir("bal_on"), b = tmpdir("bal_off");
  Trainer ta(tiny(a, {"trainer.balance_batch=true", "trainer.micro_batch_seqs=2"}), quiet());
  Trainer tb(tiny(b, {"trainer.micro_batch_seqs=2"}), quiet());
  ASSERT_EQ(ta.run(), 0);
  ASSERT_EQ(tb.run(), 0);
  const auto ma = metrics(a), mb = metrics(b);
  ASSERT_EQ(ma.size(), mb.size());
  for (size_t s = 0; s < ma.size(); ++s)
    for (const char* k : {"reward", "pg_loss", "entropy", "grad_norm"})
      EXPECT_NEAR(ma[s][k].get<double>(), mb[s][k].get<double>(),
                  1e-5 * (1 + std::fabs(mb[s][k].get<double>())))
          << "step " << s + 1 << " " << k;
}

TEST(Trainer, PhaseScheduleAndRatioExactlyOneOnFirstMiniBatch) {
  const std::string dir = tmpdir("ratio");
  Trainer t(tiny(dir, {"bupo.internal_layer=2", "bupo.internal_steps=2", "trainer.steps=4"}),
            quiet());
  ASSERT_EQ(t.run(), 0);
  const auto m = metrics(dir);
  ASSERT_EQ(m.size(), 4u);
  const double phase[] = {1, 1, 2, 2};  // exactly s_inter steps use the internal policy (item 7)
  for (size_t i = 0; i < 4; ++i) {
    EXPECT_EQ(m[i]["phase"].get<double>(), phase[i]) << "step " << i + 1;
    // old log-probs from the same path and parameters: the ratio is exactly 1 (item 8)
    EXPECT_EQ(m[i]["ratio_first_minibatch_maxdev"].get<double>(), 0.0) << "step " << i + 1;
    EXPECT_EQ(m[i]["optimizer_steps"].get<double>(), 2.0);
  }
}

TEST(Trainer, RolloutsComeFromTheFullPolicyInPhase1) {
  const std::string a = tmpdir("full_a"), b = tmpdir("full_b");
  Trainer ta(tiny(a, {"bupo.internal_layer=1", "bupo.internal_steps=1", "trainer.steps=1",
                      "bupo.phase1_entropy=\"internal\""}),
             quiet());
  Trainer tb(tiny(b, {"trainer.steps=1"}), quiet());
  ASSERT_EQ(ta.run(), 0);
  ASSERT_EQ(tb.run(), 0);
  const auto ma = metrics(a), mb = metrics(b);
  for (const char* k : {"reward", "response_length", "entropy_rollout", "tokens"})
    EXPECT_EQ(ma[0][k], mb[0][k]) << k;           // item 9: the sampler never uses internal logits
  EXPECT_NE(ma[0]["entropy"], mb[0]["entropy"]);  // but the objectives' policies differ
}

TEST(Trainer, WarmUpStartsAtZeroInTheChosenUnit) {
  // verl's constant-with-warmup LambdaLR (issue 15, 1.1): lr * min(1, (k-1)/W) for the k-th unit;
  // kTiny has 2 optimizer steps per training step and lr 1e-3
  auto lrs = [](const std::string& dir, const std::string& unit) {
    Trainer t(tiny(dir, {"optim.warmup_steps=2", "optim.warmup_unit=\"" + unit + "\""}), quiet());
    EXPECT_EQ(t.run(), 0);
    std::vector<double> out;
    for (const auto& m : metrics(dir)) out.push_back(m["lr"].get<double>());
    return out;
  };
  // once per training step: every optimizer step of step s at 1e-3 * (s-1)/2
  EXPECT_EQ(lrs(tmpdir("wu_train"), "train_steps"), (std::vector<double>{0.0, 5e-4, 1e-3}));
  // per optimizer step: the last of step 1 is the 2nd (1e-3 * 1/2), of step 2 the 4th
  EXPECT_EQ(lrs(tmpdir("wu_opt"), "optimizer_steps"), (std::vector<double>{5e-4, 1e-3, 1e-3}));
  TrainConfig c =
      tiny(tmpdir("wu_fn"), {"optim.warmup_steps=10", "optim.warmup_unit=\"train_steps\""});
  EXPECT_EQ(scheduled_lr(c, 1, 16), 0.0) << "the HAPO recipe: step 1 at lr 0, not at full LR";
  EXPECT_DOUBLE_EQ(scheduled_lr(c, 6, 96), 5e-4);
  EXPECT_EQ(scheduled_lr(c, 11, 176), 1e-3);
  const TrainConfig hapo =
      load_train_config(std::string(BUPO_CONFIGS_DIR) + "/qwen3-8b-base-hapo.toml", {});
  EXPECT_EQ(hapo.optim.warmup_unit, "train_steps");
  EXPECT_EQ(hapo.optim.warmup_steps, 10);
}

TEST(Trainer, TemperedLogprobsKeepTheFirstRatioExactlyOne) {
  // issue 15, 1.6: at T = 0.7 the old and new log-probs are both of softmax(z / T); the update
  // runs and its first mini-batch's ratio is exactly 1 (papers.md §4 item 8)
  const std::string dir = tmpdir("tempered");
  Trainer t(tiny(dir, {"rollout.temperature=0.7", "trainer.steps=2"}), quiet());
  ASSERT_EQ(t.run(), 0);
  for (const auto& m : metrics(dir)) {
    EXPECT_EQ(m["ratio_first_minibatch_maxdev"].get<double>(), 0.0);
    EXPECT_TRUE(std::isfinite(m["entropy"].get<double>()));
  }
}

TEST(Trainer, ResumeIsBitExact) {
  const std::vector<std::string> ov = {
      "bupo.internal_layer=2",          "bupo.internal_steps=2",    "trainer.steps=6",
      "hapo.adaptive_temperature=true", "hapo.redistribution=true", "hapo.adaptive_clip=true",
      "hapo.token_advantage=true",      "optim.warmup_steps=3"};
  const std::string a = tmpdir("straight"), b = tmpdir("resumed");
  {
    Trainer t(tiny(a, ov), quiet());
    ASSERT_EQ(t.run(), 0);
  }
  auto ovb = ov;
  ovb.push_back("trainer.checkpoint_every=3");
  {
    TrainOptions o = quiet();
    o.stop_after_step = 4;  // runs on past the step-3 checkpoint: the log must be truncated back
    Trainer t(tiny(b, ovb), o);
    ASSERT_EQ(t.run(), 0);
  }
  std::vector<float> wa, wb;
  {
    TrainOptions o;
    o.quiet = true;
    o.resume_from = (fs::path(b) / "checkpoints" / "step_00000003").string();
    o.overwrite = true;  // step 4's checkpoint and log rows are discarded: the user says so
    Trainer t(tiny(b, ovb), o);
    ASSERT_EQ(t.run(), 0);
    wb = weights(t.model());
  }
  {
    TrainOptions o;
    o.quiet = true;
    o.resume = true;  // the latest checkpoint of run a is its final one
    Trainer t(tiny(a, ov), o);
    wa = weights(t.model());
  }
  ASSERT_EQ(wa.size(), wb.size());
  EXPECT_TRUE(wa == wb) << "weights differ after 3 + resume + 3 steps";
  const auto ma = metrics(a), mb = metrics(b);
  ASSERT_EQ(ma.size(), 6u);
  ASSERT_EQ(mb.size(), 6u);
  for (size_t i = 0; i < 6; ++i)
    EXPECT_EQ(without_timings(ma[i]), without_timings(mb[i])) << "step " << i + 1;
  // the HDF5 log was truncated back to step 3 and continued: steps 1..6, once each
  auto f = h5::File::open_read((fs::path(b) / "diagnostics.h5").string());
  EXPECT_EQ(h5::read_i64(f.id(), "/steps/step"), (std::vector<int64_t>{1, 2, 3, 4, 5, 6}));
  EXPECT_EQ(h5::read_i64(f.id(), "/entropy/step"), (std::vector<int64_t>{1, 2, 3, 4, 5, 6}));
  const auto ra = h5::read_f32(f.id(), "/steps/reward");
  EXPECT_EQ(ra.size(), 6u);
  EXPECT_FALSE(fs::exists(fs::path(b) / "checkpoints" / "step_00000004"));  // abandoned branch
}

TEST(Trainer, NonFiniteGradientsSkipTheUpdateAndStopTheRun) {
  const std::string dir = tmpdir("nan");
  ::setenv("BUPO_FAULT_NAN_STEPS", "2", 1);
  {
    Trainer t(tiny(dir, {"trainer.steps=3"}), quiet());
    EXPECT_EQ(t.run(), 0);
  }
  auto m = metrics(dir);
  ASSERT_EQ(m.size(), 3u);
  EXPECT_EQ(m[0]["nonfinite_skipped"], 0.0);
  EXPECT_EQ(m[1]["nonfinite_skipped"], 2.0);  // both mini-batches of step 2
  EXPECT_EQ(m[1]["optimizer_steps"], 0.0);
  EXPECT_EQ(m[2]["optimizer_steps"], 2.0);  // recovers
  ::setenv("BUPO_FAULT_NAN_STEPS", "2,3", 1);
  try {
    Trainer t(tiny(dir, {"trainer.steps=4", "trainer.max_nonfinite_in_row=2"}), quiet());
    t.run();
    ADD_FAILURE() << "expected the run to stop";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("non-finite"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("step 3"), std::string::npos) << e.what();
    // checkpoint_every = 0: none exists yet, and the message must not claim one
    EXPECT_NE(std::string(e.what()).find("No checkpoint has been written yet"), std::string::npos)
        << e.what();
  }
  ::unsetenv("BUPO_FAULT_NAN_STEPS");
}

TEST(Trainer, PreemptionSignalCheckpointsAndExitsWithItsOwnStatus) {
  const std::string dir = tmpdir("preempt");
  Trainer t(tiny(dir, {"trainer.steps=5"}), quiet());
  install_preemption_handlers();
  std::raise(SIGUSR1);
  EXPECT_EQ(t.run(), kExitPreempted);
  reset_preemption_flag();
  EXPECT_TRUE(fs::exists(fs::path(dir) / "checkpoints" / "step_00000001" / "COMPLETE"));
  EXPECT_EQ(latest_checkpoint(dir), (fs::path(dir) / "checkpoints" / "step_00000001").string());
  EXPECT_EQ(metrics(dir).size(), 1u);
}

TEST(Trainer, TokenMeanDoesNotDependOnTheMicroBatchSplit) {
  const std::string a = tmpdir("micro_a"), b = tmpdir("micro_b");
  Trainer ta(tiny(a, {"trainer.steps=1", "trainer.micro_batch_seqs=8"}), quiet());
  Trainer tb(tiny(b, {"trainer.steps=1", "trainer.micro_batch_seqs=3"}), quiet());
  ASSERT_EQ(ta.run(), 0);
  ASSERT_EQ(tb.run(), 0);
  const auto wa = weights(ta.model()), wb = weights(tb.model());
  double num = 0, den = 0;
  for (size_t i = 0; i < wa.size(); ++i) {
    num += (wa[i] - wb[i]) * (wa[i] - wb[i]);
    den += wa[i] * wa[i];
  }
  EXPECT_LT(std::sqrt(num / den), 1e-5);
  EXPECT_NEAR(metrics(a)[0]["pg_loss"].get<double>(), metrics(b)[0]["pg_loss"].get<double>(), 1e-6);
}

TEST(Trainer, KlToTheReferenceStartsAtZero) {
  const std::string dir = tmpdir("kl");
  Trainer t(tiny(dir, {"trainer.steps=2", "trainer.mini_batch_prompts=4", "algorithm.kl_coef=0.1"}),
            quiet());
  ASSERT_EQ(t.run(), 0);
  const auto m = metrics(dir);
  EXPECT_EQ(m[0]["kl"].get<double>(), 0.0);  // one mini-batch: the policy is still the reference
  EXPECT_GT(m[1]["kl"].get<double>(), 0.0);  // k3 >= 0, and the policy has moved
}

TEST(Trainer, DiagnosticsGeometryOfFig5And12PerStep) {
  // diagnostics.geometry: the per-step means of cos(H^l, H^L), KL(π^l ‖ π_θ), the residual
  // cosines, and (always) the perplexities, in diagnostics.h5 and the journal
  const std::string dir = tmpdir("geometry");
  for (const bool on : {true, false}) {
    Trainer t(
        tiny(dir, {"trainer.steps=2", "diagnostics.geometry=" + std::string(on ? "true" : "false"),
                   "diagnostics.lens=\"normed\""}),
        quiet());
    ASSERT_EQ(t.run(), 0);
    auto f = h5::File::open_read((fs::path(dir) / "diagnostics.h5").string());
    const int64_t L = 3;
    for (const char* ds : {"/entropy/cos_to_top", "/entropy/kl_to_output", "/entropy/ppl_layer"})
      EXPECT_EQ(h5::dataset_shape(f.id(), ds), (std::vector<int64_t>{2, L + 1})) << ds;
    for (const char* ds : {"/entropy/cos_attn_residual", "/entropy/cos_ffn_residual"})
      EXPECT_EQ(h5::dataset_shape(f.id(), ds), (std::vector<int64_t>{2, L})) << ds;
    const auto cos_top = h5::read_f32(f.id(), "/entropy/cos_to_top");
    const auto kl = h5::read_f32(f.id(), "/entropy/kl_to_output");
    const auto ppl = h5::read_f32(f.id(), "/entropy/ppl_layer");
    const auto ppl_out = h5::read_f32(f.id(), "/entropy/ppl_output");
    const auto cos_ffn = h5::read_f32(f.id(), "/entropy/cos_ffn_residual");
    for (int64_t s = 0; s < 2; ++s) {
      // the normed lens at H^L is π_θ: the same perplexity, no divergence, cosine 1
      EXPECT_NEAR(ppl[static_cast<size_t>(s * (L + 1) + L)], ppl_out[static_cast<size_t>(s)],
                  1e-4 * ppl_out[static_cast<size_t>(s)]);
      for (int64_t l = 0; l <= L; ++l) EXPECT_GE(ppl[static_cast<size_t>(s * (L + 1) + l)], 1.0f);
      if (!on) {
        EXPECT_TRUE(std::isnan(cos_top[static_cast<size_t>(s * (L + 1))]));
        EXPECT_TRUE(std::isnan(kl[static_cast<size_t>(s * (L + 1))]));
        EXPECT_TRUE(std::isnan(cos_ffn[static_cast<size_t>(s * L)]));
        continue;
      }
      EXPECT_NEAR(cos_top[static_cast<size_t>(s * (L + 1) + L)], 1.0f, 1e-6);
      EXPECT_NEAR(kl[static_cast<size_t>(s * (L + 1) + L)], 0.0f, 1e-5);
      for (int64_t l = 0; l < L; ++l) {
        EXPECT_GT(kl[static_cast<size_t>(s * (L + 1) + l)], 0.0f) << l;
        EXPECT_LE(std::fabs(cos_top[static_cast<size_t>(s * (L + 1) + l)]), 1.0f) << l;
        EXPECT_LE(std::fabs(cos_ffn[static_cast<size_t>(s * L + l)]), 1.0f) << l;
      }
    }
    const auto m = metrics(dir);
    ASSERT_EQ(m.size(), 2u);
    const json& e = m[1]["layer_entropy"];
    ASSERT_TRUE(e.contains("kl_to_output") && e.contains("ppl_output")) << e.dump();
    EXPECT_EQ(e["kl_to_output"].size(), static_cast<size_t>(L + 1));
    EXPECT_EQ(e["cos_to_top"][static_cast<size_t>(L)].is_null(), !on);
  }
}

TEST(Trainer, DiagnosticsFileLayout) {
  const std::string dir = tmpdir("layout");
  Trainer t(tiny(dir, {"trainer.steps=2", "bupo.internal_layer=2", "bupo.internal_steps=1"}),
            quiet());
  ASSERT_EQ(t.run(), 0);
  auto f = h5::File::open_read((fs::path(dir) / "diagnostics.h5").string());
  EXPECT_EQ(h5::read_attr_int(f.id(), "/", "schema_version"), kTrainSchemaVersion);
  EXPECT_NE(h5::read_attr_string(f.id(), "/", "config").find("bupo.internal_layer = 2"),
            std::string::npos);
  EXPECT_EQ(h5::dataset_shape(f.id(), "/entropy/layer"), (std::vector<int64_t>{2, 4}));
  EXPECT_EQ(h5::dataset_shape(f.id(), "/entropy/ffn_out"), (std::vector<int64_t>{2, 3}));
  const auto layer = h5::read_f32(f.id(), "/entropy/layer");
  const auto bl = h5::read_f32(f.id(), "/entropy/bupo_layer");
  EXPECT_EQ(bl[0], layer[2]);  // H(pi^2) is column l = 2
  for (float v : layer) {
    EXPECT_GE(v, 0.0f);
    EXPECT_LE(v, std::log(259.0f) + 1e-4f);
  }
  for (const char* k : {"reward", "accuracy", "grad_norm", "lr", "phase", "clip_frac",
                        "time_rollout", "time_update", "entropy", "kl"})
    EXPECT_EQ(h5::dataset_shape(f.id(), std::string("/steps/") + k), (std::vector<int64_t>{2}))
        << k;
  EXPECT_TRUE(fs::exists(fs::path(dir) / "hf" / "config.json"));
  EXPECT_TRUE(fs::exists(fs::path(dir) / "hf" / "model.safetensors"));
  EXPECT_TRUE(fs::exists(fs::path(dir) / "hf" / "tokenizer.json"));
}

TEST(Trainer, RefusesToOverwriteARunWithoutBeingAsked) {
  const std::string dir = tmpdir("refuse");
  {
    Trainer t(tiny(dir, {"trainer.steps=1"}), quiet());
    ASSERT_EQ(t.run(), 0);
  }
  TrainOptions o;
  o.quiet = true;
  try {
    Trainer t(tiny(dir, {"trainer.steps=1"}), o);
    ADD_FAILURE() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("--resume"), std::string::npos) << e.what();
  }
  EXPECT_EQ(metrics(dir).size(), 1u);  // nothing lost
  // --overwrite starts again and removes the old run's checkpoints (never resumed by mistake)
  {
    Trainer t(tiny(dir, {"trainer.steps=1", "trainer.checkpoint_every=0"}), quiet());
    EXPECT_FALSE(fs::exists(fs::path(dir) / "checkpoints" / "step_00000001"));
  }
}

TEST(Trainer, LayerRuleIsTheLastPositiveFfnEntropyChange) {
  const std::string dir = tmpdir("auto");
  try {
    Trainer t(tiny(dir, {"bupo.auto_layer=true", "bupo.internal_steps=1", "trainer.steps=1"}),
              quiet());
    ASSERT_EQ(t.run(), 0);
  } catch (const Error& e) {
    // allowed only when no layer qualifies; the evidence is still written
    EXPECT_NE(std::string(e.what()).find("no layer has a positive"), std::string::npos) << e.what();
  }
  auto f = h5::File::open_read((fs::path(dir) / "diagnostics.h5").string());
  const auto dh = h5::read_f32(f.id(), "/bupo_layer_selection/ffn_delta_h");
  const int64_t chosen = h5::read_attr_int(f.id(), "/bupo_layer_selection", "chosen_layer");
  ASSERT_EQ(dh.size(), 3u);
  int64_t expect = 0;
  for (size_t l = 0; l + 1 < dh.size(); ++l)  // the top layer is not a candidate (issue 15, 1.4)
    if (dh[l] > 0) expect = static_cast<int64_t>(l) + 1;
  EXPECT_EQ(chosen, expect);
}

TEST(Trainer, BothLayerRulesAreComputedAndTheConfiguredOneChosen) {
  // issue 15, 1.5: a near-zero band above the first positive run (Qwen3-4B: layers 7-26)
  LayerChoice c;
  c.ffn_dh = {0.5f, 0.2f, -0.1f, 0.01f, 0.3f, 0.02f, 0.4f};  // the top layer (7) is no candidate
  apply_layer_rule(c, "last_positive", 0.0);
  EXPECT_EQ(c.last_positive, 6);
  EXPECT_EQ(c.first_run_end, 2);
  EXPECT_EQ(c.chosen, 6);
  apply_layer_rule(c, "last_positive", 0.05);  // the noise band no longer counts
  EXPECT_EQ(c.chosen, 5);
  apply_layer_rule(c, "end_of_first_positive_run", 0.05);
  EXPECT_EQ(c.chosen, 2);
  EXPECT_EQ(c.last_positive, 5);
  // through a run: both answers land in the evidence group
  const std::string dir = tmpdir("rule");
  try {
    Trainer t(
        tiny(dir, {"bupo.auto_layer=true", "bupo.internal_steps=1", "trainer.steps=1",
                   "bupo.layer_rule=\"end_of_first_positive_run\"", "bupo.layer_threshold=-100"}),
        quiet());
    ASSERT_EQ(t.run(), 0);
  } catch (const Error& e) {
    ADD_FAILURE() << e.what();
  }
  auto f = h5::File::open_read((fs::path(dir) / "diagnostics.h5").string());
  const std::string g = "/bupo_layer_selection";
  // a threshold below every dH: layers 1..L-1 = 1..2 all count
  EXPECT_EQ(h5::read_attr_int(f.id(), g, "last_positive_layer"), 2);
  EXPECT_EQ(h5::read_attr_int(f.id(), g, "end_of_first_positive_run_layer"), 2);
  EXPECT_EQ(h5::read_attr_int(f.id(), g, "chosen_layer"), 2);
  EXPECT_NE(h5::read_attr_string(f.id(), g, "rule").find("end_of_first_positive_run"),
            std::string::npos);
}

TEST(Trainer, Phase1AtTheTopLayerIsTheFullPolicyAsInTheReference) {
  // the reference's pi^L reads HF's hidden_states[L], already final-normed: GRPO (issue 15, 1.4)
  const std::string a = tmpdir("top_a"), b = tmpdir("top_b");
  Trainer ta(tiny(a, {"bupo.internal_layer=3", "bupo.internal_steps=1", "trainer.steps=1"}),
             quiet());
  Trainer tb(tiny(b, {"trainer.steps=1"}), quiet());
  ASSERT_EQ(ta.run(), 0);
  ASSERT_EQ(tb.run(), 0);
  const auto ma = metrics(a), mb = metrics(b);
  for (const char* k : {"entropy", "pg_loss", "grad_norm", "ratio_mean"})
    EXPECT_EQ(ma[0][k], mb[0][k]) << k;
}

// papers.md §4 "toy reproductions": RL on the built-in task raises the reward. A warm start that
// leaves the model at ~10% on a small problem set, then 30 steps of BuPO (3) + GRPO at a fixed
// seed.
TEST(Trainer, RlRaisesTheRewardOnTheBuiltInTask) {
  const std::string dir = tmpdir("e2e");
  Trainer t(tiny(dir, {"model.init.layers=2", "model.init.seed=1", "data.arithmetic.size=4",
                       "rollout.n=8", "rollout.max_tokens=12", "trainer.prompts_per_step=16",
                       "trainer.mini_batch_prompts=16", "trainer.micro_batch_seqs=128",
                       "trainer.steps=30", "trainer.export_hf=false", "optim.lr=1e-3",
                       "algorithm.entropy_coef=0", "warmup.sft_steps=30", "warmup.sft_batch=32",
                       "warmup.sft_lr=3e-3", "bupo.internal_layer=1", "bupo.internal_steps=3",
                       "diagnostics.every=0"}),
            quiet());
  ASSERT_EQ(t.run(), 0);
  const auto m = metrics(dir);
  ASSERT_EQ(m.size(), 30u);
  double first = 0, last = 0;
  for (int i = 0; i < 5; ++i) {
    first += m[static_cast<size_t>(i)]["accuracy"].get<double>() / 5;
    last += m[static_cast<size_t>(25 + i)]["accuracy"].get<double>() / 5;
  }
  EXPECT_GT(last, first + 0.15) << "accuracy of steps 1-5: " << first
                                << ", of steps 26-30: " << last;
}

// algorithm.grader reaches the rollouts' rewards (issue 15, 1.2): after a warm start that answers
// "\boxed{N}", the math grader finds correct answers and DAPO's Minerva grader, which reads only
// "Answer:" lines, finds none (every reward -1 with algorithm.reward = "pm1").
TEST(Trainer, TheGraderScoresTheRollouts) {
  double accuracy[2] = {0, 0};
  int i = 0;
  for (const char* grader : {"math", "math_dapo"}) {
    const std::string dir = tmpdir(std::string("grader_") + grader);
    Trainer t(
        tiny(dir, {"model.init.layers=2", "model.init.seed=1", "data.arithmetic.size=4",
                   "rollout.n=8", "rollout.max_tokens=12", "trainer.prompts_per_step=8",
                   "trainer.mini_batch_prompts=8", "trainer.micro_batch_seqs=64", "trainer.steps=1",
                   "trainer.export_hf=false", "warmup.sft_steps=30", "warmup.sft_batch=32",
                   "warmup.sft_lr=3e-3", "diagnostics.every=0", "algorithm.reward=\"pm1\"",
                   std::string("algorithm.grader=\"") + grader + "\""}),
        quiet());
    ASSERT_EQ(t.run(), 0);
    const auto m = metrics(dir);
    ASSERT_EQ(m.size(), 1u);
    accuracy[i++] = m[0]["accuracy"].get<double>();
  }
  EXPECT_GT(accuracy[0], 0.0) << "the warm start answers \\boxed{N}: the math grader scores some";
  EXPECT_EQ(accuracy[1], 0.0) << "no \"Answer:\" line, so math_dapo scores none";
}

// model.device / --device: "cuda" where this build or machine has none is one clear error naming
// the key, before any work; an unknown device is a configuration error.
TEST(Trainer, DeviceSelectionErrorsNameTheKeyAndWhatIsMissing) {
  const std::string dir = tmpdir("device");
  try {
    Trainer t(tiny(dir, {"model.device=\"cuda\""}), quiet());
    FAIL() << "a CUDA run started in a test binary without the CUDA backend";
  } catch (const Error& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("model.device"), std::string::npos) << m;
    EXPECT_NE(m.find("no CUDA backend"), std::string::npos) << m;
  }
  EXPECT_FALSE(fs::exists(fs::path(dir) / "diagnostics.h5")) << "work started before the check";
  try {
    Trainer t(tiny(dir, {"model.device=\"tpu\""}), quiet());
    FAIL() << "an unknown device was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("model.device must be"), std::string::npos) << e.what();
  }
}

TEST(Trainer, TheCliRefusesCudaWithoutABackendOrAGpu) {
  const std::string dir = tmpdir("device_cli");
  const auto [rc, out] = test::run_bupo("train --config " BUPO_CONFIGS_DIR
                                        "/default.toml --device cuda --set trainer.out_dir=\\\"" +
                                        dir + "\\\" --quiet");
  EXPECT_EQ(rc, 1) << out;
  // a build without nvcc has no CUDA backend; a CUDA build on this GPU-less machine sees no device
  EXPECT_TRUE(out.find("no CUDA backend") != std::string::npos ||
              out.find("no CUDA device is visible") != std::string::npos)
      << out;
  EXPECT_NE(out.find("model.device"), std::string::npos) << out;
}

// The rollout's log-probs (KV-cache decode) against those recomputed for the update (a full
// forward): on the CPU in fp32 they agree to rounding; undefined in BuPO phase 1 (π^l recomputed).
TEST(Trainer, LogprobMismatchIsRoundingOnTheCpuAndUndefinedInPhase1) {
  const std::string dir = tmpdir("mismatch");
  Trainer t(tiny(dir, {"bupo.internal_layer=1", "bupo.internal_steps=1", "trainer.steps=2"}),
            quiet());
  ASSERT_EQ(t.run(), 0);
  const auto m = metrics(dir);
  ASSERT_EQ(m.size(), 2u);
  EXPECT_TRUE(m[0]["logprob_mismatch_mean"].is_null()) << m[0].dump();
  EXPECT_TRUE(m[0]["logprob_mismatch_max"].is_null());
  const double mean = m[1]["logprob_mismatch_mean"].get<double>(),
               mx = m[1]["logprob_mismatch_max"].get<double>();
  EXPECT_GE(mean, 0.0);
  EXPECT_LE(mean, mx);
  EXPECT_LT(mx, 1e-4) << "decode and full-forward log-probs differ beyond fp32 rounding";
}

// The baselines' estimators end to end: the trainer's last rollouts carry the advantages the
// estimator gives for their rewards (RLOO; GRPO of the KL-penalised score with the KL in the
// reward, the loss's own KL term then off), and REINFORCE++'s per-token advantages are whitened
// over the batch's tokens.
TEST(Trainer, BaselineEstimatorsAssignTheirAdvantages) {
  {
    const std::string dir = tmpdir("rloo");
    Trainer t(tiny(dir, {"trainer.steps=2", "algorithm.adv_estimator=\"rloo\""}), quiet());
    ASSERT_EQ(t.run(), 0);
    const auto& rs = t.last_rollouts();
    std::vector<double> rew;
    for (const auto& x : rs) rew.push_back(x.reward);
    const auto want = rloo_advantages(rew, 4);
    for (size_t i = 0; i < rs.size(); ++i) {
      EXPECT_NEAR(rs[i].adv, want[i], 1e-12) << i;
      EXPECT_TRUE(rs[i].adv_tok.empty());
    }
  }
  {
    const std::string dir = tmpdir("kl_in_reward");
    Trainer t(tiny(dir, {"trainer.steps=2", "algorithm.kl_coef=0.5", "algorithm.kl_in_reward=true",
                         "algorithm.kl_estimator=\"k1\""}),
              quiet());
    ASSERT_EQ(t.run(), 0);
    const auto& rs = t.last_rollouts();
    std::vector<double> score;
    double kl_abs = 0;
    for (const auto& x : rs) {
      double s = x.reward;
      for (int64_t j = 0; j < x.resp_len(); ++j) {
        const double k = static_cast<double>(x.old_logp[j]) - x.ref_logp[j];
        s -= 0.5 * k;
        kl_abs += std::fabs(k);
      }
      score.push_back(s);
    }
    EXPECT_GT(kl_abs, 0.0);  // step 2: the policy has moved from the reference
    const auto want = grpo_advantages(score, 4);
    for (size_t i = 0; i < rs.size(); ++i) EXPECT_NEAR(rs[i].adv, want[i], 1e-9) << i;
    for (const auto& m : metrics(dir)) EXPECT_EQ(m["kl"].get<double>(), 0.0);  // no loss term
  }
  {
    const std::string dir = tmpdir("reinforce_pp");
    Trainer t(tiny(dir, {"trainer.steps=2", "algorithm.adv_estimator=\"reinforce_plus_plus\"",
                         "algorithm.kl_coef=0.1", "algorithm.kl_in_reward=true"}),
              quiet());
    ASSERT_EQ(t.run(), 0);
    // by hand: token rewards -0.1·k3(old, ref), the reward on the last token; returns; whitened
    // over all tokens with the unbiased variance
    std::vector<double> g;
    for (const auto& x : t.last_rollouts()) {
      ASSERT_EQ(static_cast<int64_t>(x.adv_tok.size()), x.resp_len());
      std::vector<double> ret(x.adv_tok.size());
      double run = 0;
      for (size_t j = ret.size(); j-- > 0;) {
        double d = 0;
        const double rt = -0.1 * kl_value(KlKind::K3, x.old_logp[j], x.ref_logp[j], &d) +
                          (j + 1 == ret.size() ? x.reward : 0.0);
        run += rt;
        ret[j] = run;
      }
      g.insert(g.end(), ret.begin(), ret.end());
    }
    double mean = 0, ss = 0;
    for (double v : g) mean += v / static_cast<double>(g.size());
    for (double v : g) ss += (v - mean) * (v - mean);
    const double sd = std::sqrt(ss / static_cast<double>(g.size() - 1) + 1e-8);
    size_t k = 0;
    for (const auto& x : t.last_rollouts())
      for (float a : x.adv_tok) EXPECT_NEAR(a, (g[k++] - mean) / sd, 1e-4) << k;
    const auto m = metrics(dir);
    ASSERT_EQ(m.size(), 2u);
    EXPECT_TRUE(std::isfinite(m[1]["pg_loss"].get<double>()));
  }
}

TEST(Trainer, EstimatorKeysAreChecked) {
  const std::string dir = tmpdir("estimator_keys");
  EXPECT_THROW(tiny(dir, {"algorithm.adv_estimator=\"ppo\""}), Error);
  EXPECT_THROW(tiny(dir, {"algorithm.kl_in_reward=true"}), Error);  // no kl_coef
  EXPECT_THROW(tiny(dir, {"algorithm.adv_estimator=\"rloo\"", "hapo.token_advantage=true"}), Error);
}
