// Validation: avg@n and unbiased pass@k of the current policy on each validation set, prompts
// sharded over the data-parallel replicas (random keys are the global prompt indices, so the
// result does not depend on the layout or on how many sequences are generated together), written
// to the diagnostics file by training and to an evaluation file by `bupo eval` (rl/evaluation.hpp).
// Each set has its own n and temperature (validation.n_per_set, temperature_per_set), as the
// papers report AIME at Avg@32 and AMC/MATH at Avg@16 (papers.md §1.9).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "rl/config.hpp"

namespace bupo::rl {

struct Run;

// What set `index` of validation.sets is scored with.
struct ValidationSetting {
  std::string name;  // the group name: the file's stem, or the built-in set's name
  int64_t prompts = 0, n = 1, max_tokens = 0;
  int64_t batch_prompts = 0;  // prompts generated together on a replica (0: all)
  double temperature = 1.0, top_p = 1.0;
  std::vector<int64_t> k;  // the validation.k <= n
};
ValidationSetting validation_setting(const TrainConfig& cfg, size_t index, int64_t set_size);

struct ValidationResult {
  ValidationSetting setting;
  double avg = 0;                // mean over prompts of correct / n
  std::vector<double> pass;      // pass@k for setting.k, mean over prompts
  std::vector<int64_t> correct;  // per prompt: correct samples of n
};
// Collective over the job: scores set `index` of r.val with the current policy (same on every
// rank).
ValidationResult validate_set(Run& r, size_t index);

// The `k` attribute of a pass_at_k dataset: "1,8,32".
std::string k_attribute(const std::vector<int64_t>& k);

// Every set, into r.log at `step`.
void validate(Run& r, int64_t step);

}  // namespace bupo::rl
