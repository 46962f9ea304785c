// Every input kept in tests/fuzz/corpus/ (seeds and what tests/fuzz/run_fuzz.sh found) must parse
// or end in bupo::Error through the same code the fuzz targets drive — a regression suite that
// runs in every preset, including AddressSanitizer + UBSan.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <iterator>

#include "core/error.hpp"
#include "io/gguf.hpp"
#include "io/safetensors.hpp"

namespace bupo {
namespace {
namespace fs = std::filesystem;

std::vector<fs::path> corpus(const std::string& target) {
  std::vector<fs::path> out;
  for (const auto& e : fs::directory_iterator(std::string(BUPO_FUZZ_CORPUS_DIR) + "/" + target))
    out.push_back(e.path());
  std::sort(out.begin(), out.end());
  return out;
}

std::vector<uint8_t> bytes_of(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(f), {}};
}

TEST(FuzzCorpus, GgufInputsParseOrFailCleanly) {
  const auto files = corpus("gguf");
  ASSERT_FALSE(files.empty());
  for (const auto& p : files) {
    const auto b = bytes_of(p);
    try {
      auto f = GgufFile::parse(b.data(), b.size(), p.filename().string());
      std::vector<float> out;
      for (const auto& t : f->tensors()) {
        if (t.numel() > (1u << 22)) continue;
        out.resize(t.numel());
        f->dequantize(t, out.data());
      }
    } catch (const Error&) {
    }
  }
}

TEST(FuzzCorpus, SafetensorsInputsParseOrFailCleanly) {
  const auto files = corpus("safetensors");
  ASSERT_FALSE(files.empty());
  for (const auto& p : files) {
    const auto b = bytes_of(p);
    try {
      auto f = SafetensorsFile::parse(b.data(), b.size(), p.filename().string());
      std::vector<float> out;
      for (const auto& [name, t] : f->tensors()) {
        out.resize(static_cast<size_t>(numel_of(t.shape)));
        try {
          f->read_f32(t, out.data());
        } catch (const Error&) {
        }
      }
    } catch (const Error&) {
    }
  }
}

}  // namespace
}  // namespace bupo
