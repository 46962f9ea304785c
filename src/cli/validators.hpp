// Checks of command-line values, run on the text before CLI11 converts it. CLI11's own checks
// convert first, so "1e8" for an integer, "18446744073709551616" for a uint64 (wrapped) or a
// 309-digit count slipped through or came back as a 309-digit float in the message; and every
// comparison with NaN is false, so "nan" passed its ranges.
#pragma once
#include <CLI/CLI.hpp>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <limits>
#include <string>

namespace bupo::cli {

// The value as the user wrote it, cut to a readable length.
inline std::string shown(const std::string& s) {
  if (s.size() <= 24) return "'" + s + "'";
  return "'" + s.substr(0, 20) + "...' (" + std::to_string(s.size()) + " characters)";
}

// An integer of type T in [lo, hi], written in decimal digits (a leading '-' when lo < 0).
template <typename T>
CLI::Validator integer_in(T lo, T hi = std::numeric_limits<T>::max()) {
  const std::string range = "[" + std::to_string(lo) + ", " + std::to_string(hi) + "]";
  return CLI::Validator(
      [lo, hi, range](std::string& s) {
        T v{};
        const char* end = s.data() + s.size();
        const auto [p, ec] = std::from_chars(s.data(), end, v);
        if (s.empty() || p != end || (ec != std::errc() && ec != std::errc::result_out_of_range))
          return "expected an integer in " + range + ", got " + shown(s);
        if (ec == std::errc::result_out_of_range || v < lo || v > hi)
          return "out of range: expected an integer in " + range + ", got " + shown(s);
        return std::string();
      },
      "INT in " + range);
}

// A finite number in [lo, hi].
inline CLI::Validator number_in(double lo, double hi) {
  std::ostringstream r;
  r << "[" << lo << ", " << hi << "]";
  const std::string range = r.str();
  return CLI::Validator(
      [lo, hi, range](std::string& s) {
        char* end = nullptr;
        const double v = std::strtod(s.c_str(), &end);
        if (s.empty() || end != s.c_str() + s.size()) return "not a number: " + shown(s);
        if (!std::isfinite(v)) return "must be a finite number, got " + shown(s);
        if (v < lo || v > hi)
          return "out of range: expected a number in " + range + ", got " + shown(s);
        return std::string();
      },
      "NUMBER in " + range);
}

inline const CLI::Validator kNonEmpty(
    [](std::string& s) { return s.empty() ? std::string("must not be empty") : std::string(); },
    "NONEMPTY");

}  // namespace bupo::cli
