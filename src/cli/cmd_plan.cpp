// `bupo plan`: the layout advisor (src/plan/perf_model.hpp). Predicts every layout of N ranks for
// a model, a run configuration and a cluster, ranks them, and prints the sbatch line of the best;
// --against RUN... compares the model with measured runs step by step (their own layout and
// workload), --calibrate fits a cluster file to this machine from such runs.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "backend/backend.hpp"
#include "cli/commands.hpp"
#include "cli/validators.hpp"
#include "core/error.hpp"
#include "io/atomic_file.hpp"
#include "model/gguf_import.hpp"
#include "plan/measured.hpp"
#include "plan/perf_model.hpp"
#include "rl/config.hpp"
#include "rl/data.hpp"
#include "rl/run.hpp"

namespace fs = std::filesystem;

namespace bupo::cli {

namespace {
struct PlanOpts {
  std::string config, model, cluster, json_out, calibrate_out;
  std::vector<std::string> set, against;
  int ranks = 0, top = 12, layer = 0;
  double prompt_tokens = 0, response_tokens = 0;
};

// The model's shape and the mean prompt length of the training data, as bupo train would see them.
ModelConfig shape_of(const rl::TrainConfig& cfg, const std::string& model, double* mean_prompt) {
  rl::Run r;
  r.cfg = cfg;
  const bool json = model.size() > 5 && model.compare(model.size() - 5, 5, ".json") == 0;
  if (json) {  // a bare config.json: the tokenizer comes from model.tokenizer
    BUPO_CHECK(mean_prompt == nullptr || !cfg.model.tokenizer.empty(), "bupo plan --model ", model,
               ": a bare config.json has no tokenizer to measure the prompts with; give "
               "--prompt-tokens or --set model.tokenizer=\"PATH/tokenizer.json\"");
    r.cfg.model.path.clear();
  } else if (!model.empty()) {
    r.cfg.model.path = model;
  }
  if (mean_prompt != nullptr) {
    rl::load_tokenizer_of(r);
    const auto ps =
        rl::load_prompt_set(r, r.cfg.data.train, r.cfg.data.seed, r.cfg.data.arithmetic.size, 2000);
    double a = 0;
    for (int64_t i = 0; i < ps->size(); ++i) a += static_cast<double>(ps->at(i).prompt.size());
    *mean_prompt = ps->size() > 0 ? a / static_cast<double>(ps->size()) : 0;
  }
  if (json) return ModelConfig::load(model);
  if (!r.cfg.model.path.empty()) return model_config_of(r.cfg.model.path);
  if (!r.tok) rl::load_tokenizer_of(r);  // model.init: the vocabulary is the tokenizer's
  return rl::model_shape(r);
}

std::string mib(double b) {
  char s[32];
  std::snprintf(s, sizeof s, "%.1f", b / 1048576.0);
  return s;
}

// ---------------------------------------------------------------- calibration
// the fastest of five runs of f, in seconds
template <class F>
double best_of_5(Backend& be, F&& f) {
  double best = 1e30;
  for (int rep = 0; rep < 5; ++rep) {
    const auto t0 = std::chrono::steady_clock::now();
    f();
    be.synchronize();
    best = std::min(best,
                    std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  return best;
}

// fp32 GEMM rate of this rank at a large square shape, and its copy bandwidth
double measure_gemm(Backend& be) {
  const int64_t n = 1024;
  const auto sz = static_cast<size_t>(n * n * 4);
  Block a = be.allocate(MemRole::Scratch, sz), b = be.allocate(MemRole::Scratch, sz),
        y = be.allocate(MemRole::Scratch, sz);
  const Tensor A = a.view(DType::F32, Dims{n, n}), B = b.view(DType::F32, Dims{n, n}),
               Y = y.view(DType::F32, Dims{n, n});
  be.zero(A);
  be.zero(B);
  return 2.0 * static_cast<double>(n * n * n) /
         best_of_5(be, [&] { be.linear_forward(Y, A, B, Tensor{}); });
}

double measure_copy_bw(Backend& be) {
  const int64_t n = int64_t{64} << 20;  // 256 MiB of floats: far past every cache
  Block a = be.allocate(MemRole::Scratch, static_cast<size_t>(n * 4)),
        b = be.allocate(MemRole::Scratch, static_cast<size_t>(n * 4));
  const Tensor A = a.view(DType::F32, Dims{n}), B = b.view(DType::F32, Dims{n});
  be.zero(A);
  return 2.0 * 4.0 * static_cast<double>(n) /
         best_of_5(be, [&] { be.copy(B, A); });  // read + write
}

void print_comparisons(const std::vector<plan::Comparison>& ks) {
  std::printf(
      "| run | step s (pred / meas) | err | rollout | old lp | update | diag | TP bytes "
      "(pred = meas) | PP bytes | DP bytes |\n|---|---|---|---|---|---|---|---|---|---|\n");
  for (const auto& k : ks) {
    std::printf("| %s | %.3f / %.3f | %+.0f%% |", k.name.c_str(), k.pred[4], k.meas[4],
                100 * (k.pred[4] / k.meas[4] - 1));
    for (int j = 0; j < 4; ++j) std::printf(" %.3f / %.3f |", k.pred[j], k.meas[j]);
    for (int g = 0; g < 3; ++g)
      std::printf(" %.0f %s %.0f |", k.bytes_pred[g],
                  std::llround(k.bytes_pred[g]) == std::llround(k.bytes_meas[g]) ? "=" : "≠",
                  k.bytes_meas[g]);
    std::printf("\n");
  }
}

void print_ranking(const std::vector<plan::Prediction>& ps, const plan::Cluster& c, int top,
                   const std::string& config) {
  std::printf(
      "| # | layout | nodes | fits | step s | rollout | old lp | update | diag | bubble | "
      "MiB/rank | TP MB | PP MB | DP MB "
      "|\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
  int k = 0;
  for (const auto& p : ps) {
    if (k >= top) break;
    std::printf(
        "| %d | %s | %d | %s | %.3f | %.3f | %.3f | %.3f | %.3f | %.2f | %s | %.1f | %.1f | "
        "%.1f |\n",
        ++k, p.layout.name().c_str(), p.nodes, p.fits ? "yes" : "no", p.time.step(), p.time.rollout,
        p.time.old_logprob, p.time.update, p.time.diagnostics, p.bubble,
        mib(p.memory.total()).c_str(), p.comm.tp.bytes / 1e6, p.comm.pp.bytes / 1e6,
        p.comm.dp.bytes / 1e6);
  }
  for (const auto& p : ps)
    if (p.fits) {
      const plan::Layout& l = p.layout;
      const int per_node = std::min(l.ranks(), c.ranks_per_node);
      std::printf(
          "\nbest: %s (%.3f s per step)\nsbatch --nodes=%d --ntasks-per-node=%d "
          "--export=ALL,CONFIG=%s,SET=\"parallel.tp=%d parallel.pp=%d parallel.dp=%d "
          "trainer.micro_batch_seqs=%lld parallel.zero=%d\" jobs/slurm/train.sbatch\n",
          l.name().c_str(), p.time.step(), p.nodes, per_node,
          config.empty() ? "CONFIG.toml" : config.c_str(), l.tp, l.pp, l.dp,
          static_cast<long long>(l.micro_seqs), l.zero ? 1 : 0);
      return;
    }
  double least = 0;
  std::string which;
  for (const auto& p : ps)
    if (p.memory.total() > 0 && (which.empty() || p.memory.total() < least)) {
      least = p.memory.total();
      which = p.layout.name();
    }
  std::printf(
      "\nno layout fits: the smallest, %s, needs %s MiB on a rank (the cluster gives %s); "
      "more ranks, a shorter rollout.max_tokens or fewer prompts per step\n",
      which.c_str(), mib(least).c_str(), mib(c.mem_bytes).c_str());
}
}  // namespace

Runner add_plan(CLI::App& app) {
  auto o = std::make_shared<PlanOpts>();
  auto* sub = app.add_subcommand(
      "plan",
      "Predict the step time, memory and communication of every layout (tp, pp, dp, micro-batch "
      "size, ZeRO) of N ranks on a cluster, ranked, with the sbatch line of the best; --against "
      "RUN... compares the model with measured runs; --calibrate fits a cluster file to this "
      "machine.");
  sub->add_option("--config,-c", o->config, "TOML run configuration (as bupo train's)");
  sub->add_option("--set", o->set, "override a key of the run configuration (repeatable)");
  sub->add_option("--model", o->model, "config.json, an HF checkpoint directory or a .gguf");
  sub->add_option("--cluster", o->cluster, "cluster file (configs/clusters/*.toml)");
  sub->add_option("--ranks", o->ranks, "ranks (GPUs) to plan for")
      ->check(integer_in<int>(1, 1 << 20));
  sub->add_option("--prompt-tokens", o->prompt_tokens,
                  "mean prompt length (default: the training data's, first 2000 rows)")
      ->check(CLI::Range(0.0, 1e7));
  sub->add_option("--response-tokens", o->response_tokens,
                  "mean response length (default: rollout.max_tokens)")
      ->check(CLI::Range(0.0, 1e7));
  sub->add_option("--layer", o->layer,
                  "plan a BuPO phase-1 step at π^l (default 0: the full policy)")
      ->check(integer_in<int>(0, 1 << 16));
  sub->add_option("--top", o->top, "rows of the ranking to print")
      ->check(integer_in<int>(1, 100000));
  sub->add_option("--json", o->json_out, "write every prediction (or comparison) as JSON");
  sub->add_option("--against", o->against, "measured run folders to compare with (repeatable)");
  sub->add_option("--calibrate", o->calibrate_out,
                  "write a cluster file for this machine: GEMM rate and copy bandwidth measured "
                  "here, the stage constants fitted to --against RUN1 (1 rank) RUN2 (tp=2)");
  return [o]() {
    if (!o->calibrate_out.empty()) {
      BUPO_CHECK(!o->cluster.empty(),
                 "bupo plan --calibrate: --cluster FILE (the starting point: "
                 "node size, memory, links) is required");
      BUPO_CHECK(o->against.size() == 2,
                 "bupo plan --calibrate: expected --against RUN1 RUN2 (a "
                 "1-rank run and a tp=2 run of the same job), got ",
                 o->against.size(), " folder(s)");
      plan::Cluster c = plan::load_cluster(o->cluster);
      Backend& be = backend_for("cpu", "bupo plan", "fp32");
      c.flops = measure_gemm(be);
      c.mem_bw = measure_copy_bw(be);
      const plan::MeasuredRun one = plan::read_run(o->against[0]),
                              two = plan::read_run(o->against[1]);
      plan::fit_stages(c, one, two);
      const std::string note = "calibrated by bupo plan --calibrate on this machine from " +
                               one.dir + " and " + two.dir +
                               " (GEMM 1024^3 fp32 best of 5: " + std::to_string(c.flops / 1e9) +
                               " GFLOP/s; copy " + std::to_string(c.mem_bw / 1e9) +
                               " GB/s; node, memory and links from " + o->cluster + ")";
      write_file_atomic(o->calibrate_out, plan::cluster_toml(c, note));
      std::printf("%s\nwrote %s\n", note.c_str(), o->calibrate_out.c_str());
      return 0;
    }
    BUPO_CHECK(!o->cluster.empty(), "bupo plan: --cluster FILE is required (configs/clusters/)");
    const plan::Cluster c = plan::load_cluster(o->cluster);
    if (!o->against.empty()) {
      std::vector<plan::Comparison> ks;
      for (const auto& d : o->against) ks.push_back(plan::compare(plan::read_run(d), c));
      print_comparisons(ks);
      if (!o->json_out.empty()) {
        nlohmann::json j = nlohmann::json::array();
        for (const auto& k : ks)
          j.push_back({{"run", k.name},
                       {"predicted", std::vector<double>(k.pred, k.pred + 5)},
                       {"measured", std::vector<double>(k.meas, k.meas + 5)},
                       {"bytes_predicted", std::vector<double>(k.bytes_pred, k.bytes_pred + 3)},
                       {"bytes_measured", std::vector<double>(k.bytes_meas, k.bytes_meas + 3)},
                       {"bytes_exact", k.bytes_exact}});
        write_file_atomic(o->json_out, j.dump(1) + "\n");
      }
      bool exact = true;
      for (const auto& k : ks) exact = exact && k.bytes_exact;
      return exact ? 0 : 1;
    }
    BUPO_CHECK(o->ranks > 0, "bupo plan: --ranks N is required");
    BUPO_CHECK(!o->config.empty() || !o->model.empty(),
               "bupo plan: --config RUN.toml or --model PATH is required");
    rl::TrainConfig cfg = o->config.empty() ? rl::load_train_config("", o->set)
                                            : rl::load_train_config(o->config, o->set);
    double mean_prompt = 0;
    const ModelConfig mc = shape_of(cfg, o->model, o->prompt_tokens > 0 ? nullptr : &mean_prompt);
    if (o->prompt_tokens > 0) mean_prompt = o->prompt_tokens;
    const double resp =
        o->response_tokens > 0 ? o->response_tokens : static_cast<double>(cfg.rollout.max_tokens);
    BUPO_CHECK(o->layer < mc.num_layers, "bupo plan: --layer ", o->layer, ": expected 0..",
               mc.num_layers - 1);
    const plan::Workload w = plan::nominal_workload(cfg, mean_prompt, resp, o->layer);
    std::vector<plan::Prediction> ps;
    for (const plan::Layout& l : plan::candidate_layouts(mc, cfg, o->ranks))
      ps.push_back(plan::predict(mc, cfg, c, l, w));
    BUPO_CHECK(!ps.empty(), "bupo plan: no layout of ", o->ranks, " ranks: the mini-batch of ",
               cfg.trainer.mini_batch_prompts * cfg.rollout.n,
               " sequences cannot be split into micro-batches over any dp");
    std::stable_sort(ps.begin(), ps.end(), [](const auto& a, const auto& b) {
      if (a.fits != b.fits) return a.fits;
      if (!a.fits && a.why_not.empty() != b.why_not.empty()) return a.why_not.empty();
      // equal times (to the millisecond): the one that holds less
      const double ta = std::round(a.time.step() * 1e3), tb = std::round(b.time.step() * 1e3);
      if (ta != tb) return ta < tb;
      return a.memory.total() < b.memory.total();
    });
    std::printf(
        "bupo plan: %s on %d ranks of %s (%d per node); %lld sequences of %.1f + %.1f "
        "tokens per step%s\n\n",
        o->config.empty() ? o->model.c_str() : o->config.c_str(), o->ranks, c.name.c_str(),
        c.ranks_per_node, static_cast<long long>(w.sequences), mean_prompt, resp,
        o->layer > 0 ? (", BuPO phase 1 at π^" + std::to_string(o->layer)).c_str() : "");
    if (cfg.has_critic())
      std::printf(
          "note: the run trains a critic (algorithm.adv_estimator = \"gae\"): its memory is "
          "counted, its time and communication are not (about one more forward pass and one more "
          "update of its model per step)\n\n");
    print_ranking(ps, c, o->top, o->config);
    if (!o->json_out.empty()) {
      nlohmann::json j = nlohmann::json::array();
      for (const auto& p : ps)
        j.push_back({{"layout", p.layout.name()},
                     {"tp", p.layout.tp},
                     {"pp", p.layout.pp},
                     {"dp", p.layout.dp},
                     {"micro_batch_seqs", p.layout.micro_seqs},
                     {"zero", p.layout.zero},
                     {"fits", p.fits},
                     {"why_not", p.why_not},
                     {"step_s", p.time.step()},
                     {"rollout_s", p.time.rollout},
                     {"old_logprob_s", p.time.old_logprob},
                     {"update_s", p.time.update},
                     {"diagnostics_s", p.time.diagnostics},
                     {"bubble", p.bubble},
                     {"memory_bytes",
                      {{"params", p.memory.params},
                       {"grads", p.memory.grads},
                       {"optimizer", p.memory.optimizer},
                       {"activations", p.memory.activations},
                       {"kv_cache", p.memory.kv_cache}}},
                     {"comm_bytes", {p.comm.tp.bytes, p.comm.pp.bytes, p.comm.dp.bytes}}});
      write_file_atomic(o->json_out, j.dump(1) + "\n");
    }
    return 0;
  };
}

}  // namespace bupo::cli
