// `bupo eval` (rl/evaluation.hpp): a training checkpoint scored offline gives the validation rows
// the run itself logged at that step; per-set n, temperature and k are honoured and recorded; how
// many sequences are generated together changes nothing; bad inputs are named before any work.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "../test_util.hpp"
#include "core/error.hpp"
#include "io/h5.hpp"
#include "rl/checkpoint.hpp"
#include "rl/config.hpp"
#include "rl/data.hpp"
#include "rl/evaluation.hpp"
#include "rl/trainer.hpp"

namespace fs = std::filesystem;
using namespace bupo;
using namespace bupo::rl;

namespace {

// A tiny model warm-started on the built-in task until it answers in \boxed{} and is right part of
// the time (neither 0 nor 1: a wrong score cannot hide), validated at every step.
const char* kRun = R"(
[model]
template = "plain"
init = { arch = "qwen3", layers = 2, hidden = 32, heads = 2, kv_heads = 1, head_dim = 16, ffn = 64, seed = 3 }
[data]
train = "builtin:arithmetic"
arithmetic = { digits = 1, ops = "+", size = 100 }
[warmup]
sft_steps = 200
sft_batch = 16
sft_lr = 3e-3
[rollout]
n = 2
max_tokens = 12
[trainer]
steps = 2
prompts_per_step = 2
mini_batch_prompts = 2
micro_batch_seqs = 4
checkpoint_every = 1
export_hf = false
[diagnostics]
every = 0
[validation]
every = 1
sets = ["builtin:arithmetic"]
max_prompts = 12
n = 4
k = [1, 2, 4]
)";

std::string train_tiny(const std::string& dir) {
  TrainOptions o;
  o.quiet = true;
  o.overwrite = true;
  o.single_process = true;
  Trainer t(parse_train_config(kRun, "eval_test.toml", {"trainer.out_dir=\"" + dir + "\""}), o);
  EXPECT_EQ(t.run(), 0);
  return dir;
}

EvalOptions options(const std::string& model, const std::string& out,
                    std::vector<std::string> overrides = {}) {
  EvalOptions e;
  e.model = model;
  e.out = out;
  e.overrides = std::move(overrides);
  e.quiet = true;
  e.single_process = true;
  return e;
}

// Two JSONL sets of one-digit sums in the built-in task's prompt format.
void write_sets(const std::string& dir) {
  for (const char* name : {"a", "b"}) {
    std::ofstream f(fs::path(dir) / (std::string(name) + ".jsonl"));
    for (int i = 0; i < 6; ++i) {
      const int x = (i * 3 + (name[0] == 'a' ? 1 : 2)) % 9 + 1, y = (i * 5 + 2) % 9 + 1;
      f << R"({"prompt": ")" << x << "+" << y << R"(=", "reward_model": {"ground_truth": ")"
        << x + y << R"("}})"
        << "\n";
    }
  }
}

std::string error_of(const EvalOptions& e) {
  try {
    evaluate(e);
  } catch (const Error& err) {
    return err.what();
  }
  return "(no error)";
}

}  // namespace

TEST(Evaluation, ACheckpointScoredOfflineGivesTheRunsOwnValidationRows) {
  const std::string dir = train_tiny(test::temp_dir("run"));
  auto f = h5::File::open_read((fs::path(dir) / "diagnostics.h5").string());
  const auto steps = h5::read_i64(f.id(), "/validation/arithmetic/step");
  const auto avg = h5::read_f32(f.id(), "/validation/arithmetic/avg");
  const auto pass = h5::read_f32(f.id(), "/validation/arithmetic/pass_at_k");
  ASSERT_EQ(steps, (std::vector<int64_t>{1, 2}));
  ASSERT_EQ(pass.size(), 6u);
  bool informative = false;
  for (size_t s = 0; s < 2; ++s) {
    const std::string ck =
        (fs::path(dir) / "checkpoints" / ("step_0000000" + std::to_string(s + 1))).string();
    ASSERT_TRUE(is_checkpoint_folder(ck)) << ck;
    const std::string out = (fs::path(dir) / ("eval" + std::to_string(s + 1) + ".h5")).string();
    const EvalReport rep = evaluate(options(ck, out));
    EXPECT_TRUE(rep.checkpoint);
    EXPECT_EQ(rep.step, static_cast<int64_t>(s + 1));
    ASSERT_EQ(rep.sets.size(), 1u);
    const ValidationResult& v = rep.sets[0];
    EXPECT_EQ(v.setting.name, "arithmetic");
    EXPECT_EQ(v.setting.n, 4);
    EXPECT_EQ(v.setting.prompts, 12);
    EXPECT_EQ(static_cast<float>(v.avg), avg[s]) << "step " << s + 1;
    ASSERT_EQ(v.pass.size(), 3u);
    for (size_t k = 0; k < 3; ++k) EXPECT_EQ(static_cast<float>(v.pass[k]), pass[s * 3 + k]);
    informative = informative || (v.avg > 0.05 && v.avg < 0.95);
    // the file: the training file's group, plus the counts per prompt and the settings
    auto e = h5::File::open_read(out);
    EXPECT_EQ(h5::read_attr_string(e.id(), "/", "schema"), "bupo-eval");
    EXPECT_EQ(h5::read_attr_int(e.id(), "/", "complete"), 1);
    EXPECT_EQ(h5::read_attr_int(e.id(), "/", "step"), static_cast<int64_t>(s + 1));
    EXPECT_EQ(h5::read_i64(e.id(), "/validation/arithmetic/step"),
              (std::vector<int64_t>{static_cast<int64_t>(s + 1)}));
    EXPECT_EQ(h5::read_f32(e.id(), "/validation/arithmetic/avg")[0], avg[s]);
    EXPECT_EQ(h5::read_attr_string(e.id(), "/validation/arithmetic/pass_at_k", "k"), "1,2,4");
    EXPECT_EQ(h5::read_attr_int(e.id(), "/validation/arithmetic/avg", "n"), 4);
    const auto correct = h5::read_i64(e.id(), "/validation/arithmetic/correct");
    ASSERT_EQ(correct.size(), 12u);
    double sum = 0;
    for (int64_t c : correct) {
      EXPECT_GE(c, 0);
      EXPECT_LE(c, 4);
      sum += static_cast<double>(c);
    }
    EXPECT_NEAR(sum / 48.0, v.avg, 1e-12);
  }
  EXPECT_TRUE(informative) << "the warm start should make the task neither solved nor hopeless";
}

