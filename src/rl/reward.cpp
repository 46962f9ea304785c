#include "rl/reward.hpp"

#include <algorithm>
#include <cctype>
#include <climits>
#include <cstdint>
#include <numeric>
#include <vector>

#include "core/work_counter.hpp"

namespace bupo::rl {
namespace {

// One pass into a new string: replacing in place moved the tail on every hit (quadratic for a
// response made of thousands of them).
void replace_all(std::string& s, std::string_view from, std::string_view to) {
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

// "\text{ cm}" style units on the right (Python asserts exactly one split; otherwise unchanged).
std::string remove_right_units(const std::string& s) {
  if (s.find("\\text{ ") == std::string::npos) return s;
  auto parts = split(s, "\\text{ ");
  return parts.size() == 2 ? parts[0] : s;
}

// "\sqrt3" -> "\sqrt{3}" (an empty piece after \sqrt raises in Python: keep the input)
std::string fix_sqrt(const std::string& s) {
  if (s.find("\\sqrt") == std::string::npos) return s;
  auto parts = split(s, "\\sqrt");
  std::string out = parts[0];
  for (size_t i = 1; i < parts.size(); ++i) {
    const std::string& p = parts[i];
    if (p.empty()) return s;
    if (p[0] != '{')
      out += "\\sqrt{" + p.substr(0, 1) + "}" + p.substr(1);
    else
      out += "\\sqrt" + p;
  }
  return out;
}

// "\frac12" -> "\frac{1}{2}", "\frac1{72}" -> "\frac{1}{72}"
std::string fix_fracs(const std::string& s) {
  auto parts = split(s, "\\frac");
  std::string out = parts[0];
  for (size_t i = 1; i < parts.size(); ++i) {
    const std::string& p = parts[i];
    out += "\\frac";
    if (p.empty()) return s;  // IndexError in Python
    if (p[0] == '{') {
      out += p;
      continue;
    }
    if (p.size() < 2) return s;
    const std::string a = p.substr(0, 1), b = p.substr(1, 1);
    if (b != "{")
      out += "{" + a + "}{" + b + "}" + p.substr(2);
    else
      out += "{" + a + "}" + b + p.substr(2);
  }
  return out;
}

bool parse_python_int(const std::string& s, long long& v) {  // int(s) for plain decimal text
  size_t i = 0;
  while (i < s.size() && std::isspace(static_cast<unsigned char>(s[i]))) ++i;
  size_t j = s.size();
  while (j > i && std::isspace(static_cast<unsigned char>(s[j - 1]))) --j;
  if (i == j) return false;
  std::string t = s.substr(i, j - i);
  size_t k = (t[0] == '-' || t[0] == '+') ? 1 : 0;
  if (k == t.size() || t.size() - k > 18) return false;
  for (size_t q = k; q < t.size(); ++q)
    if (!std::isdigit(static_cast<unsigned char>(t[q]))) return false;
  v = std::stoll(t);
  return true;
}

// "3/4" -> "\frac{3}{4}" when both sides are integers printed canonically
std::string fix_a_slash_b(const std::string& s) {
  auto parts = split(s, "/");
  if (parts.size() != 2) return s;
  long long a = 0, b = 0;
  if (!parse_python_int(parts[0], a) || !parse_python_int(parts[1], b)) return s;
  if (s != std::to_string(a) + "/" + std::to_string(b)) return s;
  return "\\frac{" + std::to_string(a) + "}{" + std::to_string(b) + "}";
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

std::optional<std::string> last_boxed(std::string_view s) {
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
        // remove_boxed: "\boxed{...}" only (verl asserts the prefix; \fbox{} is kept as verl does)
        if (box.rfind("\\boxed{", 0) == 0) return std::string(box.substr(7, box.size() - 8));
        if (box.rfind("\\fbox{", 0) == 0) return std::string(box.substr(6, box.size() - 7));
        return std::nullopt;
      }
    }
  }
  return std::nullopt;
}

std::string strip_string(std::string_view in) {
  std::string s(in);
  replace_all(s, "\n", "");
  replace_all(s, "\\!", "");
  replace_all(s, "\\\\", "\\");
  replace_all(s, "tfrac", "frac");
  replace_all(s, "dfrac", "frac");
  replace_all(s, "\\left", "");
  replace_all(s, "\\right", "");
  replace_all(s, "^{\\circ}", "");
  replace_all(s, "^\\circ", "");
  replace_all(s, "\\$", "");
  s = remove_right_units(s);
  replace_all(s, "\\%", "");
  replace_all(s, "%", "");  // Python's "\%" literal is backslash-percent; verl also drops "%"
  replace_all(s, " .", " 0.");
  replace_all(s, "{.", "{0.");
  if (s.empty()) return s;
  if (s[0] == '.') s = "0" + s;
  {
    auto parts = split(s, "=");
    if (parts.size() == 2 && parts[0].size() <= 2) s = parts[1];
  }
  s = fix_sqrt(s);
  replace_all(s, " ", "");
  s = fix_fracs(s);
  if (s == "0.5") s = "\\frac{1}{2}";
  s = fix_a_slash_b(s);
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

Verdict verify(std::string_view response, std::string_view ground_truth) {
  Verdict v;
  auto boxed = last_boxed(response);
  if (!boxed) return v;
  v.has_answer = true;
  v.answer = *boxed;
  v.correct = answers_equivalent(*boxed, ground_truth);
  return v;
}

double reward_value(const Verdict& v, RewardKind kind) {
  if (kind == RewardKind::ZeroOne) return v.correct ? 1.0 : 0.0;
  return v.correct ? 1.0 : -1.0;
}

}  // namespace bupo::rl
