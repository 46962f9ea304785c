// bupo plan's performance model (src/plan): its communication counts against the measured runs
// that ship with it (tests/plan/runs: the default job on 1-4 ranks in ten layouts, five steps
// each, made by tests/plan/README.md's commands), its times against the same runs under the
// cluster file calibrated from two of them, and its memory arithmetic against hand counts.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <string>

#include "plan/cluster.hpp"
#include "plan/measured.hpp"
#include "plan/perf_model.hpp"
#include "rl/config.hpp"

namespace fs = std::filesystem;
using namespace bupo;

namespace {
const std::string kRuns = std::string(BUPO_SOURCE_DIR) + "/tests/plan/runs";
const std::string kClusters = std::string(BUPO_CONFIGS_DIR) + "/clusters";

// The default job's model (configs/default.toml's model.init over the arithmetic tokenizer,
// vocabulary padded to 320 as in the shipped runs).
ModelConfig default_model() {
  return ModelConfig::qwen3_shape(320, 128, 384, 4, 4, 2, 32, 4096, true);
}
}  // namespace

TEST(Plan, CommunicationBytesOfEveryShippedRunAreExact) {
  const plan::Cluster c = plan::load_cluster(kClusters + "/ci-machine.toml");
  int runs = 0;
  for (const auto& e : fs::directory_iterator(kRuns)) {
    const plan::MeasuredRun m = plan::read_run(e.path().string());
    ASSERT_EQ(m.steps.size(), 5u) << e.path();
    for (size_t i = 0; i < m.steps.size(); ++i) {
      const plan::MeasuredStep& s = m.steps[i];
      const plan::Prediction p = plan::predict(m.mc, m.cfg, c, m.lay, s.w);
      ASSERT_TRUE(p.why_not.empty()) << p.why_not;
      // every rank's payload bytes, per group, as bupo's communicators counted them
      EXPECT_EQ(std::llround(p.comm.tp.bytes), std::llround(s.tp_bytes))
          << e.path() << " step " << i + 1;
      EXPECT_EQ(std::llround(p.comm.pp.bytes), std::llround(s.pp_bytes))
          << e.path() << " step " << i + 1;
      EXPECT_EQ(std::llround(p.comm.dp.bytes), std::llround(s.dp_bytes))
          << e.path() << " step " << i + 1;
    }
    ++runs;
  }
  EXPECT_EQ(runs, 10);
}

TEST(Plan, CommunicationBytesWithTheFig5GeometryDiagnosticsAreExact) {
  // tests/plan/runs_geometry: diagnostics.geometry = true on tp2 x pp2 and pp2 x dp2 — the extra
  // forward pass, the E-bar all-reduces, H^L and pi_theta sent down the pipeline, the wider PP sum
  const plan::Cluster c = plan::load_cluster(kClusters + "/ci-machine.toml");
  int runs = 0;
  for (const auto& e :
       fs::directory_iterator(std::string(BUPO_SOURCE_DIR) + "/tests/plan/runs_geometry")) {
    const plan::MeasuredRun m = plan::read_run(e.path().string());
    ASSERT_TRUE(m.cfg.diagnostics.geometry) << e.path();
    ASSERT_EQ(m.steps.size(), 5u) << e.path();
    for (size_t i = 0; i < m.steps.size(); ++i) {
      const plan::MeasuredStep& s = m.steps[i];
      const plan::Prediction p = plan::predict(m.mc, m.cfg, c, m.lay, s.w);
      ASSERT_TRUE(p.why_not.empty()) << p.why_not;
      EXPECT_EQ(std::llround(p.comm.tp.bytes), std::llround(s.tp_bytes)) << e.path() << " " << i;
      EXPECT_EQ(std::llround(p.comm.pp.bytes), std::llround(s.pp_bytes)) << e.path() << " " << i;
      EXPECT_EQ(std::llround(p.comm.dp.bytes), std::llround(s.dp_bytes)) << e.path() << " " << i;
    }
    ++runs;
  }
  EXPECT_EQ(runs, 2);
}

