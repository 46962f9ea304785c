#include "rl/rollout.hpp"

#include <algorithm>
#include <cstring>
#include <numeric>
#include <string>

#include "rl/advantage.hpp"
#include "rl/run.hpp"

namespace bupo::rl {

MiniBatch replica_share(const ParallelContext& pc, const MiniBatch& all) {
  const int64_t M = static_cast<int64_t>(all.size()), R = pc.dp_size(), k = pc.dp_rank();
  return {all.begin() + M * k / R, all.begin() + M * (k + 1) / R};
}

MiniBatch contiguous_micro_batches(const std::vector<const Rollout*>& seqs, int64_t per_micro) {
  MiniBatch mb;
  const auto n = static_cast<int64_t>(seqs.size());
  for (int64_t u0 = 0; u0 < n; u0 += per_micro)
    mb.emplace_back(seqs.begin() + u0, seqs.begin() + std::min(n, u0 + per_micro));
  return mb;
}

MiniBatch balanced_micro_batches(const std::vector<const Rollout*>& seqs, int64_t per_micro) {
  const auto n = static_cast<int64_t>(seqs.size());
  const int64_t m = (n + per_micro - 1) / per_micro;
  std::vector<int64_t> room(static_cast<size_t>(m), per_micro), tokens(static_cast<size_t>(m), 0);
  if (m > 0) room.back() = n - per_micro * (m - 1);
  std::vector<int64_t> order(static_cast<size_t>(n));
  std::iota(order.begin(), order.end(), 0);
  auto len = [&](int64_t i) {
    return static_cast<int64_t>(seqs[static_cast<size_t>(i)]->ids.size());
  };
  std::stable_sort(order.begin(), order.end(),
                   [&](int64_t a, int64_t b) { return len(a) > len(b); });
  std::vector<std::vector<int64_t>> members(static_cast<size_t>(m));
  for (int64_t i : order) {
    size_t best = 0;
    bool found = false;
    for (size_t u = 0; u < members.size(); ++u)
      if (room[u] > 0 && (!found || tokens[u] < tokens[best])) {
        best = u;
        found = true;
      }
    --room[best];
    tokens[best] += len(i);
    members[best].push_back(i);
  }
  MiniBatch mb;
  for (auto& mem : members) {
    std::sort(mem.begin(), mem.end());
    MicroBatch mic;
    for (int64_t i : mem) mic.push_back(seqs[static_cast<size_t>(i)]);
    mb.push_back(std::move(mic));
  }
  return mb;
}

GenerateOptions generation_options(const Run& r, uint64_t seed, double temperature, double top_p,
                                   int64_t max_tokens) {
  GenerateOptions g;
  g.max_new_tokens = max_tokens;
  g.temperature = static_cast<float>(temperature);
  g.top_p = static_cast<float>(top_p);
  g.top_k = r.cfg.rollout.top_k;
  g.seed = seed;
  g.stop_ids = r.stop_ids;
  g.stop_strings = r.cfg.rollout.stop;
  g.vocab_limit = r.tok->vocab_size();
  return g;
}

namespace {
// Every replica's rollouts to every rank, in replica order (one broadcast per replica).
std::vector<Rollout> gather_over_dp(Run& r, std::vector<Rollout> mine) {
  const ParallelContext& pc = r.pc;
  if (pc.dp_size() == 1) return mine;
  std::string b;
  auto put = [&](const void* p, size_t n) { b.append(static_cast<const char*>(p), n); };
  auto put_i = [&](int64_t v) { put(&v, 8); };
  for (const auto& x : mine) {
    for (int64_t v : {x.problem, x.group, x.sample, x.prompt_len, int64_t{x.truncated}}) put_i(v);
    put(&x.reward, 8);
    put(&x.score, 8);
    put_i(static_cast<int64_t>(x.ids.size()));
    put(x.ids.data(), x.ids.size() * 4);
    put_i(static_cast<int64_t>(x.raw_entropy.size()));
    put(x.raw_entropy.data(), x.raw_entropy.size() * 4);
    put(x.temperature.data(), x.temperature.size() * 4);
    put(x.rollout_logp.data(), x.rollout_logp.size() * 4);
  }
  std::vector<Rollout> all;
  for (int src = 0; src < pc.dp_size(); ++src) {
    std::string buf = src == pc.dp_rank() ? b : std::string();
    int64_t n = static_cast<int64_t>(buf.size());
    pc.dp->broadcast(&n, 8, src);
    buf.resize(static_cast<size_t>(n));
    if (n > 0) pc.dp->broadcast(buf.data(), buf.size(), src);
    size_t o = 0;
    auto get = [&](void* p, size_t k) {
      std::memcpy(p, buf.data() + o, k);
      o += k;
    };
    auto get_i = [&] {
      int64_t v;
      get(&v, 8);
      return v;
    };
    while (o < buf.size()) {
      Rollout x;
      x.problem = get_i();
      x.group = get_i();
      x.sample = get_i();
      x.prompt_len = get_i();
      x.truncated = get_i() != 0;
      get(&x.reward, 8);
      get(&x.score, 8);
      x.ids.resize(static_cast<size_t>(get_i()));
      get(x.ids.data(), x.ids.size() * 4);
      x.raw_entropy.resize(static_cast<size_t>(get_i()));
      x.temperature.resize(x.raw_entropy.size());
      x.rollout_logp.resize(x.raw_entropy.size());
      get(x.raw_entropy.data(), x.raw_entropy.size() * 4);
      get(x.temperature.data(), x.temperature.size() * 4);
      get(x.rollout_logp.data(), x.rollout_logp.size() * 4);
      all.push_back(std::move(x));
    }
  }
  return all;
}
}  // namespace

std::vector<Rollout> sample_rollouts(Run& r, const std::vector<Sampler::Draw>& all_draws,
                                     int64_t seed_step, const EntropyStats& stats) {
  const TrainConfig& cfg = r.cfg;
  const int64_t nd = static_cast<int64_t>(all_draws.size()), R = r.pc.dp_size(), k = r.pc.dp_rank();
  const int64_t b0 = nd * k / R, b1 = nd * (k + 1) / R;
  const std::vector<Sampler::Draw> draws(all_draws.begin() + b0, all_draws.begin() + b1);
  std::vector<std::vector<int32_t>> prompts;
  GenerateOptions g =
      generation_options(r,
                         mix64(static_cast<uint64_t>(cfg.trainer.seed) * 1000003ull +
                               static_cast<uint64_t>(seed_step)),
                         cfg.rollout.temperature, cfg.rollout.top_p, cfg.rollout.max_tokens);
  for (const auto& d : draws) {
    prompts.push_back(r.train->at(d.index).prompt);
    g.prompt_keys.push_back(d.key);
  }
  if (cfg.hapo.adaptive_temperature && stats.valid) {  // HAPO A (papers.md §2.2)
    const double tb = cfg.rollout.temperature, tau = cfg.hapo.tau;
    const HSign sg = r.sign;
    g.temperature_hook = [stats, tb, tau, sg](const TokenContext& c) {
      return static_cast<float>(adaptive_temperature(c.entropy, stats, tb, tau, sg));
    };
  }
  const auto gens = generate(*r.model, prompts, cfg.rollout.n, g, r.tok.get());
  std::vector<Rollout> out;
  out.reserve(gens.size());
  for (const auto& gn : gens) {
    Rollout x;
    const auto& d = draws[static_cast<size_t>(gn.prompt)];
    x.problem = d.index;
    x.group = b0 + gn.prompt;
    x.sample = gn.sample;
    x.ids = prompts[static_cast<size_t>(gn.prompt)];
    x.prompt_len = static_cast<int64_t>(x.ids.size());
    x.ids.insert(x.ids.end(), gn.ids.begin(), gn.ids.end());
    x.truncated = gn.finish_reason == "length";
    x.raw_entropy = gn.raw_entropies;
    x.temperature = gn.temperatures;
    x.rollout_logp = gn.logprobs;
    // reward: the verifier on the decoded answer, DAPO's overlong penalty
    const Problem& pb = r.train->at(d.index);
    const Verdict v = verify(gn.text, pb.ground_truth, r.scoring, pb.data_source);
    x.score = v.correct ? 1.0 : 0.0;
    x.reward = reward_value(v, r.reward_kind);
    if (cfg.algorithm.overlong_buffer > 0)
      x.reward += overlong_penalty(x.resp_len(), cfg.rollout.max_tokens,
                                   std::min(cfg.algorithm.overlong_buffer, cfg.rollout.max_tokens),
                                   cfg.algorithm.overlong_factor);
    out.push_back(std::move(x));
  }
  return gather_over_dp(r, std::move(out));
}

RolloutBatch collect_rollouts(Run& r, int64_t s) {
  const auto t0 = Clock::now();
  const int64_t B = r.cfg.trainer.prompts_per_step, G = r.cfg.rollout.n;
  const EntropyStats stats = r.st.hapo_stats;
  RolloutBatch rb;
  while (static_cast<int64_t>(rb.rolls.size()) < B * G) {
    ++rb.gen_batches;
    const auto draws = r.sampler->next(B);
    auto batch = sample_rollouts(r, draws, s * 1000 + rb.gen_batches, stats);
    for (const auto& x : batch) {
      rb.all_scores.push_back(x.score);
      rb.all_rewards.push_back(x.reward);
      rb.all_lengths.push_back(static_cast<double>(x.resp_len()));
    }
    rb.groups_seen += B;
    if (!r.cfg.algorithm.dynamic_sampling) {
      rb.rolls = std::move(batch);
      rb.groups_kept = B;
      break;
    }
    std::vector<double> acc;
    for (const auto& x : batch) acc.push_back(x.score);
    for (int64_t g : informative_groups(acc, G)) {
      if (static_cast<int64_t>(rb.rolls.size()) >= B * G) break;
      for (int64_t i = 0; i < G; ++i) rb.rolls.push_back(batch[static_cast<size_t>(g * G + i)]);
      ++rb.groups_kept;
    }
    if (rb.gen_batches >= r.cfg.algorithm.max_gen_batches) break;
  }
  for (int64_t i = 0; i < static_cast<int64_t>(rb.rolls.size()); ++i)
    rb.rolls[static_cast<size_t>(i)].group = i / G;
  rb.seconds = seconds_since(t0);
  return rb;
}

}  // namespace bupo::rl
