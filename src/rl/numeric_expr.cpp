#include "rl/numeric_expr.hpp"

#include <cctype>
#include <cmath>
#include <cstdlib>
#include <string>

#include "core/work_counter.hpp"

namespace bupo::rl {
namespace {

__extension__ typedef __int128 i128;
constexpr i128 kExactLimit = static_cast<i128>(1) << 100;  // beyond: carried as a double only

i128 abs128(i128 a) {
  return a < 0 ? -a : a;
}
i128 gcd128(i128 a, i128 b) {
  a = abs128(a);
  b = abs128(b);
  while (b != 0) {
    const i128 t = a % b;
    a = b;
    b = t;
  }
  return a;
}

// a value carried as a double: from an irrational operation (rational_only = false), or a
// rational too large to keep exactly (true)
NumericValue inexact(double v, bool rational_only) {
  NumericValue r;
  r.value = v;
  r.rational_only = rational_only;
  return r;
}

NumericValue rational(i128 num, i128 den) {  // den != 0
  if (den < 0) {
    num = -num;
    den = -den;
  }
  const i128 g = gcd128(num, den);
  if (g > 1) {
    num /= g;
    den /= g;
  }
  NumericValue r = inexact(static_cast<double>(num) / static_cast<double>(den), true);
  if (abs128(num) < kExactLimit && den < kExactLimit) {
    r.exact = true;
    r.num = num;
    r.den = den;
  }
  return r;
}

// Exact when both are exact and every product stays below 2^100 before reduction.
bool small(i128 a) {
  return abs128(a) < (static_cast<i128>(1) << 62);
}

NumericValue add(const NumericValue& a, const NumericValue& b, int sign) {
  if (a.exact && b.exact && small(a.num) && small(a.den) && small(b.num) && small(b.den))
    return rational(a.num * b.den + sign * b.num * a.den, a.den * b.den);
  return inexact(a.value + sign * b.value, a.rational_only && b.rational_only);
}
NumericValue mul(const NumericValue& a, const NumericValue& b) {
  if (a.exact && b.exact && small(a.num) && small(a.den) && small(b.num) && small(b.den))
    return rational(a.num * b.num, a.den * b.den);
  return inexact(a.value * b.value, a.rational_only && b.rational_only);
}
std::optional<NumericValue> div(const NumericValue& a, const NumericValue& b) {
  if (b.value == 0) return std::nullopt;  // sympy's zoo: never equal to a number
  if (a.exact && b.exact && small(a.num) && small(a.den) && small(b.num) && small(b.den))
    return rational(a.num * b.den, a.den * b.num);
  return inexact(a.value / b.value, a.rational_only && b.rational_only);
}
std::optional<NumericValue> power(const NumericValue& base, const NumericValue& e) {
  if (e.exact && e.den == 1 && base.exact && abs128(e.num) <= 64) {
    NumericValue r = rational(1, 1);
    const i128 n = abs128(e.num);
    for (i128 k = 0; k < n && r.exact; ++k) r = mul(r, base);
    if (r.exact) {
      if (e.num >= 0) return r;
      return div(rational(1, 1), r);
    }
  }
  if (base.value < 0 && !(e.exact && e.den == 1)) return std::nullopt;  // complex
  const double v = std::pow(base.value, e.value);
  if (!std::isfinite(v)) return std::nullopt;
  return inexact(v, base.rational_only && e.rational_only && e.exact && e.den == 1);
}

class Parser {
 public:
  explicit Parser(std::string_view s) : s_(s) {}

  std::optional<NumericValue> all() {
    auto v = expr();
    skip();
    if (!v || i_ != s_.size() || !std::isfinite(v->value)) return std::nullopt;
    return v;
  }

 private:
  std::string_view s_;
  size_t i_ = 0;
  int depth_ = 0;  // nesting of expr/unary: a hostile "((((..." or "----..." must not overflow
                   // the stack; no answer nests 200 deep
  struct Nest {
    int& d;
    explicit Nest(int& depth) : d(++depth) {}
    ~Nest() { --d; }
    bool too_deep() const { return d > 200; }
  };

  bool at(std::string_view w) const { return s_.substr(i_, w.size()) == w; }
  // a control word w not followed by a letter (\pi, not \pit)
  bool at_word(std::string_view w) const {
    if (!at(w)) return false;
    const size_t j = i_ + w.size();
    return j >= s_.size() || !std::isalpha(static_cast<unsigned char>(s_[j]));
  }
  void skip() {
    for (;;) {
      if (i_ < s_.size() && (s_[i_] == ' ' || s_[i_] == '\t' || s_[i_] == '\n'))
        ++i_;
      else if (at("\\,") || at("\\;") || at("\\!") || at("\\ ") || at("\\:"))
        i_ += 2;
      else
        return;
    }
  }
  bool eat(std::string_view w) {
    skip();
    if (!at(w)) return false;
    i_ += w.size();
    return true;
  }
  bool eat_word(std::string_view w) {
    skip();
    if (!at_word(w)) return false;
    i_ += w.size();
    return true;
  }

