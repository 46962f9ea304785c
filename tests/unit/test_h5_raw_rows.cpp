// h5::RawRowWriter (io/h5_raw_rows.hpp): rows written as raw bytes into fixed datasets and a
// progress counter, with no HDF5 metadata written after the file is created; what fails names the
// file and leaves the committed rows readable.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <csignal>
#include <filesystem>

#include "../test_util.hpp"
#include "core/error.hpp"
#include "io/h5.hpp"
#include "io/h5_raw_rows.hpp"

namespace bupo {
namespace {
namespace fs = std::filesystem;

const std::map<std::string, h5::Kind> kSets = {{"/a", h5::Kind::F32}, {"/b", h5::Kind::I64}};

// a file of 1000 rows: /a (1000, 3) float32, /b (1000) int64, /progress (2)
std::string make_file(const std::string& dir) {
  const std::string p = dir + "/r.h5";
  h5::File f = h5::File::create(p);
  h5::create_fixed_rows(f.id(), "/a", h5::Kind::F32, 1000, 3, "a");
  h5::create_fixed_rows(f.id(), "/b", h5::Kind::I64, 1000, 0, "b");
  h5::create_fixed_rows(f.id(), "/progress", h5::Kind::I64, 2, 0, "");
  h5::create_rows(f.id(), "/chunked", h5::Kind::F32, 2, 16, "");
  f.close();
  return p;
}

TEST(RawRowWriter, RowsLandAtTheirOffsetsAndProgressSaysHowMany) {
  const std::string p = make_file(test::temp_dir("raw"));
  const auto size_before = fs::file_size(p);
  {
    h5::RawRowWriter w(p, kSets, "/progress");
    std::vector<float> a(2 * 3);
    std::vector<int64_t> b = {7, 8};
    for (size_t i = 0; i < a.size(); ++i) a[i] = static_cast<float>(i) + 0.5f;
    w.write("/a", 0, a.data(), 2);
    w.write("/b", 0, b.data(), 2);
    w.commit(2, 1);
    // a reader while the writer holds the file: plain HDF5 open, file locking on
    h5::File r = h5::File::open(p, h5::Access::Write);
    EXPECT_EQ(h5::read_i64(r.id(), "/progress"), (std::vector<int64_t>{2, 1}));
    const auto got = h5::read_f32(r.id(), "/a");
    ASSERT_EQ(got.size(), 3000u);
    EXPECT_EQ(std::vector<float>(got.begin(), got.begin() + 6), a);
    EXPECT_EQ(got[6], 0.0f) << "an unwritten row reads as zeros";
    r.close();
    b = {9};
    w.write("/b", 2, b.data(), 1);
    w.commit(3, 2);
    w.close();
  }
  EXPECT_EQ(fs::file_size(p), size_before) << "no byte is appended: the space was allocated";
  h5::File r = h5::File::open_read(p);
  const auto b = h5::read_i64(r.id(), "/b");
  EXPECT_EQ(std::vector<int64_t>(b.begin(), b.begin() + 3), (std::vector<int64_t>{7, 8, 9}));
  EXPECT_EQ(h5::read_i64(r.id(), "/progress"), (std::vector<int64_t>{3, 2}));
}

TEST(RawRowWriter, WhatItCannotDoIsAnErrorNamingTheDataset) {
  const std::string p = make_file(test::temp_dir("raw"));
  auto msg = [](auto&& f) {
    try {
      f();
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_NE(msg([&] {
              h5::RawRowWriter(p, {{"/chunked", h5::Kind::F32}}, "/progress");
            }).find("/chunked is not contiguous"),
            std::string::npos);
  EXPECT_NE(msg([&] {
              h5::RawRowWriter(p, {{"/b", h5::Kind::F32}}, "/progress");
            }).find("/b does not have the little-endian type"),
            std::string::npos);
  EXPECT_NE(msg([&] { h5::RawRowWriter(p, kSets, "/b"); }).find("must hold 2 int64 values"),
            std::string::npos);
  h5::RawRowWriter w(p, kSets, "/progress");
  const std::vector<float> a(6);
  EXPECT_NE(msg([&] { w.write("/a", 999, a.data(), 2); }).find("rows [999, 1001) outside"),
            std::string::npos);
  EXPECT_NE(msg([&] { w.write("/c", 0, a.data(), 1); }).find("no fixed dataset /c"),
            std::string::npos);
}

TEST(RawRowWriter, AFailedWriteNamesTheFileAndKeepsTheCommittedRows) {
  const std::string p = make_file(test::temp_dir("raw"));
  const pid_t child = fork();
  if (child == 0) {
    std::signal(SIGXFSZ, SIG_IGN);
    try {
      h5::RawRowWriter w(p, kSets, "/progress");
      const std::vector<int64_t> b(1000, 5);
      w.write("/b", 0, b.data(), 10);
      w.commit(10, 1);
      // writes beyond this offset fail with EFBIG, as a full disk fails them with ENOSPC
      rlimit rl{static_cast<rlim_t>(fs::file_size(p) / 2), static_cast<rlim_t>(fs::file_size(p))};
      setrlimit(RLIMIT_FSIZE, &rl);
      w.write("/b", 10, b.data(), 990);
      w.commit(1000, 2);
      _exit(2);
    } catch (const Error& e) {
      const std::string m = e.what();
      _exit(m.find(p + ": writing /b failed") != std::string::npos ? 0 : 3);
    }
  }
  int st = 0;
  waitpid(child, &st, 0);
  ASSERT_TRUE(WIFEXITED(st));
  EXPECT_EQ(WEXITSTATUS(st), 0) << "2: no error; 3: the error did not name the file and dataset";
  h5::File r = h5::File::open_read(p);
  EXPECT_EQ(h5::read_i64(r.id(), "/progress"), (std::vector<int64_t>{10, 1}));
  EXPECT_EQ(h5::read_i64(r.id(), "/b")[9], 5);
}

}  // namespace
}  // namespace bupo
