// The performance model behind `bupo plan`: for one RL step of a model, a run configuration and a
// layout (tp, pp, dp, micro-batch size, ZeRO), what each rank holds, what each process group
// moves, and how long each stage takes on a cluster.
//
// Communication is counted the way bupo's communicators count it (parallel/comm.hpp: the payload
// bytes handed to each operation by each rank, summed over all ranks), site by site from the
// code: the rollout's TP all-reduces and vocabulary all-gather, the PP activation transfers and
// result broadcast, the DP rollout exchange, every pass of the old log-probs, the update (1F1B
// forward and backward, the lens, the partial-gradient and shared-parameter reductions, the DP
// buckets or ZeRO-1's reduce-scatter and all-gather, the loss statistics) and the diagnostics.
// Given the step's workload (sequences, prompt and response tokens, what the diagnostics ran) the
// bytes are exact; checked against measured runs by tests/unit/test_plan.cpp. Not modelled: the
// validation steps, dynamic sampling's extra generation batches, algorithm.kl_in_reward's
// per-token KL exchange, the warm start and the checkpoint barriers. PPO's critic
// (algorithm.adv_estimator = "gae") is in the memory (its weights, gradients and AdamW per stage,
// its activations sharing the policy's pool) but not in the time or the communication: its
// values pass and its update add about one more forward and one more update of its model.
//
// Time: compute-bound stages (prefill, log-probs, update, diagnostics) at their FLOPs over the
// calibrated fraction of the GEMM rate, plus a per-token cost TP does not split; the decode as the
// larger of weight + KV bytes over the memory bandwidth and its FLOPs; collectives as ring α–β
// (2(n−1)α + 2(n−1)/n · bytes/β); the update's 1F1B bubble as (p−1)/(m′+p−1).
#pragma once
#include <string>
#include <vector>

#include "model/config.hpp"
#include "plan/cluster.hpp"
#include "rl/config.hpp"

namespace bupo::plan {

struct Layout {
  int tp = 1, pp = 1, dp = 1;
  int64_t micro_seqs = 0;  // sequences per micro-batch (trainer.micro_batch_seqs)
  bool zero = false;
  int ranks() const { return tp * pp * dp; }
  std::string name() const;  // tp2_pp1_dp2_u32_z0
};

// One step's work, as the run's metrics report it (metrics.jsonl: tokens, prompt_tokens,
// response_length_max, diag_tokens, diag_forward_tokens, phase, bupo_layer).
struct Workload {
  int64_t sequences = 0, prompt_tokens = 0, response_tokens = 0, longest_response = 0;
  int64_t diag_tokens = 0, diag_forward_tokens = 0;  // 0: no diagnostics this step
  int policy_layer = 0;                              // BuPO's l in phase 1; 0: the full policy
};
// The workload a configuration implies before it runs: prompts_per_step × n sequences of the given
// mean prompt and response lengths, the diagnostics' record pick of rl/diagnostics.cpp.
Workload nominal_workload(const rl::TrainConfig& cfg, double prompt_len, double response_len,
                          int policy_layer);

struct Traffic {
  double bytes = 0, calls = 0;
};
struct GroupTraffic {
  Traffic tp, pp, dp;
};

struct StageTimes {
  double rollout = 0, old_logprob = 0, update = 0, diagnostics = 0;
  double step() const { return rollout + old_logprob + update + diagnostics; }
};

// Bytes on the rank that holds the most (the first or the last pipeline stage).
struct RankMemory {
  double params = 0, grads = 0, optimizer = 0, activations = 0, kv_cache = 0;
  double total() const { return params + grads + optimizer + activations + kv_cache; }
};

struct Prediction {
  Layout layout;
  StageTimes time;
  GroupTraffic comm;     // per step, summed over ranks
  StageTimes comm_time;  // the part of each stage spent communicating
  RankMemory memory;
  double bubble = 0;  // 1F1B idle fraction of the update
  int nodes = 1;
  bool fits = true;
  std::string why_not;  // empty when the layout is valid and fits
};

Prediction predict(const ModelConfig& mc, const rl::TrainConfig& cfg, const Cluster& c,
                   const Layout& lay, const Workload& w);

// Every layout of `ranks` ranks the model admits (tp divides heads, FFN and vocabulary; pp ≤
// layers; dp divides the micro-batches), micro-batch sizes that split a replica's share of a
// mini-batch into 1, 2, 4, … micro-batches, ZeRO on and off where dp > 1.
std::vector<Layout> candidate_layouts(const ModelConfig& mc, const rl::TrainConfig& cfg, int ranks);

// FLOPs of one token through one layer's forward on one TP rank (GEMMs and attention at the given
// mean context), and parameter elements of one stage on one TP rank (as the ParamStore lays them
// out: each padded to 16). Exposed for tests.
double layer_forward_flops(const ModelConfig& mc, int tp, double context);
int64_t stage_param_elements(const ModelConfig& mc, int tp, int layers, bool padded);

}  // namespace bupo::plan
