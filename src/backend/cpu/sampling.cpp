#include "backend/cpu/sampling.hpp"

#include "backend/device_math.hpp"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

namespace bupo::cpu {

float entropy_of_logits(const float* z, int64_t V) {
  const float m = *std::max_element(z, z + V);
  double S = 0.0, T = 0.0;
  for (int64_t j = 0; j < V; ++j) {
    const double w = static_cast<double>(z[j]) - m, e = std::exp(w);
    S += e;
    T += e * w;
  }
  return static_cast<float>(dmath::clamp_entropy(std::log(S) - T / S));
}

int32_t sample_token(const float* z, int64_t V, float temperature, float top_p, int64_t top_k,
                     double u, float* logprob, float* entropy, double* work_p, int32_t* work_idx) {
  if (temperature <= 0.0f) {  // greedy; report the T = 1 distribution
    const auto best = static_cast<int32_t>(std::max_element(z, z + V) - z);
    const float m = z[best];
    double S = 0.0, T = 0.0;
    for (int64_t j = 0; j < V; ++j) {
      const double w = static_cast<double>(z[j]) - m, e = std::exp(w);
      S += e;
      T += e * w;
    }
    *logprob = static_cast<float>(-std::log(S));
    *entropy = static_cast<float>(dmath::clamp_entropy(std::log(S) - T / S));
    return best;
  }
  std::vector<double> own_p;
  std::vector<int32_t> own_idx;
  if (work_p == nullptr) {
    own_p.resize(static_cast<size_t>(V));
    work_p = own_p.data();
  }
  // tempered log-softmax in double
  const double inv_t = 1.0 / temperature;
  const float m = *std::max_element(z, z + V);
  double* const p = work_p;  // (V)
  double S = 0.0, T = 0.0;
  for (int64_t j = 0; j < V; ++j) {
    const double w = (static_cast<double>(z[j]) - m) * inv_t;
    p[j] = std::exp(w);
    S += p[j];
    T += p[j] * w;
  }
  const double logS = std::log(S);
  *entropy = static_cast<float>(dmath::clamp_entropy(logS - T / S));
  int32_t tok = -1;
  if (top_k <= 0 && top_p >= 1.0f) {
    double target = u * S, c = 0.0;  // inverse CDF in token-id order
    for (int64_t j = 0; j < V; ++j) {
      c += p[j];
      if (c > target) {
        tok = static_cast<int32_t>(j);
        break;
      }
    }
    if (tok < 0) tok = static_cast<int32_t>(V - 1);
  } else {
    if (work_idx == nullptr) {
      own_idx.resize(static_cast<size_t>(V));
      work_idx = own_idx.data();
    }
    int32_t* const idx = work_idx;  // (V)
    std::iota(idx, idx + V, 0);
    auto by_p = [&](int32_t a, int32_t b) { return p[a] > p[b] || (p[a] == p[b] && a < b); };
    size_t keep = static_cast<size_t>(V);
    if (top_k > 0 && top_k < V) {
      std::partial_sort(idx, idx + top_k, idx + V, by_p);
      keep = static_cast<size_t>(top_k);
    } else {
      std::sort(idx, idx + V, by_p);
    }
    if (top_p < 1.0f) {  // smallest prefix with mass >= top_p (at least one token)
      double c = 0.0;
      for (size_t i = 0; i < keep; ++i) {
        c += p[idx[i]] / S;
        if (c >= top_p) {
          keep = i + 1;
          break;
        }
      }
    }
    double mass = 0.0;
    for (size_t i = 0; i < keep; ++i) mass += p[idx[i]];
    double target = u * mass, c = 0.0;
    tok = idx[keep - 1];
    for (size_t i = 0; i < keep; ++i) {
      c += p[idx[i]];
      if (c > target) {
        tok = idx[i];
        break;
      }
    }
  }
  *logprob = static_cast<float>((static_cast<double>(z[tok]) - m) * inv_t - logS);
  return tok;
}

}  // namespace bupo::cpu
