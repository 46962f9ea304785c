#include "rl/config.hpp"

#include <stdexcept>

#include "io/toml.hpp"
#include <algorithm>
#include <charconv>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <set>
#include <sstream>
#include <variant>

#include "core/error.hpp"
#include "rl/config_fields.hpp"

namespace bupo::rl {
namespace {
using detail::Field;
using detail::fields;

std::string type_name(const Field& f) {
  return std::visit(
      [](auto* p) -> std::string {
        using T = std::remove_pointer_t<decltype(p)>;
        if constexpr (std::is_same_v<T, int64_t>) return "an integer";
        if constexpr (std::is_same_v<T, double>) return "a number";
        if constexpr (std::is_same_v<T, bool>) return "true or false";
        if constexpr (std::is_same_v<T, std::string>) return "a string";
        if constexpr (std::is_same_v<T, std::vector<std::string>>) return "an array of strings";
        if constexpr (std::is_same_v<T, std::vector<double>>) return "an array of numbers";
        return "an array of integers";
      },
      f.ptr);
}

void check_range(const Field& f, double v, const std::string& where) {
  std::ostringstream hi;
  if (f.hi > 1e299)
    hi << "inf";
  else
    hi << f.hi;
  BUPO_CHECK(v >= f.lo && v <= f.hi, where, ": key '", f.key, "': ", v, " is out of range [", f.lo,
             ", ", hi.str(), "]");
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
          BUPO_CHECK(v->find('\0') == std::string::npos, where, ": key '", f.key,
                     "': contains a NUL character");
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
            BUPO_CHECK(v->find('\0') == std::string::npos, where, ": key '", f.key,
                       "': contains a NUL character");
            p->push_back(*v);
          }
        } else if constexpr (std::is_same_v<T, std::vector<double>>) {
          const auto* arr = n.as_array();
          BUPO_CHECK(arr != nullptr, bad);
          p->clear();
          for (const auto& e : *arr) {
            auto v = e.value<double>();  // integers are accepted as numbers
            BUPO_CHECK(v.has_value() && (e.is_floating_point() || e.is_integer()), bad);
            BUPO_CHECK(std::isfinite(*v), where, ": key '", f.key, "': must be finite");
            check_range(f, *v, where);
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

// Digits only, and the whole text: "12x", "+3", "-1" and values beyond T are refused.
template <typename T>
std::optional<T> parse_count(std::string_view text) {
  T v{};
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (text.empty() || text[0] == '-' || ec != std::errc() || end != text.data() + text.size())
    return std::nullopt;
  return v;
}

void validate(const TrainConfig& c, const std::string& where, ConfigUse use) {
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
  if (use == ConfigUse::Train) {  // `bupo eval` reads neither
    need(!c.data.train.empty(), "key 'data.train' is required");
    need(!c.trainer.out_dir.empty(), "key 'trainer.out_dir' is empty (expected a folder)");
    std::error_code ec;
    need(!std::filesystem::exists(c.trainer.out_dir, ec) ||
             std::filesystem::is_directory(c.trainer.out_dir, ec),
         "key 'trainer.out_dir': '", c.trainer.out_dir, "' is a file, not a folder");
  }
  for (char ch : c.data.arithmetic.ops)
    need(ch == '+' || ch == '-' || ch == '*', "key 'data.arithmetic.ops': '", c.data.arithmetic.ops,
         "' may only contain + - *");
  need(!c.data.arithmetic.ops.empty(), "key 'data.arithmetic.ops' is empty");
  need(c.trainer.prompts_per_step % c.trainer.mini_batch_prompts == 0, "trainer.prompts_per_step (",
       c.trainer.prompts_per_step, ") must be a multiple of trainer.mini_batch_prompts (",
       c.trainer.mini_batch_prompts, ")");
  need(!c.hapo.token_advantage || c.algorithm.adv_estimator == "grpo",
       "hapo.token_advantage = true is HAPO's token-level group advantage; it replaces "
       "algorithm.adv_estimator = '",
       c.algorithm.adv_estimator, "' (set adv_estimator = \"grpo\" or token_advantage = false)");
  need(c.critic.model.empty() || c.has_critic(), "key 'critic.model' is set but ",
       "algorithm.adv_estimator = '", c.algorithm.adv_estimator,
       "' has no critic (set adv_estimator = \"gae\" for PPO with a learned critic)");
  need(!c.algorithm.kl_in_reward || c.algorithm.kl_coef > 0,
       "algorithm.kl_in_reward = true needs algorithm.kl_coef > 0 (the penalty's weight and the "
       "reference model)");
  need(!c.algorithm.verl_microbatch_mean || c.algorithm.loss_agg == "token-mean",
       "algorithm.verl_microbatch_mean = true is verl's micro-batch approximation of token-mean; "
       "it would silently replace algorithm.loss_agg = '",
       c.algorithm.loss_agg, "' (set loss_agg = \"token-mean\" or verl_microbatch_mean = false)");
  need(!(c.algorithm.tempered_logprobs && c.rollout.temperature > 0 &&
         c.rollout.temperature != 1.0 && c.bupo_enabled() && c.bupo.lens == "normed"),
       "bupo.lens = \"normed\" with rollout.temperature = ", c.rollout.temperature,
       " and algorithm.tempered_logprobs: a normed lens is invariant to scaling its input, so the "
       "logits cannot be tempered there (use bupo.lens = \"raw\" or tempered_logprobs = false)");
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
  for (const std::string& st : c.rollout.stop)
    need(!st.empty(), "key 'rollout.stop' holds an empty string (it would stop at once)");
  const auto& V = c.validation;
  const size_t sets = V.sets.size();
  need(V.n_per_set.empty() || V.n_per_set.size() == sets, "key 'validation.n_per_set' has ",
       V.n_per_set.size(), " value(s) but validation.sets names ", sets,
       " set(s): expected one per set, or none (validation.n for every set)");
  need(V.temperature_per_set.empty() || V.temperature_per_set.size() == sets,
       "key 'validation.temperature_per_set' has ", V.temperature_per_set.size(),
       " value(s) but validation.sets names ", sets,
       " set(s): expected one per set, or none (validation.temperature for every set)");
  int64_t largest_n = V.n;
  if (!V.n_per_set.empty()) largest_n = *std::max_element(V.n_per_set.begin(), V.n_per_set.end());
  need(!V.k.empty(), "key 'validation.k' is empty: expected at least one k (1 for pass@1)");
  for (int64_t k : V.k)
    need(k <= largest_n, "validation.k value ", k, " exceeds ",
         V.n_per_set.empty() ? "validation.n = " : "every value of validation.n_per_set (largest ",
         largest_n, V.n_per_set.empty() ? "" : ")");
  const int64_t smallest_k = V.k.empty() ? 1 : *std::min_element(V.k.begin(), V.k.end());
  for (size_t i = 0; i < V.n_per_set.size() && i < sets; ++i)
    need(V.n_per_set[i] >= smallest_k, "key 'validation.n_per_set': ", V.n_per_set[i], " (for '",
         V.sets[i], "') is below every validation.k (smallest ", smallest_k,
         "): the set would report no pass@k");
  std::set<std::string> groups;  // /validation/<name>: the file's stem or the built-in name
  for (const std::string& spec : V.sets) {
    const std::string g = validation_group_name(spec);
    need(!g.empty() && g != "." && g != "..", "key 'validation.sets': '", spec,
         "' gives no group name (a file with a stem is expected)");
    need(groups.insert(g).second, "key 'validation.sets': two sets have the group name '", g,
         "' (/validation/", g, "; their file names without the extension): rename one");
  }
  need(c.validation.every == 0 || !c.validation.sets.empty(),
       "validation.every > 0 needs validation.sets");
  need(c.parallel.fault_inject.empty() || parse_fault_injection(c.parallel.fault_inject),
       "key 'parallel.fault_inject': '", c.parallel.fault_inject,
       "': expected die:RANK@STEP or hang:RANK@STEP (RANK < 2^31, STEP < 2^63)");
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

std::string validation_group_name(const std::string& spec) {
  return spec.rfind("builtin:", 0) == 0 ? spec.substr(8)
                                        : std::filesystem::path(spec).stem().string();
}

std::optional<FaultInjection> parse_fault_injection(const std::string& text) {
  const auto colon = text.find(':'), at = text.find('@');
  if (colon == std::string::npos || at == std::string::npos || at < colon) return std::nullopt;
  FaultInjection f;
  f.kind = text.substr(0, colon);
  const auto rank = parse_count<int>(std::string_view(text).substr(colon + 1, at - colon - 1));
  const auto step = parse_count<int64_t>(std::string_view(text).substr(at + 1));
  if ((f.kind != "die" && f.kind != "hang") || !rank || !step) return std::nullopt;
  f.rank = *rank;
  f.step = *step;
  return f;
}

namespace {
// The 1-based line of the first byte >= 0x80 outside a string or comment, or 0. TOML allows
// non-ASCII text only inside strings and comments; toml++ 3.3 reaches __builtin_unreachable in
// its Unicode whitespace table for some such characters elsewhere (undefined behaviour, found by
// the fuzzer), so they are refused before it sees them.
int64_t non_ascii_outside_strings(std::string_view t) {
  int64_t line = 1;
  for (size_t i = 0; i < t.size(); ++i) {
    const char c = t[i];
    if (c == '\n') {
      ++line;
    } else if (c == '#') {  // a comment: to the end of the line
      while (i + 1 < t.size() && t[i + 1] != '\n') ++i;
    } else if (c == '"' || c == '\'') {
      const bool multi = t.compare(i, 3, std::string(3, c)) == 0;
      const std::string close = multi ? std::string(3, c) : std::string(1, c);
      for (i += close.size(); i < t.size(); ++i) {
        if (t[i] == '\n') {
          ++line;
          if (!multi) break;  // an unterminated one-line string: toml++ reports it
        } else if (c == '"' && t[i] == '\\') {
          if (i + 1 < t.size() && t[i + 1] == '\n') ++line;
          ++i;  // an escaped character
        } else if (t.compare(i, close.size(), close) == 0) {
          i += close.size() - 1;
          break;
        }
      }
    } else if (static_cast<unsigned char>(c) >= 0x80) {
      return line;
    }
  }
  return 0;
}
}  // namespace

TrainConfig parse_train_config(const std::string& text, const std::string& source,
                               const std::vector<std::string>& overrides, ConfigUse use) {
  TrainConfig c;
  c.source = source;
  auto fs = fields(c);
  const std::string where = source.empty() ? "<defaults>" : source;
  if (!text.empty()) {
    toml::table t;
    if (const int64_t line = non_ascii_outside_strings(text))
      fail(where, ":", line,
           ": TOML syntax error: a non-ASCII character outside a string or comment (bare keys and "
           "values are ASCII)");
    try {
      t = toml::parse(text, source);
    } catch (const toml::parse_error& e) {
      fail(where, ":", e.source().begin.line, ":", e.source().begin.column,
           ": TOML syntax error: ", e.description());
    } catch (const TomlInternalCheck&) {
      fail(where, ": TOML syntax error (a malformed key or table header the parser refuses)");
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
    // a value that does not parse as TOML (or holds non-ASCII outside quotes) is a bare word: a
    // string
    toml::table t{{"v", value}};
    if (!non_ascii_outside_strings(value)) {
      try {
        t = toml::parse("v = " + value);
      } catch (const toml::parse_error&) {
      } catch (const TomlInternalCheck&) {
      }
    }
    if (std::holds_alternative<std::string*>(f->ptr) && !t["v"].is_string())
      t = toml::table{{"v", value}};
    assign(*f, *t.get("v"), "--set");
  }
  validate(c, where, use);
  return c;
}

TrainConfig load_train_config(const std::string& path, const std::vector<std::string>& overrides,
                              ConfigUse use) {
  std::string text;
  if (!path.empty()) {
    std::ifstream in(path);
    BUPO_CHECK(in.good(), path, ": cannot open config file");
    std::stringstream ss;
    ss << in.rdbuf();
    text = ss.str();
  }
  return parse_train_config(text, path, overrides, use);
}

std::string TrainConfig::to_toml() const {
  TrainConfig copy = *this;
  auto fs = fields(copy);
  std::ostringstream os;
  for (const auto& f : fs) os << f.key << " = " << toml_value(f) << "\n";
  return os.str();
}

std::vector<std::string> changes_breaking_bit_exactness(const TrainConfig& before,
                                                        const TrainConfig& now) {
  static const char* const kFree[] = {"trainer.steps",
                                      "trainer.out_dir",
                                      "trainer.checkpoint_every",
                                      "trainer.keep_checkpoints",
                                      "trainer.export_hf",
                                      "trainer.threads",
                                      "trainer.max_nonfinite_in_row",
                                      "diagnostics.",
                                      "validation.",
                                      "warmup.",
                                      "parallel.timeout_s",
                                      "parallel.stop_grace_s",
                                      "parallel.grad_bucket_mb",
                                      "parallel.fault_inject"};
  auto free = [](const std::string& key) {
    for (const char* f : kFree) {
      const std::string_view fv(f);
      if (fv.back() == '.' ? key.rfind(fv, 0) == 0 : key == fv) return true;
    }
    return false;
  };
  TrainConfig a = before, b = now;
  auto fa = fields(a), fb = fields(b);
  std::vector<std::string> out;
  for (size_t i = 0; i < fa.size(); ++i) {
    const std::string va = toml_value(fa[i]), vb = toml_value(fb[i]);
    // under ZeRO-1 the bucket size is where the optimizer shards begin, which orders the
    // gradient norm's sums
    const bool sharding =
        fa[i].key == "parallel.grad_bucket_mb" && (a.parallel.zero != 0 || b.parallel.zero != 0);
    if (va != vb && (sharding || !free(fa[i].key)))
      out.push_back(fa[i].key + ": " + va + " -> " + vb);
  }
  return out;
}

std::string config_reference() {
  TrainConfig c;
  auto fs = fields(c);
  std::ostringstream os;
  for (const auto& f : fs) os << f.key << " = " << toml_value(f) << "  # " << f.help << "\n";
  return os.str();
}

}  // namespace bupo::rl
