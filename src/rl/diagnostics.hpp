// Diagnostics of the internal policies during training (papers.md §1.3, §1.6): the per-layer and
// per-module entropies of a subsample of the step's response tokens, and the paper's rule that
// picks the BuPO layer from the FFN entropy changes of the initial policy.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "model/model.hpp"
#include "rl/config.hpp"
#include "rl/rollout.hpp"
#include "rl/train_log.hpp"

namespace bupo::rl {

struct Run;

// Mean entropies per layer and module over a deterministic subsample of the rollouts (rollouts at
// a fixed stride until diagnostics.tokens response tokens). Every pipeline stage its own layers.
EntropySummary entropy_summary(Run& r, const std::vector<Rollout>& rolls);

// The paper's layer rule on a set of responses: mean dH_FFN and dH_ATTN per layer l = 1..L, and
// over l = 1..L-1 (pi^L is the full policy) the last layer with mean dH_FFN > threshold and the
// end of the first run of such layers; `rule` says which is chosen (0 when none).
using LayerChoice = LayerEvidence;
LayerChoice choose_bupo_layer(Model& model, const std::vector<Rollout>& rollouts,
                              const std::string& rule = "last_positive", double threshold = 0);
// Both rules' answers from c.ffn_dh, and c.chosen by `rule`.
void apply_layer_rule(LayerChoice& c, const std::string& rule, double threshold);
// The rule on baseline rollouts of the current policy on the first trainer.prompts_per_step
// prompts (the sampler is not advanced).
LayerChoice baseline_layer_choice(Run& r);
// bupo.auto_layer: the choice written to the diagnostics file and used as the run's BuPO layer.
void pick_bupo_layer(Run& r);

// `bupo pick-layer`: baseline rollouts of the initial policy (after the warm start, when one is
// configured) on the first trainer.prompts_per_step prompts, the rule above, evidence to HDF5.
LayerChoice pick_layer_command(const TrainConfig& cfg, const std::string& out_h5, bool overwrite);

}  // namespace bupo::rl
