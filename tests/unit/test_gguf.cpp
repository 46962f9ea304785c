// GGUF reader: dequantisation of every supported type against the `gguf` Python package
// (golden/quants.gguf written by its GGUFWriter), metadata, and robustness: every truncated prefix
// and thousands of mutated files must end in a bupo::Error, never a crash (ASan/UBSan preset).
#include <gtest/gtest.h>

#include <fstream>
#include <iterator>
#include <random>

#include "../test_util.hpp"
#include "core/error.hpp"
#include "io/gguf.hpp"
#include "io/safetensors.hpp"

namespace bupo {
namespace {

const std::string kGolden = BUPO_GOLDEN_DIR;

std::vector<uint8_t> read_bytes(const std::string& p) {
  std::ifstream f(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(f), {}};
}

TEST(Gguf, DequantisesEveryTypeLikeTheGgufPackage) {
  auto f = GgufFile::open(kGolden + "/quants.gguf");
  EXPECT_EQ(f->version(), 3u);
  EXPECT_EQ(f->get_int("test.answer"), 42);
  EXPECT_EQ(f->get_string("test.name"), "quants");
  EXPECT_EQ(f->get_strings("test.list"), (std::vector<std::string>{"a", "bb", "ccc"}));
  EXPECT_EQ(f->get_string("general.architecture"), "llama");
  const auto ref = CheckpointReader::open(kGolden + "/quants_dequant.safetensors");
  int checked = 0;
  for (const char* name : {"Q8_0", "Q4_0", "Q4_1", "Q4_K", "Q5_K", "Q6_K", "F32", "F16"}) {
    const GgufTensorInfo* t = f->find_tensor(name);
    ASSERT_NE(t, nullptr) << name;
    const auto& info = ref.info(name);
    EXPECT_EQ(t->torch_shape(), info.shape) << name;
    std::vector<float> got(t->numel()), want(t->numel());
    f->dequantize(*t, got.data());
    ref.file_of(name).read_f32(info, want.data());
    EXPECT_LE(test::rel_err(got.data(), want.data(), static_cast<int64_t>(got.size())), 1e-6)
        << name;
    ++checked;
  }
  EXPECT_EQ(checked, 8);
}

TEST(Gguf, EveryTruncatedPrefixIsAClearError) {
  const auto bytes = read_bytes(kGolden + "/quants.gguf");
  ASSERT_GT(bytes.size(), 1000u);
  const uint64_t complete = [&] {
    uint64_t s = bytes.size();
    for (size_t n = bytes.size(); n-- > 0;) {  // shortest prefix that still parses
      try {
        GgufFile::parse(bytes.data(), n, "probe.gguf");
        s = n;
      } catch (const Error&) {
        break;
      }
    }
    return s;
  }();
  EXPECT_LE(bytes.size() - complete, 31u) << "only alignment padding may be cut";
  for (size_t n = 0; n < complete; ++n) {
    try {
      GgufFile::parse(bytes.data(), n, "cut.gguf");
      ADD_FAILURE() << "prefix of " << n << " bytes parsed";
    } catch (const Error& e) {
      ASSERT_NE(std::string(e.what()).find("cut.gguf"), std::string::npos) << e.what();
    }
  }
}

TEST(Gguf, MutatedFilesNeverCrash) {
  const auto orig = read_bytes(kGolden + "/quants.gguf");
  std::mt19937_64 rng(1);
  int errors = 0;
  for (int it = 0; it < 3000; ++it) {
    auto b = orig;
    const int flips = 1 + static_cast<int>(rng() % 4);
    for (int k = 0; k < flips; ++k) {
      const size_t at =
          rng() % std::min<size_t>(b.size(), 700);  // header, metadata and tensor infos
      b[at] = static_cast<uint8_t>(rng() % 4 == 0 ? 0xFF : rng());
    }
    try {
      auto f = GgufFile::parse(b.data(), b.size(), "fuzz.gguf");
      std::vector<float> out;
      for (const auto& t : f->tensors()) {
        out.resize(t.numel());
        f->dequantize(t, out.data());
      }
    } catch (const Error&) {
      ++errors;
    }
  }
  EXPECT_GT(errors, 100);
}

TEST(Gguf, RejectsBadMagicVersionAndCounts) {
  auto b = read_bytes(kGolden + "/quants.gguf");
  auto expect_msg = [](const std::vector<uint8_t>& d, const std::string& frag) {
    try {
      GgufFile::parse(d.data(), d.size(), "x.gguf");
      ADD_FAILURE() << "expected an error containing " << frag;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(frag), std::string::npos) << e.what();
    }
  };
  auto c = b;
  c[0] = 'X';
  expect_msg(c, "bad magic");
  c = b;
  c[4] = 9;
  expect_msg(c, "GGUF version 9");
  c = b;
  for (int i = 8; i < 16; ++i) c[i] = 0xFF;  // tensor count
  expect_msg(c, "impossible for a file");
}

}  // namespace
}  // namespace bupo
