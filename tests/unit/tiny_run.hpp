// The smallest whole training run (2 steps, a checkpoint after each) for the run-folder, signal
// and checkpoint tests: its config and the trainer options of a run into `dir`.
#pragma once
#include <string>
#include <vector>

#include "rl/config.hpp"
#include "rl/trainer.hpp"

namespace bupo::test {

inline constexpr const char* kTinyRun = R"(
[model]
template = "plain"
init = { arch = "qwen3", layers = 2, hidden = 32, heads = 2, kv_heads = 1, head_dim = 16, ffn = 64, seed = 3 }
[data]
train = "builtin:arithmetic"
arithmetic = { digits = 1, ops = "+", size = 100 }
[rollout]
n = 2
max_tokens = 4
[trainer]
steps = 2
prompts_per_step = 2
mini_batch_prompts = 2
micro_batch_seqs = 4
checkpoint_every = 1
export_hf = false
[diagnostics]
every = 0
)";

inline rl::TrainConfig tiny_run_config(const std::string& dir,
                                       std::vector<std::string> overrides = {}) {
  overrides.push_back("trainer.out_dir=\"" + dir + "\"");
  return rl::parse_train_config(kTinyRun, "tiny.toml", overrides);
}

inline rl::TrainOptions run_options(bool overwrite, bool resume = false, std::string from = "") {
  rl::TrainOptions o;
  o.quiet = true;
  o.overwrite = overwrite;
  o.resume = resume;
  o.resume_from = std::move(from);
  return o;
}

}  // namespace bupo::test
