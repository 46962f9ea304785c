#include "rl/journal.hpp"

#include "core/error.hpp"

namespace bupo::rl {

Journal parse_journal(std::string_view text, const std::string& path, int64_t keep_step) {
  std::vector<std::string_view> lines;
  for (size_t at = 0; at < text.size();) {
    const size_t nl = text.find('\n', at);
    const size_t end = nl == std::string_view::npos ? text.size() : nl;
    if (end > at) lines.push_back(text.substr(at, end - at));
    at = end + 1;
  }
  Journal out;
  for (size_t i = 0; i < lines.size(); ++i) {
    const std::string where = path + ":" + std::to_string(i + 1);
    json j;
    try {
      j = parse_json(lines[i], where);
    } catch (const Error&) {
      if (i + 1 == lines.size()) break;  // torn by a crash
      throw;
    }
    const auto step =
        j.is_object() && j.contains("step") ? json_exact_int(j["step"]) : std::nullopt;
    BUPO_CHECK(step && *step >= 1, where, ": field 'step': expected a step number >= 1, got ",
               j.is_object() && j.contains("step") ? j["step"].dump() : std::string("nothing"));
    if (*step > keep_step) break;
    out.text.append(lines[i]).push_back('\n');
    out.records.push_back(std::move(j));
  }
  return out;
}

}  // namespace bupo::rl
