// The math_dapo grader's fallback (HAPO's verl fork scores a response +1 when math_verify finds
// its normalised answer equal to the ground truth): the part of math_verify that numbers need,
// without sympy. Both sides are parsed as real-valued LaTeX arithmetic — integers and decimals,
// \frac/\dfrac/\tfrac (also \frac12), \sqrt{x} and \sqrt[n]{x}, ^, + - * / \cdot \times \div,
// implicit products such as 2\sqrt{3} or 3\pi, parentheses, braces, \left( \right), \pi — and
// compared by math_verify's numeric rules (grader.py, sympy_numeric_eq):
//   - either side a plain decimal literal (0.333333): both rounded to 6 decimals, then equal;
//   - both exact rationals: equal as rationals (a rational beyond 2^100 is not comparable);
//   - otherwise: equal to 12 significant digits (math_verify: (a - b).evalf(15, chop) == 0);
//   - an unsigned integer with a trailing % or \% against an integer: the integers equal (50% =
//     50, as math_verify has it).
// Anything outside that grammar (variables, sets, tuples, intervals, thousands separators, other
// percentages, units, \infty, equations) is "not comparable": the fallback then never rescues
// the answer, where math_verify might. So the fallback errs towards -1, never towards +1;
// tests/reference/check_graders.py measures both directions against math_verify itself.
#pragma once
#include <optional>
#include <string_view>

namespace bupo::rl {

struct NumericValue {
  double value = 0;
  bool exact = false;          // a rational computed exactly (num/den below)
  bool float_literal = false;  // the whole text is one decimal literal with a '.'
  bool rational_only = true;   // no \pi, no inexact root or fractional power on the way
  __extension__ __int128 num = 0, den = 1;
};

// nullopt: not a real-valued arithmetic expression of the grammar above (or not finite).
std::optional<NumericValue> parse_numeric_latex(std::string_view text);

// math_verify's verdict on two such expressions, or false when either is not comparable.
bool numerically_equal(std::string_view gold, std::string_view pred);

}  // namespace bupo::rl
