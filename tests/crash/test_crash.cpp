// Crash consistency (issue 13, item 1), the hard way: the bupo binary is killed with SIGKILL at the
// N-th write system call to diagnostics.h5 (or to a checkpoint, or to `bupo entropy`'s output),
// before the call or after half of its bytes (a torn write), for N across the whole run, and at
// random instants. After every kill:
//   - the file opens plainly (HDF5 file locking on, no SWMR) and every dataset
//     reads; /steps/step is 1..k with k at least the newest checkpoint's step and at least the
//     steps metrics.jsonl completed minus the one being flushed; every row read is bit-identical
//     to the same row of an uninterrupted run;
//   - `bupo train --resume` exits 0 and the finished file (opened plainly) and metrics.jsonl equal
//     the uninterrupted run's, row for row.
// The kill points come from the shim (kill_at_write.cpp) counting the run's writes first. CI runs
// a bounded, evenly spread sample (BUPO_CRASH_KILLS per mode, default 24); BUPO_CRASH_KILLS=all
// tries every write (docs/reliability.md reports that sweep).
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <thread>

#include "../test_util.hpp"
#include "../unit/tiny_run.hpp"
#include "io/h5.hpp"
#include "io/json_util.hpp"

namespace fs = std::filesystem;

namespace bupo {
namespace {

// tiny_run.hpp's run for 3 steps, with per-layer entropy every step and validation at step 2
const std::string kRun = std::string(test::kTinyRun) + R"(
[validation]
sets = ["builtin:arithmetic"]
every = 2
max_prompts = 2
n = 2
k = [1, 2]
)";
const char* const kRunSets = " --set trainer.steps=3 --set diagnostics.every=1";
// metrics that do not depend on timing: bit-identical between a killed-and-resumed run and a
// straight one
const char* const kExact[] = {"reward",          "pg_loss",    "entropy",      "grad_norm",
                              "response_length", "ratio_mean", "comm_dp_bytes"};

using Shell = test::RunResult;
Shell sh(const std::string& cmd) {
  return test::run_shell(cmd);
}
// the shim's environment: ASan (debug preset) must accept a library preloaded before its runtime
std::string shim_env(const std::string& path, int64_t at, bool torn) {
  return "ASAN_OPTIONS=detect_leaks=0:verify_asan_link_order=0 BUPO_KILL_PATH='" + path +
         "' BUPO_KILL_AT=" + std::to_string(at) + " BUPO_KILL_TORN=" + (torn ? "1" : "0") +
         " LD_PRELOAD=" + BUPO_KILL_SHIM + " ";
}
std::string write_config(const std::string& dir) {
  const std::string cfg = dir + ".toml";
  std::ofstream(cfg) << kRun;  // out_dir comes with --set
  return cfg;
}
std::string train(const std::string& dir, const std::string& extra = "") {
  return std::string(BUPO_BINARY) + " train -c " + write_config(dir) +
         " --set trainer.out_dir='\"" + dir + "\"'" + kRunSets + " --quiet " + extra;
}

// What a reader finds in one run folder.
struct Found {
  bool file = false;
  std::vector<int64_t> steps;
  std::map<std::string, std::vector<float>> rows;  // dataset -> all values
  std::string error;
};
Found read_run(const std::string& dir, bool plain_only) {
  Found f;
  const std::string p = (fs::path(dir) / "diagnostics.h5").string();
  if (!fs::exists(p)) return f;
  f.file = true;
  try {
    h5::File h = plain_only ? h5::File::open(p, h5::Access::Write) : h5::File::open_read(p);
    if (h5::exists(h.id(), "/steps/step")) f.steps = h5::read_i64(h.id(), "/steps/step");
    for (const auto& ds : h5::list_datasets(h.id())) {
      if (h5::dataset_kind(h.id(), ds) == h5::Kind::F32)
        f.rows[ds] = h5::read_f32(h.id(), ds);
      else
        for (int64_t v : h5::read_i64(h.id(), ds)) f.rows[ds].push_back(static_cast<float>(v));
    }
    h.close();
  } catch (const std::exception& e) {
    f.error = e.what();
  }
  return f;
}
int64_t newest_checkpoint_step(const std::string& dir) {
  int64_t best = 0;
  const fs::path c = fs::path(dir) / "checkpoints";
  if (!fs::exists(c)) return 0;
  for (const auto& e : fs::directory_iterator(c))
    if (fs::exists(e.path() / "COMPLETE") && e.path().filename().string().rfind("step_", 0) == 0)
      best = std::max<int64_t>(best, std::stoll(e.path().filename().string().substr(5)));
  return best;
}
int64_t journal_steps(const std::string& dir) {
  std::ifstream in(fs::path(dir) / "metrics.jsonl");
  int64_t n = 0;
  for (std::string line; std::getline(in, line);)
    if (!in.eof() && line.find("\"step\"") != std::string::npos) ++n;
  return n;
}
bool is_exact(const std::string& ds) {
  if (ds.rfind("/entropy/", 0) == 0 || ds.rfind("/validation/", 0) == 0 || ds == "/steps/step")
    return true;
  for (const char* m : kExact)
    if (ds == std::string("/steps/") + m) return true;
  return false;
}
// rows of `got` equal the first rows of `ref` for every exact dataset; "" or what differs
std::string compare_prefix(const Found& got, const Found& ref, bool whole) {
  for (const auto& [ds, v] : got.rows) {
    if (!is_exact(ds)) continue;
    auto it = ref.rows.find(ds);
    if (it == ref.rows.end()) return ds + " is not in the straight run";
    if (v.size() > it->second.size() || (whole && v.size() != it->second.size()))
      return ds + ": " + std::to_string(v.size()) + " values, the straight run has " +
             std::to_string(it->second.size());
    for (size_t i = 0; i < v.size(); ++i)
      if (std::memcmp(&v[i], &it->second[i], sizeof(float)) != 0)
        return ds + "[" + std::to_string(i) + "] = " + std::to_string(v[i]) + ", straight " +
               std::to_string(it->second[i]);
  }
  if (whole)
    for (const auto& [ds, v] : ref.rows)
      if (is_exact(ds) && !got.rows.count(ds)) return ds + " is missing";
  return "";
}

class Crash : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    ref_dir_ = new std::string(fs::temp_directory_path() /
                               ("bupo_crash_ref_" + std::to_string(::getpid())));
    fs::remove_all(*ref_dir_);
    const Shell r = sh(train(*ref_dir_));
    ASSERT_EQ(r.code, 0) << r.output;
    ref_ = new Found(read_run(*ref_dir_, true));
    ASSERT_TRUE(ref_->error.empty()) << ref_->error;
    ASSERT_EQ(ref_->steps, (std::vector<int64_t>{1, 2, 3}));
  }
  static void TearDownTestSuite() {
    fs::remove_all(*ref_dir_);
    delete ref_dir_;
    delete ref_;
  }
  // how many writes to paths containing `path` the run makes
  static int64_t count_writes(const std::string& dir, const std::string& path,
                              const std::string& cmd) {
    const std::string counts = dir + ".counts";
    fs::remove(counts);
    const Shell r =
        sh("ASAN_OPTIONS=detect_leaks=0:verify_asan_link_order=0 BUPO_KILL_PATH='" + path +
           "' BUPO_KILL_COUNT_FILE=" + counts + " LD_PRELOAD=" + BUPO_KILL_SHIM + " " + cmd);
    EXPECT_EQ(r.code, 0) << r.output;
    std::ifstream in(counts);
    int64_t n = 0, total = 0;
    while (in >> n) total += n;
    return total;
  }
  static std::vector<int64_t> kill_points(int64_t total) {
    const char* env = std::getenv("BUPO_CRASH_KILLS");
    const std::string want = env != nullptr ? env : "24";
    std::vector<int64_t> at;
    if (want == "all") {
      for (int64_t n = 1; n <= total; ++n) at.push_back(n);
      return at;
    }
    const int64_t k = std::max<int64_t>(1, std::min<int64_t>(total, std::stoll(want)));
    for (int64_t i = 0; i < k; ++i) at.push_back(1 + i * (total - 1) / std::max<int64_t>(1, k - 1));
    at.erase(std::unique(at.begin(), at.end()), at.end());
    return at;
  }
  // After a kill: what a reader sees is a consistent prefix; the resume completes the run exactly.
  // Returns "" or the failure.
  static std::string check_and_resume(const std::string& dir, const std::string& resume_env = "") {
    const Found got = read_run(dir, false);
    const int64_t ck = newest_checkpoint_step(dir), done = journal_steps(dir);
    if (!got.error.empty()) return "unreadable after the kill: " + got.error;
    if (got.file) {
      for (size_t i = 0; i < got.steps.size(); ++i)
        if (got.steps[i] != static_cast<int64_t>(i) + 1) return "/steps/step is not 1..k";
      const auto k = static_cast<int64_t>(got.steps.size());
      if (k < ck)
        return "holds " + std::to_string(k) + " steps, the checkpoint " + std::to_string(ck);
      if (k < done - 1)
        return "holds " + std::to_string(k) + " steps, metrics.jsonl " + std::to_string(done);
      const std::string diff = compare_prefix(got, *ref_, false);
      if (!diff.empty()) return "after the kill: " + diff;
    } else if (ck > 0) {
      return "diagnostics.h5 is gone but checkpoint step " + std::to_string(ck) + " exists";
    }
    if (!resume_env.empty()) return "";  // the caller kills the resume too
    const Shell r = sh(train(dir, "--resume"));
    if (r.code != 0) return "--resume exited " + std::to_string(r.code) + ": " + r.output;
    const Found fin = read_run(dir, true);  // plainly: the resume left a clean file
    if (!fin.error.empty()) return "after the resume: " + fin.error;
    const std::string diff = compare_prefix(fin, *ref_, true);
    if (!diff.empty()) return "after the resume: " + diff;
    if (journal_steps(dir) != 3)
      return "metrics.jsonl has " + std::to_string(journal_steps(dir)) + " steps";
    return "";
  }
  void sweep(const std::string& tag, const std::string& path) {
    const std::string base = test::temp_dir(tag);
    const int64_t total = count_writes(base + "/count", path, train(base + "/count"));
    ASSERT_GT(total, 2) << "the shim saw no writes to " << path;
    int tried = 0, bad = 0;
    for (bool torn : {false, true})
      for (int64_t n : kill_points(total)) {
        const std::string dir = base + "/k" + std::to_string(n) + (torn ? "t" : "");
        const Shell k = sh(shim_env(path, n, torn) + train(dir));
        ASSERT_EQ(k.code, 137) << "kill at write " << n << ": " << k.output;
        ++tried;
        const std::string why = check_and_resume(dir);
        if (!why.empty()) {
          ++bad;
          ADD_FAILURE() << tag << ": kill at write " << n << (torn ? " (torn)" : "") << " of "
                        << total << ": " << why;
        }
        fs::remove_all(dir);
      }
    std::printf(
        "[crash] %s: %d kills among %lld writes, %d left anything unreadable or "
        "unresumable\n",
        tag.c_str(), tried, static_cast<long long>(total), bad);
    fs::remove_all(base);
  }
  static std::string* ref_dir_;
  static Found* ref_;
};
std::string* Crash::ref_dir_ = nullptr;
Found* Crash::ref_ = nullptr;

