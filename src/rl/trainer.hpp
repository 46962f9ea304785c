// `bupo train`: the RL loop of DESIGN.md "one training step, as data":
//   rollout (full policy, KV cache) → reward (math verifier) → advantage (GRPO / HAPO token-level,
//   DAPO dynamic sampling and overlong shaping) → old log-probs (π^l in BuPO phase 1, else the
//   full policy) → mini-batch updates (epochs, micro-batches with gradient accumulation, PPO
//   dual-clip loss with HAPO C/D, KL, entropy bonus, clipping, AdamW; with GAE the critic's values
//   before the advantage and its update before the actor's, critic.hpp) → metrics, per-layer
//   entropies → HDF5 + JSONL → checkpoint.
// BuPO (papers.md §1.5): for steps 1..s (bupo.internal_steps) both the old and the new log-probs
// come from π^l = softmax(H^l·E_uᵀ) and the backward starts at layer l, so only layers ≤ l, E_u
// and the embedding receive gradient; from step s+1 the baseline objective on the full policy.
//
// The units, one file each: rollout.hpp (rollout + reward), advantage.hpp, policy_eval.hpp (old
// log-probs), update.hpp (the update through parallel/pipeline), diagnostics.hpp, validation.hpp,
// run_folder.cpp / checkpoint.hpp (the run folder), step_metrics.hpp; run.hpp holds their state.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "model/model.hpp"
#include "rl/config.hpp"
#include "rl/diagnostics.hpp"
#include "rl/policy_eval.hpp"
#include "rl/rollout.hpp"

namespace bupo::rl {

constexpr int kExitPreempted = 75;  // SIGTERM/SIGUSR1: step finished, checkpoint written

struct TrainOptions {
  bool resume = false;          // continue from the latest complete checkpoint in out_dir
  std::string resume_from;      // or from this checkpoint folder
  bool overwrite = false;       // replace an existing run in out_dir
  bool quiet = false;           // no progress output
  int64_t stop_after_step = 0;  // stop (with a checkpoint) after this step; 0: trainer.steps
  bool single_process = false;  // ignore the MPI job: run on this process alone (tests)
  // resume although keys that break bit-exactness differ from the checkpoint's config
  bool allow_config_change = false;
};

class Trainer {
 public:
  struct Impl;
  Trainer(TrainConfig cfg, TrainOptions opt);
  ~Trainer();
  int run();  // 0: finished; kExitPreempted: stopped by a signal after a checkpoint

  // exposed for tests
  Model& model();      // this rank's shard
  Backend& backend();  // the backend it computes on (model.device)
  // Collective over the job: the whole model on world rank 0, nullptr elsewhere.
  std::unique_ptr<Model> gathered_model();
  // The same for PPO's value model (nullptr without one, and on ranks other than 0).
  std::unique_ptr<Model> gathered_critic();
  const std::vector<Rollout>& last_rollouts() const;  // the last step's (identical on all ranks)
  const std::vector<std::pair<std::string, double>>& last_metrics() const;
  // Backend memory blocks allocated during each step run so far (0 after the first: everything
  // the step loop needs is reserved up-front and reused).
  const std::vector<uint64_t>& step_allocations() const;

 private:
  std::unique_ptr<Impl> impl_;
};

// Signal handling for preemption (SIGTERM, SIGINT, SIGUSR1, SIGUSR2): sets a flag the loop checks
// after each step (and before step 1).
void install_preemption_handlers();
void reset_preemption_flag();

}  // namespace bupo::rl
