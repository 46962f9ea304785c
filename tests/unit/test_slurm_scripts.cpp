// The Slurm scripts' promises (issue 13, item 9), checked without a Slurm: jobs/slurm/train.sbatch
// runs under bash with `srun` and `scontrol` replaced by stubs on PATH (srun runs its command
// directly, scontrol records its arguments), and the test plays slurmctld's part by sending the
// signals. A USR1 (the time-limit warning) ends in a checkpoint, exit 75 from the trainer and a
// requeue; a plain scancel's SIGTERM ends in a checkpoint and no requeue. (The same scripts under
// a real localhost Slurm belong to the HPC issue's `slurm` label.)
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "../test_util.hpp"
#include "rl/checkpoint.hpp"
#include "tiny_run.hpp"

namespace bupo {
namespace {
namespace fs = std::filesystem;

class SlurmScripts : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = test::temp_dir("job");
    fs::create_directories(dir_ + "/bin");
    // srun: `--mpi=list` lists pmix; otherwise drop srun's own options and exec the command, so
    // the signals the script forwards reach bupo itself
    std::ofstream(dir_ + "/bin/srun") << R"(#!/bin/bash
if [ "${1:-}" = "--mpi=list" ]; then echo "MPI plugin types are..."; echo "	pmix"; exit 0; fi
while [ $# -gt 0 ] && [ "${1#-}" != "$1" ]; do case $1 in -c|-n|-N) shift 2;; *) shift;; esac; done
exec "$@"
)";
    std::ofstream(dir_ + "/bin/scontrol")
        << "#!/bin/bash\necho \"$*\" >> " << dir_ << "/scontrol.log\n";
    fs::permissions(dir_ + "/bin/srun", fs::perms::owner_all);
    fs::permissions(dir_ + "/bin/scontrol", fs::perms::owner_all);
    std::ofstream(dir_ + "/run.toml") << test::kTinyRun;
  }

  // Starts train.sbatch for a long tiny run, sends `sig` to the script once step 1 is logged, and
  // returns the script's exit status.
  int run_and_signal(const std::string& sig) {
    const std::string out = dir_ + "/run";
    const std::string script = std::string(BUPO_SOURCE_DIR) + "/jobs/slurm/train.sbatch";
    const std::string cmd =
        "cd " + dir_ + " && PATH=" + dir_ +
        "/bin:$PATH SLURM_JOB_ID=4242 SLURM_SUBMIT_DIR=" + dir_ + " BUPO=" + BUPO_BINARY +
        " CONFIG=run.toml SET='trainer.out_dir=\"" + out + "\" trainer.steps=100000' bash " +
        script + " > job.out 2>&1 & job=$!; " + "for i in $(seq 600); do [ -s " + out +
        "/metrics.jsonl ] && break; sleep 0.1; done; kill -" + sig + " $job; wait $job; echo rc=$?";
    const auto r = test::run_shell(cmd);
    const size_t at = r.output.rfind("rc=");
    return at == std::string::npos ? -1 : std::stoi(r.output.substr(at + 3));
  }
  std::string scontrol_log() const {
    std::ifstream f(dir_ + "/scontrol.log");
    return {std::istreambuf_iterator<char>(f), {}};
  }
  std::string job_output() const {
    std::ifstream f(dir_ + "/job.out");
    return {std::istreambuf_iterator<char>(f), {}};
  }
  std::string dir_;
};

TEST_F(SlurmScripts, Usr1BeforeTheTimeLimitCheckpointsAndRequeues) {
  EXPECT_EQ(run_and_signal("USR1"), 0) << job_output();
  EXPECT_EQ(scontrol_log(), "requeue 4242\n") << job_output();
  EXPECT_NE(job_output().find("requeueing 4242"), std::string::npos) << job_output();
  const auto ck = rl::complete_checkpoints(dir_ + "/run");
  ASSERT_FALSE(ck.empty());
  // the requeued job (SLURM_RESTART_COUNT=1) resumes; run it to two steps past the checkpoint
  const int64_t step = std::stoll(fs::path(ck.back()).filename().string().substr(5));
  const auto r = test::run_shell("cd " + dir_ + " && PATH=" + dir_ +
                                 "/bin:$PATH SLURM_JOB_ID=4242 SLURM_RESTART_COUNT=1 " +
                                 "SLURM_SUBMIT_DIR=" + dir_ + " BUPO=" + BUPO_BINARY +
                                 " CONFIG=run.toml SET='trainer.out_dir=\"" + dir_ +
                                 "/run\" trainer.steps=" + std::to_string(step + 2) + "' bash " +
                                 BUPO_SOURCE_DIR + "/jobs/slurm/train.sbatch");
  EXPECT_EQ(r.code, 0) << r.output;
  EXPECT_NE(r.output.find("step " + std::string(step + 2 < 10 ? "   " : "  ") +
                          std::to_string(step + 2) + "/"),
            std::string::npos)
      << r.output;
  EXPECT_EQ(scontrol_log(), "requeue 4242\n");  // not requeued again
}

TEST_F(SlurmScripts, APlainScancelCheckpointsAndDoesNotRequeue) {
  EXPECT_EQ(run_and_signal("TERM"), 75) << job_output();
  EXPECT_EQ(scontrol_log(), "") << job_output();  // never requeued
  EXPECT_NE(job_output().find("not requeued"), std::string::npos) << job_output();
  EXPECT_FALSE(rl::complete_checkpoints(dir_ + "/run").empty());
}

TEST_F(SlurmScripts, AMissingMpiPluginIsOneClearError) {
  const std::string cmd =
      "cd " + dir_ + " && PATH=" + dir_ + "/bin:$PATH SLURM_SUBMIT_DIR=" + dir_ +
      " SRUN_MPI=pmi2 CONFIG=run.toml bash " + BUPO_SOURCE_DIR + "/jobs/slurm/train.sbatch";
  const auto r = test::run_shell(cmd);
  EXPECT_EQ(r.code, 1) << r.output;
  EXPECT_NE(r.output.find("srun has no MPI plugin 'pmi2'"), std::string::npos) << r.output;
  EXPECT_TRUE(fs::is_directory(std::string(BUPO_SOURCE_DIR) + "/logs"))
      << "logs/ must exist in a fresh clone: sbatch opens logs/%x-%j.out before the script runs";
}

}  // namespace
}  // namespace bupo
