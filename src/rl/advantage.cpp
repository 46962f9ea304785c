#include "rl/advantage.hpp"

#include <cmath>

#include "core/error.hpp"

namespace bupo::rl {

std::vector<double> grpo_advantages(const std::vector<double>& rewards, int64_t group_size,
                                    bool normalize_std, double eps) {
  BUPO_CHECK(group_size >= 1 && rewards.size() % static_cast<size_t>(group_size) == 0,
             "grpo_advantages: ", rewards.size(), " rewards do not form groups of ", group_size);
  const size_t G = static_cast<size_t>(group_size);
  std::vector<double> adv(rewards.size());
  for (size_t g0 = 0; g0 < rewards.size(); g0 += G) {
    double mean = 0, sd = 1;
    if (G > 1) {
      for (size_t i = 0; i < G; ++i) mean += rewards[g0 + i];
      mean /= static_cast<double>(G);
      double ss = 0;
      for (size_t i = 0; i < G; ++i) ss += (rewards[g0 + i] - mean) * (rewards[g0 + i] - mean);
      sd = std::sqrt(ss / static_cast<double>(G - 1));
    }
    for (size_t i = 0; i < G; ++i)
      adv[g0 + i] = normalize_std ? (rewards[g0 + i] - mean) / (sd + eps) : rewards[g0 + i] - mean;
  }
  return adv;
}

std::vector<double> rloo_advantages(const std::vector<double>& rewards, int64_t group_size) {
  BUPO_CHECK(group_size >= 1 && rewards.size() % static_cast<size_t>(group_size) == 0,
             "rloo_advantages: ", rewards.size(), " rewards do not form groups of ", group_size);
  const size_t G = static_cast<size_t>(group_size);
  std::vector<double> adv(rewards);
  if (G == 1) return adv;
  const double k = static_cast<double>(G) / static_cast<double>(G - 1);
  for (size_t g0 = 0; g0 < rewards.size(); g0 += G) {
    double mean = 0;
    for (size_t i = 0; i < G; ++i) mean += rewards[g0 + i];
    mean /= static_cast<double>(G);
    for (size_t i = 0; i < G; ++i) adv[g0 + i] = rewards[g0 + i] * k - mean * k;  // verl's form
  }
  return adv;
}

void whiten_tokens(std::vector<std::vector<double>>& x) {
  double sum = 0, n = 0;
  for (const auto& v : x)
    for (size_t t = v.size(); t-- > 0;) {  // (the order REINFORCE++'s returns are made in)
      sum += v[t];
      n += 1;
    }
  if (n == 0) return;
  const double mean = sum / n;
  double ss = 0;
  for (const auto& v : x)
    for (double g : v) ss += (g - mean) * (g - mean);
  const double var = n > 1 ? ss / (n - 1) : 0.0;  // torch masked_var, unbiased
  const double inv = 1.0 / std::sqrt(var + 1e-8);
  for (auto& v : x)
    for (double& g : v) g = (g - mean) * inv;
}

std::vector<std::vector<double>> reinforce_pp_advantages(
    const std::vector<std::vector<double>>& token_rewards, double gamma) {
  std::vector<std::vector<double>> ret(token_rewards.size());
  for (size_t i = 0; i < token_rewards.size(); ++i) {
    const auto& r = token_rewards[i];
    ret[i].resize(r.size());
    double g = 0;
    for (size_t t = r.size(); t-- > 0;) {
      g = r[t] + gamma * g;
      ret[i][t] = g;
    }
  }
  whiten_tokens(ret);
  return ret;
}

GaeResult gae_advantages(const std::vector<std::vector<double>>& token_rewards,
                         const std::vector<std::vector<double>>& values, double gamma, double lam) {
  BUPO_CHECK(values.size() == token_rewards.size(), "gae_advantages: ", token_rewards.size(),
             " responses of rewards but ", values.size(), " of values");
  GaeResult g;
  g.advantages.resize(token_rewards.size());
  g.returns.resize(token_rewards.size());
  for (size_t i = 0; i < token_rewards.size(); ++i) {
    const auto &r = token_rewards[i], &v = values[i];
    BUPO_CHECK(v.size() == r.size(), "gae_advantages: response ", i, " has ", r.size(),
               " token rewards but ", v.size(), " values");
    auto &a = g.advantages[i], &ret = g.returns[i];
    a.resize(r.size());
    ret.resize(r.size());
    double last = 0;  // A_{t+1}; 0 past the end, where V is 0 too
    for (size_t t = r.size(); t-- > 0;) {
      const double next = t + 1 < r.size() ? v[t + 1] : 0.0;
      last = r[t] + gamma * next - v[t] + gamma * lam * last;
      a[t] = last;
      ret[t] = last + v[t];
    }
  }
  whiten_tokens(g.advantages);
  return g;
}

TokenGroupResult token_group_advantages(const std::vector<double>& rewards,
                                        const std::vector<int64_t>& lengths, int64_t group_size,
                                        double fallback_threshold, double eps, int64_t pad_to) {
  BUPO_CHECK(lengths.size() == rewards.size(), "token_group_advantages: ", rewards.size(),
             " rewards but ", lengths.size(), " lengths");
  const auto grpo = grpo_advantages(rewards, group_size, true, eps);
  const size_t G = static_cast<size_t>(group_size);
  TokenGroupResult r;
  r.advantages.resize(rewards.size());
  for (size_t g0 = 0; g0 < rewards.size(); g0 += G) {
    double n = 0, sum = 0;
    for (size_t i = 0; i < G; ++i) {
      n += static_cast<double>(lengths[g0 + i]);
      sum += rewards[g0 + i] * static_cast<double>(lengths[g0 + i]);
    }
    bool fallback = n <= 0;
    double mu = 0, sigma = 0;
    if (!fallback) {
      mu = sum / n;
      double ss = 0;
      for (size_t i = 0; i < G; ++i)
        ss +=
            static_cast<double>(lengths[g0 + i]) * (rewards[g0 + i] - mu) * (rewards[g0 + i] - mu);
      sigma = std::sqrt(ss / n);  // population std over tokens
      for (size_t i = 0; i < G; ++i) {
        const double a = (rewards[g0 + i] - mu) / (sigma + eps);
        if (lengths[g0 + i] > 0 && std::fabs(a) >= fallback_threshold) fallback = true;
        r.advantages[g0 + i] = a;
        // a padded position holds 0 (the reward times the response mask)
        if (lengths[g0 + i] < pad_to && std::fabs((0.0 - mu) / (sigma + eps)) >= fallback_threshold)
          fallback = true;
      }
    }
    r.fell_back.push_back(fallback ? 1 : 0);
    if (fallback)
      for (size_t i = 0; i < G; ++i) r.advantages[g0 + i] = grpo[g0 + i];
  }
  return r;
}

double overlong_penalty(int64_t length, int64_t max_len, int64_t cache_len, double factor) {
  BUPO_CHECK(cache_len > 0 && cache_len <= max_len, "overlong shaping: buffer ", cache_len,
             " must be in (0, max_len = ", max_len, "]");
  const int64_t expected = max_len - cache_len;
  if (length <= expected) return 0.0;
  if (length <= max_len)
    return factor * static_cast<double>(expected - length) / static_cast<double>(cache_len);
  return -factor;
}

std::vector<int64_t> informative_groups(const std::vector<double>& accuracy, int64_t group_size) {
  const size_t G = static_cast<size_t>(group_size);
  std::vector<int64_t> keep;
  for (size_t g0 = 0; g0 < accuracy.size(); g0 += G) {
    bool all_equal = true;
    for (size_t i = 1; i < G; ++i)
      if (accuracy[g0 + i] != accuracy[g0]) all_equal = false;
    if (!all_equal) keep.push_back(static_cast<int64_t>(g0 / G));
  }
  return keep;
}

double pass_at_k(int64_t n, int64_t c, int64_t k) {
  BUPO_CHECK(k >= 1 && k <= n && c >= 0 && c <= n,
             "pass@k: need 1 <= k <= n and 0 <= c <= n (n=", n, ", c=", c, ", k=", k, ")");
  if (n - c < k) return 1.0;
  double prod = 1.0;  // C(n−c, k)/C(n, k) = Π_{i=n−c+1}^{n} (1 − k/i)
  for (int64_t i = n - c + 1; i <= n; ++i)
    prod *= 1.0 - static_cast<double>(k) / static_cast<double>(i);
  return 1.0 - prod;
}

}  // namespace bupo::rl
