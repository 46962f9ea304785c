#include "rl/grader_math_dapo.hpp"

#include "core/work_counter.hpp"
#include "rl/numeric_expr.hpp"
#include "rl/py_text.hpp"
#include "rl/reward.hpp"

namespace bupo::rl {
namespace {

using py::replace;

size_t line_end(std::string_view s, size_t i) {
  size_t e = s.find('\n', i);
  if (e == std::string_view::npos) e = s.size();
  work::count(e - i);
  return e;
}

size_t find_close(std::string_view s, size_t from) {  // the next '}' at or after from, or npos
  const size_t c = s.find('}', from);
  work::count((c == std::string_view::npos ? s.size() : c) - from);
  return c;
}

// re.sub(r"(.*?)(\$)(.*?)(\$)(.*)", "$\3$", s): '.' stops at newlines, so every line holding two
// '$' or more becomes "$" + the text between its first two '$' + "$"; other lines stay.
std::string keep_first_math(std::string_view s) {
  std::string out;
  for (size_t b = 0; b <= s.size();) {
    const size_t e = line_end(s, b);
    const std::string_view line = s.substr(b, e - b);
    const size_t d1 = line.find('$');
    const size_t d2 = d1 == std::string_view::npos ? d1 : line.find('$', d1 + 1);
    if (d2 == std::string_view::npos)
      out.append(line);
    else
      out.append("$").append(line.substr(d1 + 1, d2 - d1 - 1)).append("$");
    if (e == s.size()) break;
    out.push_back('\n');
    b = e + 1;
  }
  work::count(s.size());
  return out;
}

// re.sub(r"(\\<cmd>\{)(.*?)(\})", r"\2", s) when lazy, r"(\\<cmd>\{)(.*)(\})" when greedy: the
// wrapper and its closing brace (the first / the last '}' on the same line) removed. The line's
// end and the next / last '}' are found once per line, not once per wrapper: a ground truth of
// 100k unclosed "\text{" stays linear.
std::string peel(std::string_view s, std::string_view open, bool greedy) {
  std::string out;
  size_t i = 0, line_b = std::string_view::npos, line_e = 0, next_close = 0, last_close = 0;
  while (i < s.size()) {
    if (s.compare(i, open.size(), open) == 0) {
      const size_t b = i + open.size();
      if (line_b == std::string_view::npos || b > line_e) {  // b is on a new line
        line_b = b;
        line_e = line_end(s, b);
        const size_t lc = s.substr(b, line_e - b).rfind('}');
        work::count(line_e - b);
        last_close = lc == std::string_view::npos ? lc : b + lc;
      }
      // npos stays npos: no '}' after an earlier position means none after b
      if (next_close != std::string_view::npos && next_close < b) next_close = find_close(s, b);
      const size_t close = greedy ? last_close : next_close;
      if (close != std::string_view::npos && close >= b && close < line_e) {
        out.append(s.substr(b, close - b));
        i = close + 1;
        continue;
      }
    }
    out.push_back(s[i++]);
  }
  work::count(s.size());
  return out;
}

// re.sub(r"(frac)([^{])(.)", r"frac{\2}{\3}", s) and re.sub(r"(sqrt)([^{])", r"sqrt{\2}", s):
// [^{] takes any one character but '{' (a newline too), '.' any but a newline.
std::string brace_shorthand(std::string_view s, std::string_view word, int args) {
  std::string out;
  size_t i = 0;
  while (i < s.size()) {
    if (s.compare(i, word.size(), word) == 0 && i + word.size() < s.size() &&
        s[i + word.size()] != '{') {
      const size_t p = i + word.size(), n2 = py::cp_size(s, p);
      if (args == 1) {
        out.append(word).append("{").append(s.substr(p, n2)).append("}");
        i = p + n2;
        continue;
      }
      const size_t q = p + n2;
      if (q < s.size() && s[q] != '\n') {
        const size_t n3 = py::cp_size(s, q);
        out.append(word).append("{").append(s.substr(p, n2)).append("}{");
        out.append(s.substr(q, n3)).append("}");
        i = q + n3;
        continue;
      }
    }
    out.push_back(s[i++]);
  }
  work::count(s.size());
  return out;
}

size_t skip_space(std::string_view s, size_t i) {
  while (i < s.size() && py::isspace(py::cp_at(s, i))) i += py::cp_size(s, i);
  return i;
}

// "answer" under (?i) at s[i]: ASCII either case, and 'ſ' (U+017F) for 's', which Python's
// Unicode case folding also matches. Returns the end, or npos.
size_t match_answer_word(std::string_view s, size_t i) {
  static constexpr char kWord[] = "answer";
  for (const char* w = kWord; *w; ++w) {
    if (i >= s.size()) return std::string_view::npos;
    const char c = static_cast<char>(s[i] | 0x20);
    if (*w == 's' && s.compare(i, 2, "\xC5\xBF") == 0) {
      i += 2;
      continue;
    }
    if (static_cast<unsigned char>(s[i]) >= 0x80 || c != *w) return std::string_view::npos;
    ++i;
  }
  return i;
}

}  // namespace

std::optional<std::string> minerva_last_answer(std::string_view s) {
  std::optional<std::string> last;
  size_t i = 0;
  while (i < s.size()) {
    const size_t w = match_answer_word(s, i);
    if (w != std::string_view::npos) {
      const size_t colon = skip_space(s, w);
      if (colon < s.size() && s[colon] == ':') {
        const size_t w0 = colon + 1, w1 = skip_space(s, w0);
        // \s* is greedy: the capture starts after all the whitespace when a character follows;
        // at the end of the text it backs off to the last whitespace character that is not '\n'
        size_t start = std::string_view::npos;
        if (w1 < s.size()) {
          start = w1;
        } else {
          for (size_t p = w1; p > w0;) {
            p = py::cp_back(s, w0, p);
            if (s[p] != '\n') {
              start = p;
              break;
            }
          }
        }
        if (start != std::string_view::npos) {
          const size_t e = line_end(s, start);
          last = std::string(s.substr(start, e - start));
          i = e;
          continue;
        }
      }
    }
    i += py::cp_size(s, i);
  }
  work::count(s.size());
  return last;
}

std::string minerva_normalize(std::string_view in) {
  std::string s(in.substr(in.rfind('=') == std::string_view::npos ? 0 : in.rfind('=') + 1));
  static constexpr std::string_view kSubstitutions[][2] = {
      {"an ", ""},          {"a ", ""},
      {".$", "$"},          {"\\$", ""},
      {"\\ ", ""},          {" ", ""},
      {"mbox", "text"},     {",\\text{and}", ","},
      {"\\text{and}", ","}, {"\\text{m}", "\\text{}"}};
  for (const auto& sub : kSubstitutions) replace(s, sub[0], sub[1]);
  static constexpr std::string_view kRemoved[] = {
      "square",     "ways",       "integers",  "dollars",      "mph",
      "inches",     "hours",      "km",        "units",        "\\ldots",
      "sue",        "points",     "feet",      "minutes",      "digits",
      "cents",      "degrees",    "cm",        "gm",           "pounds",
      "meters",     "meals",      "edges",     "students",     "childrentickets",
      "multiples",  "\\text{s}",  "\\text{.}", "\\text{\ns}",  "\\text{}^2",
      "\\text{}^3", "\\text{\n}", "\\text{}",  "\\mathrm{th}", "^\\circ",
      "^{\\circ}",  "\\;",        ",\\!",      "{,}",          "\"",
      "\\dots"};
  for (std::string_view r : kRemoved) replace(s, r, "");
  s = keep_first_math(s);
  s = peel(s, "\\text{", false);
  s = peel(s, "\\textbf{", false);
  s = peel(s, "\\overline{", false);
  s = peel(s, "\\boxed{", true);
  s = brace_shorthand(s, "frac", 2);
  s = brace_shorthand(s, "sqrt", 1);
  replace(s, "$", "");
  {
    std::string no_commas = s;
    replace(no_commas, ",", "");
    if (py::all_digits(no_commas)) s = no_commas;
  }
  return std::string(py::strip(s));
}

Verdict verify_math_dapo(std::string_view response, std::string_view ground_truth) {
  Verdict v;
  const std::string_view tail = py::last_cps(response, 300);
  const auto found = minerva_last_answer(tail);
  const std::string pred = minerva_normalize(found ? *found : "[INVALID]");
  v.answer = pred;
  v.has_answer = pred != "[INVALID]";
  v.correct = pred == minerva_normalize(ground_truth);
  // math_verify fallback on a valid answer: math_verify(\boxed{ground truth}, \boxed{pred})
  if (!v.correct && v.has_answer) v.correct = numerically_equal(ground_truth, pred);
  return v;
}

}  // namespace bupo::rl
