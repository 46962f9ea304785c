#include "io/json_util.hpp"

#include <fstream>
#include <sstream>

#include "core/error.hpp"

namespace bupo {

json read_json_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  BUPO_CHECK(in.good(), path, ": cannot open file");
  std::stringstream ss;
  ss << in.rdbuf();
  return parse_json(ss.str(), path);
}

json parse_json(std::string_view text, const std::string& where) {
  try {
    return json::parse(text.begin(), text.end());
  } catch (const json::parse_error& e) {
    fail(where, ": malformed JSON at byte ", e.byte, ": ", e.what());
  } catch (const json::exception& e) {
    fail(where, ": invalid JSON: ", e.what());
  }
}

namespace {
class ExactNumbers : public nlohmann::detail::json_sax_dom_parser<json> {
 public:
  using json_sax_dom_parser::json_sax_dom_parser;
  bool number_float(json::number_float_t, const json::string_t& text) {
    json::string_t s = text;
    return string(s);
  }
};
}  // namespace

json parse_json_exact_numbers(std::string_view text, const std::string& where) {
  json out;
  ExactNumbers sax(out, true);
  try {
    json::sax_parse(text.begin(), text.end(), &sax);
  } catch (const json::parse_error& e) {  // the same messages as parse_json
    fail(where, ": malformed JSON at byte ", e.byte, ": ", e.what());
  } catch (const json::exception& e) {
    fail(where, ": invalid JSON: ", e.what());
  }
  return out;
}

namespace {
const json* get(const json& j, const std::string& key, const std::string& src) {
  BUPO_CHECK(j.is_object(), src, ": expected a JSON object");
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return nullptr;
  return &*it;
}
}  // namespace

int64_t json_int(const json& j, const std::string& key, const std::string& src, int64_t min_value) {
  const json* v = get(j, key, src);
  BUPO_CHECK(v != nullptr, src, ": field '", key,
             "' is missing (expected an integer >= ", min_value, ")");
  BUPO_CHECK(v->is_number_integer(), src, ": field '", key, "': expected an integer, got ",
             v->dump());
  const int64_t x = v->get<int64_t>();
  BUPO_CHECK(x >= min_value, src, ": field '", key, "': expected an integer >= ", min_value,
             ", got ", x);
  return x;
}
int64_t json_int_or(const json& j, const std::string& key, const std::string& src,
                    int64_t min_value, int64_t fallback) {
  return get(j, key, src) ? json_int(j, key, src, min_value) : fallback;
}
double json_number_or(const json& j, const std::string& key, const std::string& src,
                      double fallback) {
  const json* v = get(j, key, src);
  if (!v) return fallback;
  BUPO_CHECK(v->is_number(), src, ": field '", key, "': expected a number, got ", v->dump());
  return v->get<double>();
}
bool json_bool_or(const json& j, const std::string& key, const std::string& src, bool fallback) {
  const json* v = get(j, key, src);
  if (!v) return fallback;
  BUPO_CHECK(v->is_boolean(), src, ": field '", key, "': expected true or false, got ", v->dump());
  return v->get<bool>();
}
std::string json_string_or(const json& j, const std::string& key, const std::string& src,
                           const std::string& fallback) {
  const json* v = get(j, key, src);
  if (!v) return fallback;
  BUPO_CHECK(v->is_string(), src, ": field '", key, "': expected a string, got ", v->dump());
  return v->get<std::string>();
}

}  // namespace bupo
