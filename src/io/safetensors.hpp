// safetensors reader (mmap, every length and offset checked before use) and writer, plus the
// Hugging Face checkpoint directory layout: one model.safetensors, or shards listed in
// model.safetensors.index.json ({"weight_map": {tensor: file}}).
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/shape.hpp"
#include "io/dtype.hpp"

namespace bupo {

struct TensorInfo {
  std::string name;
  DType dtype = DType::F32;
  Shape shape;
  uint64_t begin = 0, end = 0;  // byte offsets into the data section
};

class SafetensorsFile {
 public:
  static std::unique_ptr<SafetensorsFile> open(const std::string& path);
  // Parse from memory (fuzzing and tests); `data` must outlive the object.
  static std::unique_ptr<SafetensorsFile> parse(const uint8_t* data, uint64_t size,
                                                const std::string& name);
  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::string& path() const { return path_; }
  const TensorInfo* find(const std::string& name) const;
  const std::map<std::string, TensorInfo>& tensors() const { return tensors_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  // Converts the tensor to fp32 into out (numel elements).
  void read_f32(const TensorInfo& t, float* out) const;

 private:
  SafetensorsFile() = default;
  void parse_header();
  std::string path_;
  const unsigned char* base_ = nullptr;
  int fd_ = -1;
  void* map_ = nullptr;
  uint64_t size_ = 0;
  uint64_t data_start_ = 0;
  std::map<std::string, TensorInfo> tensors_;
  std::map<std::string, std::string> metadata_;
};

// A checkpoint directory (or a single .safetensors file path).
class CheckpointReader {
 public:
  static CheckpointReader open(const std::string& path);
  bool contains(const std::string& name) const { return where_.contains(name); }
  const TensorInfo& info(const std::string& name) const;
  const SafetensorsFile& file_of(const std::string& name) const;
  std::vector<std::string> names() const;

 private:
  std::vector<std::shared_ptr<SafetensorsFile>> files_;
  std::map<std::string, size_t> where_;
};

struct NamedTensor {
  std::string name;
  Shape shape;
  const float* data = nullptr;
};

// Write tensors (fp32 in memory) as dtype F32, F16 or BF16. Written to path + ".tmp" and renamed,
// so a failed write never leaves a half file under the final name.
void save_safetensors(const std::string& path, const std::vector<NamedTensor>& tensors, DType dtype,
                      const std::map<std::string, std::string>& metadata = {});

// Write a HF checkpoint directory: one model.safetensors when everything fits in max_shard_bytes
// (0: no limit), otherwise model-0000i-of-0000n.safetensors + model.safetensors.index.json.
void save_checkpoint_weights(const std::string& dir, const std::vector<NamedTensor>& tensors,
                             DType dtype, uint64_t max_shard_bytes = 0);

}  // namespace bupo
