// Every write checked (issue 13, item 5): a file is replaced whole or not at all; a write that
// fails (here: a file-size limit, as a full disk) is one error naming the file, leaves the previous
// content and no temporary behind; the commands exit 1 and leave no 0-byte files.
#include <gtest/gtest.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <csignal>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "../test_util.hpp"
#include "core/error.hpp"
#include "io/atomic_file.hpp"

namespace fs = std::filesystem;

namespace bupo {
namespace {

std::string slurp(const std::string& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

TEST(AtomicFile, ReplacesWholeAndLeavesNoTemporary) {
  const std::string dir = test::temp_dir("atomic");
  const std::string p = dir + "/f.json";
  write_file_atomic(p, "old\n");
  write_file_atomic(p, std::string(100000, 'x'));
  EXPECT_EQ(slurp(p), std::string(100000, 'x'));
  {
    AtomicFile f(p);  // abandoned without commit: nothing replaced
    f.write("partial");
  }
  EXPECT_EQ(slurp(p), std::string(100000, 'x'));
  int entries = 0;
  for (const auto& e : fs::directory_iterator(dir)) entries += e.is_regular_file();
  EXPECT_EQ(entries, 1) << "a temporary was left behind";
}

TEST(AtomicFile, AFailedWriteNamesTheFileAndKeepsTheOldContent) {
  const std::string dir = test::temp_dir("full");
  const std::string p = dir + "/model.safetensors";
  write_file_atomic(p, "previous");
  const pid_t child = fork();
  if (child == 0) {  // a 4 KiB file-size limit: writes beyond it fail with EFBIG, like ENOSPC
    std::signal(SIGXFSZ, SIG_IGN);
    rlimit rl{4096, 4096};
    setrlimit(RLIMIT_FSIZE, &rl);
    try {
      write_file_atomic(p, std::string(1 << 20, 'y'));
      _exit(2);
    } catch (const Error& e) {
      const std::string w = e.what();
      _exit(w.find(p + ": write failed: File too large (nothing replaced)") != std::string::npos
                ? 0
                : 3);
    }
  }
  int st = 0;
  waitpid(child, &st, 0);
  ASSERT_TRUE(WIFEXITED(st));
  EXPECT_EQ(WEXITSTATUS(st), 0) << "2: no error; 3: the error does not name the file";
  EXPECT_EQ(slurp(p), "previous");
  int entries = 0;
  for (const auto& e : fs::directory_iterator(dir)) entries += e.is_regular_file();
  EXPECT_EQ(entries, 1);
}

TEST(AtomicFile, ACommandOnAFullDiskExits1AndLeavesNoEmptyFiles) {
  const std::string dir = test::temp_dir("cmd");
  const std::string cmd = "bash -c 'ulimit -f 8; exec " + std::string(BUPO_BINARY) +
                          " init-model --layers 2 --hidden 64 --heads 2 --kv-heads 1 "
                          "--head-dim 32 --ffn 128 --vocab 256 --overwrite --out " +
                          dir + "/small' 2>&1";
  FILE* p = popen(cmd.c_str(), "r");
  std::string out;
  char buf[512];
  while (fgets(buf, sizeof buf, p)) out += buf;
  const int st = pclose(p);
  EXPECT_TRUE(WIFEXITED(st)) << "killed by a signal: " << out;
  EXPECT_EQ(WEXITSTATUS(st), 1) << out;
  EXPECT_NE(out.find("model.safetensors: write failed: File too large"), std::string::npos) << out;
  if (fs::exists(dir + "/small")) {
    for (const auto& e : fs::directory_iterator(dir + "/small")) {
      EXPECT_GT(fs::file_size(e.path()), 0u) << e.path() << " left empty";
    }
  }
}

}  // namespace
}  // namespace bupo
