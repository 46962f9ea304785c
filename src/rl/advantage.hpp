// Advantages and the shaping around them (papers.md §1.5, §2.3, §3):
//   GRPO        A_i = (R_i − mean_G R) / (std_G R + eps), std unbiased (N−1) as torch.std / verl;
//               a group of one gets mean 0 and std 1.
//   token-level group average (HAPO component B, §2.3): every token of response i carries R_i;
//               mean and population std over all valid tokens of the group's G responses; a group
//               in which any |A| reaches `fallback_threshold` (5 in the released code) falls back
//               to GRPO.
//   RLOO        A_i = R_i − mean_{j≠i} R_j = G/(G−1)·(R_i − mean_G R) (verl's rloo; a group of one
//               keeps A = R).
//   REINFORCE++ per token: the return G_t = Σ_{s≥t} γ^{s−t} r_s of token rewards r_s (the
//               sequence reward on its last token, minus β·KL_s when the KL is in the reward),
//               whitened over every valid token of the batch: (G_t − mean)/sqrt(var + 1e-8), var
//               unbiased (verl's reinforce_plus_plus with masked_whiten).
//   GAE         PPO with a learned critic (verl's compute_gae_advantage_return): per response, the
//               values V_t of its tokens and V = 0 past its end, δ_t = r_t + γ·V_{t+1} − V_t,
//               A_t = δ_t + γλ·A_{t+1}; the critic's targets are the returns A_t + V_t, and the
//               advantages are whitened over every valid token of the batch as REINFORCE++'s.
//   DAPO overlong shaping (§3) and dynamic-sampling group filtering.
// Advantages are constant over a response's tokens in all of these but REINFORCE++ and GAE, so
// they are per sequence there.
#pragma once
#include <cstdint>
#include <vector>

namespace bupo::rl {

// rewards: G·n_groups values, group-major. Returns one advantage per sequence.
std::vector<double> grpo_advantages(const std::vector<double>& rewards, int64_t group_size,
                                    bool normalize_std = true, double eps = 1e-6);

// RLOO: rewards G·n_groups values, group-major; one advantage per sequence.
std::vector<double> rloo_advantages(const std::vector<double>& rewards, int64_t group_size);

// REINFORCE++: token_rewards[i] holds response i's per-token rewards; returns its whitened
// per-token advantages (the same shapes).
std::vector<std::vector<double>> reinforce_pp_advantages(
    const std::vector<std::vector<double>>& token_rewards, double gamma = 1.0);

// (x − mean)/sqrt(var + 1e-8) over every token of every response, var unbiased (verl's
// masked_whiten with shift_mean).
void whiten_tokens(std::vector<std::vector<double>>& x);

// GAE: token_rewards[i] and values[i] of response i (same lengths). Returns the whitened
// advantages and the (unwhitened) returns, per token.
struct GaeResult {
  std::vector<std::vector<double>> advantages, returns;
};
GaeResult gae_advantages(const std::vector<std::vector<double>>& token_rewards,
                         const std::vector<std::vector<double>>& values, double gamma, double lam);

struct TokenGroupResult {
  std::vector<double> advantages;  // per sequence
  std::vector<uint8_t> fell_back;  // per group: 1 = the GRPO advantage was used
};
// pad_to > 0: the fallback check also sees the positions of the padded [G, pad_to] tensor past a
// response's end, whose token value is 0 (hapo.fallback_includes_padding, the released code).
TokenGroupResult token_group_advantages(const std::vector<double>& rewards,
                                        const std::vector<int64_t>& lengths, int64_t group_size,
                                        double fallback_threshold = 5.0, double eps = 1e-6,
                                        int64_t pad_to = 0);

// DAPO: 0 when len <= max_len − cache; ((max_len − cache) − len)/cache inside the buffer; −1 past
// max_len; scaled by factor.
double overlong_penalty(int64_t length, int64_t max_len, int64_t cache_len, double factor = 1.0);

// Dynamic sampling (DAPO): groups whose accuracies are not all equal (0 < correct < G).
std::vector<int64_t> informative_groups(const std::vector<double>& accuracy, int64_t group_size);

// Pass@k from n samples of which c are correct: 1 − C(n−c, k)/C(n, k) (unbiased estimator).
double pass_at_k(int64_t n, int64_t c, int64_t k);

}  // namespace bupo::rl
