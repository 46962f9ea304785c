#include "gen/text_rows.hpp"

#include <fstream>

#include "core/error.hpp"
#include "tokenizer/chat_template.hpp"

namespace bupo {

std::string resolve_template(const std::string& name, const ModelConfig& cfg,
                             const Tokenizer& tok) {
  if (name != "auto") return name;
  if (cfg.arch == Arch::Qwen3) return "qwen3";
  if (tok.token_id("<|eot_id|>")) return "llama3";
  if (tok.token_id("<|im_start|>")) return "chatml";
  fail("--template auto: cannot tell this model's chat format; pass --template (",
       "qwen3, qwen3-nothink, chatml, smollm2, llama3, orz or none)");
}

std::vector<int32_t> encode_prompt(const Tokenizer& tok, const json& prompt,
                                   const std::string& tmpl, const std::string& where) {
  if (tmpl == "none") {
    BUPO_CHECK(prompt.is_string(), where,
               ": field 'prompt': --template none needs a string prompt");
    return tok.encode(prompt.get<std::string>());
  }
  return tok.encode(render_chat(tmpl, chat_messages_from_json(prompt, where), true));
}

std::vector<TokenRecord> read_entropy_rows(const std::string& path, Model& model,
                                           const Tokenizer* tok, const TextRowOptions& opt) {
  std::ifstream in(path);
  BUPO_CHECK(in.good(), path, ": cannot open data file");
  const int64_t V = model.config().vocab_size;
  std::vector<TokenRecord> recs;
  std::vector<size_t> to_generate;
  std::string tmpl;
  std::string text;
  int64_t line = 0;
  while (std::getline(in, text)) {
    ++line;
    if (text.find_first_not_of(" \t\r") == std::string::npos) continue;
    if (opt.limit > 0 && static_cast<int64_t>(recs.size()) >= opt.limit) break;
    const std::string where = path + ":" + std::to_string(line);
    const json j = parse_json(text, where);
    BUPO_CHECK(j.is_object(), where, ": expected a JSON object");
    if (j.contains("ids")) {
      recs.push_back(parse_token_record(j, where, V));
      recs.back().line = line;
      continue;
    }
    BUPO_CHECK(j.contains("prompt"), where,
               ": expected {\"ids\": [...], \"response_start\": s} or {\"prompt\": ..., "
               "\"response\": \"...\"}");
    BUPO_CHECK(tok != nullptr, where,
               ": text rows need a tokenizer (tokenizer.json next to the model, a .gguf "
               "model, or --tokenizer)");
    if (tmpl.empty()) tmpl = resolve_template(opt.tmpl, model.config(), *tok);
    TokenRecord r;
    r.line = line;
    r.ids = encode_prompt(*tok, j["prompt"], tmpl, where);
    r.response_start = static_cast<int64_t>(r.ids.size());
    if (j.contains("response")) {
      BUPO_CHECK(j["response"].is_string(), where, ": field 'response': expected a string");
      const auto resp = tok->encode(j["response"].get<std::string>());
      r.ids.insert(r.ids.end(), resp.begin(), resp.end());
    } else {
      BUPO_CHECK(opt.generate, where,
                 ": field 'response' is missing (pass --generate to sample it)");
      to_generate.push_back(recs.size());
    }
    for (size_t i = 0; i < r.ids.size(); ++i)
      BUPO_CHECK(r.ids[i] >= 0 && r.ids[i] < V, where, ": token id ", r.ids[i],
                 " from the tokenizer is outside the "
                 "model's vocabulary [0, ",
                 V, ")");
    recs.push_back(std::move(r));
  }
  BUPO_CHECK(!recs.empty(), path, ": no data rows");
  if (!to_generate.empty()) {
    std::vector<std::vector<int32_t>> prompts;
    GenerateOptions g = opt.gen;
    for (size_t i : to_generate) {
      prompts.push_back(recs[i].ids);
      g.prompt_keys.push_back(static_cast<int64_t>(i));
    }
    if (g.stop_ids.empty()) g.stop_ids = default_stop_ids(*tok);
    const auto out = generate(model, prompts, 1, g, tok);
    for (size_t k = 0; k < to_generate.size(); ++k) {
      auto& r = recs[to_generate[k]];
      r.ids.insert(r.ids.end(), out[k].ids.begin(), out[k].ids.end());
    }
  }
  return recs;
}

}  // namespace bupo
