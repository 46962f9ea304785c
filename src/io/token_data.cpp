#include "io/token_data.hpp"

#include "core/error.hpp"

namespace bupo {

TokenRecord parse_token_record(const json& j, const std::string& where, int64_t vocab_size) {
  BUPO_CHECK(j.is_object(), where,
             ": expected a JSON object {\"ids\": [...], \"response_start\": s}");
  auto ids = j.find("ids");
  BUPO_CHECK(ids != j.end() && ids->is_array() && !ids->empty(), where,
             ": field 'ids': expected a non-empty list of token ids");
  TokenRecord r;
  r.ids.reserve(ids->size());
  for (size_t i = 0; i < ids->size(); ++i) {
    const json& v = (*ids)[i];
    BUPO_CHECK(v.is_number_integer(), where, ": field 'ids'[", i, "]: expected an integer, got ",
               v.dump());
    const auto id = json_exact_int(v);
    BUPO_CHECK(id && *id >= 0 && *id < vocab_size, where, ": field 'ids'[", i, "] = ", v.dump(),
               " is outside the vocabulary [0, ", vocab_size, ")");
    r.ids.push_back(static_cast<int32_t>(*id));
  }
  const int64_t n = static_cast<int64_t>(r.ids.size());
  r.response_start = json_int(j, "response_start", where, 0);
  BUPO_CHECK(r.response_start >= 1 && r.response_start <= n, where,
             ": field 'response_start' = ", r.response_start,
             " is out of range: expected 1 <= response_start <= ", n,
             " (the number of ids; position s-1 predicts token s)");
  return r;
}

}  // namespace bupo
