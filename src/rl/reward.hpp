// Verifiable math rewards: two graders, as the papers' reference code has them.
//
// "math" (papers.md §1.8, BuPO's reward): the answer is the content of the response's last
// \boxed{...}; it matches the ground truth when the two are equal after the Hendrycks MATH
// `strip_string` normalisation of verl's math.compute_score. Two modes:
//   - MathMode::Verl: exactly verl's function (BuPO's reference d3a85c6, the same file as verl
//     0.5.0 on PyPI), quirks included: a last \fbox{} scores 0 (remove_boxed asserts), only
//     backslash-percent is stripped, and where strip_string raises the raw strings are compared;
//   - MathMode::Extended: more lenient: \fbox{} is read, a bare '%' is dropped, wrappers
//     (\text{}, \boxed{}, $...$) are peeled, and two answers that are the same exact rational
//     number (integers, decimals, thousands separators, a/b and \frac{a}{b}, signs: 0.50 = \frac12,
//     2.0 = 2, 1,000 = 1000, +5 = 5) or the same tuple/interval of such numbers element by element
//     match, where verl scores 0. Nothing is evaluated symbolically: "2x" never equals "x+x".
// "math_dapo" (papers.md §2.3, HAPO's reward for data_source math_dapo): DAPO's Minerva grader,
// the answer after the last "Answer:" in the response's last 300 characters, normalised by
// normalize_final_answer, with a numeric fallback standing in for math_verify
// (grader_math_dapo.hpp).
#pragma once
#include <optional>
#include <string>
#include <string_view>

namespace bupo::rl {

// The content of the last \boxed{...} / \boxed ... (/ \fbox{...} when accept_fbox), or nullopt.
std::optional<std::string> last_boxed(std::string_view response, bool accept_fbox = true);
// Hendrycks MATH normalisation as the extended grader runs it: total (a step on which verl's
// Python raises keeps its input), and a bare '%' dropped too.
std::string strip_string(std::string_view s);
// verl math.strip_string exactly; nullopt where the Python raises (two "\text{ ", an empty piece
// after \sqrt or \frac).
std::optional<std::string> strip_string_verl(std::string_view s);
// Answer equivalence: the normalised strings are equal, or both are the same exact number, or
// the same tuple of exact numbers.
bool answers_equivalent(std::string_view answer, std::string_view ground_truth);

// verl math.is_equiv: the normalised strings are equal (the raw ones where normalising raises).
bool answers_equal_verl(std::string_view answer, std::string_view ground_truth);

enum class RewardKind { ZeroOne, PlusMinusOne };
enum class MathMode { Verl, Extended };              // reward.mode
enum class Grader { Math, MathDapo, ByDataSource };  // algorithm.grader
struct Scoring {
  Grader grader = Grader::Math;
  MathMode mode = MathMode::Extended;
};
// ByDataSource routes as HAPO's verl fork does: a data_source containing "math_dapo" to math_dapo,
// every other to math. (BuPO's fork sends math_dapo rows to math as well: Grader::Math.)
Grader grader_for(const Scoring& s, std::string_view data_source);
// From the config's words (algorithm.grader: math | math_dapo | by_data_source; reward.mode:
// verl | extended); anything else throws naming the value.
Scoring parse_scoring(std::string_view grader, std::string_view mode);

struct Verdict {
  bool correct = false;
  bool has_answer = false;  // a \boxed{} (math) or an "Answer:" line (math_dapo) was found
  std::string answer;       // the extracted answer (math_dapo: normalised, as its `pred`)
};
Verdict verify(std::string_view response, std::string_view ground_truth);  // math, extended
Verdict verify_math(std::string_view response, std::string_view ground_truth, MathMode mode);
Verdict verify(std::string_view response, std::string_view ground_truth, const Scoring& s,
               std::string_view data_source);
double reward_value(const Verdict& v, RewardKind kind);  // 1/0 or +1/-1

// math_dapo (grader_math_dapo.cpp)
Verdict verify_math_dapo(std::string_view response, std::string_view ground_truth);

}  // namespace bupo::rl
