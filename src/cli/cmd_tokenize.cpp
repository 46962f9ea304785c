#include <cstdio>
#include <iostream>

#include "cli/commands.hpp"
#include "core/error.hpp"
#include "model/gguf_import.hpp"
#include "tokenizer/tokenizer.hpp"

namespace bupo::cli {

Runner add_tokenize(CLI::App& app) {
  struct Opts {
    std::string tokenizer;
    bool decode = false, skip_special = false;
  };
  auto o = std::make_shared<Opts>();
  auto* sub = app.add_subcommand(
      "tokenize",
      "Encode JSONL {\"text\": ...} from stdin to {\"ids\": [...]} on stdout, in order "
      "(--decode: the reverse).");
  sub->add_option("--tokenizer", o->tokenizer,
                  "a tokenizer.json, a model directory, or a .gguf file")
      ->required();
  sub->add_flag("--decode", o->decode, "read {\"ids\": [...]} and write {\"text\": ...}");
  sub->add_flag("--skip-special", o->skip_special, "with --decode: drop special tokens");
  return [o]() {
    const Tokenizer tok = load_tokenizer(o->tokenizer);
    std::string line;
    int64_t n = 0;
    while (std::getline(std::cin, line)) {
      ++n;
      if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
      const std::string where = "stdin:" + std::to_string(n);
      const json j = parse_json(line, where);
      json out;
      if (o->decode) {
        auto ids = j.is_object() ? j.find("ids") : j.end();
        BUPO_CHECK(ids != j.end() && ids->is_array(), where,
                   ": field 'ids': expected a list of token ids");
        std::vector<int32_t> v;
        for (size_t i = 0; i < ids->size(); ++i) {
          const json& x = (*ids)[i];
          const auto id = json_exact_int(x);
          BUPO_CHECK(id && *id >= 0 && *id < tok.vocab_size(), where, ": field 'ids'[", i,
                     "]: expected an id in [0, ", tok.vocab_size(), "), got ", x.dump());
          v.push_back(static_cast<int32_t>(*id));
        }
        out["text"] = tok.decode(v, o->skip_special);
      } else {
        auto text = j.is_object() ? j.find("text") : j.end();
        BUPO_CHECK(text != j.end() && text->is_string(), where,
                   ": field 'text': expected a string");
        out["ids"] = tok.encode(text->get<std::string>());
      }
      // invalid UTF-8 in decoded text (a cut multi-byte character) is replaced, not an error
      std::cout << out.dump(-1, ' ', false, json::error_handler_t::replace) << '\n';
    }
    std::cout.flush();
    return 0;
  };
}

}  // namespace bupo::cli
