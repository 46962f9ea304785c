// No silent garbage (issue 13, item 6) and bad inputs as one clear error with exit status 1 (item
// 7): non-finite weights refused at load naming the tensor, NaN entropies kept as NaN (not a
// plausible 0), non-finite or empty sampling options refused, ground truths kept as their exact
// text, every command-line parse error exiting 1.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>

#include "../backend_ops/backend_ops.hpp"
#include "../test_util.hpp"
#include "core/error.hpp"
#include "model_fixture.hpp"
#include "rl/config.hpp"

namespace bupo {
namespace {

std::string tiny_model_dir(const std::string& dir, float poison = 0.0f, bool poisoned = false) {
  auto m = test::tiny_model(Arch::Qwen3, true);
  if (poisoned) m->params().find("model.layers.1.mlp.up_proj.weight")->w[17] = poison;
  const std::string out = dir + "/model";
  m->save(out, DType::F32);
  return out;
}

TEST(BadInputs, NonFiniteWeightsAreRefusedAtLoadNamingTheTensor) {
  const std::string dir = test::temp_dir("nan");
  for (float bad : {NAN, INFINITY, -INFINITY}) {
    const std::string m = tiny_model_dir(dir, bad, true);
    try {
      Model::load(m, ParallelContext::single());
      FAIL() << "weights with " << bad << " were accepted";
    } catch (const Error& e) {
      const std::string w = e.what();
      EXPECT_NE(w.find("model.safetensors"), std::string::npos) << w;
      EXPECT_NE(w.find("'model.layers.1.mlp.up_proj.weight'"), std::string::npos) << w;
      EXPECT_NE(w.find("non-finite"), std::string::npos) << w;
      EXPECT_NE(w.find("element 17"), std::string::npos) << w;
    }
  }
  // and through the command line: exit 1 with that one message
  const auto r = test::run_bupo("generate --model " + dir + "/model --prompt hi --max-tokens 2");
  EXPECT_EQ(r.code, 1) << r.output;
  EXPECT_NE(r.output.find("non-finite"), std::string::npos) << r.output;
}

TEST(BadInputs, NanLogitsGiveNanEntropiesNotZero) {
  using namespace test::ops;
  Backend& be = cpu_backend();
  ArenaScope s(be.scratch());
  Array x = randn({3, 8}, 1), E = randn({50, 8}, 2);
  E.f[5 * 8 + 2] = NAN;  // one vocabulary row poisoned: every row's logits hold a NaN
  const Tensor m = be.scratch().alloc_f32({3}), packed = be.scratch().alloc_f32({3, 3}),
               ent = be.scratch().alloc_f32({3}), lp = be.scratch().alloc_f32({3});
  be.lens_stats(m, packed, to_device(be, x), to_device(be, E), to_device(be, i32({3}, {0, 1, 2})),
                0);
  be.lens_outputs(ent, lp, packed);
  for (float h : to_host(be, ent).f) EXPECT_TRUE(std::isnan(h)) << h;
  for (float l : to_host(be, lp).f) EXPECT_TRUE(std::isnan(l)) << l;
  // the sampler reports NaN too (its entropy of a NaN row is not 0)
  const Tensor tok = be.scratch().alloc(DType::I32, {1}), slp = be.scratch().alloc_f32({1}),
               sent = be.scratch().alloc_f32({1}), rent = be.scratch().alloc_f32({1});
  Array z = randn({1, 50}, 3);
  z.f[7] = NAN;
  const Tensor zt = to_device(be, z);
  be.sample(tok, slp, sent, zt, 50, to_device(be, f32({1}, {1.0f})), to_device(be, f64({1}, {0.5})),
            1.0f, 0);
  EXPECT_TRUE(std::isnan(to_host(be, sent).f[0]));
  be.row_entropy(rent, zt, 50);
  EXPECT_TRUE(std::isnan(to_host(be, rent).f[0]));
}

TEST(BadInputs, SamplingOptionsMustBeFiniteAndStopsNonEmpty) {
  const std::string dir = test::temp_dir("cli");
  const std::string m = tiny_model_dir(dir);
  struct Case {
    std::string args, expect;
  };
  for (const Case& c : std::vector<Case>{
           {"--temperature nan", "--temperature: must be a finite number, got 'nan'"},
           {"--temperature inf", "must be a finite number"},
           {"--temperature 1e300", "--temperature"},
           {"--top-p nan", "--top-p: must be a finite number"},
           {"--top-p 2", "--top-p"},
           {"--stop ''", "--stop: must not be empty"},
           {"--n 1e8", "--n"},
           {"--max-tokens 0", "--max-tokens"},
       }) {
    const auto r = test::run_bupo("generate --model " + m + " --prompt hi " + c.args);
    EXPECT_EQ(r.code, 1) << c.args << ": " << r.output;  // not CLI11's 105-109
    EXPECT_NE(r.output.find(c.expect), std::string::npos) << c.args << ": " << r.output;
  }
}

TEST(BadInputs, GroundTruthsKeepTheirExactTextAndMustNotBeEmpty) {
  const std::string dir = test::temp_dir("verify");
  const std::string in = dir + "/rows.jsonl";
  std::ofstream(in)
      << R"({"response": "\\boxed{12345678901234567890123}", "ground_truth": 12345678901234567890123})"
      << "\n"
      << R"({"response": "\\boxed{0.30000000000000004}", "ground_truth": 0.30000000000000004})"
      << "\n"
      << R"({"response": "\\boxed{7}", "ground_truth": 7})"
      << "\n";
  auto r = test::run_bupo("verify < " + in);
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_EQ(r.output,
            "{\"answer\":\"12345678901234567890123\",\"score\":1.0}\n"
            "{\"answer\":\"0.30000000000000004\",\"score\":1.0}\n"
            "{\"answer\":\"7\",\"score\":1.0}\n");
  for (const char* gt : {R"("")", R"("  ")"}) {
    std::ofstream(in) << R"({"response": "\\boxed{1}", "ground_truth": )" << gt << "}\n";
    r = test::run_bupo("verify < " + in);
    EXPECT_EQ(r.code, 1) << r.output;
    EXPECT_NE(r.output.find("stdin:1: field 'ground_truth' is empty"), std::string::npos)
        << r.output;
  }
}

TEST(BadInputs, AnEmptyStopStringInARunConfigIsAnError) {
  try {
    rl::parse_train_config(
        "[model]\ninit = { layers = 2 }\n[data]\ntrain = \"builtin:arithmetic\"\n[rollout]\nstop = "
        "[\"</answer>\", \"\"]\n",
        "run.toml", {});
    FAIL() << "rollout.stop = [\"\"] accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("rollout.stop"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace bupo
