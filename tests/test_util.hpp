// Helpers shared by the test suites.
#pragma once
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include <sys/wait.h>

namespace bupo::test {

// max|a-b| / max(max|ref|, floor): the "relative" error of a whole tensor.
inline double rel_err(const float* a, const float* ref, int64_t n, double floor = 1e-12) {
  double md = 0.0, mr = 0.0;
  for (int64_t i = 0; i < n; ++i) {
    md = std::max(md, std::fabs(static_cast<double>(a[i]) - ref[i]));
    mr = std::max(mr, std::fabs(static_cast<double>(ref[i])));
  }
  return md / std::max(mr, floor);
}

inline std::vector<float> randn(size_t n, uint64_t seed, float scale = 1.0f) {
  std::mt19937_64 g(seed);
  std::normal_distribution<float> d(0.0f, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = d(g);
  return v;
}

inline std::string temp_dir(const std::string& name) {
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  auto p = std::filesystem::temp_directory_path() /
           ("bupo_test_" + std::to_string(::getpid()) + "_" + info->test_suite_name() + "_" +
            info->name() + "_" + name);
  std::filesystem::remove_all(p);
  std::filesystem::create_directories(p);
  return p.string();
}

// A shell command's exit code (128 + the signal when killed) and stdout + stderr.
struct RunResult {
  int code = -1;
  std::string output;
};
inline RunResult run_shell(const std::string& command) {
  RunResult r;
  FILE* p = popen((command + " 2>&1").c_str(), "r");
  if (p == nullptr) return r;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) r.output.append(buf, n);
  const int st = pclose(p);
  r.code = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
  return r;
}
#ifdef BUPO_BINARY
// The bupo binary with `args` (shell words, stdin redirections allowed).
inline RunResult run_bupo(const std::string& args) {
  return run_shell(std::string(BUPO_BINARY) + " " + args);
}
#endif

}  // namespace bupo::test
