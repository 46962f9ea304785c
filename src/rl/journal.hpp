// metrics.jsonl, the training journal (rl/train_log.hpp), read back: its records up to a step.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "io/json_util.hpp"

namespace bupo::rl {

struct Journal {
  std::vector<json> records;  // the lines of steps <= keep_step, in order
  std::string text;           // those lines, each ending in '\n'
};
// The records of `text` (the contents of `path`, named in errors with the line) with step <=
// keep_step. A torn last line (a writer killed mid-append) is dropped; any other malformed line,
// or one without an integer "step" >= 1, is an error naming path:line.
Journal parse_journal(std::string_view text, const std::string& path, int64_t keep_step);

}  // namespace bupo::rl
