// The update: one optimizer step per mini-batch — the policy loss (PPO dual clip, HAPO C/D, KL,
// entropy bonus) on this replica's micro-batches through the 1F1B pipeline (parallel/pipeline),
// the gradient reductions (model-parallel partial sums, the data-parallel sum, the global norm),
// the non-finite guard, clipping, LR warm-up and AdamW.
#pragma once
#include <cstdint>
#include <functional>
#include <vector>

#include "optim/adamw.hpp"
#include "rl/config.hpp"
#include "rl/policy_eval.hpp"

namespace bupo::rl {

struct Run;

struct UpdateStats {
  double pg_loss = 0, kl = 0, entropy = 0, tok = 0, clipped = 0, clip_low = 0, clip_high = 0,
         dual = 0, ratio_sum = 0, adv_abs = 0, first_maxdev = 0, grad_norm_last = 0, lr_last = 0;
  int64_t updates = 0, nonfinite_skips = 0, minis = 0;
  double clip_frac() const { return tok ? clipped / tok : 0.0; }
};

// Per-token gradients of a micro-batch's loss from its log-probs and entropies.
using LossFn =
    std::function<void(size_t micro, const std::vector<float>& lp, const std::vector<float>& H,
                       std::vector<float>& g_lp, std::vector<float>& g_ent)>;

// The forward and backward of one optimizer step over this replica's micro-batches, in 1F1B order
// on this rank's pipeline stage. The stage that holds the policy evaluates the lens, asks `loss`
// for the per-token gradients and starts the backward there (in BuPO phase 1 the stage owning
// layer l); stages above it do nothing.
//
// top_entropy (BuPO phase 1 with the full policy's entropy bonus, bupo.phase1_entropy = "full",
// as the reference): the forward runs every layer; the last stage also evaluates the full policy's
// lens, asks top_entropy for its per-token entropy gradients (log-probs there carry none), and
// the backward starts at the output with the π^l loss's gradient added at layer l, so every
// layer receives the bonus's gradient.
using EntropyFn =
    std::function<void(size_t micro, const std::vector<float>& H, std::vector<float>& g_ent)>;
void run_pipeline(Run& r, const MiniBatch& micros, PolicyPath path, bool entropy_grad,
                  const LossFn& loss, const EntropyFn* top_entropy = nullptr);
// Per-rank statistics of the stage that holds the policy summed over DP (`mx` entries: maxima),
// then handed to every pipeline stage.
void reduce_loss_stats(Run& r, std::vector<double>& v, std::vector<float>& mx, PolicyPath path);
// After the backward of an optimizer step: partial sums inside the model-parallel group, the
// data-parallel gradient sum (an all-reduce; with opt's ZeRO-1 shard, a reduce-scatter into each
// replica's part); returns the global gradient norm (identical on every rank).
double finish_grads(Run& r, Model& m, const AdamW& opt);  // the critic's
double finish_grads(Run& r, const AdamW& opt);            // the policy's

// The aggregation weights w of a mini-batch's response tokens (every replica's, in micro-batch
// order: loss = Σ w·ℓ), and the first weight of each micro-batch in w_off. Over the whole
// mini-batch, so that the data-parallel sum of the replicas' gradients is the single-rank one.
std::vector<double> minibatch_weights(const Run& r, const MiniBatch& all_micros,
                                      std::vector<size_t>* w_off);

// The learning rate of an optimizer step (counts 1-based): a linear warm-up from 0 over
// optim.warmup_steps units, as verl's constant-with-warmup LambdaLR (lr * min(1, (k-1)/W), k the
// training step with warmup_unit = "train_steps", the optimizer step otherwise).
double scheduled_lr(const TrainConfig& cfg, int64_t train_step, int64_t optimizer_step);
// lr · min(1, (k−1)/warmup) at the k-th unit (1-based); lr itself when warmup <= 0.
double linear_warmup(double lr, int64_t warmup, int64_t k);

// One optimizer step on a mini-batch (its micro-batches over every replica); `first`: the
// step's first mini-batch of its first epoch (ratio exactly 1 there).
void update_minibatch(Run& r, const MiniBatch& all_micros, PolicyPath path, UpdateStats& us,
                      bool first);

}  // namespace bupo::rl
