// Native chat templates against Hugging Face's Jinja rendering of the real Qwen3 template
// (tests/reference/golden/qwen3_chat_template.json, made by make_chat_golden.py), text and ids.
#include <gtest/gtest.h>

#include <filesystem>

#include "core/error.hpp"
#include "tokenizer/chat_template.hpp"
#include "tokenizer/tokenizer.hpp"

namespace bupo {
namespace {

TEST(ChatTemplate, Qwen3MatchesHuggingFaceJinjaRendering) {
  const json golden = read_json_file(std::string(BUPO_GOLDEN_DIR) + "/qwen3_chat_template.json");
  const std::string tok_path = std::string(BUPO_SHARED_DIR) + "/tokenizers/qwen3/tokenizer.json";
  const bool have_tok = std::filesystem::exists(tok_path);
  std::optional<Tokenizer> tok;
  if (have_tok) tok.emplace(Tokenizer::from_file(tok_path));
  ASSERT_GE(golden.size(), 10u);
  for (const auto& g : golden) {
    const auto msgs = chat_messages_from_json(g["messages"], "golden");
    const std::string tmpl = g["enable_thinking"].get<bool>() ? "qwen3" : "qwen3-nothink";
    const std::string text = render_chat(tmpl, msgs, g["add_generation_prompt"].get<bool>());
    EXPECT_EQ(text, g["text"].get<std::string>()) << g["messages"].dump();
    if (have_tok) {
      EXPECT_EQ(tok->encode(text), g["ids"].get<std::vector<int32_t>>());
    }
  }
}

TEST(ChatTemplate, OtherTemplates) {
  const std::vector<ChatMessage> m = {{"system", "S"}, {"user", " Q "}};
  EXPECT_EQ(
      render_chat("chatml", m),
      "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\n Q <|im_end|>\n<|im_start|>assistant\n");
  EXPECT_EQ(render_chat("smollm2", {{"user", "Q"}}).substr(0, 40),
            "<|im_start|>system\nYou are a helpful AI ");
  EXPECT_EQ(render_chat("llama3", m),
            "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nS<|eot_id|><|start_"
            "header_id|>user"
            "<|end_header_id|>\n\nQ<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n");
  const std::string orz = render_chat("orz", m);
  EXPECT_NE(orz.find("This is the problem:\n Q \nAssistant: <think>"), std::string::npos);
}

TEST(ChatTemplate, Errors) {
  EXPECT_THROW(render_chat("jinja", {{"user", "x"}}), Error);
  EXPECT_THROW(render_chat("qwen3", {{"tool", "x"}}), Error);
  EXPECT_THROW(chat_messages_from_json(json::parse(R"([{"role": "user"}])"), "f:1"), Error);
  EXPECT_EQ(chat_messages_from_json(json("hello"), "f:1").at(0).role, "user");
}

}  // namespace
}  // namespace bupo
