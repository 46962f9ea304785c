// `bupo eval`: a model or checkpoint scored offline as training validates (rl/evaluation.hpp).
#include <cstdio>
#include <memory>
#include <string>
#include <type_traits>
#include <vector>

#include "cli/commands.hpp"
#include "cli/validators.hpp"
#include "core/error.hpp"
#include "io/json_util.hpp"
#include "model/config.hpp"
#include "parallel/mpi_comm.hpp"
#include "rl/evaluation.hpp"

namespace bupo::cli {

namespace {
// A TOML value for --set: strings quoted (a JSON string is a TOML basic string), arrays bracketed.
std::string toml_string(const std::string& s) {
  return json(s).dump();
}
template <typename T>
std::string toml_array(const std::vector<T>& v, bool quote = false) {
  std::string a = "[";
  for (size_t i = 0; i < v.size(); ++i) {
    if (i) a += ", ";
    if constexpr (std::is_same_v<T, std::string>)
      a += quote ? toml_string(v[i]) : v[i];
    else
      a += json(v[i]).dump();
  }
  return a + "]";
}
}  // namespace

Runner add_eval(CLI::App& app) {
  struct Opts {
    rl::EvalOptions e;
    std::vector<std::string> set, sets;
    std::vector<int64_t> n, k;
    std::vector<double> temperature;
    double top_p = -1, timeout_s = 600;
    int64_t max_tokens = -1, max_prompts = -1, batch_seqs = -1, seed = -1;
    std::string tmpl, grader, reward_mode, precision;
    int tp = 1, pp = 1;
  };
  auto o = std::make_shared<Opts>();
  auto* sub = app.add_subcommand(
      "eval",
      "Score a model or a training checkpoint on validation sets as `bupo train` validates: "
      "avg@n and unbiased pass@k per set, each set with its own n and temperature, into an HDF5 "
      "file with the /validation/<set> groups of diagnostics.h5 (schema bupo-eval, README). A "
      "checkpoint folder brings its train_config.toml (template, grader, seeds, validation.*), so "
      "step S's checkpoint reproduces the numbers the run logged at step S.");
  sub->add_option("--model", o->e.model,
                  "checkpoint folder (<run>/checkpoints/step_N), Hugging Face folder or .gguf")
      ->required();
  sub->add_option("--out,-o", o->e.out, "output HDF5 file")->required();
  sub->add_option("--config,-c", o->e.config,
                  "TOML whose keys apply (default: the checkpoint's train_config.toml)");
  sub->add_option("--set", o->set, "override a key: --set validation.max_prompts=50 (repeatable)");
  sub->add_option("--sets", o->sets,
                  "validation sets: JSONL files or builtin:arithmetic (as validation.sets)")
      ->check(kNonEmpty);
  sub->add_option("--n", o->n,
                  "samples per prompt: one value for every set, or one per --sets entry "
                  "(validation.n / validation.n_per_set)")
      ->check(integer_in<int64_t>(1, 1 << 20));
  sub->add_option("--temperature", o->temperature,
                  "sampling temperature: one value, or one per set (validation.temperature / "
                  "temperature_per_set)")
      ->check(number_in(0.0, 100.0));
  sub->add_option("--k", o->k, "pass@k values (validation.k); a set reports those <= its n")
      ->check(integer_in<int64_t>(1, 1 << 20));
  sub->add_option("--top-p", o->top_p, "nucleus sampling mass (validation.top_p)")
      ->check(number_in(1e-6, 1.0));
  sub->add_option("--max-tokens", o->max_tokens, "response tokens (validation.max_tokens)")
      ->check(integer_in<int64_t>(1, ModelLimits::max_positions));
  sub->add_option("--max-prompts", o->max_prompts, "prompts per set (0: all)")
      ->check(integer_in<int64_t>(0));
  sub->add_option("--batch-seqs", o->batch_seqs,
                  "sequences generated together (validation.batch_seqs; not the results)")
      ->check(integer_in<int64_t>(0));
  sub->add_option("--seed", o->seed, "the run's seed (trainer.seed), which keys the samples")
      ->check(integer_in<int64_t>(0));
  sub->add_option("--template", o->tmpl, "chat template of the prompts (model.template)");
  sub->add_option("--grader", o->grader, "algorithm.grader: math, math_dapo or by_data_source")
      ->check(CLI::IsMember({"math", "math_dapo", "by_data_source"}));
  sub->add_option("--reward-mode", o->reward_mode, "reward.mode: verl or extended")
      ->check(CLI::IsMember({"verl", "extended"}));
  sub->add_option("--step", o->e.step,
                  "the step recorded (default: the checkpoint's, 0 for a plain model)")
      ->check(integer_in<int64_t>(0));
  sub->add_option("--tokenizer", o->e.tokenizer, "tokenizer.json or .gguf (default: the model's)");
  sub->add_option("--device", o->e.device,
                  "backend: cpu, cuda or cuda:N (default: the config's model.device)");
  sub->add_option("--precision", o->precision, "compute dtype: auto, bf16 (cuda), fp32")
      ->check(CLI::IsMember({"auto", "bf16", "fp32"}));
  sub->add_option("--tp", o->tp, "tensor-parallel ranks (under mpirun/srun)")
      ->check(integer_in(1, 4096));
  sub->add_option("--pp", o->pp,
                  "pipeline stages (under mpirun/srun); the other ranks are data-parallel "
                  "replicas, each scoring a share of the prompts")
      ->check(integer_in(1, 4096));
  sub->add_option("--timeout", o->timeout_s,
                  "seconds a collective may take before the job ends, naming the rank")
      ->check(number_in(0.001, 1e7));
  sub->add_flag("--overwrite", o->e.overwrite, "replace an existing output file");
  sub->add_flag(
      "--skip-complete", o->e.skip_complete,
      "keep a complete bupo-eval file at --out and do nothing (array jobs resubmitted); "
      "an incomplete one is scored again (any other file is refused without --overwrite)");
  sub->add_flag("--quiet,-q", o->e.quiet, "no progress output");
  return [o]() {
    std::vector<std::string>& ov = o->e.overrides;
    ov = o->set;
    if (!o->sets.empty()) {
      ov.push_back("validation.sets=" + toml_array(o->sets, true));
      // the config's per-set values belong to its own sets
      if (o->n.size() <= 1) ov.push_back("validation.n_per_set=[]");
      if (o->temperature.size() <= 1) ov.push_back("validation.temperature_per_set=[]");
    }
    if (o->n.size() == 1) {  // one value for every set: the config's per-set values give way
      ov.push_back("validation.n=" + std::to_string(o->n[0]));
      ov.push_back("validation.n_per_set=[]");
    }
    if (o->n.size() > 1) ov.push_back("validation.n_per_set=" + toml_array(o->n));
    if (o->temperature.size() == 1) {
      ov.push_back("validation.temperature=" + json(o->temperature[0]).dump());
      ov.push_back("validation.temperature_per_set=[]");
    }
    if (o->temperature.size() > 1)
      ov.push_back("validation.temperature_per_set=" + toml_array(o->temperature));
    if (!o->k.empty()) ov.push_back("validation.k=" + toml_array(o->k));
    if (o->top_p > 0) ov.push_back("validation.top_p=" + json(o->top_p).dump());
    if (o->max_tokens > 0) ov.push_back("validation.max_tokens=" + std::to_string(o->max_tokens));
    if (o->max_prompts >= 0)
      ov.push_back("validation.max_prompts=" + std::to_string(o->max_prompts));
    if (o->batch_seqs >= 0) ov.push_back("validation.batch_seqs=" + std::to_string(o->batch_seqs));
    if (o->seed >= 0) ov.push_back("trainer.seed=" + std::to_string(o->seed));
    if (!o->tmpl.empty()) ov.push_back("model.template=" + toml_string(o->tmpl));
    if (!o->grader.empty()) ov.push_back("algorithm.grader=" + toml_string(o->grader));
    if (!o->reward_mode.empty()) ov.push_back("reward.mode=" + toml_string(o->reward_mode));
    if (!o->precision.empty()) ov.push_back("model.precision=" + toml_string(o->precision));
    ov.push_back("parallel.tp=" + std::to_string(o->tp));
    ov.push_back("parallel.pp=" + std::to_string(o->pp));
    ov.push_back("parallel.timeout_s=" + json(o->timeout_s).dump());
    const rl::EvalReport rep = rl::evaluate(o->e);
    if (MpiSession::active() && world_rank() != 0) return 0;
    if (rep.skipped) {
      std::printf("%s is already complete\n", o->e.out.c_str());
      return 0;
    }
    std::printf("%-24s %7s %6s %8s %9s  %s\n", "set", "prompts", "n", "T", "avg@n", "pass@k");
    for (const auto& v : rep.sets) {
      std::string pass;
      for (size_t i = 0; i < v.setting.k.size(); ++i) {
        char b[48];
        std::snprintf(b, sizeof b, "%s@%lld %.4f", i ? "  " : "",
                      static_cast<long long>(v.setting.k[i]), v.pass[i]);
        pass += b;
      }
      std::printf("%-24s %7lld %6lld %8.3g %9.4f  %s\n", v.setting.name.c_str(),
                  static_cast<long long>(v.setting.prompts), static_cast<long long>(v.setting.n),
                  v.setting.temperature, v.avg, pass.c_str());
    }
    std::printf("wrote %s (step %lld)\n", o->e.out.c_str(), static_cast<long long>(rep.step));
    return 0;
  };
}

}  // namespace bupo::cli
