// Errors a person can act on: every failure names the file (or source), the field, and what was
// expected. One exception type; the CLI prints its message and exits non-zero.
#pragma once
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

namespace bupo {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what) : std::runtime_error(what) {}
};

namespace detail {
template <typename... Args>
std::string concat(Args&&... args) {
  std::ostringstream os;
  (os << ... << std::forward<Args>(args));
  return os.str();
}
}  // namespace detail

// fail("model.safetensors: tensor 'x': expected ", a, ", got ", b)
template <typename... Args>
[[noreturn]] void fail(Args&&... args) {
  throw Error(detail::concat(std::forward<Args>(args)...));
}

#define BUPO_CHECK(cond, ...)               \
  do {                                      \
    if (!(cond)) ::bupo::fail(__VA_ARGS__); \
  } while (0)

}  // namespace bupo
