// The papers' graders as their reference code has them: verl's math.compute_score exactly
// (reward.mode = "verl", BuPO's reward), DAPO's Minerva grader with the numeric stand-in for
// math_verify (algorithm.grader = "math_dapo", HAPO's), routing by data_source, and the Python
// str semantics they rest on. Expected values were printed by the reference Python itself (verl
// 0.5.0's math.py = BuPO d3a85c6's, and its math_dapo.py); tests/reference/check_graders.py
// re-checks them against that Python on the 5,600 ground truths of ../shared/data/math.
#include <gtest/gtest.h>

#include "core/error.hpp"
#include "rl/grader_math_dapo.hpp"
#include "rl/numeric_expr.hpp"
#include "rl/py_text.hpp"
#include "rl/reward.hpp"

using namespace bupo::rl;

TEST(PyText, CountsCodePointsAsPythonDoes) {
  EXPECT_EQ(py::cp_count("abc"), 3u);
  EXPECT_EQ(py::cp_count("\xCF\x80r"), 2u);         // "πr"
  EXPECT_EQ(py::cp_count("\xF0\x9D\x9F\x8E"), 1u);  // U+1D7CE, four bytes
  EXPECT_EQ(py::last_cps("\xCF\x80\xCF\x80x", 2), "\xCF\x80x");
  EXPECT_EQ(py::last_cps("ab", 300), "ab");
  EXPECT_EQ(py::strip("\xC2\xA0 7 \xE3\x80\x80\n"), "7");  // NBSP and ideographic space
  EXPECT_TRUE(py::all_digits("\xC2\xB2\xC2\xB3"));         // "²³".isdigit() is True
  EXPECT_TRUE(py::all_digits("\xD9\xA3"));                 // Arabic-Indic three
  EXPECT_FALSE(py::all_digits("\xC2\xBD"));                // "½".isdigit() is False
  EXPECT_FALSE(py::all_digits(""));
  EXPECT_FALSE(py::isspace(0x200B));  // zero-width space is not whitespace to Python
  EXPECT_TRUE(py::isspace(0x1C));
}

// ---------------------------------------------------------------- math, verl mode
struct Pair {
  const char* a;
  const char* b;
  bool verl;
};

// is_equiv(a, b) as verl 0.5.0 prints it; where the extended grader differs, the test below says
const Pair kVerlEquiv[] = {
    {"50%", "50", false},  // verl strips backslash-percent only
    {"5\\%", "5", true},
    {"0.50", "\\frac12", false},
    {"2.0", "2", false},
    {"1,000", "1000", false},
    {"+5", "5", false},
    {"0.5", "\\frac{1}{2}", true},
    {"x\\sqrt", "x \\sqrt", false},  // fix_sqrt raises: the raw strings differ
    {"\\sqrt", "\\sqrt", true},
    {"a\\frac", "a \\frac", false},  // fix_fracs raises
    {"\\frac", "\\frac", true},
    {"\\text{ a}\\text{ b}", "\\text{ a}\\text{ b}", true},  // remove_right_units raises
    {"\\text{ a}\\text{ b}", "\\text{ a} \\text{ b}", false},
    {"\xCF\x80r=3", "3", true},  // "πr" is two code points: the "k = " rule applies
    {"\\frac\xC2\xBD"
     "3",
     "\\frac{\xC2\xBD}{3}", true},  // \frac½3: one code point each
    {"12345678901234567890/3", "\\frac{12345678901234567890}{3}", true},  // Python's big ints
    {"-0/1", "\\frac{-0}{1}", false},  // str(int("-0")) is "0": not canonical, left alone
    {"0/1", "\\frac{0}{1}", true},
    {"\\\\\\%5", "\\5", true},  // "\\\\" -> "\\" first, then backslash-percent
    {"\\dfrac{1}{2}", "\\frac{1}{2}", true},
    {"10\\text{ cm}", "10", true},
    {"\\left(1,2\\right)", "(1,2)", true},
};

TEST(GraderMath, VerlModeEqualsVerlsIsEquiv) {
  for (const auto& c : kVerlEquiv)
    EXPECT_EQ(answers_equal_verl(c.a, c.b), c.verl) << "'" << c.a << "' vs '" << c.b << "'";
}

TEST(GraderMath, ExtendedModeIsMoreLenientWhereDocumented) {
  const std::pair<const char*, const char*> lenient[] = {{"50%", "50"}, {"0.50", "\\frac12"},
                                                         {"2.0", "2"},  {"1,000", "1000"},
                                                         {"+5", "5"},   {"x\\sqrt", "x \\sqrt"}};
  for (const auto& [a, b] : lenient) {
    EXPECT_FALSE(answers_equal_verl(a, b)) << a << " vs " << b;
    EXPECT_TRUE(answers_equivalent(a, b)) << a << " vs " << b;
  }
}

