// bupo plan against measurements: a run folder's layout, configuration and per-step workload,
// times and communication (metrics.jsonl), the model's prediction for each of its steps, and the
// fit of a cluster's stage constants to two measured runs (--calibrate).
#pragma once
#include <string>
#include <vector>

#include "model/config.hpp"
#include "plan/perf_model.hpp"
#include "rl/config.hpp"

namespace bupo::plan {

struct MeasuredStep {
  Workload w;
  double rollout = 0, old_logprob = 0, update = 0, diagnostics = 0, step = 0;
  double tp_bytes = 0, pp_bytes = 0, dp_bytes = 0;
};
struct MeasuredRun {
  std::string dir;
  rl::TrainConfig cfg;
  ModelConfig mc;
  Layout lay;
  std::vector<MeasuredStep> steps;
};
// A bupo train run folder: the newest checkpoint's train_config.toml and config.json, and every
// step of metrics.jsonl (errors name the file and the missing key).
MeasuredRun read_run(const std::string& dir);

// Means over steps 2..K (step 1 pays one-time costs) of the predicted and measured stage times
// (rollout, old log-probs, update, diagnostics, their sum), and the bytes per group over every
// step.
struct Comparison {
  std::string name;
  double pred[5] = {0, 0, 0, 0, 0}, meas[5] = {0, 0, 0, 0, 0};
  double bytes_pred[3] = {0, 0, 0}, bytes_meas[3] = {0, 0, 0};  // tp, pp, dp
  bool bytes_exact = true;
};
Comparison compare(const MeasuredRun& m, const Cluster& c);

// Per stage, the two constants of the model from two measured runs of one problem: a 1-rank run
// t1 = A + B and a TP-2 run t2 = A/2 + B + comm (A: the compute TP splits, B: per-token work it
// does not). Efficiency = FLOPs / (rate · A); s_per_token = B / tokens.
void fit_stages(Cluster& c, const MeasuredRun& one, const MeasuredRun& two);

}  // namespace bupo::plan