TEST(Plan, StepTimesOfTheShippedRunsWithinTwentyPercent) {
  // ci-machine.toml was calibrated on tp1_pp1_dp1 and tp2_pp1_dp1; the other eight are predictions
  const plan::Cluster c = plan::load_cluster(kClusters + "/ci-machine.toml");
  int predicted = 0;
  for (const auto& e : fs::directory_iterator(kRuns)) {
    const plan::Comparison k = plan::compare(plan::read_run(e.path().string()), c);
    EXPECT_TRUE(k.bytes_exact) << k.name;
    EXPECT_NEAR(k.pred[4] / k.meas[4], 1.0, 0.20)
        << k.name << ": predicted " << k.pred[4] << " s, measured " << k.meas[4] << " s";
    const std::string n = e.path().filename().string();
    if (n != "tp1_pp1_dp1_m4_n1" && n != "tp2_pp1_dp1_m4_n1") ++predicted;
  }
  EXPECT_GE(predicted, 6);
}

TEST(Plan, CalibrationReproducesItsTwoRuns) {
  plan::Cluster c = plan::load_cluster(kClusters + "/cpu-2core.toml");
  const plan::Cluster calibrated = plan::load_cluster(kClusters + "/ci-machine.toml");
  c.flops = calibrated.flops;  // the rates the calibration measured; the fit is then deterministic
  c.mem_bw = calibrated.mem_bw;
  const plan::MeasuredRun one = plan::read_run(kRuns + "/tp1_pp1_dp1_m4_n1");
  const plan::MeasuredRun two = plan::read_run(kRuns + "/tp2_pp1_dp1_m4_n1");
  plan::fit_stages(c, one, two);
  const plan::Comparison k1 = plan::compare(one, c), k2 = plan::compare(two, c);
  for (int j = 0; j < 4; ++j) EXPECT_NEAR(k1.pred[j], k1.meas[j], 0.02 * k1.meas[j] + 1e-3) << j;
  EXPECT_NEAR(k2.pred[4], k2.meas[4], 0.10 * k2.meas[4]);
  EXPECT_NEAR(c.update.efficiency, calibrated.update.efficiency, 1e-4);
  // a wrong pair is one clear error
  EXPECT_THROW(plan::fit_stages(c, two, one), std::exception);
}

TEST(Plan, ParameterCountsMatchHandCounts) {
  const ModelConfig m = default_model();
  // per layer: 2 norms 128, q 128x128, k and v 64x128, o 128x128, q/k norms 32, gate/up/down
  // 384x128
  const int64_t layer = 2 * 128 + 16384 + 2 * 8192 + 16384 + 2 * 32 + 3 * 49152;
  EXPECT_EQ(layer, 196928);
  EXPECT_EQ(plan::stage_param_elements(m, 1, 4, false), 4 * layer + 320 * 128 + 128);  // 828,800
  // tp = 2: heads, FFN and vocabulary halve; the 2 KV heads give one per rank; norms replicated
  const int64_t layer_tp2 = 2 * 128 + 64 * 128 + 2 * 32 * 128 + 128 * 64 + 2 * 32 + 3 * 192 * 128;
  EXPECT_EQ(plan::stage_param_elements(m, 2, 4, false), 4 * layer_tp2 + 160 * 128 + 128);
  // Qwen3-8B (HF config): 36 layers, d 4096, 32/8 heads of 128, FFN 12288, vocabulary 151936,
  // untied
  const ModelConfig q = ModelConfig::qwen3_shape(151936, 4096, 12288, 36, 32, 8, 128, 40960, false);
  EXPECT_EQ(plan::stage_param_elements(q, 1, 36, false), int64_t{8190735360});
  // FLOPs of a token through a layer: 2·d·(2·H·D + 2·Hkv·D + 3·ff) + 4·H·D·context
  EXPECT_DOUBLE_EQ(plan::layer_forward_flops(m, 1, 10.0),
                   2.0 * 128 * (2 * 128 + 2 * 64 + 3 * 384) + 4.0 * 128 * 10);
}

