// The math verifier (papers.md §1.8): last \boxed{}, Hendrycks normalisation, safe exact-number
// equivalence — and answers that must NOT match.
#include <gtest/gtest.h>

#include "rl/reward.hpp"

using namespace bupo::rl;

namespace {
struct Case {
  const char* answer;
  const char* truth;
  bool equal;
};

// answer vs ground truth after extraction
const Case kEquivalence[] = {
    // identical and whitespace
    {"5", "5", true}, {" 5 ", "5", true}, {"x + 1", "x+1", true}, {"\\frac{1}{2}", "\\frac{1}{2}", true},
    {"\\infty", "\\infty", true}, {"-\\infty", "-\\infty", true}, {"\\pi", "\\pi", true},
    // Hendrycks normalisation
    {"\\dfrac{1}{2}", "\\frac{1}{2}", true}, {"\\tfrac{3}{4}", "\\frac{3}{4}", true},
    {"\\frac12", "\\frac{1}{2}", true}, {"\\frac1{72}", "\\frac{1}{72}", true},
    {"\\sqrt3", "\\sqrt{3}", true}, {"2\\sqrt2", "2\\sqrt{2}", true},
    {"\\left(1,2\\right)", "(1,2)", true}, {"\\left[ 0, 1 \\right]", "[0,1]", true},
    {"90^\\circ", "90", true}, {"90^{\\circ}", "90", true}, {"\\$5", "5", true},
    {"50\\%", "50", true}, {"50%", "50", true}, {"x = 5", "5", true}, {"k=3", "3", true},
    {".5", "\\frac{1}{2}", true}, {"0.5", "\\frac{1}{2}", true}, {"1/2", "\\frac{1}{2}", true},
    {"3/4", "\\frac{3}{4}", true}, {"10\\text{ cm}", "10", true}, {"5\\text{ inches}", "5", true},
    {"\\!5", "5", true}, {"a\\\\b", "a\\b", true}, {"\\frac{\\sqrt{3}}{2}", "\\dfrac{\\sqrt{3}}{2}", true},
    {"\\left( 3, \\frac{\\pi}{2} \\right)", "\\left( 3, \\frac{\\pi}{2} \\right)", true},
    {"(3,\\frac{\\pi}{2})", "\\left( 3, \\frac{\\pi}{2} \\right)", true},
    {"\\text{(C)}", "\\text{(C)}", true}, {"\\text{(C)}", "(C)", true}, {"\\textbf{(C)}", "(C)", true},
    {"\\mathrm{E}", "E", true}, {"\\boxed{7}", "7", true},
    // exact numbers
    {"5.0", "5", true}, {"5.00", "5", true}, {"05", "5", true}, {"+5", "5", true}, {"-0", "0", true},
    {"1,000", "1000", true}, {"10,080", "10080", true}, {"1,234,567", "1234567", true},
    {"0.25", "\\frac{1}{4}", true}, {"\\frac{2}{4}", "\\frac{1}{2}", true}, {"\\frac{6}{3}", "2", true},
    {"-\\frac{1}{3}", "\\frac{-1}{3}", true}, {"\\frac{-1}{3}", "-\\frac{1}{3}", true},
    {"-0.75", "-\\frac{3}{4}", true}, {"12.5", "\\frac{25}{2}", true}, {"2.50", "\\frac{5}{2}", true},
    {"100", "100.", true}, {"7.", "7", true}, {"3.14", "3.140", true}, {"0.125", "\\frac{1}{8}", true},
    {"-2", "-2", true}, {"-2.0", "-2", true}, {"1e3", "1e3", true}, {"$5$", "5", true},
    // tuples and intervals element by element
    {"(0.5, 1)", "\\left(\\frac{1}{2}, 1\\right)", true}, {"(1,2,3)", "(1, 2, 3)", true},
    {"[0,1)", "[0, 1)", true}, {"(1,000, 2)", "(1000,2)", false}, {"(2.0,-1)", "(2,-1)", true},
    // must NOT match
    {"4", "5", false}, {"-5", "5", false}, {"50", "5", false}, {"5", "50", false}, {"1/2", "2", false},
    {"\\frac{1}{2}", "\\frac{1}{3}", false}, {"0.5", "0.50001", false}, {"0.3333", "\\frac{1}{3}", false},
    {"12", "1,2", false}, {"1,2", "12", false}, {"1,23", "123", false}, {"12,34", "1234", false},
    {"2x", "x+x", false}, {"x^2", "x^{2}", false}, {"\\sqrt{2}", "1.414", false}, {"\\pi", "3.14", false},
    {"(1,2)", "(2,1)", false}, {"(1,2)", "[1,2]", false}, {"[0,1)", "[0,1]", false}, {"(1,2)", "(1,2,3)", false},
    {"\\infty", "-\\infty", false}, {"", "5", false}, {"5", "", false}, {"A", "B", false}, {"(A)", "(B)", false},
    {"\\text{(A)}", "(B)", false}, {"x=5", "x=6", false}, {"10", "10\\sqrt{2}", false},
    {"\\frac{1}{0}", "1", false}, {"1.0.0", "1", false}, {"--5", "5", false}, {"5-", "5", false},
    {"0.1", "\\frac{1}{9}", false}, {"100%", "1", false}, {"1", "i", false}, {"2i", "2", false},
    {"3\\sqrt{3}", "\\sqrt{27}", false}, {"\\frac{1}{2}x", "\\frac{x}{2}", false}, {"1e3", "1000", false},
    {"999999999999999999999999999999999", "999999999999999999999999999999998", false},
    {"1,0000", "10000", false}, {",100", "100", false}, {"1,", "1", false},
    {"(0,1)", "0,1", false}, {"[1, 2]", "(1, 2]", false}, {"10^3", "1000", false},
    {"-\\frac{1}{2}", "\\frac{1}{2}", false}, {"\\frac{1}{2}", "-0.5", false}, {"0", "-1", false},
    {"7", "7.5", false}, {"7.5", "7", false}, {"1/3", "0.33", false}, {"2/4", "1/3", false},
    {"\\$5", "6", false}, {"5\\text{ cm}", "6", false}, {"90^\\circ", "180", false},
    // DeepMath / MATH500 style ground truths
    {"\\max\\{|a|, |b|\\}", "\\max\\{|a|, |b|\\}", true}, {"\\max\\{|a|,|b|\\}", "\\max\\{|a|, |b|\\}", true},
    {"\\dfrac{14}{3}", "\\frac{14}{3}", true}, {"\\frac{14}{3}", "4.6667", false},
    {"p - q", "p - q", true}, {"p-q", "q-p", false}, {"\\text{Evelyn}", "\\text{Evelyn}", true},
    {"Evelyn", "\\text{Evelyn}", true}, {"\\text{Evelyn}", "\\text{Eve}", false},
    {"540", "540", true}, {"540", "504", false}, {"-2 + 7i", "-2 + 7i", true}, {"-2+7i", "7i-2", false},
    {"\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}", "\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}", true},
    {"6 - 5i", "6-5i", true}, {"\\sqrt{51}", "\\sqrt{51}", true}, {"\\sqrt{51}", "\\sqrt{15}", false},
    {"2\\pi", "2 \\pi", true}, {"\\frac{\\pi}{4}", "\\tfrac{\\pi}{4}", true},
};

struct BoxCase {
  const char* response;
  const char* truth;
  bool correct;
  bool has_answer;
};
const BoxCase kResponses[] = {
    {"so the answer is \\boxed{5}.", "5", true, true},
    {"\\boxed{4} wait, actually \\boxed{5}", "5", true, true},          // the last box counts
    {"\\boxed{5} wait, actually \\boxed{4}", "5", false, true},
    {"The answer is 5.", "5", false, false},                            // no box: no reward
    {"\\boxed{\\frac{1}{2}}", "\\frac{1}{2}", true, true},              // nested braces
    {"\\boxed{\\left( 3, \\frac{\\pi}{2} \\right)}", "\\left( 3, \\frac{\\pi}{2} \\right)", true, true},
    {"$\\boxed{10}$ is it", "10", true, true},
    {"\\boxed 7$", "7", true, true},                                    // "\boxed 7" form
    {"\\fbox{8}", "8", true, true},
    {"\\boxed{5", "5", false, false},                                   // unbalanced: no answer
    {"\\boxed{}", "5", false, true},
    {"\\boxed{\\dfrac{3}{4}}", "0.75", true, true},
    {"answer: \\boxed{1,000}", "1000", true, true},
    {"\\boxed{x = 2}", "2", true, true},
    {"\\boxed{\\text{(C)}}", "C", false, true},                         // (C) is not C
    {"\\boxed{\\infty}", "\\infty", true, true},
    {"multiple \\boxed{1} and \\boxed{2} and \\boxed{3}", "3", true, true},
    {"\\boxed{\\boxed{6}}", "6", true, true},
    {"", "5", false, false},
    {"\\boxed{12}", "1,2", false, true},
};
}  // namespace

