#include "rl/validation.hpp"

#include <algorithm>
#include <cstdio>

#include "core/error.hpp"
#include "rl/advantage.hpp"
#include "rl/run.hpp"

namespace bupo::rl {

ValidationSetting validation_setting(const TrainConfig& cfg, size_t index, int64_t set_size) {
  const auto& V = cfg.validation;
  BUPO_CHECK(index < V.sets.size(), "validation set ", index, " of ", V.sets.size());
  ValidationSetting s;
  const std::string& spec = V.sets[index];
  s.name = validation_group_name(spec);
  s.prompts = V.max_prompts > 0 ? std::min(V.max_prompts, set_size) : set_size;
  s.n = V.n_per_set.empty() ? V.n : V.n_per_set[index];
  s.temperature = V.temperature_per_set.empty() ? V.temperature : V.temperature_per_set[index];
  s.top_p = V.top_p;
  s.max_tokens = V.max_tokens > 0 ? V.max_tokens : cfg.rollout.max_tokens;
  s.batch_prompts = V.batch_seqs > 0 ? std::max<int64_t>(1, V.batch_seqs / s.n) : 0;
  for (int64_t k : V.k)
    if (k <= s.n) s.k.push_back(k);
  return s;
}

std::string k_attribute(const std::vector<int64_t>& k) {
  std::string ks;
  for (int64_t v : k) {
    if (!ks.empty()) ks += ',';
    ks += std::to_string(v);
  }
  return ks;
}

ValidationResult validate_set(Run& r, size_t vi) {
  const TrainConfig& cfg = r.cfg;
  const ParallelContext& pc = r.pc;
  const PromptSet& set = *r.val[vi];
  ValidationResult res;
  res.setting = validation_setting(cfg, vi, set.size());
  const ValidationSetting& vs = res.setting;
  const int64_t P = vs.prompts;
  GenerateOptions g =
      generation_options(r, mix64(static_cast<uint64_t>(cfg.trainer.seed) ^ 0xA11DA7Eull),
                         vs.temperature, vs.top_p, vs.max_tokens);
  // each data-parallel replica a contiguous share, generated batch_prompts at a time; random keys
  // are the global prompt indices
  const int64_t p0 = P * pc.dp_rank() / pc.dp_size(), p1 = P * (pc.dp_rank() + 1) / pc.dp_size();
  const int64_t batch = vs.batch_prompts > 0 ? vs.batch_prompts : std::max<int64_t>(1, p1 - p0);
  std::vector<double> correct_d(static_cast<size_t>(P), 0.0);
  for (int64_t b0 = p0; b0 < p1; b0 += batch) {
    const int64_t b1 = std::min(p1, b0 + batch);
    std::vector<std::vector<int32_t>> prompts;
    g.prompt_keys.clear();
    for (int64_t i = b0; i < b1; ++i) {
      prompts.push_back(set.at(i).prompt);
      g.prompt_keys.push_back(i);
    }
    const auto gens = generate(*r.model, prompts, vs.n, g, r.tok.get());
    for (const auto& gn : gens) {
      const Problem& item = set.at(b0 + gn.prompt);
      correct_d[static_cast<size_t>(b0 + gn.prompt)] +=
          verify(gn.text, item.ground_truth, r.scoring, item.data_source).correct;
    }
  }
  pc.dp->allreduce_sum(correct_d.data(), correct_d.size());
  res.correct.assign(static_cast<size_t>(P), 0);
  res.pass.assign(vs.k.size(), 0.0);
  for (int64_t i = 0; i < P; ++i) {
    const auto c = static_cast<int64_t>(correct_d[static_cast<size_t>(i)]);
    res.correct[static_cast<size_t>(i)] = c;
    res.avg += static_cast<double>(c) / static_cast<double>(vs.n);
    for (size_t k = 0; k < vs.k.size(); ++k) res.pass[k] += pass_at_k(vs.n, c, vs.k[k]);
  }
  res.avg /= static_cast<double>(P);
  for (auto& p : res.pass) p /= static_cast<double>(P);
  return res;
}

void validate(Run& r, int64_t s) {
  for (size_t vi = 0; vi < r.val.size(); ++vi) {
    const ValidationResult v = validate_set(r, vi);
    const ValidationSetting& vs = v.setting;
    if (r.log) r.log->write_validation(s, vs.name, v.avg, vs.k, v.pass);
    char buf[240];
    std::snprintf(buf, sizeof buf, "validation %s (%lld prompts x %lld, T = %g): avg@%lld %.4f",
                  vs.name.c_str(), static_cast<long long>(vs.prompts), static_cast<long long>(vs.n),
                  vs.temperature, static_cast<long long>(vs.n), v.avg);
    r.say(buf);
  }
}

}  // namespace bupo::rl
