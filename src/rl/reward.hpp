// Verifiable math reward (papers.md §1.8): the answer is the content of the response's last
// \boxed{...} (or \fbox{...}); it matches the ground truth when the two are equal after the
// Hendrycks MATH `strip_string` normalisation that verl's math.compute_score uses, or — where it is
// safe — when both are the same exact rational number (integers, decimals, thousands separators,
// a/b and \frac{a}{b}, signs) or the same tuple/interval of such numbers element by element.
// Nothing is evaluated symbolically: "2x" never equals "x+x", and "1/2" never equals "0.50001".
#pragma once
#include <optional>
#include <string>
#include <string_view>

namespace bupo::rl {

// The content of the last \boxed{...} / \boxed ... / \fbox{...}, or nullopt.
std::optional<std::string> last_boxed(std::string_view response);
// Hendrycks MATH normalisation (verl math.strip_string), made total: inputs on which the Python
// raises keep their unnormalised text in the affected step.
std::string strip_string(std::string_view s);
// Answer equivalence: the normalised strings are equal, or both are the same exact number, or
// the same tuple of exact numbers.
bool answers_equivalent(std::string_view answer, std::string_view ground_truth);

enum class RewardKind { ZeroOne, PlusMinusOne };

struct Verdict {
  bool correct = false;
  bool has_answer = false;  // a \boxed{} was found
  std::string answer;       // the extracted answer
};
Verdict verify(std::string_view response, std::string_view ground_truth);
double reward_value(const Verdict& v, RewardKind kind);  // 1/0 or +1/-1

}  // namespace bupo::rl
