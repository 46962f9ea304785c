// Hugging Face config.json parsing: both RoPE spellings, and errors naming the file and field.
#include <gtest/gtest.h>

#include "core/error.hpp"
#include "model/config.hpp"

namespace bupo {
namespace {

json llama_legacy() {
  return json::parse(
      R"({"architectures": ["LlamaForCausalLM"], "vocab_size": 128256, "hidden_size": 3072,
    "intermediate_size": 8192, "num_hidden_layers": 28, "num_attention_heads": 24, "num_key_value_heads": 8,
    "rms_norm_eps": 1e-5, "rope_theta": 500000.0, "tie_word_embeddings": true, "hidden_act": "silu",
    "max_position_embeddings": 131072, "torch_dtype": "bfloat16",
    "rope_scaling": {"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                     "original_max_position_embeddings": 8192, "rope_type": "llama3"}})");
}

std::string error_of(const json& j) {
  try {
    ModelConfig::from_json(j, "cfg.json");
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(Config, Llama32LegacyRopeScaling) {
  const auto c = ModelConfig::from_json(llama_legacy(), "cfg.json");
  EXPECT_EQ(c.arch, Arch::Llama);
  EXPECT_EQ(c.head_dim, 128);
  EXPECT_DOUBLE_EQ(c.rope_theta, 500000.0);
  EXPECT_DOUBLE_EQ(c.rope_scaling.factor, 32.0);
  EXPECT_TRUE(c.tie_word_embeddings);
  EXPECT_FALSE(c.qkv_bias);
}

TEST(Config, Transformers5RopeParametersGiveTheSameConfig) {
  json j = llama_legacy();
  json rp = j["rope_scaling"];
  rp["rope_theta"] = 500000.0;
  j.erase("rope_scaling");
  j.erase("rope_theta");
  j["rope_parameters"] = rp;
  const auto a = ModelConfig::from_json(llama_legacy(), "a"), b = ModelConfig::from_json(j, "b");
  EXPECT_DOUBLE_EQ(a.rope_theta, b.rope_theta);
  EXPECT_DOUBLE_EQ(a.rope_scaling.factor, b.rope_scaling.factor);
  EXPECT_DOUBLE_EQ(a.rope_scaling.original_max_position_embeddings,
                   b.rope_scaling.original_max_position_embeddings);
}

TEST(Config, Qwen3And2ArchitectureFeatures) {
  json j = llama_legacy();
  j["architectures"] = {"Qwen3ForCausalLM"};
  j["head_dim"] = 128;
  j.erase("rope_scaling");
  auto c = ModelConfig::from_json(j, "q3");
  EXPECT_TRUE(c.qk_norm);
  EXPECT_FALSE(c.qkv_bias);
  j["architectures"] = {"Qwen2ForCausalLM"};
  c = ModelConfig::from_json(j, "q2");
  EXPECT_TRUE(c.qkv_bias);
  EXPECT_FALSE(c.qk_norm);
}

TEST(ConfigErrors, NameTheFileAndField) {
  json j = llama_legacy();
  j["architectures"] = {"MistralForCausalLM"};
  {
    const auto e = error_of(j);
    EXPECT_NE(
        e.find("cfg.json: field 'architectures': unsupported architecture 'MistralForCausalLM'"),
        std::string::npos)
        << e;
  }
  j = llama_legacy();
  j.erase("hidden_size");
  EXPECT_NE(error_of(j).find("field 'hidden_size' is missing"), std::string::npos);
  j = llama_legacy();
  j["num_attention_heads"] = "24";
  EXPECT_NE(error_of(j).find("field 'num_attention_heads': expected an integer"),
            std::string::npos);
  j = llama_legacy();
  j["num_key_value_heads"] = 7;
  EXPECT_NE(error_of(j).find("must be a multiple of 'num_key_value_heads'"), std::string::npos);
  j = llama_legacy();
  j["rope_scaling"]["rope_type"] = "yarn";
  EXPECT_NE(error_of(j).find("field 'rope_scaling': unsupported rope_type 'yarn'"),
            std::string::npos);
  j = llama_legacy();
  j["hidden_act"] = "gelu";
  EXPECT_NE(error_of(j).find("field 'hidden_act': expected \"silu\""), std::string::npos);
  j = llama_legacy();
  j["vocab_size"] = 0;
  EXPECT_NE(error_of(j).find("field 'vocab_size': expected an integer >= 1"), std::string::npos);
  EXPECT_NE(error_of(json::array()).find("expected a JSON object"), std::string::npos);
}

TEST(ConfigErrors, MalformedJsonFile) {
  const std::string p = ::testing::TempDir() + "/bad_config.json";
  {
    FILE* f = std::fopen(p.c_str(), "w");
    std::fputs("{\"architectures\": [\"LlamaForCausalLM\"],, }", f);
    std::fclose(f);
  }
  try {
    ModelConfig::load(p);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(p + ": malformed JSON at byte"), std::string::npos)
        << e.what();
  }
}

TEST(Config, RoundTripThroughToJson) {
  const auto a = ModelConfig::from_json(llama_legacy(), "a");
  const auto b = ModelConfig::from_json(a.to_json(), "b");
  EXPECT_EQ(a.num_layers, b.num_layers);
  EXPECT_EQ(a.head_dim, b.head_dim);
  EXPECT_DOUBLE_EQ(a.rope_scaling.factor, b.rope_scaling.factor);
  EXPECT_EQ(a.tie_word_embeddings, b.tie_word_embeddings);
}

}  // namespace
}  // namespace bupo
