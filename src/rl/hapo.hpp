// HAPO's token-entropy components (papers.md §2.1–2.5).
//
// The shared signal h~ from token entropies H (compute_entropy_h of the released code):
//   x = log(max(H, 1e-8)); pivot = nearest ρ-quantile of x (sorted ascending, index
//   round(ρ·(n−1)) with ties to even, as Python's round); h = (x − pivot) / sqrt(max(mean(h²),
//   1e-8)) — the RMS deviation from the pivot, not a centred std; then
//     h~ = h / max(h_pos)            for h > 0
//     h~ = h / min(h_neg)   (Code)   for h ≤ 0 — positive: the released code's V-shape, h~ ∈ [0,1]
//     h~ = h / |min(h_neg)| (Paper)  for h ≤ 0 — negative: the prose's signed h~ ∈ [−1,1]
// (papers.md §2.1 "sign issue"; the variant is the config key hapo.sign).
#pragma once
#include <cstdint>
#include <vector>

namespace bupo::rl {

enum class HSign { Code, Paper };

struct EntropyStats {
  bool valid = false;
  double pivot = 0, std = 1;               // of log-entropy
  double pos_max = 1e-8, neg_min = -1e-8;  // extremes of the normalised h (clamped as the code)
};

// Statistics over n entropies (all valid tokens of the tensor passed in).
EntropyStats entropy_stats(const float* H, int64_t n, double quantile = 0.8);
// h~ of n entropies with their own statistics (the loss side: per micro-batch, §2.1).
void entropy_h(const float* H, int64_t n, double quantile, HSign sign, float* h_tilde,
               EntropyStats* stats_out = nullptr);

// Component A (§2.2): the sampler's per-token temperature from the previous step's statistics:
// h = (log(max(H,1e-6)) − pivot)/(std + 1e-6), h~ as above, clamped to [−1, 1],
// T = T_base·(1 + τ·h~). Without statistics (step 1) T = T_base.
double adaptive_temperature(double entropy, const EntropyStats& s, double t_base, double tau,
                            HSign sign);

// Component D (§2.5): per-token clip bounds.
void adaptive_clip(float h_tilde, double eps_low, double eps_high, double alpha, float* eps_l,
                   float* eps_r);
// Component C (§2.4): advantage redistribution; neutral zone (1 − eps_l/2, 1 + eps_r/2), strict.
double redistribute_advantage(double adv, float h_tilde, double ratio, float eps_l, float eps_r,
                              double beta);

}  // namespace bupo::rl
