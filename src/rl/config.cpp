#include "rl/config.hpp"

#include <toml++/toml.h>
#include <algorithm>
#include <fstream>
#include <functional>
#include <map>
#include <sstream>
#include <variant>

#include "core/error.hpp"
#include "tokenizer/chat_template.hpp"

namespace bupo::rl {
namespace {

struct Field {
  std::string key;
  std::variant<int64_t*, double*, bool*, std::string*, std::vector<std::string>*,
               std::vector<int64_t>*>
      ptr;
  double lo = -1e300, hi = 1e300;    // numeric range (inclusive)
  std::vector<std::string> choices;  // allowed strings (empty: any)
  std::string help;
};

std::vector<Field> fields(TrainConfig& c) {
  const double inf = 1e300;
  std::vector<std::string> templates = chat_template_names();
  templates.push_back("plain");
  return {
      {"model.path",
       &c.model.path,
       0,
       0,
       {},
       "HF checkpoint directory or .gguf file (empty: model.init)"},
      {"model.tokenizer",
       &c.model.tokenizer,
       0,
       0,
       {},
       "tokenizer.json or .gguf (empty: from model.path, or the built-in byte tokenizer)"},
      {"model.device",
       &c.model.device,
       0,
       0,
       {},
       "backend the model computes on: \"cpu\", \"cuda\" or \"cuda:N\" (a build with CUDA and a "
       "GPU)"},
      {"model.template", &c.model.template_name, 0, 0, templates,
       "chat template for prompts ('plain': contents as they are)"},
      {"model.init.arch",
       &c.model.init.arch,
       0,
       0,
       {"llama", "qwen2", "qwen3"},
       "architecture of a fresh random model"},
      {"model.init.layers",
       &c.model.init.layers,
       0,
       1024,
       {},
       "layers of a fresh random model (0: load model.path)"},
      {"model.init.hidden", &c.model.init.hidden, 1, inf, {}, "hidden size"},
      {"model.init.heads", &c.model.init.heads, 1, inf, {}, "attention heads"},
      {"model.init.kv_heads", &c.model.init.kv_heads, 1, inf, {}, "key/value heads"},
      {"model.init.head_dim", &c.model.init.head_dim, 1, inf, {}, "head dimension"},
      {"model.init.ffn", &c.model.init.ffn, 1, inf, {}, "FFN (intermediate) size"},
      {"model.init.tied", &c.model.init.tied, 0, 0, {}, "tie E_u to the embedding"},
      {"model.init.seed", &c.model.init.seed, 0, inf, {}, "initialisation seed"},
      {"model.init.vocab_multiple",
       &c.model.init.vocab_multiple,
       1,
       65536,
       {},
       "pad the vocabulary to a multiple of this (tensor parallelism needs tp | vocab); padded "
       "ids are never sampled"},
      {"data.train",
       &c.data.train,
       0,
       0,
       {},
       "verl-style JSONL (prompt, reward_model.ground_truth) or builtin:arithmetic"},
      {"data.shuffle", &c.data.shuffle, 0, 0, {}, "reshuffle every epoch"},
      {"data.seed", &c.data.seed, 0, inf, {}, "sampler seed"},
      {"data.max_prompt_tokens",
       &c.data.max_prompt_tokens,
       1,
       inf,
       {},
       "longer prompts are an error at load time"},
      {"data.limit", &c.data.limit, 0, inf, {}, "use only the first N rows (0: all)"},
      {"data.arithmetic.digits",
       &c.data.arithmetic.digits,
       1,
       9,
       {},
       "operand digits of the built-in task"},
      {"data.arithmetic.ops",
       &c.data.arithmetic.ops,
       0,
       0,
       {},
       "operators of the built-in task, from '+-*'"},
      {"data.arithmetic.size",
       &c.data.arithmetic.size,
       1,
       1e9,
       {},
       "problems in the built-in training set"},
      {"warmup.sft_steps",
       &c.warmup.sft_steps,
       0,
       inf,
       {},
       "supervised warm-start steps on the built-in task before RL"},
      {"warmup.sft_batch", &c.warmup.sft_batch, 1, inf, {}, "warm-start batch (problems)"},
      {"warmup.sft_lr", &c.warmup.sft_lr, 0, 1, {}, "warm-start learning rate"},
      {"rollout.n", &c.rollout.n, 1, 4096, {}, "samples per prompt (group size G)"},
      {"rollout.temperature",
       &c.rollout.temperature,
       0,
       100,
       {},
       "sampling temperature (HAPO A: its base)"},
      {"rollout.top_p", &c.rollout.top_p, 1e-6, 1, {}, "nucleus sampling"},
      {"rollout.top_k", &c.rollout.top_k, 0, inf, {}, "top-k (0: off)"},
      {"rollout.max_tokens", &c.rollout.max_tokens, 1, inf, {}, "maximum response tokens"},
      {"rollout.stop", &c.rollout.stop, 0, 0, {}, "stop strings"},
      {"trainer.steps", &c.trainer.steps, 1, inf, {}, "training steps"},
      {"trainer.prompts_per_step",
       &c.trainer.prompts_per_step,
       1,
       inf,
       {},
       "prompts per step (batch)"},
      {"trainer.mini_batch_prompts",
       &c.trainer.mini_batch_prompts,
       1,
       inf,
       {},
       "prompts per optimizer step"},
      {"trainer.micro_batch_seqs",
       &c.trainer.micro_batch_seqs,
       1,
       inf,
       {},
       "sequences per forward/backward (gradient accumulation)"},
      {"trainer.epochs", &c.trainer.epochs, 1, inf, {}, "passes over each step's rollouts"},
      {"trainer.seed", &c.trainer.seed, 0, inf, {}, "sampling seed"},
      {"trainer.out_dir",
       &c.trainer.out_dir,
       0,
       0,
       {},
       "run folder: diagnostics.h5, metrics.jsonl, checkpoints/"},
      {"trainer.checkpoint_every",
       &c.trainer.checkpoint_every,
       0,
       inf,
       {},
       "checkpoint every N steps (0: only at the end and on signals)"},
      {"trainer.keep_checkpoints",
       &c.trainer.keep_checkpoints,
       1,
       inf,
       {},
       "complete checkpoints kept"},
      {"trainer.max_nonfinite_in_row",
       &c.trainer.max_nonfinite_in_row,
       1,
       inf,
       {},
       "stop after this many skipped (NaN/Inf) updates in a row"},
      {"trainer.threads", &c.trainer.threads, 0, 4096, {}, "CPU threads (0: all)"},
      {"trainer.export_hf",
       &c.trainer.export_hf,
       0,
       0,
       {},
       "write a Hugging Face model folder at the end"},
      {"optim.lr", &c.optim.lr, 0, 1, {}, "AdamW learning rate"},
      {"optim.beta1", &c.optim.beta1, 0, 0.999999, {}, "AdamW beta1"},
      {"optim.beta2", &c.optim.beta2, 0, 0.999999999, {}, "AdamW beta2"},
      {"optim.eps", &c.optim.eps, 0, 1, {}, "AdamW epsilon"},
      {"optim.weight_decay", &c.optim.weight_decay, 0, 1, {}, "decoupled weight decay"},
      {"optim.grad_clip", &c.optim.grad_clip, 0, inf, {}, "global gradient-norm clip (0: off)"},
      {"optim.warmup_steps",
       &c.optim.warmup_steps,
       0,
       inf,
       {},
       "linear LR warm-up, in optimizer steps"},
      {"algorithm.loss_agg",
       &c.algorithm.loss_agg,
       0,
       0,
       {"token-mean", "seq-mean-token-mean", "seq-mean-token-sum"},
       "loss aggregation"},
      {"algorithm.verl_microbatch_mean",
       &c.algorithm.verl_microbatch_mean,
       0,
       0,
       {},
       "verl's per-micro-batch token-mean approximation instead of the exact one"},
      {"algorithm.std_normalize",
       &c.algorithm.std_normalize,
       0,
       0,
       {},
       "divide GRPO advantages by the group std"},
      {"algorithm.clip_low", &c.algorithm.clip_low, 0, 1, {}, "PPO eps_low"},
      {"algorithm.clip_high",
       &c.algorithm.clip_high,
       0,
       10,
       {},
       "PPO eps_high (DAPO clip-higher: 0.28)"},
      {"algorithm.dual_clip",
       &c.algorithm.dual_clip,
       0,
       inf,
       {},
       "dual-clip constant c for A<0 (0: off; must be > 1)"},
      {"algorithm.log_ratio_clamp",
       &c.algorithm.log_ratio_clamp,
       0,
       inf,
       {},
       "clamp of logp-old_logp before exp (0: off)"},
      {"algorithm.kl_coef",
       &c.algorithm.kl_coef,
       0,
       inf,
       {},
       "KL-to-reference coefficient (0: no reference model)"},
      {"algorithm.kl_estimator",
       &c.algorithm.kl_estimator,
       0,
       0,
       {"k1", "k2", "k3"},
       "KL estimator"},
      {"algorithm.entropy_coef",
       &c.algorithm.entropy_coef,
       -inf,
       inf,
       {},
       "entropy bonus coefficient"},
      {"algorithm.reward",
       &c.algorithm.reward,
       0,
       0,
       {"01", "pm1"},
       "binary reward {0,1} or {-1,+1}"},
      {"algorithm.dynamic_sampling",
       &c.algorithm.dynamic_sampling,
       0,
       0,
       {},
       "DAPO: drop all-correct/all-wrong groups and refill"},
      {"algorithm.max_gen_batches",
       &c.algorithm.max_gen_batches,
       1,
       inf,
       {},
       "DAPO: generation rounds per step before giving up refilling"},
      {"algorithm.overlong_buffer",
       &c.algorithm.overlong_buffer,
       0,
       inf,
       {},
       "DAPO overlong buffer L_cache in tokens (0: off)"},
      {"algorithm.overlong_factor",
       &c.algorithm.overlong_factor,
       0,
       inf,
       {},
       "DAPO overlong penalty factor"},
      {"hapo.adaptive_temperature",
       &c.hapo.adaptive_temperature,
       0,
       0,
       {},
       "HAPO A: per-token sampling temperature"},
      {"hapo.token_advantage",
       &c.hapo.token_advantage,
       0,
       0,
       {},
       "HAPO B: token-level group-average advantage"},
      {"hapo.redistribution",
       &c.hapo.redistribution,
       0,
       0,
       {},
       "HAPO C: differential advantage redistribution"},
      {"hapo.adaptive_clip",
       &c.hapo.adaptive_clip,
       0,
       0,
       {},
       "HAPO D: asymmetric adaptive clipping"},
      {"hapo.sign",
       &c.hapo.sign,
       0,
       0,
       {"code", "paper"},
       "h~ for low-entropy tokens: released code (>=0) or paper (<=0), papers.md §2.1"},
      {"hapo.pivot", &c.hapo.pivot, 0, 1, {}, "entropy pivot quantile rho"},
      {"hapo.tau", &c.hapo.tau, 0, 1, {}, "HAPO A temperature scale"},
      {"hapo.alpha", &c.hapo.alpha, 0, inf, {}, "HAPO D clip scale"},
      {"hapo.beta", &c.hapo.beta, 0, inf, {}, "HAPO C advantage scale"},
      {"hapo.fallback",
       &c.hapo.fallback,
       0,
       inf,
       {},
       "HAPO B: |A| at which a group falls back to GRPO"},
      {"bupo.internal_layer",
       &c.bupo.internal_layer,
       0,
       1024,
       {},
       "BuPO layer l (pi^l, paper numbering 1..L; 0: off)"},
      {"bupo.auto_layer",
       &c.bupo.auto_layer,
       0,
       0,
       {},
       "pick l by the paper's rule (last layer with mean FFN dH > 0) at step 0"},
      {"bupo.internal_steps", &c.bupo.internal_steps, 0, inf, {}, "BuPO phase-1 steps s_inter"},
      {"bupo.lens",
       &c.bupo.lens,
       0,
       0,
       {"raw", "normed"},
       "internal policy softmax(H^l E_u^T) (raw, the paper's) or with the final norm"},
      {"diagnostics.every",
       &c.diagnostics.every,
       0,
       inf,
       {},
       "per-layer entropies every N steps (0: off)"},
      {"diagnostics.tokens",
       &c.diagnostics.tokens,
       1,
       inf,
       {},
       "response tokens subsampled for them"},
      {"diagnostics.lens", &c.diagnostics.lens, 0, 0, {"raw", "normed"}, "lens of the diagnostics"},
      {"validation.every", &c.validation.every, 0, inf, {}, "validate every N steps (0: off)"},
      {"validation.sets", &c.validation.sets, 0, 0, {}, "JSONL files (or builtin:arithmetic)"},
      {"validation.n", &c.validation.n, 1, inf, {}, "samples per prompt"},
      {"validation.k", &c.validation.k, 1, inf, {}, "pass@k values (each <= n)"},
      {"validation.temperature", &c.validation.temperature, 0, 100, {}, "sampling temperature"},
      {"validation.top_p", &c.validation.top_p, 1e-6, 1, {}, "nucleus sampling"},
      {"validation.max_prompts", &c.validation.max_prompts, 0, inf, {}, "prompts per set (0: all)"},
      {"validation.max_tokens",
       &c.validation.max_tokens,
       0,
       inf,
       {},
       "response tokens (0: rollout.max_tokens)"},
      {"parallel.tp", &c.parallel.tp, 1, 4096, {}, "tensor-parallel ranks (adjacent ranks)"},
      {"parallel.pp", &c.parallel.pp, 1, 4096, {}, "pipeline stages"},
      {"parallel.dp",
       &c.parallel.dp,
       0,
       1 << 20,
       {},
       "data-parallel replicas (0: world size / (tp*pp)); tp*pp*dp = ranks"},
      {"parallel.first_stage_layers",
       &c.parallel.first_stage_layers,
       0,
       4096,
       {},
       "layers on the first pipeline stage (0: even split)"},
      {"parallel.last_stage_layers",
       &c.parallel.last_stage_layers,
       0,
       4096,
       {},
       "layers on the last pipeline stage (0: even split)"},
      {"parallel.timeout_s",
       &c.parallel.timeout_s,
       0,
       inf,
       {},
       "a collective or receive that takes longer ends the job, naming the rank (0: never)"},
      {"parallel.grad_bucket_mb",
       &c.parallel.grad_bucket_mb,
       0.001,
       inf,
       {},
       "data-parallel gradient all-reduce bucket size (MiB)"},
      {"parallel.fault_inject",
       &c.parallel.fault_inject,
       0,
       0,
       {},
       "fault injection for tests: die:RANK@STEP or hang:RANK@STEP"},
  };
}

std::string type_name(const Field& f) {
  return std::visit(
      [](auto* p) -> std::string {
        using T = std::remove_pointer_t<decltype(p)>;
        if constexpr (std::is_same_v<T, int64_t>) return "an integer";
        if constexpr (std::is_same_v<T, double>) return "a number";
        if constexpr (std::is_same_v<T, bool>) return "true or false";
        if constexpr (std::is_same_v<T, std::string>) return "a string";
        if constexpr (std::is_same_v<T, std::vector<std::string>>) return "an array of strings";
        return "an array of integers";
      },
      f.ptr);
}

void check_range(const Field& f, double v, const std::string& where) {
  BUPO_CHECK(v >= f.lo && v <= f.hi, where, ": key '", f.key, "': ", v, " is out of range [", f.lo,
             ", ", f.hi > 1e299 ? std::string("inf") : std::to_string(f.hi), "]");
}

void assign(Field& f, const toml::node& n, const std::string& where) {
  const std::string bad = where + ": key '" + f.key + "': expected " + type_name(f);
  std::visit(
      [&](auto* p) {
        using T = std::remove_pointer_t<decltype(p)>;
        if constexpr (std::is_same_v<T, int64_t>) {
          auto v = n.value_exact<int64_t>();
          BUPO_CHECK(v.has_value(), bad);
          check_range(f, static_cast<double>(*v), where);
          *p = *v;
        } else if constexpr (std::is_same_v<T, double>) {
          auto v = n.value<double>();  // integers are accepted as numbers
          BUPO_CHECK(v.has_value() && (n.is_floating_point() || n.is_integer()), bad);
          BUPO_CHECK(std::isfinite(*v), where, ": key '", f.key, "': must be finite");
          check_range(f, *v, where);
          *p = *v;
        } else if constexpr (std::is_same_v<T, bool>) {
          auto v = n.value_exact<bool>();
          BUPO_CHECK(v.has_value(), bad);
          *p = *v;
        } else if constexpr (std::is_same_v<T, std::string>) {
          auto v = n.value_exact<std::string>();
          BUPO_CHECK(v.has_value(), bad);
          if (!f.choices.empty()) {
            const bool ok = std::find(f.choices.begin(), f.choices.end(), *v) != f.choices.end();
            std::string list;
            for (const auto& c : f.choices) list += (list.empty() ? "" : ", ") + c;
            BUPO_CHECK(ok, where, ": key '", f.key, "': '", *v, "' is not one of: ", list);
          }
          *p = *v;
        } else if constexpr (std::is_same_v<T, std::vector<std::string>>) {
          const auto* arr = n.as_array();
          BUPO_CHECK(arr != nullptr, bad);
          p->clear();
          for (const auto& e : *arr) {
            auto v = e.value_exact<std::string>();
            BUPO_CHECK(v.has_value(), bad);
            p->push_back(*v);
          }
        } else {
          const auto* arr = n.as_array();
          BUPO_CHECK(arr != nullptr, bad);
          p->clear();
          for (const auto& e : *arr) {
            auto v = e.value_exact<int64_t>();
            BUPO_CHECK(v.has_value(), bad);
            check_range(f, static_cast<double>(*v), where);
            p->push_back(*v);
          }
        }
      },
      f.ptr);
}

void flatten(const toml::table& t, const std::string& prefix,
             std::vector<std::pair<std::string, const toml::node*>>& out) {
  for (const auto& [k, v] : t) {
    const std::string key =
        prefix.empty() ? std::string(k.str()) : prefix + "." + std::string(k.str());
    if (const auto* sub = v.as_table())
      flatten(*sub, key, out);
    else
      out.emplace_back(key, &v);
  }
}

Field* find_field(std::vector<Field>& fs, const std::string& key) {
  for (auto& f : fs)
    if (f.key == key) return &f;
  return nullptr;
}

std::string known_in_section(const std::vector<Field>& fs, const std::string& key) {
  const std::string sec = key.substr(0, key.find('.'));
  std::string list;
  for (const auto& f : fs)
    if (f.key.rfind(sec + ".", 0) == 0) list += (list.empty() ? "" : ", ") + f.key;
  if (list.empty()) {
    std::map<std::string, int> secs;
    for (const auto& f : fs) secs[f.key.substr(0, f.key.find('.'))] = 1;
    for (const auto& [s, _] : secs) list += (list.empty() ? "sections: " : ", ") + s;
    return list;
  }
  return "known keys: " + list;
}

void validate(const TrainConfig& c, const std::string& where) {
  auto need = [&](bool ok, auto&&... msg) {
    if (!ok) fail(where, ": ", msg...);
  };
  need(c.model.device == "cpu" || c.model.device == "cuda" ||
           (c.model.device.rfind("cuda:", 0) == 0 && c.model.device.size() > 5 &&
            c.model.device.find_first_not_of("0123456789", 5) == std::string::npos),
       "model.device must be \"cpu\", \"cuda\" or \"cuda:N\", got \"" + c.model.device + "\"");
  need(!c.model.path.empty() || c.model.init.layers > 0,
       "set model.path (a checkpoint) or model.init.layers (a fresh model)");
  need(c.model.path.empty() || c.model.init.layers == 0,
       "model.path and model.init.layers are exclusive");
  need(!c.data.train.empty(), "key 'data.train' is required");
  for (char ch : c.data.arithmetic.ops)
    need(ch == '+' || ch == '-' || ch == '*', "key 'data.arithmetic.ops': '", c.data.arithmetic.ops,
         "' may only contain + - *");
  need(!c.data.arithmetic.ops.empty(), "key 'data.arithmetic.ops' is empty");
  need(c.trainer.prompts_per_step % c.trainer.mini_batch_prompts == 0, "trainer.prompts_per_step (",
       c.trainer.prompts_per_step, ") must be a multiple of trainer.mini_batch_prompts (",
       c.trainer.mini_batch_prompts, ")");
  need(c.algorithm.dual_clip == 0 || c.algorithm.dual_clip > 1,
       "key 'algorithm.dual_clip' must be 0 (off) or > 1");
  need(!(c.bupo.internal_layer > 0 && c.bupo.auto_layer),
       "bupo.internal_layer and bupo.auto_layer are exclusive");
  need(!c.bupo_enabled() || c.bupo.internal_steps > 0,
       "BuPO needs bupo.internal_steps > 0 (phase-1 steps)");
  need(c.bupo.internal_steps == 0 || c.bupo_enabled(),
       "bupo.internal_steps is set but neither bupo.internal_layer nor bupo.auto_layer");
  need(c.model.init.layers == 0 || c.model.init.heads % c.model.init.kv_heads == 0,
       "model.init.heads must be a multiple of model.init.kv_heads");
  need(c.warmup.sft_steps == 0 || c.data.train == "builtin:arithmetic",
       "warmup.sft_steps needs data.train = \"builtin:arithmetic\" (its answers are known)");
  for (int64_t k : c.validation.k)
    need(k <= c.validation.n, "validation.k value ", k, " exceeds validation.n = ", c.validation.n);
  need(c.validation.every == 0 || !c.validation.sets.empty(),
       "validation.every > 0 needs validation.sets");
  if (!c.parallel.fault_inject.empty()) {
    const auto& f = c.parallel.fault_inject;
    const auto colon = f.find(':'), at = f.find('@');
    const auto digits = [](const std::string& x) {
      return !x.empty() && x.find_first_not_of("0123456789") == std::string::npos;
    };
    need(colon != std::string::npos && at != std::string::npos && at > colon &&
             (f.substr(0, colon) == "die" || f.substr(0, colon) == "hang") &&
             digits(f.substr(colon + 1, at - colon - 1)) && digits(f.substr(at + 1)),
         "key 'parallel.fault_inject': '", f, "': expected die:RANK@STEP or hang:RANK@STEP");
  }
}

std::string toml_value(const Field& f) {
  std::ostringstream os;
  std::visit(
      [&](auto* p) {
        using T = std::remove_pointer_t<decltype(p)>;
        if constexpr (std::is_same_v<T, std::string>) {
          os << toml::value<std::string>(*p);
        } else if constexpr (std::is_same_v<T, bool>) {
          os << (*p ? "true" : "false");
        } else if constexpr (std::is_same_v<T, double>) {
          os << toml::value<double>(*p);
        } else if constexpr (std::is_same_v<T, int64_t>) {
          os << *p;
        } else {
          toml::array a;
          for (const auto& e : *p) a.push_back(e);
          os << a;
        }
      },
      f.ptr);
  return os.str();
}

}  // namespace

TrainConfig parse_train_config(const std::string& text, const std::string& source,
                               const std::vector<std::string>& overrides) {
  TrainConfig c;
  c.source = source;
  auto fs = fields(c);
  const std::string where = source.empty() ? "<defaults>" : source;
  if (!text.empty()) {
    toml::table t;
    try {
      t = toml::parse(text, source);
    } catch (const toml::parse_error& e) {
      fail(where, ":", e.source().begin.line, ":", e.source().begin.column,
           ": TOML syntax error: ", e.description());
    }
    std::vector<std::pair<std::string, const toml::node*>> leaves;
    flatten(t, "", leaves);
    for (const auto& [key, node] : leaves) {
      Field* f = find_field(fs, key);
      BUPO_CHECK(f != nullptr, where, ": unknown key '", key, "' (", known_in_section(fs, key),
                 ")");
      assign(*f, *node, where);
    }
  }
  for (const auto& ov : overrides) {
    const size_t eq = ov.find('=');
    BUPO_CHECK(eq != std::string::npos && eq > 0, "--set '", ov, "': expected key=value");
    std::string key = ov.substr(0, eq), value = ov.substr(eq + 1);
    while (!key.empty() && key.back() == ' ') key.pop_back();
    Field* f = find_field(fs, key);
    BUPO_CHECK(f != nullptr, "--set '", ov, "': unknown key '", key, "' (",
               known_in_section(fs, key), ")");
    toml::table t;
    try {
      t = toml::parse("v = " + value);
    } catch (const toml::parse_error&) {
      t = toml::table{{"v", value}};  // a bare word: a string
    }
    if (std::holds_alternative<std::string*>(f->ptr) && !t["v"].is_string())
      t = toml::table{{"v", value}};
    assign(*f, *t.get("v"), "--set");
  }
  validate(c, where);
  return c;
}

TrainConfig load_train_config(const std::string& path, const std::vector<std::string>& overrides) {
  std::string text;
  if (!path.empty()) {
    std::ifstream in(path);
    BUPO_CHECK(in.good(), path, ": cannot open config file");
    std::stringstream ss;
    ss << in.rdbuf();
    text = ss.str();
  }
  return parse_train_config(text, path, overrides);
}

std::string TrainConfig::to_toml() const {
  TrainConfig copy = *this;
  auto fs = fields(copy);
  std::ostringstream os;
  for (const auto& f : fs) os << f.key << " = " << toml_value(f) << "\n";
  return os.str();
}

std::string config_reference() {
  TrainConfig c;
  auto fs = fields(c);
  std::ostringstream os;
  for (const auto& f : fs) os << f.key << " = " << toml_value(f) << "  # " << f.help << "\n";
  return os.str();
}

}  // namespace bupo::rl
