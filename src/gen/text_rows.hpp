// Text inputs: verl-style prompts rendered with a chat template and tokenised, and the text rows
// of `bupo entropy` ({"prompt", "response"}, or a prompt alone whose response is sampled first).
#pragma once
#include <string>
#include <vector>

#include "gen/generate.hpp"
#include "io/json_util.hpp"
#include "io/token_data.hpp"
#include "tokenizer/tokenizer.hpp"

namespace bupo {

// "auto" picks qwen3 for Qwen3 models, llama3 when <|eot_id|> exists, chatml when <|im_start|>
// exists; "none" uses the prompt text as is (string prompts only).
std::string resolve_template(const std::string& name, const ModelConfig& cfg, const Tokenizer& tok);
std::vector<int32_t> encode_prompt(const Tokenizer& tok, const json& prompt,
                                   const std::string& tmpl, const std::string& where);

struct TextRowOptions {
  std::string tmpl = "auto";
  bool generate = false;  // sample the response of rows that have only a prompt
  int64_t limit = 0;      // first N rows (0: all)
  GenerateOptions gen;
};

// Reads token rows ({"ids", "response_start"}) and text rows ({"prompt", "response"} or, with
// generate, {"prompt"}); validates everything before returning. Sampled responses stop at the
// template's end-of-turn token, which is kept in the record.
std::vector<TokenRecord> read_entropy_rows(const std::string& path, Model& model,
                                           const Tokenizer* tok, const TextRowOptions& opt);

}  // namespace bupo
