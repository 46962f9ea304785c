#include "rl/validation.hpp"

#include <cstdio>
#include <filesystem>

#include "rl/advantage.hpp"
#include "rl/run.hpp"

namespace bupo::rl {

void validate(Run& r, int64_t s) {
  const TrainConfig& cfg = r.cfg;
  const ParallelContext& pc = r.pc;
  const int64_t max_tokens =
      cfg.validation.max_tokens > 0 ? cfg.validation.max_tokens : cfg.rollout.max_tokens;
  for (size_t vi = 0; vi < r.val.size(); ++vi) {
    const PromptSet& set = *r.val[vi];
    const int64_t P = cfg.validation.max_prompts > 0
                          ? std::min(cfg.validation.max_prompts, set.size())
                          : set.size();
    std::vector<std::vector<int32_t>> prompts;
    GenerateOptions g =
        generation_options(r, mix64(static_cast<uint64_t>(cfg.trainer.seed) ^ 0xA11DA7Eull),
                           cfg.validation.temperature, cfg.validation.top_p, max_tokens);
    // each data-parallel replica a contiguous share; random keys are the global prompt indices
    const int64_t p0 = P * pc.dp_rank() / pc.dp_size(), p1 = P * (pc.dp_rank() + 1) / pc.dp_size();
    for (int64_t i = p0; i < p1; ++i) {
      prompts.push_back(set.at(i).prompt);
      g.prompt_keys.push_back(i);
    }
    const auto gens = generate(*r.model, prompts, cfg.validation.n, g, r.tok.get());
    std::vector<double> correct_d(static_cast<size_t>(P), 0.0);
    for (const auto& gn : gens)
      correct_d[static_cast<size_t>(p0 + gn.prompt)] +=
          verify(gn.text, set.at(p0 + gn.prompt).ground_truth, r.scoring,
                 set.at(p0 + gn.prompt).data_source)
              .correct;
    pc.dp->allreduce_sum(correct_d.data(), correct_d.size());
    std::vector<int64_t> correct(static_cast<size_t>(P), 0);
    for (int64_t i = 0; i < P; ++i)
      correct[static_cast<size_t>(i)] = static_cast<int64_t>(correct_d[static_cast<size_t>(i)]);
    double avg = 0;
    std::vector<double> pass(cfg.validation.k.size(), 0.0);
    for (int64_t i = 0; i < P; ++i) {
      avg += static_cast<double>(correct[static_cast<size_t>(i)]) /
             static_cast<double>(cfg.validation.n);
      for (size_t k = 0; k < pass.size(); ++k)
        pass[k] +=
            pass_at_k(cfg.validation.n, correct[static_cast<size_t>(i)], cfg.validation.k[k]);
    }
    avg /= static_cast<double>(P);
    for (auto& p : pass) p /= static_cast<double>(P);
    std::string name = std::filesystem::path(cfg.validation.sets[vi]).stem().string();
    if (cfg.validation.sets[vi].rfind("builtin:", 0) == 0) name = cfg.validation.sets[vi].substr(8);
    if (r.log) r.log->write_validation(s, name, avg, cfg.validation.k, pass);
    char buf[200];
    std::snprintf(buf, sizeof buf, "validation %s (%lld prompts x %lld): avg@%lld %.4f",
                  name.c_str(), static_cast<long long>(P), static_cast<long long>(cfg.validation.n),
                  static_cast<long long>(cfg.validation.n), avg);
    r.say(buf);
  }
}

}  // namespace bupo::rl