TEST(GraderMath, VerlModeScoresALastFboxZero) {
  const Scoring verl{Grader::Math, MathMode::Verl}, ext{Grader::Math, MathMode::Extended};
  EXPECT_FALSE(verify("so \\fbox{5}", "5", verl, "").correct);
  EXPECT_FALSE(verify("so \\fbox{5}", "5", verl, "").has_answer);
  EXPECT_TRUE(verify("so \\fbox{5}", "5", ext, "").correct);
  EXPECT_TRUE(verify("\\boxed{5}", "5", verl, "").correct);
  EXPECT_TRUE(verify("\\boxed 5$ yes", "5", verl, "").correct);
  EXPECT_FALSE(verify("\\boxedx{5}", "5", verl, "").correct);
  // the two-argument form keeps its meaning: the extended math grader
  EXPECT_TRUE(verify("so \\fbox{5}", "5").correct);
}

// ---------------------------------------------------------------- math_dapo
TEST(GraderMathDapo, FindsTheLastAnswerLineAsPythonsFindall) {
  const std::pair<const char*, const char*> cases[] = {
      {"Answer: 5", "5"},
      {"The answer: 5\nAnswer: 6", "6"},
      {"ANSWER : 7", "7"},
      {"Answer: 3, Answer: 5", "3, Answer: 5"},  // one match swallows the rest of its line
      {"Answer:\n5", "5"},                       // \s* crosses the newline
      {"Answer:   ", " "},                       // \s* backs off to leave [^\n]+ a space
      {"Answer:  \n ", " "},
      {"x answer:\t$\\frac{1}{2}$.\nmore", "$\\frac{1}{2}$."},
      {"an\xC5\xBFwer: 9", "9"},  // 'ſ' matches 's' under (?i)
  };
  for (const auto& [text, want] : cases) {
    const auto got = minerva_last_answer(text);
    ASSERT_TRUE(got.has_value()) << text;
    EXPECT_EQ(*got, want) << text;
  }
  EXPECT_FALSE(minerva_last_answer("Answer:").has_value());
  EXPECT_FALSE(minerva_last_answer("no final line").has_value());
}

TEST(GraderMathDapo, NormalizesAsNormalizeFinalAnswer) {
  const std::pair<const char*, const char*> cases[] = {
      {"x = 5", "5"},
      {"\\$10.50", "10.50"},
      {"a 5 units", "5"},
      {"5 \\text{ cm}", "5"},
      {"$\\frac{1}{2}$ and $3$", "\\frac{1}{2}"},
      {"\\text{(A)}", "(A)"},
      {"\\textbf{B}", "B"},
      {"\\boxed{\\frac{1}{2}}", "\\frac{1}{2}"},
      {"\\frac12", "\\frac{1}{2}"},
      {"\\frac1{2}", "\\frac{1}{{}2}"},  // the regex's '.' takes the brace
      {"\\sqrt2", "\\sqrt{2}"},
      {"1,000,000", "1000000"},
      {"12^\\circ", "12"},
      {"an apple", "apple"},
      {"\\overline{AB}", "AB"},
      {"5,6", "56"},
      {"x=y=7", "7"},
      {"\\text{and}3", "3"},
      {"frac\n1", "frac{\n}{1}"},  // [^{] takes a newline
      {"\\text{abc", "\\text{abc"},
      {"\xC2\xB2,\xC2\xB3", "\xC2\xB2\xC2\xB3"},  // "²³".isdigit(): commas dropped
      {",", ","},
      {"\\dfrac{3}{4}", "\\dfrac{3}{4}"},
      {"$$", ""},
      {"  7  ", "7"},
      {"\\mbox{ft}", "ft"},
  };
  for (const auto& [in, want] : cases) EXPECT_EQ(minerva_normalize(in), want) << in;
}

