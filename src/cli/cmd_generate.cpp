#include <cstdio>
#include <fstream>
#include <iostream>

#include "cli/commands.hpp"
#include "cli/validators.hpp"
#include "core/error.hpp"
#include "gen/text_rows.hpp"
#include "model/gguf_import.hpp"

namespace bupo::cli {

void add_sampling_options(CLI::App* sub, GenerateOptions& g);
bool find_tokenizer(const std::string& model, const std::string& explicit_path,
                    std::optional<Tokenizer>& tok);

Runner add_generate(CLI::App& app) {
  struct Opts {
    std::string model, tokenizer, prompt, data, tmpl = "auto", device = "cpu", precision = "auto";
    int64_t n = 1, limit = 0;
    GenerateOptions gen;
  };
  auto o = std::make_shared<Opts>();
  auto* sub = app.add_subcommand(
      "generate",
      "Sample responses with a KV cache. Writes JSONL to stdout: {\"prompt_index\", "
      "\"sample\", \"text\", \"ids\", \"logprobs\", \"entropies\", \"finish_reason\"}.");
  sub->add_option("--model", o->model, "model directory or .gguf file")->required();
  auto* p = sub->add_option("--prompt", o->prompt, "one user message");
  auto* d = sub->add_option("--data", o->data,
                            "JSONL rows with a verl-style 'prompt' (message list or string)");
  p->excludes(d);
  sub->add_option("--tokenizer", o->tokenizer, "tokenizer (default: the model's)");
  sub->add_option("--template", o->tmpl,
                  "chat template: auto, none, qwen3, qwen3-nothink, chatml, smollm2, llama3, orz");
  sub->add_option("--n", o->n, "samples per prompt")->check(integer_in<int64_t>(1, 65536));
  sub->add_option("--limit", o->limit, "use the first N rows of --data")
      ->check(integer_in<int64_t>(0));
  add_sampling_options(sub, o->gen);
  sub->add_option("--device", o->device,
                  "backend: cpu, cuda or cuda:N (a build with CUDA and a visible GPU)");
  sub->add_option("--precision", o->precision, "compute dtype: auto, bf16 (cuda), fp32")
      ->check(CLI::IsMember({"auto", "bf16", "fp32"}));
  return [o]() {
    BUPO_CHECK(!o->prompt.empty() || !o->data.empty(), "generate: give --prompt or --data");
    auto model = load_model(o->model, ParallelContext::single(),
                            backend_for(o->device, "bupo generate --device", o->precision));
    std::optional<Tokenizer> tok;
    BUPO_CHECK(find_tokenizer(o->model, o->tokenizer, tok), o->model,
               ": no tokenizer found (no tokenizer.json in the model directory); pass --tokenizer");
    const std::string tmpl = resolve_template(o->tmpl, model->config(), *tok);
    std::vector<std::vector<int32_t>> prompts;
    if (!o->prompt.empty()) {
      prompts.push_back(encode_prompt(*tok, json(o->prompt), tmpl, "--prompt"));
    } else {
      std::ifstream in(o->data);
      BUPO_CHECK(in.good(), o->data, ": cannot open data file");
      std::string line;
      int64_t ln = 0;
      while (std::getline(in, line) &&
             (o->limit == 0 || static_cast<int64_t>(prompts.size()) < o->limit)) {
        ++ln;
        if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
        const std::string where = o->data + ":" + std::to_string(ln);
        const json j = parse_json(line, where);
        BUPO_CHECK(j.is_object() && j.contains("prompt"), where, ": field 'prompt' is missing");
        prompts.push_back(encode_prompt(*tok, j["prompt"], tmpl, where));
      }
      BUPO_CHECK(!prompts.empty(), o->data, ": no data rows");
    }
    GenerateOptions g = o->gen;
    if (g.stop_ids.empty()) g.stop_ids = default_stop_ids(*tok);
    const auto out = generate(*model, prompts, o->n, g, &*tok);
    for (const auto& r : out) {
      json j = {{"prompt_index", r.prompt},
                {"sample", r.sample},
                {"text", r.text},
                {"ids", r.ids},
                {"logprobs", r.logprobs},
                {"entropies", r.entropies},
                {"finish_reason", r.finish_reason}};
      std::cout << j.dump(-1, ' ', false, json::error_handler_t::replace) << '\n';
    }
    std::cout.flush();
    return 0;
  };
}

}  // namespace bupo::cli