// The default run's step: 32 prompts × 8 samples of 6 prompt and 15 response tokens.
plan::Workload default_workload() {
  plan::Workload w;
  w.sequences = 256;
  w.prompt_tokens = 256 * 6;
  w.response_tokens = 256 * 15;
  w.longest_response = 16;
  return w;
}

TEST(Plan, MemoryOfARankMatchesHandCounts) {
  const ModelConfig m = default_model();
  const rl::TrainConfig cfg =
      rl::load_train_config(std::string(BUPO_CONFIGS_DIR) + "/default.toml", {});
  const plan::Cluster c = plan::load_cluster(kClusters + "/cpu-2core.toml");
  const plan::Workload w = default_workload();
  const plan::Prediction p = plan::predict(m, cfg, c, {1, 1, 1, 32, false}, w);
  const double el = 828800;  // every tensor already a multiple of 16
  EXPECT_DOUBLE_EQ(p.memory.params, el * 4);
  EXPECT_DOUBLE_EQ(p.memory.grads, el * 4);
  EXPECT_DOUBLE_EQ(p.memory.optimizer, el * 8);
  // activations: (6d + 2·H·D + 2·Hkv·D + 3·ff + 2) floats per token and layer, 4 layers, a
  // micro-batch of 32 sequences of at most ceil(6)·1.5 + 16 = 25 tokens
  EXPECT_DOUBLE_EQ(p.memory.activations,
                   4.0 * (6 * 128 + 2 * 128 + 2 * 64 + 3 * 384 + 2) * 4 * 32 * 25);
  // KV cache: 32 prompts × 8 slots, 25 positions, 4 layers, K and V of 2 heads × 32
  EXPECT_DOUBLE_EQ(p.memory.kv_cache, 256.0 * 25 * 4 * 2 * 64 * 4);
  // ZeRO-1 over dp = 2: the moments of this rank's parts only
  const plan::Prediction z = plan::predict(m, cfg, c, {1, 1, 2, 32, true}, w);
  EXPECT_DOUBLE_EQ(z.memory.optimizer, 8.0 * 414400);
  // PP = 2: the first stage holds 2 of 4 layers, 2 micro-batches in flight under 1F1B
  const plan::Prediction s = plan::predict(m, cfg, c, {1, 2, 1, 32, false}, w);
  EXPECT_DOUBLE_EQ(s.memory.params, 4.0 * (2 * 196928 + 320 * 128 + 128));
  EXPECT_DOUBLE_EQ(s.memory.activations,
                   4.0 * (6 * 128 + 2 * 128 + 2 * 64 + 3 * 384 + 2) * 2 * 32 * 25 * 2);
}

// PPO's critic (a copy of the tied default model with a value head): its weights, gradients and
// moments add to the policy's; its activations share the policy's pool (the same shape here).
TEST(Plan, MemoryWithACriticAddsTheValueModel) {
  const ModelConfig m = default_model();
  const rl::TrainConfig cfg = rl::load_train_config(std::string(BUPO_CONFIGS_DIR) + "/default.toml",
                                                    {"algorithm.adv_estimator=\"gae\""});
  const plan::Cluster c = plan::load_cluster(kClusters + "/cpu-2core.toml");
  const plan::Workload w = default_workload();
  const plan::Prediction p = plan::predict(m, cfg, c, {1, 1, 1, 32, false}, w);
  const double el = 828800, critic = 828800 + 128 + 16;  // + score (128) and its bias (padded)
  EXPECT_DOUBLE_EQ(p.memory.params, (el + critic) * 4);
  EXPECT_DOUBLE_EQ(p.memory.grads, (el + critic) * 4);
  EXPECT_DOUBLE_EQ(p.memory.optimizer, (el + critic) * 8);
  EXPECT_DOUBLE_EQ(p.memory.activations,
                   4.0 * (6 * 128 + 2 * 128 + 2 * 64 + 3 * 384 + 2) * 4 * 32 * 25);
}

