// One owner per run folder (issue 13, item 2): an flock held for the whole run, released by the
// kernel however the owner dies; a second process refused naming the owner, before it touches
// anything; fresh runs and --resume-from never discard another run's checkpoints or logs without
// --overwrite; init-model and convert never write into a non-empty folder without --overwrite.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <thread>

#include "../test_util.hpp"
#include "core/error.hpp"
#include "io/folder_lock.hpp"
#include "io/json_util.hpp"
#include "model_fixture.hpp"
#include "optim/adamw.hpp"
#include "rl/checkpoint.hpp"
#include "rl/config.hpp"
#include "rl/trainer.hpp"
#include "tiny_run.hpp"

namespace fs = std::filesystem;

namespace bupo {
namespace {

int train(const std::string& dir, bool overwrite, bool resume = false, std::string from = "") {
  rl::Trainer t(test::tiny_run_config(dir), test::run_options(overwrite, resume, std::move(from)));
  return t.run();
}

TEST(RunFolder, ASecondProcessIsRefusedNamingTheOwnerAndTouchesNothing) {
  const std::string dir = test::temp_dir("locked");
  ASSERT_EQ(train(dir, true), 0);
  const auto ck_before = rl::latest_checkpoint(dir);
  const auto size_before = fs::file_size(fs::path(dir) / "metrics.jsonl");
  FolderLock held = FolderLock::acquire(dir, "the test");  // this process owns it now
  for (const char* flags : {"--overwrite", "--resume", ""}) {
    const auto r =
        test::run_bupo("train --config " BUPO_CONFIGS_DIR "/default.toml --quiet " +
                       std::string(flags) + " --set trainer.out_dir=\\\"" + dir + "\\\"");
    EXPECT_EQ(r.code, 1) << flags << ": " << r.output;
    EXPECT_NE(r.output.find("in use by another live process"), std::string::npos) << r.output;
    EXPECT_NE(r.output.find("pid " + std::to_string(::getpid())), std::string::npos) << r.output;
  }
  EXPECT_EQ(rl::latest_checkpoint(dir), ck_before);
  EXPECT_EQ(fs::file_size(fs::path(dir) / "metrics.jsonl"), size_before);
}

TEST(RunFolder, TheLockDiesWithItsOwnerEvenByKill9) {
  const std::string dir = test::temp_dir("kill9");
  const pid_t child = fork();
  if (child == 0) {
    FolderLock l = FolderLock::acquire(dir, "child");
    for (;;) pause();
  }
  bool refused = false;  // while the child lives, the lock is its
  for (int i = 0; i < 200 && !refused; ++i) {
    try {
      FolderLock::acquire(dir, "parent");
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    } catch (const Error&) {
      refused = true;
    }
  }
  EXPECT_TRUE(refused);
  kill(child, SIGKILL);
  waitpid(child, nullptr, 0);
  EXPECT_NO_THROW(FolderLock::acquire(dir, "parent"));
}

TEST(RunFolder, AFreshRunNeverReplacesAnEarlierRunsCheckpointsWithoutOverwrite) {
  const std::string dir = test::temp_dir("fresh");
  ASSERT_EQ(train(dir, true), 0);
  fs::remove(fs::path(dir) / "metrics.jsonl");  // only checkpoints left
  fs::remove(fs::path(dir) / "diagnostics.h5");
  const auto ck = rl::latest_checkpoint(dir);
  try {
    train(dir, false);
    FAIL() << "a fresh run went ahead over an earlier run's checkpoints";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("holds checkpoints of an earlier run"), std::string::npos)
        << e.what();
  }
  EXPECT_EQ(rl::latest_checkpoint(dir), ck);
  EXPECT_EQ(train(dir, false, true), 0);  // --resume continues it
}

TEST(RunFolder, ResumeFromAnotherRunsCheckpointNeedsOverwrite) {
  const std::string a = test::temp_dir("a"), b = test::temp_dir("b");
  ASSERT_EQ(train(a, true), 0);
  ASSERT_EQ(train(b, true), 0);
  const std::string from = (fs::path(a) / "checkpoints" / "step_00000001").string();
  ASSERT_TRUE(fs::exists(from)) << from;
  const auto b_ck = rl::latest_checkpoint(b);
  try {
    train(b, false, false, from);
    FAIL() << "--resume-from into a folder holding a run went ahead";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("--resume-from"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("--overwrite"), std::string::npos) << e.what();
  }
  EXPECT_EQ(rl::latest_checkpoint(b), b_ck);
  EXPECT_EQ(train(b, true, false, from), 0);  // with --overwrite it is what the user asked for
  // --resume-from the folder's own newest checkpoint is --resume, and needs nothing
  EXPECT_EQ(train(a, false, false, rl::latest_checkpoint(a)), 0);
}

// Checkpoints you can trust (issue 13, item 4): a flipped bit in any checkpoint file is found on
// resume, named, and the previous complete checkpoint used; an explicit --resume-from of a damaged
// one is an error; out-of-range state.json values are errors.
void flip_bit(const fs::path& f, size_t at) {
  std::fstream io(f, std::ios::in | std::ios::out | std::ios::binary);
  io.seekg(static_cast<std::streamoff>(at));
  char c = 0;
  io.read(&c, 1);
  c = static_cast<char>(c ^ 0x10);
  io.seekp(static_cast<std::streamoff>(at));
  io.write(&c, 1);
}

TEST(RunFolder, ADamagedCheckpointIsNamedAndThePreviousOneResumes) {
  for (const char* file : {"optimizer.bin", "model.safetensors", "state.json"}) {
    const std::string dir = test::temp_dir(std::string("flip_") + file);
    ASSERT_EQ(train(dir, true), 0);  // checkpoints at steps 1 and 2
    const fs::path newest = rl::latest_checkpoint(dir);
    ASSERT_EQ(newest.filename(), "step_00000002");
    flip_bit(newest / file, fs::file_size(newest / file) / 2);
    EXPECT_NE(
        rl::verify_checkpoint(newest.string()).find(std::string(file) + ": checksum mismatch"),
        std::string::npos)
        << rl::verify_checkpoint(newest.string());
    try {
      train(dir, true, false, newest.string());
      FAIL() << "--resume-from a damaged checkpoint went ahead";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("checksum mismatch"), std::string::npos) << e.what();
    }
    // --resume: the damaged step-2 checkpoint is skipped (and discarded), step 1 resumes
    EXPECT_EQ(train(dir, false, true), 0);
    EXPECT_EQ(rl::verify_checkpoint(rl::latest_checkpoint(dir)), "");
  }
}

