// The per-step metrics row (HDF5 /steps, metrics.jsonl): what the step's stages measured, the
// communication of each group (bytes, calls; host and device communicators counted once), the
// measured pipeline bubble next to 1F1B's bound, and the stage timings.
#pragma once
#include <array>
#include <string>
#include <utility>
#include <vector>

#include "parallel/comm.hpp"
#include "rl/critic.hpp"
#include "rl/rollout.hpp"
#include "rl/update.hpp"

namespace bupo::rl {

struct Run;
using Metrics = std::vector<std::pair<std::string, double>>;

// Counters of the tp, pp and dp groups (host + device communicators when they differ).
using CommSnapshot = std::array<CommStats, 3>;
CommSnapshot comm_snapshot(const Run& r);

struct StepTimes {
  double rollout = 0, reward = 0, old_logprob = 0, update = 0, diagnostics = 0, validation = 0,
         log_write_prev = 0, values = 0, critic = 0;
};
// What the diagnostics ran: the workload of that stage, which bupo plan models.
struct DiagnosticsWork {
  int64_t tokens = 0, forward_tokens = 0;
};

// Collective over the world (the communication totals are summed over all ranks).
// critic: PPO's value model's step (null without one: its metrics are then absent).
Metrics step_metrics(Run& r, bool phase1, const RolloutBatch& rb, const UpdateStats& us,
                     const CriticStats* critic, double hapo_fallback_frac, const StepTimes& t,
                     const DiagnosticsWork& dw, const CommSnapshot& comm0, double step_seconds);
// The one-line progress report of a step.
std::string step_line(const Run& r, int64_t step, bool phase1, const RolloutBatch& rb,
                      const UpdateStats& us, const CriticStats* critic, double seconds);

}  // namespace bupo::rl
