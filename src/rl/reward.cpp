#include "rl/reward.hpp"

#include <algorithm>
#include <cctype>
#include <climits>
#include <cstdint>
#include <numeric>
#include <vector>

#include "core/error.hpp"
#include "core/work_counter.hpp"
#include "rl/py_text.hpp"

namespace bupo::rl {
namespace {

using py::replace;

std::vector<std::string> split(const std::string& s, std::string_view sep) {
  std::vector<std::string> out;
  size_t start = 0, pos;
  while ((pos = s.find(sep, start)) != std::string::npos) {
    out.push_back(s.substr(start, pos - start));
    start = pos + sep.size();
  }
  out.push_back(s.substr(start));
  work::count(s.size());
  return out;
}

// Where verl's Python raises inside strip_string, `raised` is set and the step keeps its input:
// verl's is_equiv then compares the unnormalised strings (reward.mode = "verl"); the extended
// grader goes on normalising with the step skipped.

// "\text{ cm}" style units on the right (Python asserts exactly one split)
std::string remove_right_units(const std::string& s, bool& raised) {
  if (s.find("\\text{ ") == std::string::npos) return s;
  auto parts = split(s, "\\text{ ");
  if (parts.size() == 2) return parts[0];
  raised = true;
  return s;
}

// the first code point of p as a string (Python's p[0])
std::string first_cp(const std::string& p) {
  return p.substr(0, py::cp_size(p, 0));
}

// "\sqrt3" -> "\sqrt{3}" (an empty piece after \sqrt is an IndexError in Python)
std::string fix_sqrt(const std::string& s, bool& raised) {
  if (s.find("\\sqrt") == std::string::npos) return s;
  auto parts = split(s, "\\sqrt");
  std::string out = parts[0];
  for (size_t i = 1; i < parts.size(); ++i) {
    const std::string& p = parts[i];
    if (p.empty()) {
      raised = true;
      return s;
    }
    if (p[0] != '{') {
      const std::string a = first_cp(p);
      out += "\\sqrt{" + a + "}" + p.substr(a.size());
    } else {
      out += "\\sqrt" + p;
    }
  }
  return out;
}

// "\frac12" -> "\frac{1}{2}", "\frac1{72}" -> "\frac{1}{72}" (an empty piece is an IndexError;
// a one-character piece returns the input unchanged, as the Python's caught assert does)
std::string fix_fracs(const std::string& s, bool& raised) {
  auto parts = split(s, "\\frac");
  std::string out = parts[0];
  for (size_t i = 1; i < parts.size(); ++i) {
    const std::string& p = parts[i];
    out += "\\frac";
    if (p.empty()) {
      raised = true;
      return s;
    }
    if (p[0] == '{') {
      out += p;
      continue;
    }
    if (py::cp_count(p) < 2) return s;
    const std::string a = first_cp(p), b = first_cp(p.substr(a.size()));
    const std::string post = p.substr(a.size() + b.size());
    if (b != "{")
      out += "{" + a + "}{" + b + "}" + post;
    else
      out += "{" + a + "}" + b + post;
  }
  return out;
}

// str(int(t)) == t: "0" or an optional '-' and digits without a leading zero, at most the 4300
// digits Python 3.11 converts (int() raises beyond)
bool canonical_python_int(std::string_view t) {
  const bool neg = !t.empty() && t[0] == '-';
  const std::string_view d = neg ? t.substr(1) : t;
  if (d.empty() || d.size() > 4300) return false;
  if (!std::all_of(d.begin(), d.end(), [](char c) { return c >= '0' && c <= '9'; })) return false;
  return d[0] != '0' || (d.size() == 1 && !neg);  // "-0" prints as "0"
}

// "3/4" -> "\frac{3}{4}" when both sides are integers printed canonically (the Python's assert
// string == "{}/{}".format(int(a), int(b)))
std::string fix_a_slash_b(const std::string& s) {
  auto parts = split(s, "/");
  if (parts.size() != 2) return s;
  if (!canonical_python_int(parts[0]) || !canonical_python_int(parts[1])) return s;
  return "\\frac{" + parts[0] + "}{" + parts[1] + "}";
}

// ---------------------------------------------------------------- exact rationals
__extension__ typedef __int128 i128;  // exact rationals of up to 30 digits
struct Rational {
  i128 num = 0, den = 1;
};
i128 gcd128(i128 a, i128 b) {
  if (a < 0) a = -a;
  if (b < 0) b = -b;
  while (b != 0) {
    i128 t = a % b;
    a = b;
    b = t;
  }
  return a;
}
Rational reduce(Rational r) {
  if (r.den < 0) {
    r.num = -r.num;
    r.den = -r.den;
  }
  i128 g = gcd128(r.num, r.den);
  if (g > 1) {
    r.num /= g;
    r.den /= g;
  }
  return r;
}

// Unsigned decimal: digits (optionally grouped by thousands commas) with an optional fraction.
bool parse_unsigned_decimal(std::string_view s, Rational& r) {
  if (s.empty()) return false;
  const size_t dot = s.find('.');
  std::string_view ip = s.substr(0, dot),
                   fp = dot == std::string_view::npos ? "" : s.substr(dot + 1);
  if (ip.empty() && fp.empty()) return false;
  std::string digits;
  if (ip.find(',') != std::string_view::npos) {  // 1,234,567 only: groups of exactly three
    size_t first = ip.find(',');
    if (first == 0 || first > 3) return false;
    for (size_t i = first; i < ip.size(); i += 4)
      if (ip[i] != ',' || i + 4 > ip.size()) return false;
  }
  for (char c : ip) {
    if (c == ',') continue;
    if (!std::isdigit(static_cast<unsigned char>(c))) return false;
    digits += c;
  }
  for (char c : fp)
    if (!std::isdigit(static_cast<unsigned char>(c))) return false;
  if (digits.size() + fp.size() > 30 || fp.size() > 30) return false;
  i128 num = 0, den = 1;
  for (char c : digits) num = num * 10 + (c - '0');
  for (char c : fp) {
    num = num * 10 + (c - '0');
    den *= 10;
  }
  r = reduce({num, den});
  return true;
}

bool parse_signed_integer(std::string_view s, i128& v) {
  bool neg = false;
  if (!s.empty() && (s[0] == '-' || s[0] == '+')) {
    neg = s[0] == '-';
    s.remove_prefix(1);
  }
  if (s.empty() || s.size() > 30) return false;
  v = 0;
  for (char c : s) {
    if (!std::isdigit(static_cast<unsigned char>(c))) return false;
    v = v * 10 + (c - '0');
  }
  if (neg) v = -v;
  return true;
}

// A normalised answer (spaces removed) that is one exact number: [+-] decimal | [+-]\frac{a}{b}.
bool parse_number(std::string_view s, Rational& r) {
  bool neg = false;
  if (!s.empty() && (s[0] == '-' || s[0] == '+')) {
    neg = s[0] == '-';
    s.remove_prefix(1);
  }
  if (s.rfind("\\frac{", 0) == 0 && !s.empty() && s.back() == '}') {
    std::string_view body = s.substr(6, s.size() - 7);  // a}{b
    const size_t mid = body.find("}{");
    if (mid == std::string_view::npos) return false;
    i128 a = 0, b = 0;
    if (!parse_signed_integer(body.substr(0, mid), a) ||
        !parse_signed_integer(body.substr(mid + 2), b) || b == 0)
      return false;
    r = reduce({neg ? -a : a, b});
    return true;
  }
  if (!parse_unsigned_decimal(s, r)) return false;
  if (neg) r.num = -r.num;
  return true;
}

bool numbers_equal(const std::string& a, const std::string& b) {
  Rational x, y;
  if (!parse_number(a, x) || !parse_number(b, y)) return false;
  return x.num == y.num && x.den == y.den;
}

// Minimum of a fixed array over index ranges, O(log n) per query (an iterative segment tree).
class RangeMin {
 public:
  explicit RangeMin(const std::vector<int32_t>& v) : n_(v.size()), t_(2 * v.size()) {
    std::copy(v.begin(), v.end(), t_.begin() + static_cast<std::ptrdiff_t>(n_));
    for (size_t i = n_ - 1; i > 0; --i) t_[i] = std::min(t_[2 * i], t_[2 * i + 1]);
  }
  int32_t min(size_t lo, size_t hi) const {  // over [lo, hi], lo <= hi < n
    int32_t m = INT32_MAX;
    for (lo += n_, hi += n_ + 1; lo < hi; lo /= 2, hi /= 2) {
      if (lo & 1) m = std::min(m, t_[lo++]);
      if (hi & 1) m = std::min(m, t_[--hi]);
      work::count();
    }
    return m;
  }