  std::optional<NumericValue> expr() {
    const Nest nest(depth_);
    if (nest.too_deep()) return std::nullopt;
    work::count();
    auto v = term();
    while (v) {
      if (eat("+")) {
        auto r = term();
        if (!r) return std::nullopt;
        v = add(*v, *r, +1);
      } else if (eat("-")) {
        auto r = term();
        if (!r) return std::nullopt;
        v = add(*v, *r, -1);
      } else {
        break;
      }
    }
    return v;
  }

  // does the next token start a factor that may follow another without an operator? (2\pi,
  // 2\sqrt{3}, 3(4+1), \sqrt{2}\sqrt{3}; never two bare numbers: "2 3" is not 6)
  bool implicit_factor_next() {
    skip();
    return at_word("\\pi") || at_word("\\sqrt") || at_word("\\frac") || at_word("\\dfrac") ||
           at_word("\\tfrac") || at("(") || at("\\left(");
  }

  std::optional<NumericValue> term() {
    auto v = unary();
    while (v) {
      if (eat("*") || eat_word("\\cdot") || eat_word("\\times")) {
        auto r = unary();
        if (!r) return std::nullopt;
        v = mul(*v, *r);
      } else if (eat("/") || eat_word("\\div")) {
        auto r = unary();
        if (!r) return std::nullopt;
        v = div(*v, *r);
      } else if (implicit_factor_next()) {
        auto r = postfix();
        if (!r) return std::nullopt;
        v = mul(*v, *r);
      } else {
        break;
      }
    }
    return v;
  }

  std::optional<NumericValue> unary() {
    const Nest nest(depth_);
    if (nest.too_deep()) return std::nullopt;
    work::count();
    if (eat("-")) {
      auto v = unary();
      if (!v) return std::nullopt;
      return mul(rational(-1, 1), *v);
    }
    if (eat("+")) return unary();
    return postfix();
  }

  // primary ['^' exponent], right-associative; an unbraced exponent is one digit not followed by
  // another ("2^10" is 2^1·0 in LaTeX: refused rather than guessed)
  std::optional<NumericValue> postfix() {
    auto base = primary();
    if (!base) return std::nullopt;
    if (!eat("^")) return base;
    skip();
    std::optional<NumericValue> e;
    if (at("{")) {
      e = group();
    } else if (i_ < s_.size() && std::isdigit(static_cast<unsigned char>(s_[i_]))) {
      if (i_ + 1 < s_.size() && std::isdigit(static_cast<unsigned char>(s_[i_ + 1])))
        return std::nullopt;
      e = rational(s_[i_] - '0', 1);
      ++i_;
    } else {
      return std::nullopt;
    }
    if (!e) return std::nullopt;
    if (at("^")) return std::nullopt;  // 2^{3}^{2}: ambiguous
    return power(*base, *e);
  }

  std::optional<NumericValue> group() {  // '{' expr '}'
    if (!eat("{")) return std::nullopt;
    auto v = expr();
    if (!v || !eat("}")) return std::nullopt;
    return v;
  }

  // a \frac argument: a group or one digit (\frac12)
  std::optional<NumericValue> frac_arg() {
    skip();
    if (at("{")) return group();
    if (i_ < s_.size() && std::isdigit(static_cast<unsigned char>(s_[i_])))
      return rational(s_[i_++] - '0', 1);
    return std::nullopt;
  }

  std::optional<NumericValue> number() {
    const size_t b = i_;
    i128 num = 0, den = 1;
    size_t digits = 0;
    bool dot = false;
    while (i_ < s_.size()) {
      const char c = s_[i_];
      if (c >= '0' && c <= '9') {
        if (++digits > 30) return std::nullopt;
        num = num * 10 + (c - '0');
        if (dot) den *= 10;
      } else if (c == '.' && !dot) {
        dot = true;
      } else {
        break;
      }
      ++i_;
    }
    if (digits == 0) return std::nullopt;
    if (s_[i_ - 1] == '.') return std::nullopt;  // "610.": math_verify does not read it as 610
    if (i_ < s_.size() && (s_[i_] == ',' || s_[i_] == '.')) return std::nullopt;  // 1,000 / 1.2.3
    NumericValue v = rational(num, den);
    v.value = std::strtod(std::string(s_.substr(b, i_ - b)).c_str(), nullptr);
    return v;
  }

