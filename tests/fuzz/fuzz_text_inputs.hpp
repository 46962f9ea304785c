// The text readers under fuzz (tests/fuzz/fuzz_<target>.cpp) and their regression suite
// (tests/unit/test_fuzz_corpus.cpp): one function per input format. Each must accept its input or
// end in bupo::Error; anything else (another exception, a crash, a sanitizer report, a libFuzzer
// timeout: super-linear work) is a finding.
#pragma once
#include <algorithm>
#include <cstdint>
#include <string>
#include <string_view>

#include "core/error.hpp"
#include "io/json_util.hpp"
#include "io/token_data.hpp"
#include "model/config.hpp"
#include "rl/config.hpp"
#include "rl/data.hpp"
#include "rl/journal.hpp"
#include "rl/numeric_expr.hpp"
#include "rl/reward.hpp"
#include "tokenizer/tokenizer.hpp"

namespace bupo::fuzz {

inline std::string_view text_of(const uint8_t* data, size_t size) {
  return {reinterpret_cast<const char*>(data), size};
}
template <typename F>
void clean(F&& f) {  // bupo::Error is the one accepted failure
  try {
    f();
  } catch (const Error&) {
  }
}

// tokenizer.json: load it, then encode and decode a fixed mixed text
inline void tokenizer_json(const uint8_t* data, size_t size) {
  clean([&] {
    const auto tok = Tokenizer::from_json(parse_json(text_of(data, size), "fuzz/tokenizer.json"),
                                          "fuzz/tokenizer.json");
    using namespace std::string_view_literals;
    const auto ids = tok.encode("Hello, world! 12 345 \xC3\xA9t\xC3\xA9 \n\t<|im_end|>a\0b"sv);
    (void)tok.decode(ids);
  });
}

// config.json of a Hugging Face model
inline void config_json(const uint8_t* data, size_t size) {
  clean([&] {
    (void)ModelConfig::from_json(parse_json(text_of(data, size), "fuzz/config.json"),
                                 "fuzz/config.json");
  });
}

// a run configuration (TOML)
inline void run_toml(const uint8_t* data, size_t size) {
  clean([&] { (void)rl::parse_train_config(std::string(text_of(data, size)), "fuzz.toml"); });
}

// JSONL: every line as a token record and as a prompt row's ground truth; the whole text as the
// metrics.jsonl journal
inline void jsonl(const uint8_t* data, size_t size) {
  const std::string_view text = text_of(data, size);
  int64_t line_no = 0;
  for (size_t at = 0; at < text.size();) {
    const size_t nl = std::min(text.find('\n', at), text.size());
    const std::string line(text.substr(at, nl - at));
    const std::string where = "fuzz.jsonl:" + std::to_string(++line_no);
    at = nl + 1;
    clean([&] { (void)parse_token_record(parse_json(line, where), where, 1000); });
    clean([&] { (void)rl::ground_truth_text(line, where, "reward_model.ground_truth"); });
  }
  clean([&] { (void)rl::parse_journal(text, "fuzz/metrics.jsonl", INT64_MAX); });
}

// the verifier: the first line is the ground truth, the rest the response
inline void verifier(const uint8_t* data, size_t size) {
  const std::string_view text = text_of(data, size);
  const size_t nl = std::min(text.find('\n'), text.size());
  const std::string_view gt = text.substr(0, nl);
  const std::string_view response = nl < text.size() ? text.substr(nl + 1) : std::string_view{};
  clean([&] {
    (void)rl::verify(response, gt);
    (void)rl::strip_string(response);
    (void)rl::answers_equivalent(gt, response);
    (void)rl::verify(response, gt, {rl::Grader::Math, rl::MathMode::Verl}, "");
    (void)rl::verify(response, gt, {rl::Grader::MathDapo, rl::MathMode::Verl}, "");
    (void)rl::numerically_equal(gt, response);
  });
}

}  // namespace bupo::fuzz