 private:
  size_t n_;
  std::vector<int32_t> t_;
};

// Remove wrappers \text{...} / \textbf{...} / \mathrm{...} / \mathbf{...} / \boxed{...} around the
// whole answer, "$...$", and a trailing full stop, until none is left. The answer shrinks as a
// view [b, e) of the input; whether a wrapper's brace closes only at the end is a range-minimum
// query on the prefix brace depth, so a deeply nested answer costs O(n log n), not a rescan and
// a copy per layer (600 KB of nested \text{ took 77 s).
std::string unwrap(const std::string& s) {
  // depth[j]: '{' minus '}' among s[0, j)
  std::vector<int32_t> depth(s.size() + 1, 0);
  for (size_t i = 0; i < s.size(); ++i) depth[i + 1] = depth[i] + (s[i] == '{') - (s[i] == '}');
  work::count(s.size());
  const RangeMin depth_min(depth);
  size_t b = 0, e = s.size();
  const std::string_view all(s);
  for (bool changed = true; changed;) {
    changed = false;
    work::count();
    for (std::string_view w : {"\\text{", "\\textbf{", "\\mathrm{", "\\mathbf{", "\\boxed{"}) {
      const std::string_view v = all.substr(b, e - b);
      if (v.rfind(w, 0) == 0 && v.size() > w.size() && v.back() == '}') {
        // the brace opening at p closes before the end iff the depth after p, relative to the
        // depth before it, returns to 0 at some position in (p, e - 1)
        const size_t p = b + w.size() - 1;
        const bool whole = depth_min.min(p + 1, e - 1) > depth[p];
        if (whole) {
          b += w.size();
          e -= 1;
          changed = true;
        }
      }
    }
    if (e - b >= 2 && s[b] == '$' && s[e - 1] == '$') {
      ++b;
      --e;
      changed = true;
    }
    if (e - b > 1 && s[e - 1] == '.' && std::isdigit(static_cast<unsigned char>(s[e - 2]))) {
      --e;  // "5." -> "5" (a sentence's full stop after a number)
      changed = true;
    }
  }
  return s.substr(b, e - b);
}

// Top-level comma split of "(a,b)" / "[a,b)" etc.; returns false when not a bracketed tuple.
bool split_tuple(const std::string& s, char& open, char& close, std::vector<std::string>& items) {
  if (s.size() < 2) return false;
  open = s.front();
  close = s.back();
  if ((open != '(' && open != '[') || (close != ')' && close != ']')) return false;
  int depth = 0;
  std::string cur;
  for (size_t i = 1; i + 1 < s.size(); ++i) {
    char c = s[i];
    if (c == '(' || c == '[' || c == '{') ++depth;
    if (c == ')' || c == ']' || c == '}') --depth;
    if (depth < 0) return false;  // "(1)+(2)" is not one tuple
    if (c == ',' && depth == 0) {
      items.push_back(cur);
      cur.clear();
    } else {
      cur += c;
    }
  }
  if (depth != 0) return false;
  items.push_back(cur);
  return items.size() >= 2;
}

bool atom_equivalent(const std::string& a, const std::string& b) {
  if (a == b) return true;
  const std::string ua = unwrap(a), ub = unwrap(b);
  if (ua == ub) return true;
  return numbers_equal(ua, ub);
}

}  // namespace

std::optional<std::string> last_boxed(std::string_view s, bool accept_fbox) {
  size_t idx = s.rfind("\\boxed");
  if (s.find("\\boxed ") != std::string_view::npos) {  // "\boxed 5$" form, as verl
    size_t p = s.rfind("\\boxed ");
    std::string_view rest = s.substr(p + 7);
    return std::string(rest.substr(0, rest.find('$')));
  }
  if (idx == std::string_view::npos) idx = s.rfind("\\fbox");
  if (idx == std::string_view::npos) return std::nullopt;
  int open = 0;
  work::count(s.size() - idx);
  for (size_t i = idx; i < s.size(); ++i) {
    if (s[i] == '{') ++open;
    if (s[i] == '}') {
      --open;
      if (open == 0) {
        std::string_view box = s.substr(idx, i + 1 - idx);
        // verl's remove_boxed asserts the "\boxed{" prefix: a last \fbox{...} scores 0 there
        // (compute_score catches the AssertionError); the extended grader reads it
        if (box.rfind("\\boxed{", 0) == 0) return std::string(box.substr(7, box.size() - 8));
        if (accept_fbox && box.rfind("\\fbox{", 0) == 0)
          return std::string(box.substr(6, box.size() - 7));
        return std::nullopt;
      }
    }
  }
  return std::nullopt;
}

namespace {
// verl math.strip_string (BuPO's reference d3a85c6 = verl 0.5.0), step by step; `bare_percent`
// also drops '%' without its backslash (the extended grader's "50%" = "50": verl strips only the
// two characters backslash-percent).
std::string hendrycks_strip(std::string_view in, bool bare_percent, bool& raised) {
  std::string s(in);
  replace(s, "\n", "");
  replace(s, "\\!", "");
  replace(s, "\\\\", "\\");
  replace(s, "tfrac", "frac");
  replace(s, "dfrac", "frac");
  replace(s, "\\left", "");
  replace(s, "\\right", "");
  replace(s, "^{\\circ}", "");
  replace(s, "^\\circ", "");
  replace(s, "\\$", "");
  s = remove_right_units(s, raised);
  replace(s, "\\%", "");
  if (bare_percent) replace(s, "%", "");
  replace(s, " .", " 0.");
  replace(s, "{.", "{0.");
  if (s.empty()) return s;
  if (s[0] == '.') s = "0" + s;
  {
    auto parts = split(s, "=");
    if (parts.size() == 2 && py::cp_count(parts[0]) <= 2) s = parts[1];
  }
  s = fix_sqrt(s, raised);
  replace(s, " ", "");
  s = fix_fracs(s, raised);
  if (s == "0.5") s = "\\frac{1}{2}";
  s = fix_a_slash_b(s);
  return s;
}
}  // namespace

std::string strip_string(std::string_view in) {
  bool raised = false;
  return hendrycks_strip(in, true, raised);
}

std::optional<std::string> strip_string_verl(std::string_view in) {
  bool raised = false;
  std::string s = hendrycks_strip(in, false, raised);
  if (raised) return std::nullopt;
  return s;
}

bool answers_equivalent(std::string_view answer, std::string_view ground_truth) {
  const std::string a = strip_string(answer), b = strip_string(ground_truth);
  if (atom_equivalent(a, b)) return true;
  // tuples and intervals: same brackets, same length, equivalent items
  char oa = 0, ca = 0, ob = 0, cb = 0;
  std::vector<std::string> ia, ib;
  const std::string ua = unwrap(a), ub = unwrap(b);
  if (split_tuple(ua, oa, ca, ia) && split_tuple(ub, ob, cb, ib) && oa == ob && ca == cb &&
      ia.size() == ib.size()) {
    for (size_t i = 0; i < ia.size(); ++i)
      if (!atom_equivalent(ia[i], ib[i])) return false;
    return true;
  }
  return false;
}

bool answers_equal_verl(std::string_view answer, std::string_view ground_truth) {
  const auto a = strip_string_verl(answer), b = strip_string_verl(ground_truth);
  if (!a || !b) return answer == ground_truth;  // is_equiv's except: the raw strings
  return *a == *b;
}

Verdict verify(std::string_view response, std::string_view ground_truth) {
  return verify_math(response, ground_truth, MathMode::Extended);
}

Verdict verify_math(std::string_view response, std::string_view ground_truth, MathMode mode) {
  Verdict v;
  auto boxed = last_boxed(response, mode == MathMode::Extended);
  if (!boxed) return v;
  v.has_answer = true;
  v.answer = *boxed;
  v.correct = mode == MathMode::Verl ? answers_equal_verl(*boxed, ground_truth)
                                     : answers_equivalent(*boxed, ground_truth);
  return v;
}

Scoring parse_scoring(std::string_view grader, std::string_view mode) {
  Scoring s;
  if (grader == "math")
    s.grader = Grader::Math;
  else if (grader == "math_dapo")
    s.grader = Grader::MathDapo;
  else if (grader == "by_data_source")
    s.grader = Grader::ByDataSource;
  else
    fail("grader '", grader, "': expected math, math_dapo or by_data_source");
  if (mode == "verl")
    s.mode = MathMode::Verl;
  else if (mode == "extended")
    s.mode = MathMode::Extended;
  else
    fail("reward mode '", mode, "': expected verl or extended");
  return s;
}

Grader grader_for(const Scoring& s, std::string_view data_source) {
  if (s.grader != Grader::ByDataSource) return s.grader;
  return data_source.find("math_dapo") != std::string_view::npos ? Grader::MathDapo : Grader::Math;
}

Verdict verify(std::string_view response, std::string_view ground_truth, const Scoring& s,
               std::string_view data_source) {
  if (grader_for(s, data_source) == Grader::MathDapo)
    return verify_math_dapo(response, ground_truth);
  return verify_math(response, ground_truth, s.mode);
}

double reward_value(const Verdict& v, RewardKind kind) {
  if (kind == RewardKind::ZeroOne) return v.correct ? 1.0 : 0.0;
  return v.correct ? 1.0 : -1.0;
}

}  // namespace bupo::rl
