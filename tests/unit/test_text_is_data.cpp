// Text is data (issue 13, item 8): a NUL character is a character like any other, and the
// tokenizer and the verifier do work near-linear in their input. The work is counted
// (core/work_counter.hpp: merges considered, characters scanned, range queries), not timed, on
// MB-sized inputs: quadratic code (52 s for 100,000 'a' in the BPE, 77 s for 600 KB of nested
// \text{ in the verifier) fails these bounds by orders of magnitude.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <random>

#include "core/work_counter.hpp"
#include "rl/reward.hpp"
#include "tokenizer/tokenizer.hpp"

namespace bupo {
namespace {

const std::string kQwen3 = std::string(BUPO_SHARED_DIR) + "/tokenizers/qwen3/tokenizer.json";

const Tokenizer& qwen3() {
  static const Tokenizer t = Tokenizer::from_file(kQwen3);
  return t;
}

template <typename F>
uint64_t steps_of(F&& f) {
  const uint64_t before = work::steps;
  f();
  return work::steps - before;
}

// n * log2(n): the budget of an O(n log n) algorithm, per unit of the constant.
double n_log_n(size_t n) {
  return static_cast<double>(n) * std::log2(static_cast<double>(n));
}

std::string random_letters(size_t n, uint64_t seed) {
  std::mt19937_64 g(seed);
  std::string s(n, 'a');
  for (char& c : s) c = static_cast<char>('a' + g() % 10);
  return s;
}

class TextIsData : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!std::filesystem::exists(kQwen3)) GTEST_SKIP() << kQwen3 << " not found";
  }
};

TEST_F(TextIsData, NulIsACharacterAsInHuggingFaceTokenizers) {
  // ids from HF tokenizers 0.23.3, Tokenizer.from_file(<qwen3 tokenizer.json>).encode(text,
  // add_special_tokens=False): the text after a NUL was lost up to the next special token
  using namespace std::string_literals;
  EXPECT_EQ(qwen3().encode("a\0b c<|im_end|>d\0\0e"s),
            (std::vector<int32_t>{64, 188, 65, 272, 151645, 67, 188, 188, 68}));
  EXPECT_EQ(qwen3().encode("\0"s), (std::vector<int32_t>{188}));
  EXPECT_EQ(qwen3().encode("x\0\xC3\xA9\xCC\x81y"s),  // NFC around a NUL
            (std::vector<int32_t>{87, 188, 963, 53839, 88}));
  EXPECT_EQ(qwen3().decode(qwen3().encode("p\0q"s)), "p\0q"s);
}

TEST_F(TextIsData, BpeWorkIsNLogNInTheLengthOfOnePreToken) {
  // one pre-token of n identical bytes: the worst case of the old rescan-every-pair loop
  const std::string a100k(100000, 'a');
  std::vector<int32_t> ids;
  const uint64_t steps = steps_of([&] { ids = qwen3().encode(a100k); });
  EXPECT_EQ(ids, std::vector<int32_t>(12500, 69440));  // HF tokenizers: 12,500 x 'aaaaaaaa'
  EXPECT_LT(static_cast<double>(steps), 2.0 * n_log_n(a100k.size())) << steps;
  // 1 MB of letters without a space: one pre-token; 8x the input costs < 8 * 1.5x the work
  const std::string small = random_letters(1 << 17, 1), large = random_letters(1 << 20, 2);
  const uint64_t s_small = steps_of([&] { qwen3().encode(small); }),
                 s_large = steps_of([&] { qwen3().encode(large); });
  EXPECT_LT(static_cast<double>(s_large), 2.0 * n_log_n(large.size())) << s_large;
  EXPECT_LT(static_cast<double>(s_large), 12.0 * static_cast<double>(s_small))
      << s_small << " -> " << s_large;
}

TEST_F(TextIsData, VerifierWorkIsNLogNOnNestedWrappersAndRepeatedEscapes) {
  auto nested = [](size_t depth) {
    std::string s;
    for (size_t i = 0; i < depth; ++i) s += "\\text{";
    s += "5";
    s += std::string(depth, '}');
    return "\\boxed{" + s + "}";
  };
  const std::string r1 = nested(600000 / 7), r2 = nested(4 * 600000 / 7);  // 0.6 and 2.4 MB
  rl::Verdict v;
  const uint64_t s1 = steps_of([&] { v = rl::verify(r1, "5"); });
  EXPECT_TRUE(v.correct);
  const uint64_t s2 = steps_of([&] { v = rl::verify(r2, "5"); });
  EXPECT_TRUE(v.correct);
  EXPECT_LT(static_cast<double>(s2), 2.0 * n_log_n(r2.size())) << s2;
  EXPECT_LT(static_cast<double>(s2), 6.0 * static_cast<double>(s1)) << s1 << " -> " << s2;
  // a megabyte of escapes that strip_string removes one by one
  std::string esc = "\\boxed{";
  for (int i = 0; i < 250000; ++i) esc += "\\!";
  esc += "7}";
  const uint64_t s3 = steps_of([&] { v = rl::verify(esc, "7"); });
  EXPECT_TRUE(v.correct);
  EXPECT_LT(static_cast<double>(s3), 2.0 * n_log_n(esc.size())) << s3;
}

// The math_dapo grader normalises the whole ground truth (only the response is cut to its last
// 300 characters) and parses it for the numeric fallback: MB-sized hostile ground truths cost
// linear work and never overflow the stack.
TEST_F(TextIsData, MathDapoGraderWorkIsLinearInTheGroundTruth) {
  const rl::Scoring dapo{rl::Grader::MathDapo, rl::MathMode::Verl};
  auto repeated = [](std::string_view piece, size_t n) {
    std::string s;
    for (size_t i = 0; i < n; ++i) s += piece;
    return s;
  };
  for (std::string_view piece : {"\\text{", "\\boxed{", "(", "-", "{", "\\frac{", "$", "frac"}) {
    const std::string small = repeated(piece, 100000), large = repeated(piece, 400000);
    rl::Verdict v;
    const uint64_t s1 = steps_of([&] { v = rl::verify("Answer: 5", small, dapo, ""); });
    EXPECT_FALSE(v.correct) << piece;
    const uint64_t s2 = steps_of([&] { v = rl::verify("Answer: 5", large, dapo, ""); });
    EXPECT_FALSE(v.correct) << piece;
    EXPECT_LT(static_cast<double>(s2), 6.0 * static_cast<double>(s1))
        << piece << ": " << s1 << " -> " << s2;
  }
  // lines: many short lines of unclosed wrappers
  const std::string lines = repeated("\\text{a\n", 200000);
  const uint64_t s3 = steps_of([&] { (void)rl::verify("Answer: 5", lines, dapo, ""); });
  EXPECT_LT(static_cast<double>(s3), 2.0 * n_log_n(lines.size())) << s3;
}

}  // namespace
}  // namespace bupo
