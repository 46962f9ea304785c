// The declaration of every `bupo train` key (config_keys.cpp): its TrainConfig member, allowed
// range or strings, and help text. config.cpp parses, validates and writes TOML through it.
#pragma once
#include <cstdint>
#include <string>
#include <variant>
#include <vector>

#include "rl/config.hpp"

namespace bupo::rl::detail {

struct Field {
  std::string key;
  std::variant<int64_t*, double*, bool*, std::string*, std::vector<std::string>*,
               std::vector<int64_t>*, std::vector<double>*>
      ptr;
  double lo = -1e300, hi = 1e300;    // numeric range (inclusive)
  std::vector<std::string> choices;  // allowed strings (empty: any)
  std::string help;
};

// Every key bound to the members of `c`, in the order of the reference (--help-config).
std::vector<Field> fields(TrainConfig& c);

}  // namespace bupo::rl::detail
