#include "rl/loss.hpp"

#include <algorithm>
#include <cmath>
#include <map>

#include "core/error.hpp"

namespace bupo::rl {

KlKind kl_kind_from_string(const std::string& s) {
  if (s == "k1") return KlKind::K1;
  if (s == "k2") return KlKind::K2;
  if (s == "k3") return KlKind::K3;
  fail("KL estimator '", s, "': expected k1, k2 or k3");
}

TokenLoss ppo_token_loss(double logp, double old_logp, double adv, double eps_l, double eps_r,
                         double dual_clip_c, double log_ratio_clamp) {
  TokenLoss t;
  double lr = logp - old_logp;
  bool lr_clamped = false;
  if (log_ratio_clamp > 0 && (lr > log_ratio_clamp || lr < -log_ratio_clamp)) {
    lr = std::clamp(lr, -log_ratio_clamp, log_ratio_clamp);
    lr_clamped = true;
  }
  const double r = std::exp(lr);
  t.ratio = r;
  const double rc = std::clamp(r, 1.0 - eps_l, 1.0 + eps_r);
  const double l1 = -adv * r, l2 = -adv * rc;
  double l = l1;
  double d = lr_clamped ? 0.0 : -adv * r;  // dL1/dlogp
  if (l2 > l1) {                           // the clipped branch: constant in logp
    l = l2;
    d = 0.0;
    t.clipped = true;
    t.clipped_low = r < 1.0 - eps_l;
    t.clipped_high = r > 1.0 + eps_r;
  }
  if (adv < 0 && dual_clip_c > 1.0) {
    const double l3 = -adv * dual_clip_c;
    if (l3 < l) {
      l = l3;
      d = 0.0;
      t.dual_clipped = true;
    }
  }
  t.loss = l;
  t.dlogp = d;
  return t;
}

ValueTokenLoss value_token_loss(double v, double v_old, double ret, double clip) {
  ValueTokenLoss o;
  const double l1 = (v - ret) * (v - ret);
  if (clip <= 0) {
    o.loss = 0.5 * l1;
    o.dv = v - ret;
    return o;
  }
  const double vc = std::clamp(v, v_old - clip, v_old + clip);
  const double l2 = (vc - ret) * (vc - ret);
  o.clipped = l2 > l1;
  o.loss = 0.5 * std::max(l1, l2);
  o.dv = o.clipped ? 0.0 : v - ret;
  return o;
}

double kl_value(KlKind k, double logp, double ref_logp, double* dlogp) {
  const double x = logp - ref_logp;
  switch (k) {
    case KlKind::K1:
      *dlogp = 1.0;
      return x;
    case KlKind::K2:
      *dlogp = x;
      return 0.5 * x * x;
    case KlKind::K3: {  // verl's low_var_kl: log(ref/π) clamped to ±20, the estimate to [-10, 10]
      const double kl = std::clamp(-x, -20.0, 20.0);
      const double e = std::exp(kl);  // ref/π
      const double v = e - kl - 1.0;  // >= 0
      if (v > 10.0 || kl != -x) {     // a clamp is flat: no gradient through it (torch.clamp)
        *dlogp = 0.0;
        return std::min(v, 10.0);
      }
      *dlogp = 1.0 - e;
      return v;
    }
  }
  return 0;
}

Aggregation aggregation_from_string(const std::string& s) {
  if (s == "token-mean") return Aggregation::TokenMean;
  if (s == "seq-mean-token-mean") return Aggregation::SeqMeanTokenMean;
  if (s == "seq-mean-token-sum") return Aggregation::SeqMeanTokenSum;
  fail("loss aggregation '", s,
       "': expected token-mean, seq-mean-token-mean or seq-mean-token-sum");
}
const char* aggregation_name(Aggregation a) {
  switch (a) {
    case Aggregation::TokenMean:
      return "token-mean";
    case Aggregation::SeqMeanTokenMean:
      return "seq-mean-token-mean";
    case Aggregation::SeqMeanTokenSum:
      return "seq-mean-token-sum";
  }
  return "?";
}

std::vector<double> aggregation_weights(Aggregation a, const std::vector<int64_t>& lengths) {
  int64_t total = 0;
  for (int64_t n : lengths) total += n;
  std::vector<double> w;
  w.reserve(static_cast<size_t>(total));
  const double S = static_cast<double>(lengths.size());
  for (int64_t n : lengths) {
    double v = 0;
    switch (a) {
      case Aggregation::TokenMean:
        v = total > 0 ? 1.0 / static_cast<double>(total) : 0.0;
        break;
      case Aggregation::SeqMeanTokenMean:
        v = 1.0 / (S * static_cast<double>(n));
        break;
      case Aggregation::SeqMeanTokenSum:
        v = 1.0 / S;
        break;
    }
    w.insert(w.end(), static_cast<size_t>(n), v);
  }
  return w;
}

std::vector<double> verl_microbatch_token_mean_weights(const std::vector<int64_t>& lengths,
                                                       const std::vector<int64_t>& micro_of) {
  BUPO_CHECK(lengths.size() == micro_of.size(),
             "verl token-mean: lengths and micro-batch ids differ in size");
  std::map<int64_t, std::pair<int64_t, int64_t>> per;  // micro -> (tokens, sequences)
  for (size_t i = 0; i < lengths.size(); ++i) {
    per[micro_of[i]].first += lengths[i];
    per[micro_of[i]].second += 1;
  }
  const double S = static_cast<double>(lengths.size());
  std::vector<double> w;
  for (size_t i = 0; i < lengths.size(); ++i) {
    const auto& [tok, seqs] = per[micro_of[i]];
    const double v = tok > 0 ? (static_cast<double>(seqs) / S) / static_cast<double>(tok) : 0.0;
    w.insert(w.end(), static_cast<size_t>(lengths[i]), v);
  }
  return w;
}

}  // namespace bupo::rl
