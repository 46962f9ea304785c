// `bupo train`, `bupo pick-layer` and `bupo verify`.
#include <cstdio>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "cli/commands.hpp"
#include "cli/validators.hpp"
#include "core/error.hpp"
#include "io/json_util.hpp"
#include "rl/config.hpp"
#include "rl/data.hpp"
#include "rl/reward.hpp"
#include "rl/trainer.hpp"

namespace bupo::cli {

Runner add_train(CLI::App& app) {
  struct Opts {
    std::string config;
    std::vector<std::string> set;
    bool resume = false, overwrite = false, quiet = false, help_config = false,
         allow_config_change = false;
    std::string resume_from, device, precision;
    int64_t stop_after = 0;
  };
  auto o = std::make_shared<Opts>();
  auto* sub = app.add_subcommand(
      "train",
      "Train with BuPO or a baseline (GRPO/DAPO/HAPO) from a TOML config. Writes <out_dir>/"
      "diagnostics.h5, metrics.jsonl, checkpoints/. Exit 75: stopped by SIGTERM/SIGINT/SIGUSR1/"
      "SIGUSR2 after a checkpoint (resume with --resume).");
  sub->add_option("--config,-c", o->config, "TOML run configuration");
  sub->add_option("--set", o->set, "override a key: --set optim.lr=1e-5 (repeatable)");
  sub->add_option("--device", o->device,
                  "the backend, as --set model.device=...: cpu, cuda or cuda:N");
  sub->add_option("--precision", o->precision,
                  "compute dtype, as --set model.precision=...: auto, bf16 (cuda), fp32")
      ->check(CLI::IsMember({"auto", "bf16", "fp32"}));
  sub->add_flag("--resume", o->resume, "continue from the latest complete checkpoint in out_dir");
  sub->add_option("--resume-from", o->resume_from, "continue from this checkpoint folder");
  sub->add_flag("--overwrite", o->overwrite, "replace an existing run in out_dir");
  sub->add_flag("--allow-config-change", o->allow_config_change,
                "resume although keys that break bit-exactness (model, data, rollout, algorithm, "
                "optimizer, seeds, layout, device) differ from the checkpoint's train_config.toml");
  sub->add_flag("--quiet,-q", o->quiet, "no progress output");
  sub->add_option("--stop-after-step", o->stop_after,
                  "stop with a checkpoint after this step (for staged runs and tests)")
      ->check(integer_in<int64_t>(0));
  sub->add_flag("--help-config", o->help_config, "print every config key with its default");
  return [o]() {
    if (o->help_config) {
      std::fputs(rl::config_reference().c_str(), stdout);
      return 0;
    }
    BUPO_CHECK(!o->config.empty() || !o->set.empty(), "bupo train: --config FILE is required");
    if (!o->device.empty()) o->set.push_back("model.device=\"" + o->device + "\"");
    if (!o->precision.empty()) o->set.push_back("model.precision=\"" + o->precision + "\"");
    rl::TrainConfig cfg = rl::load_train_config(o->config, o->set);
    rl::TrainOptions to;
    to.resume = o->resume;
    to.resume_from = o->resume_from;
    to.overwrite = o->overwrite;
    to.quiet = o->quiet;
    to.stop_after_step = o->stop_after;
    to.allow_config_change = o->allow_config_change;
    BUPO_CHECK(!(to.overwrite && (to.resume || !to.resume_from.empty())),
               "bupo train: --overwrite and --resume exclude each other");
    rl::Trainer t(std::move(cfg), to);
    return t.run();
  };
}

Runner add_pick_layer(CLI::App& app) {
  struct Opts {
    std::string config, out;
    std::vector<std::string> set;
    bool overwrite = false;
  };
  auto o = std::make_shared<Opts>();
  auto* sub = app.add_subcommand(
      "pick-layer",
      "Choose the BuPO layer by the paper's rule (papers.md 1.6): sample baseline rollouts of the "
      "initial policy, measure the mean FFN entropy change of every layer, and report the last "
      "layer with a positive one. Evidence goes to --out (HDF5).");
  sub->add_option("--config,-c", o->config, "TOML run configuration (model, data, rollout)")
      ->required();
  sub->add_option("--set", o->set, "override a key (repeatable)");
  sub->add_option("--out,-o", o->out, "HDF5 file for the evidence")->required();
  sub->add_flag("--overwrite", o->overwrite, "replace an existing output file");
  return [o]() {
    const rl::TrainConfig cfg = rl::load_train_config(o->config, o->set);
    const auto c = rl::pick_layer_command(cfg, o->out, o->overwrite);
    std::printf("layer  mean_dH_attn  mean_dH_ffn\n");
    for (size_t l = 0; l < c.ffn_dh.size(); ++l)
      std::printf("%5zu  %+12.4f  %+11.4f\n", l + 1, c.attn_dh[l], c.ffn_dh[l]);
    if (c.chosen == 0) {
      std::printf("no layer below the top has a positive mean FFN entropy change (%lld tokens)\n",
                  static_cast<long long>(c.tokens));
      return 3;
    }
    std::printf("bupo.internal_layer = %lld   # pi^%lld, over %lld tokens\n",
                static_cast<long long>(c.chosen), static_cast<long long>(c.chosen),
                static_cast<long long>(c.tokens));
    return 0;
  };
}

Runner add_verify(CLI::App& app) {
  struct Opts {
    std::string reward = "01", grader = "math", mode = "extended";
  };
  auto o = std::make_shared<Opts>();
  auto* sub = app.add_subcommand(
      "verify",
      "Score responses: JSONL {\"response\": ..., \"ground_truth\": ..., \"data_source\": ...} "
      "on stdin -> {\"score\": ..., \"answer\": ...} per line on stdout, graded as "
      "`bupo train` grades rollouts (algorithm.grader, reward.mode).");
  sub->add_option("--reward", o->reward, "01 or pm1")->check(CLI::IsMember({"01", "pm1"}));
  sub->add_option("--grader", o->grader,
                  "math (last \\boxed{}), math_dapo (Minerva 'Answer:'), by_data_source "
                  "(each line's data_source: math_dapo rows to math_dapo)")
      ->check(CLI::IsMember({"math", "math_dapo", "by_data_source"}));
  sub->add_option("--mode", o->mode,
                  "the math grader's equivalence: verl (verl's math.compute_score exactly) or "
                  "extended (also exact numbers and tuples)")
      ->check(CLI::IsMember({"verl", "extended"}));
  return [o]() {
    const auto kind = o->reward == "pm1" ? rl::RewardKind::PlusMinusOne : rl::RewardKind::ZeroOne;
    const rl::Scoring scoring = rl::parse_scoring(o->grader, o->mode);
    std::string line;
    int64_t n = 0;
    while (std::getline(std::cin, line)) {
      ++n;
      if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
      const std::string where = "stdin:" + std::to_string(n);
      const json j = parse_json(line, where);
      BUPO_CHECK(j.is_object() && j.contains("response") && j["response"].is_string(), where,
                 ": field 'response': expected a string");
      BUPO_CHECK(j.contains("ground_truth") &&
                     (j["ground_truth"].is_string() || j["ground_truth"].is_number()),
                 where, ": field 'ground_truth': expected a string");
      const std::string gt = rl::ground_truth_text(line, where, "ground_truth");
      std::string data_source;
      if (auto ds = j.find("data_source"); ds != j.end()) {
        BUPO_CHECK(ds->is_string(), where, ": field 'data_source': expected a string");
        data_source = ds->get<std::string>();
      }
      const rl::Verdict v = rl::verify(j["response"].get<std::string>(), gt, scoring, data_source);
      json out = {{"score", rl::reward_value(v, kind)}};
      out["answer"] = v.has_answer ? json(v.answer) : json(nullptr);
      std::cout << out.dump() << "\n";
    }
    std::cout.flush();
    return 0;
  };
}

}  // namespace bupo::cli