TEST(GraderMathDapo, ScoresTheAnswerLineAndFallsBackOnNumbers) {
  const Scoring dapo{Grader::MathDapo, MathMode::Verl};
  auto correct = [&](const char* r, const char* gt) { return verify(r, gt, dapo, "").correct; };
  EXPECT_TRUE(correct("So x = 12.\nAnswer: 12", "12"));
  EXPECT_TRUE(correct("Answer: $\\frac{1}{2}$", "\\frac{1}{2}"));
  EXPECT_FALSE(correct("\\boxed{12}", "12"));  // a boxed answer without "Answer:" is [INVALID]
  EXPECT_FALSE(verify("\\boxed{12}", "12", dapo, "").has_answer);
  EXPECT_TRUE(correct("Answer: 0.5", "\\frac{1}{2}"));  // the fallback: math_verify says 1/2
  EXPECT_TRUE(correct("Answer: 2.0", "2"));
  EXPECT_TRUE(correct("Answer: \\frac{\\sqrt{2}}{2}", "\\frac{1}{\\sqrt{2}}"));
  EXPECT_FALSE(correct("Answer: 0.3333", "\\frac{1}{3}"));
  EXPECT_FALSE(correct("Answer: 13", "12"));
  // only the last 300 characters count
  std::string late = "Answer: 12\n" + std::string(300, 'x');
  EXPECT_FALSE(correct(late.c_str(), "12"));
  std::string in_tail = std::string(300, 'x') + "\nAnswer: 12";
  EXPECT_TRUE(correct(in_tail.c_str(), "12"));
  // reward values as HAPO's: +1 / -1
  EXPECT_EQ(reward_value(verify("Answer: 3", "4", dapo, ""), RewardKind::PlusMinusOne), -1.0);
}

TEST(GraderRouting, ByDataSourceSendsMathDapoRowsToMinerva) {
  const Scoring by{Grader::ByDataSource, MathMode::Verl};
  EXPECT_EQ(grader_for(by, "math_dapo"), Grader::MathDapo);
  EXPECT_EQ(grader_for(by, "dapo_math_dapo_17k"), Grader::MathDapo);  // HAPO: "in data_source"
  EXPECT_EQ(grader_for(by, "qwen_math500"), Grader::Math);
  EXPECT_EQ(grader_for(by, ""), Grader::Math);
  EXPECT_TRUE(verify("Answer: 7", "7", by, "math_dapo").correct);
  EXPECT_FALSE(verify("Answer: 7", "7", by, "qwen_aime_2024").correct);
  EXPECT_TRUE(verify("\\boxed{7}", "7", by, "qwen_aime_2024").correct);
  EXPECT_EQ(grader_for({Grader::Math, MathMode::Verl}, "math_dapo"), Grader::Math);
  EXPECT_THROW(parse_scoring("minerva", "verl"), bupo::Error);
  EXPECT_THROW(parse_scoring("math", "lenient"), bupo::Error);
}

// ---------------------------------------------------------------- the math_verify stand-in
TEST(NumericFallback, FollowsMathVerifysNumericRules) {
  const std::tuple<const char*, const char*, bool> cases[] = {
      {"\\frac{1}{2}", "0.5", true},  // a float: both rounded to 6 decimals
      {"\\frac{1}{3}", "0.333333", true},
      {"\\frac{1}{3}", "0.3333", false},
      {"2", "2.0", true},
      {"2", "\\frac{4}{2}", true},  // rationals: exact
      {"\\frac{2}{3}", "\\frac{4}{6}", true},
      {"\\sqrt{8}", "2\\sqrt{2}", true},  // otherwise: to 12 significant digits
      {"\\frac{\\sqrt{2}}{2}", "\\frac{1}{\\sqrt2}", true},
      {"2\\pi", "6.283185", true},
      {"2\\pi", "6.28", false},
      {"\\sqrt[3]{27}", "3", true},
      {"\\dfrac{3}{4}", "0.75", true},
      {"-\\frac{1}{2}", "-0.5", true},
      {"2^{10}", "1024", true},
      {"3", "4", false},
      {"\\frac{1}{2}", "\\frac{1}{3}", false},
      // not comparable: no verdict, so never +1
      {"1,000", "1000", false},
      {"x+1", "1+x", false},
      {"2^10", "1024", false},         // LaTeX reads 2^1 0
      {"\\sqrt[3]{-8}", "-2", false},  // sympy's principal root is complex
      {"\\frac{1}{0}", "1", false},
      {"50", "50\\%", true},  // math_verify: an integer percentage equals the integer
      {"50", "50%", true},
      {"50", "-50\\%", false},
      {"50", "50.0\\%", false},
      {"0.5", "50\\%", false},  // math_verify says +1 here too; the stand-in does not follow
      {"\\frac{2}{3}", "\\frac{2}{3}+10^{-30}", false},  // beyond exact rationals: no verdict
      {"(1,2)", "(1,2)", false},
      {"\\infty", "\\infty", false},
      {"2 3", "6", false},  // two bare numbers are no product
  };
  for (const auto& [gold, pred, want] : cases)
    EXPECT_EQ(numerically_equal(gold, pred), want) << gold << " vs " << pred;
  EXPECT_TRUE(parse_numeric_latex("\\left(1+2\\right)\\cdot 3")->exact);
  EXPECT_EQ(parse_numeric_latex("\\left(1+2\\right)\\cdot 3")->num, 9);
  EXPECT_TRUE(parse_numeric_latex("-0.5")->float_literal);
  EXPECT_FALSE(parse_numeric_latex("0.5+1")->float_literal);
}
