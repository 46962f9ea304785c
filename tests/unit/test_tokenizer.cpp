// Byte-level BPE against the real Qwen3 tokenizer: ../shared/testdata/tokenizer/qwen3_golden.jsonl
// (300 texts tokenised by Hugging Face tokenizers) must be reproduced exactly.
#include <gtest/gtest.h>

#include <utf8proc.h>
#include <filesystem>
#include <fstream>

#include "core/error.hpp"
#include "tokenizer/tokenizer.hpp"

namespace bupo {
namespace {
namespace fs = std::filesystem;

const std::string kShared = BUPO_SHARED_DIR;

const Tokenizer& qwen3() {
  static const Tokenizer t = Tokenizer::from_file(kShared + "/tokenizers/qwen3/tokenizer.json");
  return t;
}

std::string nfc(const std::string& s) {
  auto* n = utf8proc_NFC(reinterpret_cast<const utf8proc_uint8_t*>(s.c_str()));
  std::string out(reinterpret_cast<char*>(n));
  std::free(n);
  return out;
}

class Qwen3Tokenizer : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!fs::exists(kShared + "/tokenizers/qwen3/tokenizer.json"))
      GTEST_SKIP() << "shared/ not found beside the project (" << kShared << ")";
  }
};

TEST_F(Qwen3Tokenizer, ReproducesTheGoldenTokenizationExactly) {
  std::ifstream in(kShared + "/testdata/tokenizer/qwen3_golden.jsonl");
  ASSERT_TRUE(in.good());
  std::string line;
  int total = 0, exact = 0, roundtrip = 0;
  while (std::getline(in, line)) {
    const json j = json::parse(line);
    const std::string text = j.at("text").get<std::string>();
    const auto want = j.at("ids").get<std::vector<int32_t>>();
    const auto got = qwen3().encode(text);
    ++total;
    if (got == want)
      ++exact;
    else
      ADD_FAILURE() << "line " << total << ": " << text.substr(0, 80);
    if (qwen3().decode(got) == nfc(text)) ++roundtrip;
  }
  EXPECT_EQ(total, 300);
  EXPECT_EQ(exact, total);
  EXPECT_EQ(roundtrip, total) << "decode(encode(x)) must be NFC(x)";
}

TEST_F(Qwen3Tokenizer, SpecialTokensAreMatchedBeforePreTokenization) {
  const auto& t = qwen3();
  const auto ids = t.encode("<|im_start|>user\nHi<|im_end|>\n<think>\n\n</think>\n\n");
  EXPECT_EQ(ids.front(), 151644);
  EXPECT_EQ(std::count(ids.begin(), ids.end(), 151645), 1);
  EXPECT_EQ(std::count(ids.begin(), ids.end(), 151667), 1);
  EXPECT_EQ(std::count(ids.begin(), ids.end(), 151668), 1);
  EXPECT_TRUE(t.is_special(151645));
  EXPECT_FALSE(t.is_special(151667));
  EXPECT_EQ(t.decode(ids, /*skip_special=*/true), "user\nHi\n<think>\n\n</think>\n\n");
  EXPECT_EQ(t.vocab_size(), 151669);
}

TEST_F(Qwen3Tokenizer, StreamDecoderNeverEmitsHalfACharacter) {
  const auto& t = qwen3();
  const std::string text = "日本語のテキスト 🙂 ∑ ß";
  const auto ids = t.encode(text);
  StreamDecoder sd(t);
  std::string acc;
  for (int32_t id : ids) {
    const std::string piece = sd.push(id);
    EXPECT_EQ(utf8_complete_prefix(piece), piece.size()) << "partial UTF-8 emitted";
    acc += piece;
  }
  acc += sd.flush();
  EXPECT_EQ(acc, text);
}

TEST(Utf8, CompletePrefix) {
  EXPECT_EQ(utf8_complete_prefix("ab"), 2u);
  EXPECT_EQ(utf8_complete_prefix("a\xE6\x97"), 1u);      // 3-byte char missing its last byte
  EXPECT_EQ(utf8_complete_prefix("a\xE6\x97\xA5"), 4u);  // complete
  EXPECT_EQ(utf8_complete_prefix("\xF0\x9F\x99"), 0u);
}

TEST(TokenizerErrors, MalformedTokenizerJson) {
  auto err = [](const json& j) {
    try {
      Tokenizer::from_json(j, "tok.json");
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  EXPECT_NE(err(json::object()).find("tok.json: expected a Hugging Face tokenizer.json"),
            std::string::npos);
  EXPECT_NE(err(json::parse(R"({"model": {"type": "Unigram"}})")).find("only BPE is supported"),
            std::string::npos);
  EXPECT_NE(err(json::parse(R"({"model": {"type": "BPE", "vocab": {"a": 0}, "merges": []}})"))
                .find("not a byte-level BPE tokenizer"),
            std::string::npos);
}

}  // namespace
}  // namespace bupo
