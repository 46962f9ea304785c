// The policy a loss or a log-prob is computed on — the full model or the internal policy π^l
// (papers.md §1.5) — and the old log-probs of a step: per-token log-probs and entropies of the
// response tokens of packed micro-batches, forward only.
#pragma once
#include <cstdint>
#include <vector>

#include "lens/lens.hpp"
#include "model/model.hpp"
#include "rl/rollout.hpp"

namespace bupo::rl {

struct Run;

struct PolicyPath {
  int layer = 0;  // 0: full output policy; l >= 1: π^l
  LensMode lens = LensMode::Raw;
  // log-probs and entropies of softmax(z / T), T the rollout temperature, as verl computes the
  // old and new log-probs (algorithm.tempered_logprobs; 1: untempered). The rows entering a raw
  // lens are scaled by 1/T, which scales the logits.
  float inv_temperature = 1.0f;
};

// X *= 1/T in place (and the same for dL/dX after the lens' backward: the chain rule).
void temper_rows(Backend& be, const Tensor& x, PolicyPath path);

// Sequences packed into one batch, with the hidden row that predicts each response token.
struct Packed {
  Batch b;
  std::vector<int32_t> rows;     // (R): hidden row of each response token's prediction
  std::vector<int32_t> targets;  // (R): the response token
};
Packed pack(const std::vector<const Rollout*>& seqs);

Lens lens_for(Model& m, PolicyPath path);
Tensor hidden_of(const Activations& acts, PolicyPath path);  // H^l or LN_final(H^L), (N, d)
// X (R, d) in the backend's scratch (the caller scopes it) = the rows of x that predict the
// response tokens; `rows` (optional) receives those rows' indices as a tensor for the scatter.
Tensor gather_response_rows(Backend& be, const Tensor& x, const Packed& p, Tensor* rows = nullptr);

// Per-token log-probs and entropies of the response tokens of `seqs` under `path` (forward only).
// The micro-batch composition decides the packing; results are concatenated in sequence order.
// Under pipeline parallelism every stage calls it; the results are on the stage that holds the
// policy (holds_policy), empty elsewhere.
bool holds_policy(const Model& model, PolicyPath path);
void policy_logprobs(Model& model, const std::vector<const Rollout*>& seqs, PolicyPath path,
                     std::vector<float>& logp, std::vector<float>* entropy);

// The old log-probs (and the reference model's, with KL) of every rollout in this replica's
// micro-batches, on the stage holding the policy. Returns the seconds it took.
double compute_old_logprobs(Run& r, const std::vector<MiniBatch>& minis, PolicyPath path);

}  // namespace bupo::rl
