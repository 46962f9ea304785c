// GGUF (v2/v3) reader: header, metadata, tensor infos, alignment, and dequantisation to fp32 of
// F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q4_K, Q5_K, Q6_K. The file is mmapped; every count, length,
// offset and dimension is checked with overflow-safe arithmetic against the file size before it is
// used (llama.cpp's loader has had a run of CVEs from exactly this, ecosystem.md §4.1).
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <variant>
#include <vector>

#include "core/shape.hpp"

namespace bupo {

enum class GgmlType : uint32_t {
  F32 = 0,
  F16 = 1,
  Q4_0 = 2,
  Q4_1 = 3,
  Q8_0 = 8,
  Q4_K = 12,
  Q5_K = 13,
  Q6_K = 14,
  BF16 = 30
};
const char* ggml_type_name(uint32_t t);

struct GgufValue {
  // scalars as int64/uint64/double/bool/string; arrays as vectors
  std::variant<int64_t, uint64_t, double, bool, std::string, std::vector<int64_t>,
               std::vector<double>, std::vector<std::string>>
      v;
};

struct GgufTensorInfo {
  std::string name;
  std::vector<uint64_t> ne;  // GGUF order: ne[0] is the contiguous (fastest) dimension
  uint32_t type = 0;
  uint64_t offset = 0;  // relative to the data section
  uint64_t nbytes = 0;
  Shape torch_shape() const;  // reversed ne: (rows, cols) as in PyTorch
  uint64_t numel() const;
};

class GgufFile {
 public:
  static std::unique_ptr<GgufFile> open(const std::string& path);
  // Parse from memory (fuzzing and tests); `data` must outlive the object.
  static std::unique_ptr<GgufFile> parse(const uint8_t* data, uint64_t size,
                                         const std::string& name);
  ~GgufFile();
  GgufFile(const GgufFile&) = delete;
  GgufFile& operator=(const GgufFile&) = delete;

  uint32_t version() const { return version_; }
  const std::string& path() const { return path_; }
  const std::map<std::string, GgufValue>& metadata() const { return kv_; }
  const std::vector<GgufTensorInfo>& tensors() const { return tensors_; }
  const GgufTensorInfo* find_tensor(const std::string& name) const;
  bool has(const std::string& key) const { return kv_.contains(key); }

  // Typed metadata access: "<file>: metadata '<key>': expected ..."
  int64_t get_int(const std::string& key) const;
  int64_t get_int_or(const std::string& key, int64_t fallback) const;
  double get_float_or(const std::string& key, double fallback) const;
  std::string get_string(const std::string& key) const;
  std::string get_string_or(const std::string& key, const std::string& fallback) const;
  const std::vector<std::string>& get_strings(const std::string& key) const;
  std::vector<int64_t> get_ints(const std::string& key) const;

  // Dequantise a tensor to fp32 (numel values, row-major in torch_shape()).
  void dequantize(const GgufTensorInfo& t, float* out) const;

 private:
  GgufFile() = default;
  std::string path_;
  int fd_ = -1;
  void* map_ = nullptr;
  const uint8_t* base_ = nullptr;
  uint64_t size_ = 0, data_start_ = 0;
  uint32_t version_ = 0;
  std::map<std::string, GgufValue> kv_;
  std::vector<GgufTensorInfo> tensors_;
};

// Block-wise dequantisation kernels (exposed for tests): n values from the raw blocks.
void dequantize_row(uint32_t type, const uint8_t* src, float* dst, uint64_t n);
// Bytes needed for n values of a type (n must be a multiple of the block size); 0 if unsupported.
uint64_t ggml_row_bytes(uint32_t type, uint64_t n, bool* ok);

}  // namespace bupo
