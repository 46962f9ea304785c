// Reading JSON with errors that name the file and the field.
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
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
// The same as parse_json, but a key that appears twice in one object is an error naming it
// (nlohmann keeps the last silently): for headers where a duplicate means a corrupt file.
json parse_json_unique_keys(std::string_view text, const std::string& where);

// Typed accessors: "<src>: field '<key>': expected <what>, got <value>"
// The value of an integer JSON number; nullopt for a non-integer or an unsigned one beyond int64
// (nlohmann's get<int64_t>() wraps 2^64-1 to -1).
std::optional<int64_t> json_exact_int(const json& v);
// Field `key` of `j`: an integer in [min_value, max_value], else an error naming src and key.
int64_t json_int(const json& j, const std::string& key, const std::string& src, int64_t min_value,
                 int64_t max_value = INT64_MAX);
int64_t json_int_or(const json& j, const std::string& key, const std::string& src,
                    int64_t min_value, int64_t fallback, int64_t max_value = INT64_MAX);
double json_number_or(const json& j, const std::string& key, const std::string& src,
                      double fallback);
bool json_bool_or(const json& j, const std::string& key, const std::string& src, bool fallback);
std::string json_string_or(const json& j, const std::string& key, const std::string& src,
                           const std::string& fallback);
}  // namespace bupo
