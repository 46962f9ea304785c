#include "rl/data.hpp"

#include <algorithm>
#include <fstream>
#include <numeric>

#include "core/error.hpp"
#include "io/json_util.hpp"
#include "tokenizer/chat_template.hpp"

namespace bupo::rl {

std::string ground_truth_text(const std::string& line, const std::string& where,
                              const std::string& field) {
  json j = parse_json_exact_numbers(line, where);
  const json* v = &j;
  for (size_t a = 0; a <= field.size();) {  // a dotted path into nested objects
    const size_t b = std::min(field.find('.', a), field.size());
    const std::string key = field.substr(a, b - a);
    BUPO_CHECK(v->is_object() && v->contains(key), where, ": field '", field.substr(0, b),
               "' is missing");
    v = &(*v)[key];
    a = b + 1;
  }
  BUPO_CHECK(v->is_string() || v->is_number(), where, ": field '", field,
             "': expected a string or a number, got ", v->type_name());
  const std::string t = v->is_string() ? v->get<std::string>() : v->dump();
  BUPO_CHECK(t.find_first_not_of(" \t\r\n") != std::string::npos, where, ": field '", field,
             "' is empty (a ground truth is needed to score answers)");
  return t;
}

uint64_t mix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

namespace {
std::string render(const std::string& tmpl, const std::vector<ChatMessage>& ms) {
  if (tmpl == "plain") {  // the contents as they are, joined by newlines
    std::string s;
    for (const auto& m : ms) s += (s.empty() ? "" : "\n") + m.content;
    return s;
  }
  return render_chat(tmpl, ms, true);
}
}  // namespace

PromptSet PromptSet::from_jsonl(const std::string& path, const Tokenizer& tok,
                                const std::string& template_name, int64_t max_prompt_tokens,
                                int64_t limit) {
  std::ifstream in(path);
  BUPO_CHECK(in.good(), path, ": cannot open the prompt file");
  PromptSet ps;
  ps.name_ = path;
  std::string line;
  int64_t lineno = 0;
  while (std::getline(in, line)) {
    ++lineno;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    if (limit > 0 && ps.size() >= limit) break;
    const std::string where = path + ":" + std::to_string(lineno);
    const json j = parse_json(line, where);
    BUPO_CHECK(j.is_object(), where, ": expected a JSON object");
    BUPO_CHECK(j.contains("prompt"), where, ": field 'prompt' is missing");
    const auto msgs = chat_messages_from_json(j["prompt"], where + ": field 'prompt'");
    Problem p;
    p.index = ps.size();
    auto rm = j.find("reward_model");
    BUPO_CHECK(rm != j.end() && rm->is_object(), where,
               ": field 'reward_model': expected an object with 'ground_truth'");
    auto gt = rm->find("ground_truth");
    BUPO_CHECK(gt != rm->end() && (gt->is_string() || gt->is_number()), where,
               ": field 'reward_model.ground_truth': expected a string");
    p.ground_truth = ground_truth_text(line, where, "reward_model.ground_truth");
    if (auto ds = j.find("data_source"); ds != j.end() && ds->is_string())
      p.data_source = ds->get<std::string>();
    p.prompt = tok.encode(render(template_name, msgs));
    BUPO_CHECK(!p.prompt.empty(), where, ": the prompt renders to no tokens");
    BUPO_CHECK(static_cast<int64_t>(p.prompt.size()) <= max_prompt_tokens, where, ": prompt has ",
               p.prompt.size(), " tokens; data.max_prompt_tokens is ", max_prompt_tokens);
    ps.problems_.push_back(std::move(p));
  }
  BUPO_CHECK(ps.size() > 0, path, ": no prompt rows");
  return ps;
}

ArithmeticProblem arithmetic_problem(int64_t digits, const std::string& ops, uint64_t seed,
                                     int64_t index) {
  int64_t lo = 1, hi = 1;
  for (int64_t i = 0; i < digits; ++i) hi *= 10;
  if (digits > 1) lo = hi / 10;
  const uint64_t r1 = mix64((seed * 0x100000001B3ull) ^ (static_cast<uint64_t>(index) * 3 + 1));
  const uint64_t r2 = mix64(r1 + 0x51ED27ull);
  const uint64_t r3 = mix64(r2 + 0x2545F491ull);
  const int64_t span = hi - lo;
  int64_t a = lo + static_cast<int64_t>(r1 % static_cast<uint64_t>(span));
  int64_t b = lo + static_cast<int64_t>(r2 % static_cast<uint64_t>(span));
  const char op = ops[r3 % ops.size()];
  int64_t c = 0;
  switch (op) {
    case '+':
      c = a + b;
      break;
    case '-':
      c = a - b;
      break;
    default:
      c = a * b;
      break;
  }
  return {std::to_string(a) + op + std::to_string(b) + "=", std::to_string(c)};
}

PromptSet PromptSet::arithmetic(const Tokenizer& tok, int64_t digits, const std::string& ops,
                                int64_t size, uint64_t seed, const std::string& name) {
  PromptSet ps;
  ps.name_ = name;
  ps.problems_.reserve(static_cast<size_t>(size));
  for (int64_t i = 0; i < size; ++i) {
    const auto ap = arithmetic_problem(digits, ops, seed, i);
    Problem p;
    p.index = i;
    p.prompt = tok.encode(ap.prompt);
    p.ground_truth = ap.answer;
    p.data_source = "builtin_arithmetic";
    p.solution = "\\boxed{" + ap.answer + "}";
    ps.problems_.push_back(std::move(p));
  }
  return ps;
}

std::string builtin_byte_tokenizer_json() {
  json vocab = json::object();
  for (int b = 0; b < 256; ++b) vocab[byte_to_char(static_cast<uint8_t>(b))] = b;
  json added = json::array();
  const char* specials[] = {"<|endoftext|>", "<|im_start|>", "<|im_end|>"};
  for (int i = 0; i < 3; ++i)
    added.push_back({{"id", 256 + i},
                     {"content", specials[i]},
                     {"single_word", false},
                     {"lstrip", false},
                     {"rstrip", false},
                     {"normalized", false},
                     {"special", true}});
  json j = {{"version", "1.0"},
            {"truncation", nullptr},
            {"padding", nullptr},
            {"added_tokens", added},
            {"normalizer", nullptr},
            {"pre_tokenizer",
             {{"type", "ByteLevel"},
              {"add_prefix_space", false},
              {"trim_offsets", true},
              {"use_regex", false}}},
            {"post_processor", nullptr},
            {"decoder",
             {{"type", "ByteLevel"},
              {"add_prefix_space", false},
              {"trim_offsets", true},
              {"use_regex", false}}},
            {"model",
             {{"type", "BPE"},
              {"dropout", nullptr},
              {"unk_token", nullptr},
              {"continuing_subword_prefix", nullptr},
              {"end_of_word_suffix", nullptr},
              {"fuse_unk", false},
              {"byte_fallback", false},
              {"ignore_merges", false},
              {"vocab", vocab},
              {"merges", json::array()}}}};
  return j.dump();
}

Sampler::Sampler(int64_t n, uint64_t seed, bool shuffle) : n_(n), seed_(seed), shuffle_(shuffle) {
  BUPO_CHECK(n > 0, "sampler: the data set is empty");
  make_perm();
}

void Sampler::make_perm() {
  perm_.resize(static_cast<size_t>(n_));
  std::iota(perm_.begin(), perm_.end(), 0);
  if (!shuffle_) return;
  uint64_t s = mix64(seed_ ^ mix64(static_cast<uint64_t>(st_.epoch) + 0xE0C4ull));
  for (int64_t i = n_ - 1; i > 0; --i) {  // Fisher–Yates with a counter-based generator
    s = mix64(s);
    const auto j = static_cast<int64_t>(s % static_cast<uint64_t>(i + 1));
    std::swap(perm_[static_cast<size_t>(i)], perm_[static_cast<size_t>(j)]);
  }
}

std::vector<Sampler::Draw> Sampler::next(int64_t k) {
  std::vector<Draw> out;
  out.reserve(static_cast<size_t>(k));
  for (int64_t i = 0; i < k; ++i) {
    if (st_.pos >= n_) {
      ++st_.epoch;
      st_.pos = 0;
      make_perm();
    }
    out.push_back({perm_[static_cast<size_t>(st_.pos++)], st_.drawn++});
  }
  return out;
}

void Sampler::set_state(const SamplerState& s) {
  BUPO_CHECK(s.pos >= 0 && s.pos <= n_ && s.epoch >= 0 && s.drawn >= 0, "sampler state (epoch ",
             s.epoch, ", pos ", s.pos, ") does not fit a data set of ", n_, " rows");
  st_ = s;
  make_perm();
}

}  // namespace bupo::rl