TEST(Evaluation, PerSetNTemperatureAndKAreHonouredAndBatchingChangesNothing) {
  const std::string dir = train_tiny(test::temp_dir("run"));
  write_sets(dir);
  const std::string ck = (fs::path(dir) / "checkpoints" / "step_00000002").string();
  const std::string sets = "validation.sets=[\"" + dir + "/a.jsonl\", \"" + dir + "/b.jsonl\"]";
  const std::vector<std::string> per_set = {sets, "validation.n_per_set=[5, 3]",
                                            "validation.temperature_per_set=[1.0, 0]",
                                            "validation.k=[1, 2, 4]", "validation.max_prompts=0"};
  auto with = [&](std::vector<std::string> more) {
    std::vector<std::string> o = per_set;
    o.insert(o.end(), more.begin(), more.end());
    return o;
  };
  const EvalReport all = evaluate(options(ck, dir + "/all.h5", with({"validation.batch_seqs=0"})));
  ASSERT_EQ(all.sets.size(), 2u);
  const ValidationResult &a = all.sets[0], &b = all.sets[1];
  EXPECT_EQ(a.setting.name, "a");
  EXPECT_EQ(a.setting.n, 5);
  EXPECT_EQ(b.setting.n, 3);
  EXPECT_EQ(a.setting.temperature, 1.0);
  EXPECT_EQ(b.setting.temperature, 0.0);
  EXPECT_EQ(a.setting.k, (std::vector<int64_t>{1, 2, 4}));
  EXPECT_EQ(b.setting.k, (std::vector<int64_t>{1, 2}));  // 4 > n = 3
  for (int64_t c : b.correct) EXPECT_TRUE(c == 0 || c == 3) << "greedy samples are all the same";
  // one prompt (5 or 3 sequences) at a time, or 2 prompts: the same scores
  for (const char* batch : {"validation.batch_seqs=1", "validation.batch_seqs=10"}) {
    const EvalReport r =
        evaluate(options(ck, dir + "/b" + std::string(batch).substr(22) + ".h5", with({batch})));
    for (size_t i = 0; i < 2; ++i) {
      EXPECT_EQ(r.sets[i].correct, all.sets[i].correct) << batch;
      EXPECT_EQ(r.sets[i].avg, all.sets[i].avg);
    }
  }
  // a set scores the same alone (the random keys are the prompt's index in its set)
  const EvalReport alone = evaluate(options(
      ck, dir + "/alone.h5",
      {"validation.sets=[\"" + dir + "/a.jsonl\"]", "validation.n=5", "validation.k=[1, 2, 4]"}));
  EXPECT_EQ(alone.sets[0].correct, a.correct);
  // the settings are in the file
  auto f = h5::File::open_read(dir + "/all.h5");
  EXPECT_EQ(h5::read_attr_int(f.id(), "/validation/b/avg", "n"), 3);
  EXPECT_EQ(h5::read_attr_string(f.id(), "/validation/b/pass_at_k", "k"), "1,2");
  EXPECT_EQ(h5::dataset_shape(f.id(), "/validation/a/pass_at_k"), (std::vector<int64_t>{1, 3}));
  EXPECT_EQ(h5::dataset_shape(f.id(), "/validation/b/correct"), (std::vector<int64_t>{1, 6}));
}

