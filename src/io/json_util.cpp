#include "io/json_util.hpp"

#include <fstream>
#include <sstream>
#include <unordered_set>
#include <vector>

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
class UniqueKeys : public nlohmann::detail::json_sax_dom_parser<json> {
 public:
  using json_sax_dom_parser::json_sax_dom_parser;
  std::string duplicate;
  bool start_object(std::size_t n) {
    keys_.emplace_back();
    return json_sax_dom_parser::start_object(n);
  }
  bool end_object() {
    keys_.pop_back();
    return json_sax_dom_parser::end_object();
  }
  bool key(json::string_t& k) {
    if (!keys_.back().insert(k).second) {
      duplicate = k;
      return false;  // stops the parse
    }
    return json_sax_dom_parser::key(k);
  }

 private:
  std::vector<std::unordered_set<std::string>> keys_;
};
}  // namespace

json parse_json_unique_keys(std::string_view text, const std::string& where) {
  json out;
  UniqueKeys sax(out, true);
  bool ok = false;
  try {
    ok = json::sax_parse(text.begin(), text.end(), &sax);
  } catch (const json::parse_error& e) {
    fail(where, ": malformed JSON at byte ", e.byte, ": ", e.what());
  } catch (const json::exception& e) {
    fail(where, ": invalid JSON: ", e.what());
  }
  BUPO_CHECK(ok || sax.duplicate.empty(), where, ": key '", sax.duplicate,
             "' appears twice in one object");
  BUPO_CHECK(ok, where, ": invalid JSON");
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

std::optional<int64_t> json_exact_int(const json& v) {
  if (v.is_number_unsigned())
    return v.get<uint64_t>() <= static_cast<uint64_t>(INT64_MAX)
               ? std::optional<int64_t>(static_cast<int64_t>(v.get<uint64_t>()))
               : std::nullopt;
  if (v.is_number_integer()) return v.get<int64_t>();
  return std::nullopt;
}

int64_t json_int(const json& j, const std::string& key, const std::string& src, int64_t min_value,
                 int64_t max_value) {
  const json* v = get(j, key, src);
  const std::string range = max_value == INT64_MAX ? ">= " + std::to_string(min_value)
                                                   : "in [" + std::to_string(min_value) + ", " +
                                                         std::to_string(max_value) + "]";
  BUPO_CHECK(v != nullptr, src, ": field '", key, "' is missing (expected an integer ", range, ")");
  const auto x = json_exact_int(*v);
  BUPO_CHECK(v->is_number_integer(), src, ": field '", key, "': expected an integer, got ",
             v->dump());
  BUPO_CHECK(x && *x >= min_value && *x <= max_value, src, ": field '", key,
             "': expected an integer ", range, ", got ", v->dump());
  return *x;
}
int64_t json_int_or(const json& j, const std::string& key, const std::string& src,
                    int64_t min_value, int64_t fallback, int64_t max_value) {
  return get(j, key, src) ? json_int(j, key, src, min_value, max_value) : fallback;
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