  std::optional<NumericValue> primary() {
    skip();
    if (i_ >= s_.size()) return std::nullopt;
    const char c = s_[i_];
    if ((c >= '0' && c <= '9') || c == '.') return number();
    if (eat("(")) {
      auto v = expr();
      if (!v || !(eat(")"))) return std::nullopt;
      return v;
    }
    if (eat("\\left(")) {
      auto v = expr();
      if (!v || !eat("\\right)")) return std::nullopt;
      return v;
    }
    if (at("{")) return group();
    if (eat_word("\\pi")) return inexact(M_PI, false);
    if (eat_word("\\frac") || eat_word("\\dfrac") || eat_word("\\tfrac")) {
      auto a = frac_arg();
      if (!a) return std::nullopt;
      auto b = frac_arg();
      if (!b) return std::nullopt;
      return div(*a, *b);
    }
    if (eat_word("\\sqrt")) {
      NumericValue index = rational(2, 1);
      if (eat("[")) {
        auto n = expr();
        if (!n || !eat("]") || !n->exact || n->den != 1 || n->num < 2) return std::nullopt;
        index = *n;
      }
      skip();
      std::optional<NumericValue> x;
      if (at("{"))
        x = group();
      else if (i_ < s_.size() && std::isdigit(static_cast<unsigned char>(s_[i_])))
        x = rational(s_[i_++] - '0', 1);  // \sqrt2
      if (!x) return std::nullopt;
      // sympy's root of a negative number is the principal complex one, even for \sqrt[3]{-8}
      if (x->value < 0) return std::nullopt;
      const double r = std::pow(x->value, 1.0 / static_cast<double>(index.num));
      // an exact root stays exact: \sqrt{4} = 2, \sqrt{\frac{9}{4}} = 3/2 (as sympy evaluates)
      if (x->exact && index.num <= 16) {
        const auto root_int = [&](i128 v) -> std::optional<i128> {
          if (v < 0) return std::nullopt;
          const double g =
              std::round(std::pow(static_cast<double>(v), 1.0 / static_cast<double>(index.num)));
          for (i128 cand = static_cast<i128>(g) - 1; cand <= static_cast<i128>(g) + 1; ++cand) {
            if (cand < 0) continue;
            i128 p = 1;
            bool over = false;
            for (i128 k = 0; k < index.num && !over; ++k) {
              p *= cand;
              over = p > kExactLimit;
            }
            if (!over && p == v) return cand;
          }
          return std::nullopt;
        };
        const auto n = root_int(abs128(x->num)), d = root_int(x->den);
        if (n && d) return rational(*n, *d);
      }
      return inexact(r, false);
    }
    return std::nullopt;
  }
};

// round(x, 6) as a count of millionths; nullopt when x sits too near a rounding boundary for a
// double to say which way sympy's exact rounding goes
std::optional<long long> millionths(double x) {
  const double y = x * 1e6;
  if (!(std::fabs(y) < 9e15)) return std::nullopt;
  const double r = std::nearbyint(y);
  if (std::fabs(std::fabs(y - r) - 0.5) < 1e-6) return std::nullopt;
  return static_cast<long long>(r);
}

}  // namespace

std::optional<NumericValue> parse_numeric_latex(std::string_view text) {
  auto v = Parser(text).all();
  if (!v) return std::nullopt;
  // float_literal means the whole text is one (signed) decimal: "-0.5" is, "0.5+1" is not
  size_t i = 0;
  while (i < text.size() && text[i] == ' ') ++i;
  if (i < text.size() && (text[i] == '-' || text[i] == '+')) ++i;
  bool literal = i < text.size();
  bool dot = false;
  for (; i < text.size(); ++i) {
    const char c = text[i];
    if (c == '.')
      dot = true;
    else if (!(c >= '0' && c <= '9') && c != ' ')
      literal = false;
  }
  v->float_literal = literal && dot;
  return v;
}

// "50\%" / "50%" -> "50": the text before a trailing percent sign, when it is an unsigned
// integer literal (math_verify reads 50% = 50 there; with a sign or a fraction it says otherwise)
std::optional<std::string_view> integer_percent(std::string_view t) {
  while (!t.empty() && t.back() == ' ') t.remove_suffix(1);
  if (t.empty() || t.back() != '%') return std::nullopt;
  t.remove_suffix(1);
  if (!t.empty() && t.back() == '\\') t.remove_suffix(1);
  while (!t.empty() && t.back() == ' ') t.remove_suffix(1);
  while (!t.empty() && t.front() == ' ') t.remove_prefix(1);
  if (t.empty() || t.size() > 30) return std::nullopt;
  for (char c : t)
    if (c < '0' || c > '9') return std::nullopt;
  return t;
}

bool numerically_equal(std::string_view gold, std::string_view pred) {
  const auto pg = integer_percent(gold), pp = integer_percent(pred);
  if (pg || pp) {  // a percentage of an integer against an integer (or another such percentage)
    const auto x = parse_numeric_latex(pg ? *pg : gold), y = parse_numeric_latex(pp ? *pp : pred);
    return x && y && x->exact && y->exact && x->den == 1 && y->den == 1 && x->num >= 0 &&
           x->num == y->num && !x->float_literal && !y->float_literal;
  }
  const auto a = parse_numeric_latex(gold), b = parse_numeric_latex(pred);
  if (!a || !b) return false;
  if (a->float_literal || b->float_literal) {
    const auto x = millionths(a->value), y = millionths(b->value);
    return x && y && *x == *y;
  }
  if (a->exact && b->exact) return a->num == b->num && a->den == b->den;
  // a rational too large for exact arithmetic: a double cannot tell 2/3 + 10^-30 from 2/3, and
  // sympy can
  if ((a->rational_only && !a->exact) || (b->rational_only && !b->exact)) return false;
  const double scale = std::fmax(1.0, std::fmax(std::fabs(a->value), std::fabs(b->value)));
  return std::fabs(a->value - b->value) <= 1e-12 * scale;
}

}  // namespace bupo::rl
