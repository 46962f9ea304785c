// `bupo train`: the RL loop of DESIGN.md "one training step, as data":
//   rollout (full policy, KV cache) → reward (math verifier) → advantage (GRPO / HAPO token-level,
//   DAPO dynamic sampling and overlong shaping) → old log-probs (π^l in BuPO phase 1, else the
//   full policy) → mini-batch updates (epochs, micro-batches with gradient accumulation, PPO
//   dual-clip loss with HAPO C/D, KL, entropy bonus, clipping, AdamW) → metrics, per-layer
//   entropies → HDF5 + JSONL → checkpoint.
// BuPO (papers.md §1.5): for steps 1..s (bupo.internal_steps) both the old and the new log-probs
// come from π^l = softmax(H^l·E_uᵀ) and the backward starts at layer l, so only layers ≤ l, E_u
// and the embedding receive gradient; from step s+1 the baseline objective on the full policy.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "lens/lens.hpp"
#include "model/model.hpp"
#include "rl/config.hpp"
#include "rl/data.hpp"
#include "rl/loss.hpp"
#include "tokenizer/tokenizer.hpp"

namespace bupo::rl {

constexpr int kExitPreempted = 75;  // SIGTERM/SIGUSR1: step finished, checkpoint written

struct TrainOptions {
  bool resume = false;          // continue from the latest complete checkpoint in out_dir
  std::string resume_from;      // or from this checkpoint folder
  bool overwrite = false;       // replace an existing run in out_dir
  bool quiet = false;           // no progress output
  int64_t stop_after_step = 0;  // stop (with a checkpoint) after this step; 0: trainer.steps
  bool single_process = false;  // ignore the MPI job: run on this process alone (tests)
};

// One sampled response and everything the update needs about it.
struct Rollout {
  int64_t problem = 0, group = 0, sample = 0;
  std::vector<int32_t> ids;  // prompt + response
  int64_t prompt_len = 0;
  int64_t resp_len() const { return static_cast<int64_t>(ids.size()) - prompt_len; }
  double reward = 0, score = 0, adv = 0;
  bool truncated = false;
  std::vector<float> old_logp, ref_logp, raw_entropy, temperature;
};

// The policy a loss is computed on: the full model (layer 0) or the internal policy π^l.
struct PolicyPath {
  int layer = 0;  // 0: full output policy; l >= 1: π^l
  LensMode lens = LensMode::Raw;
};

// Per-token log-probs and entropies of the response tokens of `seqs` under `path` (forward only).
// The micro-batch composition decides the packing; results are concatenated in sequence order.
// Under pipeline parallelism every stage calls it; the results are on the stage that holds the
// policy (holds_policy), empty elsewhere.
bool holds_policy(const Model& model, PolicyPath path);
void policy_logprobs(Model& model, const std::vector<const Rollout*>& seqs, PolicyPath path,
                     std::vector<float>& logp, std::vector<float>* entropy);

// The paper's layer rule (papers.md §1.6) on a set of responses: mean ΔH_FFN and ΔH_ATTN per layer
// l = 1..L, and the last l with mean ΔH_FFN > 0 (0 when none).
struct LayerChoice {
  std::vector<float> ffn_dh, attn_dh;
  int64_t chosen = 0, tokens = 0;
};
LayerChoice choose_bupo_layer(Model& model, const std::vector<Rollout>& rollouts);

// `bupo pick-layer`: baseline rollouts of the initial policy (after the warm start, when one is
// configured) on the first trainer.prompts_per_step prompts, the rule above, evidence to HDF5.
LayerChoice pick_layer_command(const TrainConfig& cfg, const std::string& out_h5, bool overwrite);

class Trainer {
 public:
  struct Impl;
  Trainer(TrainConfig cfg, TrainOptions opt);
  ~Trainer();
  int run();  // 0: finished; kExitPreempted: stopped by a signal after a checkpoint

  // exposed for tests
  Model& model();  // this rank's shard
  // Collective over the job: the whole model on world rank 0, nullptr elsewhere.
  std::unique_ptr<Model> gathered_model();
  const std::vector<Rollout>& last_rollouts() const;  // the last step's (identical on all ranks)
  const std::vector<std::pair<std::string, double>>& last_metrics() const;

 private:
  std::unique_ptr<Impl> impl_;
};

// Signal handling for preemption (SIGTERM, SIGUSR1): sets a flag the loop checks after each step.
void install_preemption_handlers();
bool preemption_requested();
void reset_preemption_flag();

}  // namespace bupo::rl