TEST_F(Crash, KillAtEveryWriteOfTheDiagnosticsFile) {
  sweep("h5", "diagnostics.h5");
}

TEST_F(Crash, KillAtEveryWriteOfACheckpoint) {
  sweep("checkpoint", "/checkpoints/");
}

TEST_F(Crash, KillAtEveryWriteOfTheJournal) {
  sweep("journal", "metrics.jsonl");
}

TEST_F(Crash, KillDuringTheResumeItself) {
  // killed in step 2's flush, then the resume is killed at each of its own writes to the file
  const std::string base = test::temp_dir("resume");
  const int64_t per_run = count_writes(base + "/count", "diagnostics.h5", train(base + "/count"));
  int tried = 0;
  for (int64_t m : kill_points(std::max<int64_t>(2, per_run / 3))) {
    const std::string dir = base + "/r" + std::to_string(m);
    ASSERT_EQ(sh(shim_env("diagnostics.h5", per_run * 2 / 3, false) + train(dir)).code, 137);
    ASSERT_EQ(check_and_resume(dir, "later"), "");
    const Shell k = sh(shim_env("diagnostics.h5", m, m % 2 == 1) + train(dir, "--resume"));
    ASSERT_TRUE(k.code == 137 || k.code == 0) << k.output;
    ++tried;
    EXPECT_EQ(check_and_resume(dir), "") << "resume killed at write " << m;
    fs::remove_all(dir);
  }
  std::printf("[crash] resume: %d resumes killed\n", tried);
  fs::remove_all(base);
}

