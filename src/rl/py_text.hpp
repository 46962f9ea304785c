// Python `str` semantics on UTF-8 text, as far as the reference graders (verl's math.py and
// math_dapo.py) depend on them: lengths, indices and slices count code points, not bytes;
// `\s`, str.isspace and str.strip know Unicode whitespace; str.isdigit knows the Unicode digits
// the graders can meet. A grader that counted bytes would disagree with verl on "πr=3" (two code
// points before '=', three bytes) or on the last 300 characters of a response.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace bupo::rl::py {

// Byte length of the code point starting at s[i] (1 for a stray continuation or truncated byte,
// which Python never sees: our inputs come through a JSON parser that rejects invalid UTF-8).
size_t cp_size(std::string_view s, size_t i);
uint32_t cp_at(std::string_view s, size_t i);             // the code point starting at s[i]
size_t cp_count(std::string_view s);                      // len(s)
std::string_view last_cps(std::string_view s, size_t n);  // s[-n:]
// The start of the code point that ends at s[e - 1] (e > b), never before b.
size_t cp_back(std::string_view s, size_t b, size_t e);

bool isspace(uint32_t c);  // str.isspace / re's \s for str patterns
bool isdigit(uint32_t c);  // str.isdigit: Nd digits of the common scripts, super/subscripts
bool all_digits(std::string_view s);         // s.isdigit(): non-empty, every code point a digit
std::string_view strip(std::string_view s);  // s.strip()
// s = s.replace(from, to), in one pass (in place, each hit moved the tail: quadratic for a response
// made of thousands of them); counts its work (core/work_counter.hpp)
void replace(std::string& s, std::string_view from, std::string_view to);

}  // namespace bupo::rl::py
