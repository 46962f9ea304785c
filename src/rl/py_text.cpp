#include "rl/py_text.hpp"

#include <algorithm>
#include <iterator>

#include "core/work_counter.hpp"

namespace bupo::rl::py {

size_t cp_size(std::string_view s, size_t i) {
  const auto b = static_cast<unsigned char>(s[i]);
  const size_t n = b < 0x80           ? 1
                   : (b >> 5) == 0x6  ? 2
                   : (b >> 4) == 0xE  ? 3
                   : (b >> 3) == 0x1E ? 4
                                      : 1;
  if (i + n > s.size()) return 1;
  for (size_t k = 1; k < n; ++k)
    if ((static_cast<unsigned char>(s[i + k]) & 0xC0) != 0x80) return 1;
  return n;
}

uint32_t cp_at(std::string_view s, size_t i) {
  const size_t n = cp_size(s, i);
  const auto b = static_cast<unsigned char>(s[i]);
  if (n == 1) return b;
  uint32_t c = b & (0x7F >> n);
  for (size_t k = 1; k < n; ++k) c = (c << 6) | (static_cast<unsigned char>(s[i + k]) & 0x3F);
  return c;
}

size_t cp_count(std::string_view s) {
  size_t n = 0;
  for (size_t i = 0; i < s.size(); i += cp_size(s, i)) ++n;
  return n;
}

std::string_view last_cps(std::string_view s, size_t n) {
  const size_t total = cp_count(s);
  if (total <= n) return s;
  size_t i = 0;
  for (size_t skip = total - n; skip > 0; --skip) i += cp_size(s, i);
  return s.substr(i);
}

bool isspace(uint32_t c) {
  if (c <= 0x20) return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20);
  return c == 0x85 || c == 0xA0 || c == 0x1680 || (c >= 0x2000 && c <= 0x200A) || c == 0x2028 ||
         c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

bool isdigit(uint32_t c) {
  // the code points whose str.isdigit() is True in Python 3.11 (Unicode 14: Numeric_Type Digit or
  // Decimal), as inclusive runs
  static constexpr uint32_t kDigitRuns[][2] = {
      {0x30, 0x39},       {0xB2, 0xB3},       {0xB9, 0xB9},       {0x660, 0x669},
      {0x6F0, 0x6F9},     {0x7C0, 0x7C9},     {0x966, 0x96F},     {0x9E6, 0x9EF},
      {0xA66, 0xA6F},     {0xAE6, 0xAEF},     {0xB66, 0xB6F},     {0xBE6, 0xBEF},
      {0xC66, 0xC6F},     {0xCE6, 0xCEF},     {0xD66, 0xD6F},     {0xDE6, 0xDEF},
      {0xE50, 0xE59},     {0xED0, 0xED9},     {0xF20, 0xF29},     {0x1040, 0x1049},
      {0x1090, 0x1099},   {0x1369, 0x1371},   {0x17E0, 0x17E9},   {0x1810, 0x1819},
      {0x1946, 0x194F},   {0x19D0, 0x19DA},   {0x1A80, 0x1A89},   {0x1A90, 0x1A99},
      {0x1B50, 0x1B59},   {0x1BB0, 0x1BB9},   {0x1C40, 0x1C49},   {0x1C50, 0x1C59},
      {0x2070, 0x2070},   {0x2074, 0x2079},   {0x2080, 0x2089},   {0x2460, 0x2468},
      {0x2474, 0x247C},   {0x2488, 0x2490},   {0x24EA, 0x24EA},   {0x24F5, 0x24FD},
      {0x24FF, 0x24FF},   {0x2776, 0x277E},   {0x2780, 0x2788},   {0x278A, 0x2792},
      {0xA620, 0xA629},   {0xA8D0, 0xA8D9},   {0xA900, 0xA909},   {0xA9D0, 0xA9D9},
      {0xA9F0, 0xA9F9},   {0xAA50, 0xAA59},   {0xABF0, 0xABF9},   {0xFF10, 0xFF19},
      {0x104A0, 0x104A9}, {0x10A40, 0x10A43}, {0x10D30, 0x10D39}, {0x10E60, 0x10E68},
      {0x11052, 0x1105A}, {0x11066, 0x1106F}, {0x110F0, 0x110F9}, {0x11136, 0x1113F},
      {0x111D0, 0x111D9}, {0x112F0, 0x112F9}, {0x11450, 0x11459}, {0x114D0, 0x114D9},
      {0x11650, 0x11659}, {0x116C0, 0x116C9}, {0x11730, 0x11739}, {0x118E0, 0x118E9},
      {0x11950, 0x11959}, {0x11C50, 0x11C59}, {0x11D50, 0x11D59}, {0x11DA0, 0x11DA9},
      {0x16A60, 0x16A69}, {0x16AC0, 0x16AC9}, {0x16B50, 0x16B59}, {0x1D7CE, 0x1D7FF},
      {0x1E140, 0x1E149}, {0x1E2F0, 0x1E2F9}, {0x1E950, 0x1E959}, {0x1F100, 0x1F10A},
      {0x1FBF0, 0x1FBF9},
  };
  return std::any_of(std::begin(kDigitRuns), std::end(kDigitRuns),
                     [c](const uint32_t* r) { return c >= r[0] && c <= r[1]; });
}

bool all_digits(std::string_view s) {
  if (s.empty()) return false;
  for (size_t i = 0; i < s.size(); i += cp_size(s, i))
    if (!isdigit(cp_at(s, i))) return false;
  return true;
}

void replace(std::string& s, std::string_view from, std::string_view to) {
  if (from.empty() || s.find(from) == std::string::npos) return;
  std::string out;
  out.reserve(s.size());
  size_t start = 0, pos;
  while ((pos = s.find(from, start)) != std::string::npos) {
    out.append(s, start, pos - start).append(to);
    start = pos + from.size();
  }
  out.append(s, start);
  work::count(s.size());
  s = std::move(out);
}

size_t cp_back(std::string_view s, size_t b, size_t e) {
  size_t p = e - 1;  // skip continuation bytes
  while (p > b && (static_cast<unsigned char>(s[p]) & 0xC0) == 0x80) --p;
  return p;
}

std::string_view strip(std::string_view s) {
  size_t b = 0;
  while (b < s.size() && isspace(cp_at(s, b))) b += cp_size(s, b);
  size_t e = s.size();
  while (e > b) {
    const size_t p = cp_back(s, b, e);
    if (!isspace(cp_at(s, p))) break;
    e = p;
  }
  return s.substr(b, e - b);
}

}  // namespace bupo::rl::py
