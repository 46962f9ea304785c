// An LD_PRELOAD shim for crash-consistency tests: it counts the write system calls (write, pwrite,
// writev, pwritev, ftruncate, fallocate) on files whose path contains $BUPO_KILL_PATH, and at the
// $BUPO_KILL_AT-th one kills the process with SIGKILL — before the call, or with
// BUPO_KILL_TORN=1 after writing only the first half of its bytes (a torn write). With
// $BUPO_KILL_COUNT_FILE set it appends the number of counted calls to that file at exit instead,
// so a test learns how many kill points a run has. Other files and processes are untouched.
#include <dlfcn.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace {
std::atomic<long> g_count{0};
const char* env(const char* name) {
  const char* v = std::getenv(name);
  return v != nullptr && *v != '\0' ? v : nullptr;
}
bool watched(int fd) {
  const char* want = env("BUPO_KILL_PATH");
  if (want == nullptr) return false;
  char link[64], path[4096];
  std::snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
  const ssize_t n = readlink(link, path, sizeof path - 1);
  if (n <= 0) return false;
  path[n] = '\0';
  return std::strstr(path, want) != nullptr;
}
// 0: go on; 1: kill now; 2: torn (write half, then kill)
int decide(int fd) {
  if (!watched(fd)) return 0;
  const long n = ++g_count;
  const char* at = env("BUPO_KILL_AT");
  if (at == nullptr || std::atol(at) != n) return 0;
  const char* torn = env("BUPO_KILL_TORN");
  return torn != nullptr && torn[0] == '1' ? 2 : 1;
}
[[noreturn]] void die() {
  kill(getpid(), SIGKILL);
  _exit(137);
}
template <typename F>
F real(const char* name) {
  return reinterpret_cast<F>(dlsym(RTLD_NEXT, name));
}
struct Report {
  ~Report() {
    const char* out = env("BUPO_KILL_COUNT_FILE");
    if (out == nullptr) return;
    if (FILE* f = std::fopen(out, "a")) {
      std::fprintf(f, "%ld\n", g_count.load());
      std::fclose(f);
    }
  }
} g_report;
}  // namespace

extern "C" {
ssize_t write(int fd, const void* buf, size_t n) {
  static auto f = real<ssize_t (*)(int, const void*, size_t)>("write");
  if (const int d = decide(fd)) {
    if (d == 2) f(fd, buf, n / 2);
    die();
  }
  return f(fd, buf, n);
}
ssize_t pwrite(int fd, const void* buf, size_t n, off_t off) {
  static auto f = real<ssize_t (*)(int, const void*, size_t, off_t)>("pwrite");
  if (const int d = decide(fd)) {
    if (d == 2) f(fd, buf, n / 2, off);
    die();
  }
  return f(fd, buf, n, off);
}
ssize_t pwrite64(int fd, const void* buf, size_t n, off64_t off) {
  static auto f = real<ssize_t (*)(int, const void*, size_t, off64_t)>("pwrite64");
  if (const int d = decide(fd)) {
    if (d == 2) f(fd, buf, n / 2, off);
    die();
  }
  return f(fd, buf, n, off);
}
ssize_t writev(int fd, const struct iovec* iov, int cnt) {
  static auto f = real<ssize_t (*)(int, const struct iovec*, int)>("writev");
  if (const int d = decide(fd)) {
    if (d == 2 && cnt > 0) f(fd, iov, 1);
    die();
  }
  return f(fd, iov, cnt);
}
ssize_t pwritev(int fd, const struct iovec* iov, int cnt, off_t off) {
  static auto f = real<ssize_t (*)(int, const struct iovec*, int, off_t)>("pwritev");
  if (const int d = decide(fd)) {
    if (d == 2 && cnt > 0) f(fd, iov, 1, off);
    die();
  }
  return f(fd, iov, cnt, off);
}
int ftruncate(int fd, off_t len) {
  static auto f = real<int (*)(int, off_t)>("ftruncate");
  if (decide(fd)) die();
  return f(fd, len);
}
int ftruncate64(int fd, off64_t len) {
  static auto f = real<int (*)(int, off64_t)>("ftruncate64");
  if (decide(fd)) die();
  return f(fd, len);
}
int fallocate(int fd, int mode, off_t off, off_t len) {
  static auto f = real<int (*)(int, int, off_t, off_t)>("fallocate");
  if (decide(fd)) die();
  return f(fd, mode, off, len);
}
}
