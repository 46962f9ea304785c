// HAPO's reward for `data_source` math_dapo (papers.md §2.3; HAPO's verl fork at 7671dde,
// verl/utils/reward_score/math_dapo.py, whose Minerva part is verl 0.5.0's):
//   1. keep the response's last 300 characters (code points, as Python slices);
//   2. the answer is the text after the last match of (?i)Answer\s*:\s*([^\n]+) ("[INVALID]"
//      when none);
//   3. both it and the ground truth go through normalize_final_answer (Minerva's: text after the
//      last '=', unit words and TeX spacing removed, $...$, \text{}, \boxed{} peeled, \fracab and
//      \sqrta braced, commas dropped from digit strings);
//   4. equal strings score +1; otherwise a valid answer is compared with the raw ground truth by
//      math_verify, which bupo replaces by numerically_equal (numeric_expr.hpp): the same
//      verdicts on numbers, never +1 where math_verify says -1, and -1 on what it cannot parse
//      (measured against math_verify by tests/reference/check_graders.py).
#pragma once
#include <optional>
#include <string>
#include <string_view>

namespace bupo::rl {

// Step 2 on the whole text: the last "Answer:" capture, or nullopt.
std::optional<std::string> minerva_last_answer(std::string_view text);
// normalize_final_answer, exactly (Python's re semantics: '.' stops at '\n', lazy and greedy
// groups as written).
std::string minerva_normalize(std::string_view answer);

}  // namespace bupo::rl
