// Token rows of `bupo entropy`: {"ids": [...], "response_start": s}. Tokens ids[s..n-1] are the
// response; the distribution that predicts token t is read at position t-1, so 1 <= s <= n.
// (Files are read by gen/text_rows.hpp, which also accepts text rows.)
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "io/json_util.hpp"

namespace bupo {

struct TokenRecord {
  std::vector<int32_t> ids;
  int64_t response_start = 0;
  int64_t line = 0;  // 1-based line in the source file
};

// Parses one row; errors read "<where>: field '<f>': ..." with where = "<file>:<line>".
TokenRecord parse_token_record(const json& j, const std::string& where, int64_t vocab_size);

}  // namespace bupo
