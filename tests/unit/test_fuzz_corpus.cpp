// Every input kept in tests/fuzz/corpus/ (seeds and what tests/fuzz/run_fuzz.sh found) must parse
// or end in bupo::Error through the same code the fuzz targets drive — a regression suite that
// runs in every preset, including AddressSanitizer + UBSan.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <iterator>

#include "../fuzz/fuzz_text_inputs.hpp"
#include "core/error.hpp"
#include "io/gguf.hpp"
#include "io/safetensors.hpp"

namespace bupo {
namespace {
namespace fs = std::filesystem;

std::vector<fs::path> corpus(const std::string& target) {
  std::vector<fs::path> out;
  for (const auto& e : fs::directory_iterator(std::string(BUPO_FUZZ_CORPUS_DIR) + "/" + target))
    out.push_back(e.path());
  std::sort(out.begin(), out.end());
  return out;
}

std::vector<uint8_t> bytes_of(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(f), {}};
}

TEST(FuzzCorpus, GgufInputsParseOrFailCleanly) {
  const auto files = corpus("gguf");
  ASSERT_FALSE(files.empty());
  for (const auto& p : files) {
    const auto b = bytes_of(p);
    try {
      auto f = GgufFile::parse(b.data(), b.size(), p.filename().string());
      std::vector<float> out;
      for (const auto& t : f->tensors()) {
        if (t.numel() > (1u << 22)) continue;
        out.resize(t.numel());
        f->dequantize(t, out.data());
      }
    } catch (const Error&) {
    }
  }
}

TEST(FuzzCorpus, SafetensorsInputsParseOrFailCleanly) {
  const auto files = corpus("safetensors");
  ASSERT_FALSE(files.empty());
  for (const auto& p : files) {
    const auto b = bytes_of(p);
    try {
      auto f = SafetensorsFile::parse(b.data(), b.size(), p.filename().string());
      std::vector<float> out;
      for (const auto& [name, t] : f->tensors()) {
        out.resize(static_cast<size_t>(numel_of(t.shape)));
        try {
          f->read_f32(t, out.data());
        } catch (const Error&) {
        }
      }
    } catch (const Error&) {
    }
  }
}

// The text readers: the same functions the fuzz targets call (tests/fuzz/fuzz_text_inputs.hpp).
// Each corpus file must be accepted or refused with bupo::Error; the seeds must be accepted.
void run_corpus(const std::string& target, void (*body)(const uint8_t*, size_t)) {
  const auto files = corpus(target);
  ASSERT_FALSE(files.empty()) << target;
  for (const auto& p : files) {
    const auto b = bytes_of(p);
    SCOPED_TRACE(p.string());
    body(b.data(), b.size());
  }
}
TEST(FuzzCorpus, TextInputsParseOrFailCleanly) {
  run_corpus("tokenizer_json", fuzz::tokenizer_json);
  run_corpus("config_json", fuzz::config_json);
  run_corpus("run_toml", fuzz::run_toml);
  run_corpus("jsonl", fuzz::jsonl);
  run_corpus("verifier", fuzz::verifier);
}
TEST(FuzzCorpus, TheSeedsAreValidInputs) {
  // a seed that is refused would fuzz only the error path: each must load
  auto text = [](const std::string& target, const std::string& name) {
    const auto b = bytes_of(fs::path(BUPO_FUZZ_CORPUS_DIR) / target / name);
    return std::string(b.begin(), b.end());
  };
  const auto tok = Tokenizer::from_json(
      parse_json(text("tokenizer_json", "qwen3-small.json"), "qwen3-small.json"), "seed");
  EXPECT_EQ(tok.decode(tok.encode("Hello world")), "Hello world");
  EXPECT_EQ(ModelConfig::from_json(parse_json(text("config_json", "qwen2.json"), "q"), "q").arch,
            Arch::Qwen2);
  EXPECT_NO_THROW(rl::parse_train_config(text("run_toml", "default.toml"), "default.toml"));
  EXPECT_EQ(rl::parse_journal(text("jsonl", "metrics-torn.jsonl"), "m", INT64_MAX).records.size(),
            2u)
      << "the torn last line is dropped";
  EXPECT_TRUE(rl::verify("So the answer is \\boxed{\\dfrac12}.", "\\frac{1}{2}").correct);
}

TEST(FuzzCorpus, EachFindingIsNowOneClearError) {
  auto error_of = [](const std::string& target, const std::string& name) {
    const auto b = bytes_of(fs::path(BUPO_FUZZ_CORPUS_DIR) / target / name);
    const std::string text(b.begin(), b.end());
    try {
      if (target == "tokenizer_json")
        Tokenizer::from_json(parse_json(text, name), name);
      else
        rl::parse_train_config(text, name);
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_NE(error_of("tokenizer_json", "crash-uncaught-exception.json")
                .find("field 'pre_tokenizer.pretokenizers': expected an array"),
            std::string::npos);
  EXPECT_NE(
      error_of("tokenizer_json", "oom-huge-token-id.json").find("expected an id in [0, 2^24 - 1]"),
      std::string::npos);
  // toml++ 3.3 assumed (undefined behaviour in a release build) what this file breaks
  EXPECT_NE(error_of("run_toml", "table-header-hash.toml")
                .find("table-header-hash.toml: TOML syntax error (a malformed key or table header"),
            std::string::npos);
  EXPECT_NE(error_of("run_toml", "crash-uncaught.toml").find("TOML syntax error"),
            std::string::npos);
  // toml++ 3.3 reached __builtin_unreachable on a non-ASCII character in a bare key
  EXPECT_NE(error_of("run_toml", "ub-non-ascii-bare-key.toml")
                .find("ub-non-ascii-bare-key.toml:6: TOML syntax error: a non-ASCII character"),
            std::string::npos);
}

}  // namespace
}  // namespace bupo
