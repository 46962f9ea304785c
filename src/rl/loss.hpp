// Per-token policy-gradient loss and its derivative (papers.md §1.5 verl "vanilla", §2.6, §3):
//   ratio = exp(clamp(logp − old_logp, −C, C))        (C = 20 in verl; 0 disables the clamp)
//   L1 = −A·ratio;  L2 = −A·clip(ratio, 1 − eps_l, 1 + eps_r);  Lc = max(L1, L2)
//   dual clip (A < 0, c > 1): L = min(Lc, −A·c)
// plus an optional KL penalty to a reference policy (k1 = logp − ref, k2 = ½(logp − ref)²,
// k3 = e^{ref−logp} − (ref − logp) − 1) and an entropy bonus (−coef·H).
// Aggregation turns per-token terms into one scalar: per-token weights w with loss = Σ w·ℓ.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace bupo::rl {

enum class KlKind { K1, K2, K3 };
KlKind kl_kind_from_string(const std::string& s);

struct TokenLoss {
  double loss = 0;   // the policy term ℓ
  double dlogp = 0;  // dℓ/dlogp
  double ratio = 1;
  bool clipped = false;  // the clipped branch is active (no gradient through the ratio)
  bool clipped_low = false, clipped_high = false, dual_clipped = false;
};

TokenLoss ppo_token_loss(double logp, double old_logp, double adv, double eps_l, double eps_r,
                         double dual_clip_c, double log_ratio_clamp = 20.0);

// PPO's clipped value loss of a critic's prediction v for one token (verl compute_value_loss):
//   v̂ = clip(v, v_old − c, v_old + c);  ℓ = ½·max((v − R)², (v̂ − R)²)
// with v_old the value at rollout time and R the return; c <= 0: no clipping, ℓ = ½(v − R)².
// The clipped branch wins only when v is outside the band, where v̂ is constant: no gradient.
struct ValueTokenLoss {
  double loss = 0;       // ℓ
  double dv = 0;         // dℓ/dv
  bool clipped = false;  // (v̂ − R)² > (v − R)² (verl's vf_clipfrac counts these)
};
ValueTokenLoss value_token_loss(double v, double v_old, double ret, double clip);

// KL estimator and its derivative with respect to logp.
double kl_value(KlKind k, double logp, double ref_logp, double* dlogp);

enum class Aggregation { TokenMean, SeqMeanTokenMean, SeqMeanTokenSum };
Aggregation aggregation_from_string(const std::string& s);
const char* aggregation_name(Aggregation a);

// Per-token weights for sequences of the given lengths (all tokens of one mini-batch), so that
// the mini-batch loss is Σ_t w_t ℓ_t: token-mean 1/Σ|o|, seq-mean-token-mean 1/(S·|o_i|),
// seq-mean-token-sum 1/S. Independent of how the mini-batch is split into micro-batches.
std::vector<double> aggregation_weights(Aggregation a, const std::vector<int64_t>& lengths);

// verl's micro-batch approximation of token-mean (papers.md §1.7): each micro-batch's masked mean
// scaled by n_seq_micro / n_seq_mini. `micro_of` gives each sequence's micro-batch index.
std::vector<double> verl_microbatch_token_mean_weights(const std::vector<int64_t>& lengths,
                                                       const std::vector<int64_t>& micro_of);

}  // namespace bupo::rl