TEST(RunFolder, OutOfRangeTrainingStateIsAnError) {
  const std::string dir = test::temp_dir("state");
  ASSERT_EQ(train(dir, true), 0);
  const fs::path ck = rl::latest_checkpoint(dir);
  std::ifstream in(ck / "state.json");
  json st = json::parse(in);
  in.close();
  st["step"] = -3;
  std::ofstream(ck / "state.json") << st.dump(2);
  fs::remove(ck / "checksums.json");  // as a checkpoint of an earlier version: no manifest
  try {
    train(dir, false, true);
    FAIL() << "a negative step was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("state.json: a value is out of range"), std::string::npos)
        << e.what();
  }
}

// Issue 13, item 4: a resume runs the checkpoint's computation or says why not.
TEST(RunFolder, AResumeWithAChangedComputationNeedsAllowConfigChange) {
  const std::string dir = test::temp_dir("changed");
  ASSERT_EQ(train(dir, true), 0);  // 2 steps
  const std::string ck = rl::latest_checkpoint(dir);
  const auto jsonl_before = fs::file_size(fs::path(dir) / "metrics.jsonl");
  auto resume_with = [&](std::vector<std::string> sets, bool allow) {
    sets.push_back("trainer.steps=3");  // extending the run is always allowed
    auto o = test::run_options(false, true);
    o.allow_config_change = allow;
    rl::Trainer t(test::tiny_run_config(dir, sets), o);
    return t.run();
  };
  try {
    resume_with({"optim.lr=0.5", "rollout.n=4"}, false);
    FAIL() << "a changed optim.lr and rollout.n resumed";
  } catch (const Error& e) {
    const std::string w = e.what();
    EXPECT_NE(w.find(ck + "/train_config.toml"), std::string::npos) << w;
    EXPECT_NE(w.find("optim.lr: "), std::string::npos) << w;
    EXPECT_NE(w.find("-> 0.5"), std::string::npos) << w;
    EXPECT_NE(w.find("rollout.n: 2 -> 4"), std::string::npos) << w;
    EXPECT_NE(w.find("--allow-config-change"), std::string::npos) << w;
    EXPECT_EQ(w.find("trainer.steps"), std::string::npos) << w;  // not a breaking change
  }
  EXPECT_EQ(rl::latest_checkpoint(dir), ck);  // nothing touched
  EXPECT_EQ(fs::file_size(fs::path(dir) / "metrics.jsonl"), jsonl_before);
  // the free keys alone resume; with the flag, the changed computation does too
  fs::create_directories(fs::path(dir) / "checkpoints" / "step_00000009.partial");
  std::ofstream(fs::path(dir) / "checkpoints" / "latest.tmp") << "x";
  EXPECT_EQ(resume_with({"diagnostics.every=1", "trainer.checkpoint_every=5"}, false), 0);
  EXPECT_FALSE(fs::exists(fs::path(dir) / "checkpoints" / "step_00000009.partial"));
  EXPECT_FALSE(fs::exists(fs::path(dir) / "checkpoints" / "latest.tmp"));
  EXPECT_EQ(resume_with({"optim.lr=0.5", "trainer.steps=4"}, true), 0);
}

