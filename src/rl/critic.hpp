// PPO's learned critic (algorithm.adv_estimator = "gae"; BuPO's Table 1 baseline, papers.md §1.7,
// as verl's dp_critic): a value model — the policy's architecture (or critic.model's) with a
// scalar head score (1, d) + bias on LN_final(H^L) in place of lm_head — parallelised like the
// policy (the same TP × PP × DP groups; its own stage split when its depth differs), with its own
// AdamW (critic.lr, 1e-5 in the paper). One training step:
//   values  V_t of every response token, forward only, at rollout time (compute_values): the
//           hidden row that predicts token t, as the log-probs (verl: values[:, -resp-1:-1]);
//   GAE     in the advantage stage (advantage.hpp), from these values on every rank;
//   update  trainer.epochs passes, one AdamW step per mini-batch, of the clipped value loss
//           ½·max((v − R)², (clip(v, V ± c) − R)²) (loss.hpp) with the policy's aggregation;
//           the critic learns before the actor, which waits critic.warmup_steps steps.
// Its weights and optimizer state go into every checkpoint's critic/ folder (consolidated, any
// layout), so a run resumes bit-exactly.
#pragma once
#include <cstdint>
#include <memory>
#include <vector>

#include "model/model.hpp"
#include "optim/adamw.hpp"
#include "rl/rollout.hpp"

namespace bupo::rl {

struct Run;

struct CriticStats {
  double vf_loss = 0, clipped = 0, tok = 0, vpred_sum = 0, grad_norm_last = 0, lr_last = 0;
  int64_t updates = 0, minis = 0, nonfinite_skips = 0;
  double seconds = 0;
};

// v (R) = X (R, d)·scoreᵀ + bias on the model's backend (X in its compute dtype).
void value_head_forward(Model& critic, const Tensor& X, std::vector<float>& v);
// dX (R, d) = g·score; score.g += gᵀ·X; bias.g += Σ g.
void value_head_backward(Model& critic, const Tensor& X, const std::vector<float>& g,
                         const Tensor& dX);

// Set-up (load_run, before the memory reservation): the value model's shape and layout checks,
// its shard, gradients, optimizer (sharded under parallel.zero as the policy's) and memory.
void make_critic(Run& r);
// A fresh run (after the warm start): the layers of critic.model, or of the policy, and a fresh
// value head (critic.init_seed).
void init_critic(Run& r);
// The values of this replica's micro-batches (forward only) into Rollout::values on the last
// pipeline stage; then every rollout's values on every rank (for GAE). Returns the seconds.
double compute_values(Run& r, const std::vector<MiniBatch>& minis, std::vector<Rollout>& rolls);
// trainer.epochs passes over the mini-batches, one critic AdamW step each, on Rollout::values
// (the rollout-time values) and Rollout::returns.
CriticStats update_critic(Run& r, const std::vector<MiniBatch>& minis);

}  // namespace bupo::rl