TEST(Evaluation, BadInputsAreNamedBeforeAnyWorkAndAnExistingFileIsKept) {
  const std::string dir = train_tiny(test::temp_dir("run"));
  write_sets(dir);
  const std::string ck = (fs::path(dir) / "checkpoints" / "step_00000002").string();
  const std::string out = dir + "/kept.h5";
  { std::ofstream(out) << "someone's results"; }
  EXPECT_NE(error_of(options(ck, out)).find("refusing to overwrite"), std::string::npos);
  std::ifstream in(out);
  std::string kept((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_EQ(kept, "someone's results");

  const std::string fresh = dir + "/fresh.h5";
  EXPECT_NE(error_of(options(dir + "/nothing", fresh)).find("no such file or folder"),
            std::string::npos);
  EXPECT_NE(error_of(options(ck, fresh, {"validation.n_per_set=[2, 3]"}))
                .find("'validation.n_per_set' has 2 value(s) but validation.sets names 1"),
            std::string::npos);
  EXPECT_NE(error_of(options(ck, fresh, {"validation.n_per_set=[1]", "validation.k=[2]"}))
                .find("validation.k value 2 exceeds every value of validation.n_per_set"),
            std::string::npos);
  fs::create_directories(dir + "/x");
  fs::copy_file(dir + "/a.jsonl", dir + "/x/a.jsonl");
  EXPECT_NE(
      error_of(options(ck, fresh,
                       {"validation.sets=[\"" + dir + "/a.jsonl\", \"" + dir + "/x/a.jsonl\"]"}))
          .find("two sets have the group name 'a'"),
      std::string::npos);
  EXPECT_NE(error_of(options(ck, fresh, {"validation.sets=[]"})).find("no sets to score"),
            std::string::npos);
  // a checkpoint that lost its COMPLETE marker, or whose weights changed, is refused
  fs::remove(fs::path(ck) / "COMPLETE");
  EXPECT_NE(error_of(options(ck, fresh)).find("not a complete checkpoint"), std::string::npos);
  EXPECT_FALSE(fs::exists(fresh));
}

TEST(Evaluation, TheCommandLineWritesTheFileAndSkipsAFinishedOne) {
  const std::string dir = train_tiny(test::temp_dir("run"));
  const std::string ck = (fs::path(dir) / "checkpoints" / "step_00000001").string();
  const std::string out = dir + "/cli.h5";
  auto r = test::run_bupo("eval --model " + ck + " --out " + out +
                          " --sets builtin:arithmetic --n 2 --k 1 2 --max-prompts 6 -q");
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_NE(r.output.find("arithmetic"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("wrote " + out + " (step 1)"), std::string::npos) << r.output;
  auto f = h5::File::open_read(out);
  EXPECT_EQ(h5::read_attr_int(f.id(), "/validation/arithmetic/avg", "prompts"), 6);
  f.close();
  const auto before = fs::last_write_time(out);
  r = test::run_bupo("eval --model " + ck + " --out " + out +
                     " --sets builtin:arithmetic --n 2 --skip-complete -q");
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_NE(r.output.find("already complete"), std::string::npos) << r.output;
  EXPECT_EQ(fs::last_write_time(out), before);
  // one --n for every set replaces a config's per-set values (here Table 1's 16/16/32/32)
  r = test::run_bupo("eval --model " + ck + " --out " + dir + "/one_n.h5 --config " +
                     BUPO_CONFIGS_DIR + "/eval/bupo-table1.toml --sets builtin:arithmetic " +
                     "--template plain --n 2 --k 1 --max-prompts 2 --max-tokens 12 -q");
  ASSERT_EQ(r.code, 0) << r.output;
  auto g = h5::File::open_read(dir + "/one_n.h5");
  EXPECT_EQ(h5::read_attr_int(g.id(), "/validation/arithmetic/avg", "n"), 2);
  g.close();
  // --skip-complete never replaces a file that is not an incomplete bupo-eval file
  { std::ofstream(dir + "/foreign.h5") << "not ours"; }
  r = test::run_bupo("eval --model " + ck + " --out " + dir +
                     "/foreign.h5 --sets builtin:arithmetic --n 2 --skip-complete -q");
  EXPECT_EQ(r.code, 1) << r.output;
  EXPECT_NE(r.output.find("replaces only an incomplete bupo-eval file"), std::string::npos)
      << r.output;
  std::ifstream fin(dir + "/foreign.h5");
  EXPECT_EQ(std::string((std::istreambuf_iterator<char>(fin)), std::istreambuf_iterator<char>()),
            "not ours");
  // one clear error, exit 1, for values the command line can check itself
  r = test::run_bupo("eval --model " + ck + " --out " + dir + "/x.h5 --n 0");
  EXPECT_EQ(r.code, 1) << r.output;
  r = test::run_bupo("eval --model " + ck + " --out " + dir +
                     "/x.h5 --sets a.jsonl b.jsonl --n 2 3 4");
  EXPECT_EQ(r.code, 1) << r.output;
  EXPECT_NE(r.output.find("validation.n_per_set' has 3 value(s) but validation.sets names 2"),
            std::string::npos)
      << r.output;
}