TEST(RunFolder, AFailedCheckpointWriteLeavesNoPartialFolder) {
  const std::string dir = test::temp_dir("partial");
  const pid_t child = fork();
  if (child == 0) {  // a file-size limit below optimizer.bin's size: the write fails with EFBIG
    std::signal(SIGXFSZ, SIG_IGN);
    auto model = test::tiny_model();
    model->params().allocate_grads();
    AdamW opt(model->params(), AdamWConfig{});
    rlimit rl{64 * 1024, 64 * 1024};
    setrlimit(RLIMIT_FSIZE, &rl);
    try {
      rl::TrainState st;
      st.step = 3;
      rl::save_checkpoint(dir, *model, opt, st, "", "{}", 2);
      _exit(2);
    } catch (const Error&) {
      _exit(fs::exists(fs::path(dir) / "checkpoints" / "step_00000003.partial") ? 3 : 0);
    }
  }
  int st = 0;
  waitpid(child, &st, 0);
  ASSERT_TRUE(WIFEXITED(st));
  EXPECT_EQ(WEXITSTATUS(st), 0) << "2: the write did not fail; 3: the .partial folder was left";
  EXPECT_TRUE(rl::latest_checkpoint(dir).empty());
}

TEST(RunFolder, InitModelAndConvertNeedOverwriteForANonEmptyFolder) {
  const std::string dir = test::temp_dir("init");
  const std::string m = dir + "/model";
  const std::string args =
      "init-model --layers 1 --hidden 16 --heads 2 --kv-heads 1 --head-dim 8 "
      "--ffn 32 --vocab 64 --out " +
      m;
  ASSERT_EQ(test::run_bupo(args).code, 0);
  auto r = test::run_bupo(args);
  EXPECT_EQ(r.code, 1) << r.output;
  EXPECT_NE(r.output.find(m + ": the folder already holds files; pass --overwrite"),
            std::string::npos)
      << r.output;
  EXPECT_EQ(test::run_bupo(args + " --overwrite").code, 0);
  std::ofstream(dir + "/afile") << "x";
  r = test::run_bupo("init-model --out " + dir + "/afile");
  EXPECT_EQ(r.code, 1) << r.output;
  EXPECT_NE(r.output.find("exists and is not a folder"), std::string::npos) << r.output;
}

}  // namespace
}  // namespace bupo
