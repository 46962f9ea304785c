// toml++ for every file bupo reads as TOML (run configs, cluster files): one inclusion, with the
// same checks in every translation unit.
#pragma once
#include <stdexcept>

// toml++ 3.3 (Debian 12) states some of its parser's preconditions as TOML_ASSERT_ASSUME, which a
// release build (NDEBUG) turns into an optimiser assumption: a malformed file that breaks one (the
// fuzzer found "[#" as a table header) is then undefined behaviour. Included without NDEBUG and
// with TOML_ASSERT throwing, they are checks that end in a clear error (inside toml++'s noexcept
// functions the throw terminates, as its assert would: loud, never undefined).
namespace bupo {
struct TomlInternalCheck : std::runtime_error {
  using std::runtime_error::runtime_error;
};
}  // namespace bupo
#pragma push_macro("NDEBUG")
#undef NDEBUG
#pragma GCC diagnostic push
#if defined(__clang__)
#pragma GCC diagnostic ignored "-Wexceptions"
#else
#pragma GCC diagnostic ignored "-Wterminate"
#endif
#define TOML_ASSERT(expr) \
  (static_cast<bool>(expr) ? static_cast<void>(0) : throw ::bupo::TomlInternalCheck(#expr))
#include <toml++/toml.h>
#pragma GCC diagnostic pop
#pragma pop_macro("NDEBUG")
