// Signals from the first second (issue 13, item 3): a stop (SIGTERM, SIGUSR1, SIGINT, SIGUSR2) that arrives
// while the model loads or during the warm start ends the run with 75 and a marker, not 143 or
// 138; --resume then starts the run afresh and reaches the same result as an uninterrupted run.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <thread>

#include "../test_util.hpp"
#include "io/json_util.hpp"
#include "rl/config.hpp"
#include "rl/trainer.hpp"
#include "tiny_run.hpp"

namespace fs = std::filesystem;

namespace bupo {
namespace {

rl::Trainer make(const std::string& dir, bool resume) {  // the tiny run with a warm start
  return rl::Trainer(test::tiny_run_config(dir, {"warmup.sft_steps=5", "warmup.sft_batch=8"}),
                     test::run_options(!resume, resume));
}

std::string last_metrics(const std::string& dir) {
  std::ifstream in(fs::path(dir) / "metrics.jsonl");
  std::string line, last;
  while (std::getline(in, line))
    if (!line.empty()) last = line;
  json j = json::parse(last);
  for (auto it = j.begin(); it != j.end();)
    it = it.key().rfind("time_", 0) == 0 ? j.erase(it) : std::next(it);
  return j.dump();
}

TEST(EarlyStop, ASignalBeforeStep1Exits75AndResumeStartsAfresh) {
  for (int sig : {SIGTERM, SIGUSR1, SIGINT, SIGUSR2}) {
    const std::string dir = test::temp_dir("early" + std::to_string(sig));
    rl::install_preemption_handlers();
    raise(sig);  // arrives before the run folder is even opened
    {
      rl::Trainer t = make(dir, false);
      EXPECT_EQ(t.run(), rl::kExitPreempted) << sig;
    }
    rl::reset_preemption_flag();
    EXPECT_TRUE(fs::exists(fs::path(dir) / ".stopped_before_step1"));
    EXPECT_FALSE(fs::exists(fs::path(dir) / "checkpoints" / "latest"));
    {
      rl::Trainer t = make(dir, true);  // --resume: no checkpoint, the marker: afresh
      EXPECT_EQ(t.run(), 0);
    }
    EXPECT_FALSE(fs::exists(fs::path(dir) / ".stopped_before_step1"));
    const std::string straight = test::temp_dir("straight" + std::to_string(sig));
    {
      rl::Trainer t = make(straight, false);
      EXPECT_EQ(t.run(), 0);
    }
    EXPECT_EQ(last_metrics(dir), last_metrics(straight)) << "the restarted run differs";
  }
}

// Through the binary: SIGTERM 0.3 s in lands in loading or the warm start (or, on a fast machine,
// step 1); the process ends with 75 (not 143) within seconds, and --resume goes on.
TEST(EarlyStop, TheCliHonoursSigtermDuringTheWarmStart) {
  const std::string dir = test::temp_dir("cli");
  // the default run made small (the same overrides for the resume); quoted for a shell
  const std::string small =
      " --set warmup.sft_steps=60 --set warmup.sft_batch=8 --set trainer.prompts_per_step=4 --set "
      "trainer.mini_batch_prompts=4 --set rollout.n=2 --set validation.every=0 --set "
      "diagnostics.every=0 --set trainer.out_dir=\\\"" +
      dir + "\\\"";
  const std::string args = std::string(BUPO_BINARY) +
                           " train --config " BUPO_CONFIGS_DIR "/default.toml --quiet" + small;
  const pid_t child = fork();
  if (child == 0) {
    execl("/bin/sh", "sh", "-c", ("exec " + args + " --overwrite >/dev/null 2>&1").c_str(),
          nullptr);
    _exit(127);
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  kill(child, SIGTERM);
  const auto t0 = std::chrono::steady_clock::now();
  int st = 0;
  waitpid(child, &st, 0);
  const double waited =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  ASSERT_TRUE(WIFEXITED(st)) << "killed by signal " << (WIFSIGNALED(st) ? WTERMSIG(st) : 0);
  EXPECT_EQ(WEXITSTATUS(st), 75);
  EXPECT_LT(waited, 30.0);
  // --resume continues (afresh if it stopped before step 1, else from its checkpoint)
  const auto r = test::run_bupo("train --config " BUPO_CONFIGS_DIR
                                "/default.toml --quiet --resume --stop-after-step 1" +
                                small);
  EXPECT_EQ(r.code, 0) << r.output;
}

}  // namespace
}  // namespace bupo