TEST(Reward, EquivalenceTable) {
  int n = 0;
  for (const auto& c : kEquivalence) {
    EXPECT_EQ(answers_equivalent(c.answer, c.truth), c.equal)
        << "answer '" << c.answer << "' vs truth '" << c.truth << "'";
    ++n;
  }
  EXPECT_GE(n, 130);
}

TEST(Reward, ResponsesTable) {
  for (const auto& c : kResponses) {
    const Verdict v = verify(c.response, c.truth);
    EXPECT_EQ(v.correct, c.correct) << c.response;
    EXPECT_EQ(v.has_answer, c.has_answer) << c.response;
  }
  EXPECT_GE(std::size(kEquivalence) + std::size(kResponses), 150u);
}

TEST(Reward, StripStringMatchesHendrycks) {
  EXPECT_EQ(strip_string("\\dfrac{1}{2}"), "\\frac{1}{2}");
  EXPECT_EQ(strip_string("0.5"), "\\frac{1}{2}");
  EXPECT_EQ(strip_string(" .5"), "\\frac{1}{2}");  // " ." -> " 0.", spaces removed, "0.5" -> 1/2
  EXPECT_EQ(strip_string("\\sqrt2"), "\\sqrt{2}");
  EXPECT_EQ(strip_string("\\frac12"), "\\frac{1}{2}");
  EXPECT_EQ(strip_string("3/4"), "\\frac{3}{4}");
  EXPECT_EQ(strip_string("3 / 4"), "\\frac{3}{4}");  // spaces go before the a/b rule
  EXPECT_EQ(strip_string("3/04"), "3/04");  // not canonical "a/b": left alone
  EXPECT_EQ(strip_string("x=5"), "5");
  EXPECT_EQ(strip_string("xyz=5"), "xyz=5");  // left side longer than two characters
  EXPECT_EQ(strip_string("\\frac"), "\\frac");  // Python raises; we keep the text
  EXPECT_EQ(strip_string(""), "");
}

TEST(Reward, BoxExtraction) {
  EXPECT_EQ(last_boxed("a \\boxed{1} b \\boxed{2}").value(), "2");
  EXPECT_EQ(last_boxed("\\boxed{\\frac{a}{b}}").value(), "\\frac{a}{b}");
  EXPECT_FALSE(last_boxed("no box").has_value());
  EXPECT_FALSE(last_boxed("\\boxed{open").has_value());
}

TEST(Reward, RewardValues) {
  Verdict ok;
  ok.correct = true;
  Verdict bad;
  EXPECT_EQ(reward_value(ok, RewardKind::ZeroOne), 1.0);
  EXPECT_EQ(reward_value(bad, RewardKind::ZeroOne), 0.0);
  EXPECT_EQ(reward_value(ok, RewardKind::PlusMinusOne), 1.0);
  EXPECT_EQ(reward_value(bad, RewardKind::PlusMinusOne), -1.0);
}