TEST_F(Crash, KillAtRandomInstants) {
  const std::string base = test::temp_dir("random");
  std::mt19937 rng(20261202);
  const char* env = std::getenv("BUPO_CRASH_RANDOM");
  const int runs = env != nullptr ? std::atoi(env) : 8;
  // the straight run's wall time sets the range of instants
  const auto t0 = std::chrono::steady_clock::now();
  ASSERT_EQ(sh(train(base + "/timing")).code, 0);
  const double span = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  int killed = 0;
  for (int i = 0; i < runs; ++i) {
    const std::string dir = base + "/i" + std::to_string(i);
    const std::string cmd = train(dir);
    const pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      execl("/bin/sh", "sh", "-c", ("exec " + cmd + " >/dev/null 2>&1").c_str(),
            static_cast<char*>(nullptr));
      _exit(127);
    }
    std::uniform_real_distribution<double> at(0.0, span);
    std::this_thread::sleep_for(std::chrono::duration<double>(at(rng)));
    kill(pid, SIGKILL);
    int st = 0;
    waitpid(pid, &st, 0);
    killed += WIFSIGNALED(st) ? 1 : 0;
    EXPECT_EQ(check_and_resume(dir), "") << "random kill " << i;
    fs::remove_all(dir);
  }
  std::printf("[crash] random: %d runs, %d killed before they finished\n", runs, killed);
  fs::remove_all(base);
}

