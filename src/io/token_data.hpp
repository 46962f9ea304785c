// JSONL rows of token ids: {"ids": [...], "response_start": s}. Tokens ids[s..n-1] are the
// response; the distribution that predicts token t is read at position t-1, so 1 <= s <= n.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace bupo {

struct TokenRecord {
  std::vector<int32_t> ids;
  int64_t response_start = 0;
  int64_t line = 0;  // 1-based line in the source file
};

// Reads and validates every row before any work starts: "<file>:<line>: field '<f>': ...".
std::vector<TokenRecord> read_token_records(const std::string& path, int64_t vocab_size);

}  // namespace bupo
