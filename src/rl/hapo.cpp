#include "rl/hapo.hpp"

#include <algorithm>
#include <cfenv>
#include <cmath>

#include "core/error.hpp"

namespace bupo::rl {

EntropyStats entropy_stats(const float* H, int64_t n, double quantile) {
  EntropyStats s;
  if (n <= 0) return s;
  std::vector<double> x(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i)
    x[static_cast<size_t>(i)] = std::log(std::max<double>(H[i], 1e-8));
  std::vector<double> sorted = x;
  std::sort(sorted.begin(), sorted.end());
  // Python round(): ties to even — std::nearbyint under the default FE_TONEAREST mode
  const double pos = std::nearbyint(quantile * static_cast<double>(n - 1));
  const size_t idx = static_cast<size_t>(std::clamp(pos, 0.0, static_cast<double>(n - 1)));
  s.pivot = sorted[idx];
  double ss = 0;
  for (double v : x) ss += (v - s.pivot) * (v - s.pivot);
  s.std = std::sqrt(std::max(ss / static_cast<double>(n), 1e-8));
  double pmax = -1e300, nmin = 1e300;
  bool any_pos = false, any_neg = false;
  for (double v : x) {
    const double h = (v - s.pivot) / s.std;
    if (h > 0) {
      pmax = std::max(pmax, h);
      any_pos = true;
    }
    if (h < 0) {
      nmin = std::min(nmin, h);
      any_neg = true;
    }
  }
  s.pos_max = any_pos ? std::max(pmax, 1e-8) : 1e-8;
  s.neg_min = any_neg ? std::min(nmin, -1e-8) : -1e-8;
  s.valid = true;
  return s;
}

namespace {
double scale_h(double h, const EntropyStats& s, HSign sign) {
  if (h > 0) return h / s.pos_max;
  return sign == HSign::Code ? h / s.neg_min : h / std::fabs(s.neg_min);
}
}  // namespace

void entropy_h(const float* H, int64_t n, double quantile, HSign sign, float* h_tilde,
               EntropyStats* stats_out) {
  const EntropyStats s = entropy_stats(H, n, quantile);
  for (int64_t i = 0; i < n; ++i) {
    const double h = (std::log(std::max<double>(H[i], 1e-8)) - s.pivot) / s.std;
    h_tilde[i] = static_cast<float>(scale_h(h, s, sign));
  }
  if (stats_out) *stats_out = s;
}

double adaptive_temperature(double entropy, const EntropyStats& s, double t_base, double tau,
                            HSign sign) {
  if (!s.valid) return t_base;
  const double h = (std::log(std::max(entropy, 1e-6)) - s.pivot) / (s.std + 1e-6);
  const double ht = std::clamp(scale_h(h, s, sign), -1.0, 1.0);
  return t_base * (1.0 + tau * ht);
}

void adaptive_clip(float h_tilde, double eps_low, double eps_high, double alpha, float* eps_l,
                   float* eps_r) {
  *eps_l = static_cast<float>(h_tilde <= 0 ? eps_low * (1.0 - alpha * h_tilde) : eps_low);
  *eps_r = static_cast<float>(h_tilde > 0 ? eps_high * (1.0 + alpha * h_tilde) : eps_high);
}

double redistribute_advantage(double adv, float h_tilde, double ratio, float eps_l, float eps_r,
                              double beta) {
  const double nl = 1.0 - eps_l / 2.0, nr = 1.0 + eps_r / 2.0;
  const bool neutral = nl < ratio && ratio < nr;
  const bool apply = h_tilde > 0 ? !neutral : neutral;
  return apply ? adv * (1.0 + beta * h_tilde) : adv;
}

}  // namespace bupo::rl
