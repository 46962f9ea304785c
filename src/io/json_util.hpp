// Reading JSON with errors that name the file and the field.
#pragma once
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

namespace bupo {
using json = nlohmann::json;

json read_json_file(const std::string& path);  // "<path>: malformed JSON at byte N: ..."
// Parses text; any JSON error (syntax, or a number out of range) becomes one bupo::Error:
// "<where>: malformed JSON at byte N: ..." or "<where>: invalid JSON: ...".
json parse_json(std::string_view text, const std::string& where);
// The same, but every non-integer number (and every integer beyond 64 bits) kept as its exact
// source text, a JSON string: for values that are data, not quantities (a ground truth such as
// 12345678901234567890123 must not become 1.2345678901234568e+22).
json parse_json_exact_numbers(std::string_view text, const std::string& where);

// Typed accessors: "<src>: field '<key>': expected <what>, got <value>"
int64_t json_int(const json& j, const std::string& key, const std::string& src, int64_t min_value);
int64_t json_int_or(const json& j, const std::string& key, const std::string& src,
                    int64_t min_value, int64_t fallback);
double json_number_or(const json& j, const std::string& key, const std::string& src,
                      double fallback);
bool json_bool_or(const json& j, const std::string& key, const std::string& src, bool fallback);
std::string json_string_or(const json& j, const std::string& key, const std::string& src,
                           const std::string& fallback);
}  // namespace bupo
