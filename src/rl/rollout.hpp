// Rollout and reward: batched sampling from the full policy (KV cache, DP-sharded prompts with
// global random keys, gathered so every rank holds every rollout), the verifier's reward, DAPO's
// overlong shaping and dynamic sampling with refill.
#pragma once
#include <cstdint>
#include <vector>

#include "gen/generate.hpp"
#include "rl/data.hpp"
#include "rl/hapo.hpp"

namespace bupo::rl {

struct Run;

// One sampled response and everything the update needs about it.
struct Rollout {
  int64_t problem = 0, group = 0, sample = 0;
  std::vector<int32_t> ids;  // prompt + response
  int64_t prompt_len = 0;
  int64_t resp_len() const { return static_cast<int64_t>(ids.size()) - prompt_len; }
  double reward = 0, score = 0, adv = 0;
  // per-token advantages (REINFORCE++); empty: every token carries `adv`
  std::vector<float> adv_tok;
  double advantage_at(int64_t j) const {
    return adv_tok.empty() ? adv : static_cast<double>(adv_tok[static_cast<size_t>(j)]);
  }
  bool truncated = false;
  std::vector<float> old_logp, ref_logp, raw_entropy, temperature;
  // log π_T(token) as the sampler saw it (the tempered distribution; T = 1 unless a temperature or
  // HAPO A changed it): against old_logp for the logprob_mismatch metric
  std::vector<float> rollout_logp;
  // PPO's critic (algorithm.adv_estimator = "gae"): the values at rollout time and the GAE returns
  // of the response tokens (on every rank)
  std::vector<float> values, returns;
};

// Micro-batches view the step's rollouts; mini-batches (one optimizer step each) group them.
using MicroBatch = std::vector<const Rollout*>;
using MiniBatch = std::vector<MicroBatch>;
// This data-parallel replica's whole micro-batches of a mini-batch (contiguous blocks).
MiniBatch replica_share(const ParallelContext& pc, const MiniBatch& all);
// A mini-batch's sequences as micro-batches of `per_micro` (the last one the remainder): in
// their order, or (trainer.balance_batch) with the same sizes but balanced by tokens (prompt +
// response): longest first, each to the micro-batch with the fewest tokens that has room (ties
// to the lowest index), each micro-batch then in the sequences' order. Deterministic.
MiniBatch contiguous_micro_batches(const std::vector<const Rollout*>& seqs, int64_t per_micro);
MiniBatch balanced_micro_batches(const std::vector<const Rollout*>& seqs, int64_t per_micro);

// The rollouts a step trains on, and what was seen on the way (dynamic sampling may draw several
// batches and keep only informative groups).
struct RolloutBatch {
  std::vector<Rollout> rolls;  // the kept groups, group ids renumbered 0..
  int64_t gen_batches = 0, groups_seen = 0, groups_kept = 0;
  std::vector<double> all_scores, all_rewards, all_lengths;  // every sampled rollout
  double seconds = 0;
};

GenerateOptions generation_options(const Run& r, uint64_t seed, double temperature, double top_p,
                                   int64_t max_tokens);
// Rollouts of `draws` (n samples each): every data-parallel replica generates its contiguous
// share and the shares are gathered, so every rank ends with the same rollouts in draw order.
std::vector<Rollout> sample_rollouts(Run& r, const std::vector<Sampler::Draw>& draws,
                                     int64_t seed_step, const EntropyStats& stats);
// The step's rollouts: trainer.prompts_per_step prompts × rollout.n, refilled under dynamic
// sampling until enough informative groups (or algorithm.max_gen_batches batches).
RolloutBatch collect_rollouts(Run& r, int64_t step);

}  // namespace bupo::rl