TEST_F(Crash, AFullDiskDuringAFlushIsOneClearErrorAndLeavesAReadableFile) {
  // a file-size limit just above the file after step 1: step 2's flush (validation datasets
  // appear) cannot grow it
  const std::string base = test::temp_dir("full");
  const Shell one = sh(train(base + "/one", "--stop-after-step 1"));
  ASSERT_EQ(one.code, 0) << one.output;
  const auto kib = (fs::file_size(base + "/one/diagnostics.h5") + 1023) / 1024;
  const std::string dir = base + "/run";
  const Shell r = sh("ulimit -f " + std::to_string(kib) + "; exec " + train(dir));
  EXPECT_EQ(r.code, 1) << r.output;  // not 139 (SIGSEGV inside HDF5 at exit) nor 153 (SIGXFSZ)
  EXPECT_NE(r.output.find("diagnostics.h5"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("File too large"), std::string::npos) << r.output;
  EXPECT_EQ(check_and_resume(dir), "");
  fs::remove_all(base);
}

TEST_F(Crash, ADiagnosticsFileBeyondRepairIsRebuiltFromTheJournalOnResume) {
  // what no kill can do here (the file is replaced whole), a disk or a user can: truncate it,
  // overwrite its middle, delete it
  const std::string base = test::temp_dir("rebuild");
  for (const std::string how : {"truncated", "overwritten", "deleted"}) {
    const std::string dir = base + "/" + how;
    ASSERT_EQ(sh(train(dir, "--stop-after-step 2")).code, 0);
    const std::string h5 = dir + "/diagnostics.h5";
    if (how == "truncated") fs::resize_file(h5, fs::file_size(h5) / 2);
    if (how == "overwritten") {
      std::fstream f(h5, std::ios::in | std::ios::out | std::ios::binary);
      f.seekp(0);
      const std::string junk(4096, '\x5a');
      f.write(junk.data(), static_cast<std::streamsize>(junk.size()));
    }
    if (how == "deleted") fs::remove(h5);
    const Shell r = sh(train(dir, "--resume"));
    ASSERT_EQ(r.code, 0) << how << ": " << r.output;
    EXPECT_NE(r.output.find("rebuilt it from metrics.jsonl (2 steps, 2 entropy rows"),
              std::string::npos)
        << how << ": " << r.output;
    EXPECT_EQ(fs::exists(h5 + ".damaged"), how != "deleted") << how;
    const Found fin = read_run(dir, true);
    ASSERT_TRUE(fin.error.empty()) << how << ": " << fin.error;
    EXPECT_EQ(compare_prefix(fin, *ref_, true), "") << how;
  }
  fs::remove_all(base);
}

TEST_F(Crash, KillAtEveryWriteOfAnEntropyFile) {
  // `bupo entropy` over the tokens of a model the reference run trained: a writer killed at any
  // write, whole or torn, leaves a file every reader opens plainly (HDF5 file locking on), whose
  // rows below /progress[0] equal the straight run's (io/h5_raw_rows.hpp)
  const std::string base = test::temp_dir("entropy");
  const std::string model = *ref_dir_ + "/checkpoints/step_00000003";
  const std::string data = base + "/tokens.jsonl";
  {
    std::ofstream out(data);
    for (int r = 0; r < 12; ++r) {
      out << "{\"ids\": [";
      for (int t = 0; t < 9; ++t) out << (t ? ", " : "") << (r * 7 + t * 3) % 60;
      out << "], \"response_start\": 2}\n";
    }
  }
  auto cmd = [&](const std::string& out) {
    return std::string(BUPO_BINARY) + " entropy --model " + model + " --data " + data + " --out " +
           out + " --batch-tokens 20";
  };
  const std::string ref = base + "/ref.h5";
  ASSERT_EQ(sh(cmd(ref)).code, 0) << sh(cmd(ref + "x")).output;
  h5::File rf = h5::File::open(ref, h5::Access::Write);
  std::map<std::string, std::vector<float>> ref_rows;
  for (const auto& ds : h5::list_datasets(rf.id()))
    if (ds != "/progress") ref_rows[ds] = h5::read_f32(rf.id(), ds);
  const int64_t N = h5::read_attr_int(rf.id(), "/", "num_tokens");
  ASSERT_EQ(h5::read_i64(rf.id(), "/progress"), (std::vector<int64_t>{N, 12}));
  rf.close();
  const int64_t total = count_writes(base + "/c", "count.h5", cmd(base + "/count.h5"));
  ASSERT_GT(total, 5);
  int tried = 0, lost = 0, renamed = 0;
  for (bool torn : {false, true})
    for (int64_t n : kill_points(total)) {
      const std::string out = base + "/k" + std::to_string(n) + (torn ? "t" : "") + ".h5";
      const std::string tag =
          "entropy file killed at write " + std::to_string(n) + (torn ? " (torn)" : "");
      ASSERT_EQ(sh(shim_env(out, n, torn) + cmd(out)).code, 137) << tag;
      ++tried;
      if (!fs::exists(out)) continue;  // killed before the file was renamed into place
      ++renamed;
      try {
        // opened read-write, not SWMR: what any HDF5 tool can do with the file at that instant
        h5::File f = h5::File::open(out, h5::Access::Write);
        const auto progress = h5::read_i64(f.id(), "/progress");
        ASSERT_EQ(progress.size(), 2u) << tag;
        const int64_t rows = progress[0];
        EXPECT_TRUE(rows >= 0 && rows <= N) << tag << ": progress " << rows;
        for (const auto& [ds, want] : ref_rows) {
          const auto got = h5::read_f32(f.id(), ds);
          ASSERT_EQ(got.size(), want.size()) << tag << ": " << ds;
          const size_t per_row = want.size() / static_cast<size_t>(N);
          const size_t k = static_cast<size_t>(rows) * per_row;
          EXPECT_TRUE(k == 0 || std::memcmp(got.data(), want.data(), k * 4) == 0)
              << tag << ": " << ds << " differs below progress " << rows;
        }
        f.close();
      } catch (const std::exception& e) {
        ++lost;
        ADD_FAILURE() << tag << ": " << e.what();
      }
    }
  std::printf(
      "[crash] entropy: %d kills (half of them torn) among %lld writes; %d found the file in "
      "place; %d left it unreadable\n",
      tried, static_cast<long long>(total), renamed, lost);
  fs::remove_all(base);
}

}  // namespace
}  // namespace bupo
