// Shapes of parameters and checkpoint tensors: row-major dimensions, written in comments as
// (rows, cols) the way llm.c does, e.g. x (N, d).
#pragma once
#include <cstdint>
#include <functional>
#include <numeric>
#include <string>
#include <vector>

namespace bupo {

using Shape = std::vector<int64_t>;

inline int64_t numel_of(const Shape& s) {
  return std::accumulate(s.begin(), s.end(), int64_t{1}, std::multiplies<>());
}
std::string shape_str(const Shape& s);

}  // namespace bupo
