// The trainer tests' shared fixture: a tiny fresh Qwen3-style model on the built-in task (3 layers,
// d = 64, one-digit addition, 4 prompts × 4 samples a step), a run folder per test process, and the
// metrics.jsonl reader. Used by test_trainer.cpp and test_critic.cpp.
#pragma once
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "io/json_util.hpp"
#include "rl/config.hpp"
#include "rl/trainer.hpp"

namespace bupo::rl {

inline std::string tmpdir(const std::string& name) {
  const std::filesystem::path p = std::filesystem::temp_directory_path() /
                                  ("bupo_trainer_" + name + "_" + std::to_string(::getpid()));
  std::filesystem::remove_all(p);
  return p.string();
}

inline const char* kTiny = R"(
[model]
template = "plain"
init = { arch = "qwen3", layers = 3, hidden = 64, heads = 2, kv_heads = 1, head_dim = 32, ffn = 128, seed = 3 }
[data]
train = "builtin:arithmetic"
arithmetic = { digits = 1, ops = "+", size = 500 }
[rollout]
n = 4
max_tokens = 8
[trainer]
steps = 3
prompts_per_step = 4
mini_batch_prompts = 2
micro_batch_seqs = 4
checkpoint_every = 0
[optim]
lr = 1e-3
[algorithm]
entropy_coef = 0.01
[diagnostics]
every = 1
tokens = 32
)";

inline TrainConfig tiny(const std::string& dir, std::vector<std::string> ov = {}) {
  ov.push_back("trainer.out_dir=\"" + dir + "\"");
  return parse_train_config(kTiny, "tiny.toml", ov);
}

inline TrainOptions quiet() {
  TrainOptions o;
  o.quiet = true;
  o.overwrite = true;
  return o;
}

inline std::vector<json> metrics(const std::string& dir) {
  std::vector<json> out;
  std::ifstream in(std::filesystem::path(dir) / "metrics.jsonl");
  std::string line;
  while (std::getline(in, line))
    if (!line.empty()) out.push_back(json::parse(line));
  return out;
}

}  // namespace bupo::rl
