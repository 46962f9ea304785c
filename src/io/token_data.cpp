#include "io/token_data.hpp"

#include <fstream>

#include "core/error.hpp"
#include "io/json_util.hpp"

namespace bupo {

std::vector<TokenRecord> read_token_records(const std::string& path, int64_t vocab_size) {
  std::ifstream in(path);
  BUPO_CHECK(in.good(), path, ": cannot open data file");
  std::vector<TokenRecord> out;
  std::string text;
  int64_t line = 0;
  while (std::getline(in, text)) {
    ++line;
    if (text.find_first_not_of(" \t\r") == std::string::npos) continue;
    const std::string where = path + ":" + std::to_string(line);
    json j;
    try {
      j = json::parse(text);
    } catch (const json::parse_error& e) {
      fail(where, ": malformed JSON at byte ", e.byte,
           " (expected {\"ids\": [...], \"response_start\": s})");
    }
    BUPO_CHECK(j.is_object(), where,
               ": expected a JSON object {\"ids\": [...], \"response_start\": s}");
    BUPO_CHECK(!j.contains("text") && !j.contains("prompt"), where,
               ": text rows need a tokenizer, which this build does not have yet; give token ids "
               "{\"ids\": [...], \"response_start\": s}");
    auto ids = j.find("ids");
    BUPO_CHECK(ids != j.end() && ids->is_array() && !ids->empty(), where,
               ": field 'ids': expected a non-empty list of token ids");
    TokenRecord r;
    r.line = line;
    r.ids.reserve(ids->size());
    for (size_t i = 0; i < ids->size(); ++i) {
      const json& v = (*ids)[i];
      BUPO_CHECK(v.is_number_integer(), where, ": field 'ids'[", i, "]: expected an integer, got ",
                 v.dump());
      const int64_t id = v.get<int64_t>();
      BUPO_CHECK(id >= 0 && id < vocab_size, where, ": field 'ids'[", i, "] = ", id,
                 " is outside the vocabulary [0, ", vocab_size, ")");
      r.ids.push_back(static_cast<int32_t>(id));
    }
    const int64_t n = static_cast<int64_t>(r.ids.size());
    r.response_start = json_int(j, "response_start", where, 0);
    BUPO_CHECK(r.response_start >= 1 && r.response_start <= n, where,
               ": field 'response_start' = ", r.response_start,
               " is out of range: expected 1 <= response_start <= ", n,
               " (the number of ids; position s-1 predicts token s)");
    out.push_back(std::move(r));
  }
  BUPO_CHECK(!out.empty(), path, ": no data rows");
  return out;
}

}  // namespace bupo