TEST(Plan, LayoutsAreEnumeratedAndBadOnesExplained) {
  const ModelConfig m = default_model();
  const rl::TrainConfig cfg =
      rl::load_train_config(std::string(BUPO_CONFIGS_DIR) + "/default.toml", {});
  const auto ls = plan::candidate_layouts(m, cfg, 4);
  ASSERT_FALSE(ls.empty());
  for (const auto& l : ls) {
    EXPECT_EQ(l.ranks(), 4);
    EXPECT_EQ(128 % l.micro_seqs, 0) << l.name();
    EXPECT_FALSE(l.zero && l.dp == 1) << l.name();
  }
  const plan::Cluster c = plan::load_cluster(kClusters + "/cpu-2core.toml");
  plan::Workload w;
  w.sequences = 256;
  w.prompt_tokens = 1536;
  w.response_tokens = 3840;
  w.longest_response = 16;
  const plan::Prediction bad = plan::predict(m, cfg, c, {3, 1, 1, 32, false}, w);  // 4 heads
  EXPECT_FALSE(bad.fits);
  EXPECT_NE(bad.why_not.find("parallel.tp = 3"), std::string::npos) << bad.why_not;
  plan::Cluster tiny = c;
  tiny.mem_bytes = 1e6;
  const plan::Prediction big = plan::predict(m, cfg, tiny, {1, 1, 1, 32, false}, w);
  EXPECT_FALSE(big.fits);
  EXPECT_NE(big.why_not.find("MiB on a rank"), std::string::npos) << big.why_not;
}

TEST(Plan, AMalformedRunFolderIsOneClearError) {
  const fs::path d = fs::temp_directory_path() / "bupo_plan_run_test";
  fs::remove_all(d);
  fs::copy(kRuns + "/tp1_pp1_dp1_m4_n1", d, fs::copy_options::recursive);
  auto message = [&] {
    try {
      plan::read_run(d.string());
    } catch (const std::exception& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_EQ(message(), "no error");
  std::ofstream(d / "metrics.jsonl") << "{\"n_groups\": 1e300}\n";
  std::string m = message();
  EXPECT_NE(m.find("metrics.jsonl: line 1: 'n_groups'"), std::string::npos) << m;
  std::ofstream(d / "metrics.jsonl") << "not json\n";
  m = message();
  EXPECT_NE(m.find("is not JSON"), std::string::npos) << m;
  fs::remove_all(d / "checkpoints");
  m = message();
  EXPECT_NE(m.find("no checkpoint with train_config.toml"), std::string::npos) << m;
  fs::remove_all(d);
}

TEST(Plan, ClusterFileErrorsNameTheFileAndTheKey) {
  const fs::path d = fs::temp_directory_path() / "bupo_plan_cluster_test";
  fs::create_directories(d);
  auto write = [&](const std::string& text) {
    std::ofstream(d / "c.toml") << text;
    return (d / "c.toml").string();
  };
  auto message = [&](const std::string& text) {
    try {
      plan::load_cluster(write(text));
    } catch (const std::exception& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  const std::string ok =
      "name = \"x\"\n[node]\nranks_per_node = 8\n[rank]\ngemm_flops = 1e12\nmem_bw = 1e12\n"
      "mem_bytes = 8e10\n[intra_node]\nalpha_s = 1e-5\nbeta_Bps = 1e11\n[inter_node]\n"
      "alpha_s = 2e-5\nbeta_Bps = 4e10\n";
  EXPECT_NO_THROW(plan::load_cluster(write(ok)));
  std::string m = message("name = \"x\"\n[node]\nranks_per_node = 8\n");
  EXPECT_NE(m.find("c.toml"), std::string::npos) << m;
  EXPECT_NE(m.find("rank.gemm_flops"), std::string::npos) << m;
  m = message(ok + "[stages.update]\nefficiency = 3\n");
  EXPECT_NE(m.find("stages.update.efficiency"), std::string::npos) << m;
  m = message("name = \"x\"\n[node]\nranks_per_node = 2.5\n");
  EXPECT_NE(m.find("whole number"), std::string::npos) << m;
  m = message("name = [");
  EXPECT_NE(m.find("not valid TOML"), std::string::npos) << m;
  fs::remove_all(d);
}
