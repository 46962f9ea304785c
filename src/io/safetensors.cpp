#include "io/safetensors.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include "core/error.hpp"
#include "io/atomic_file.hpp"
#include "io/json_util.hpp"

namespace bupo {
namespace fs = std::filesystem;

namespace {
constexpr uint64_t kMaxHeader = 100ull << 20;  // the safetensors format's own limit (100 MB)

bool mul_overflows(uint64_t a, uint64_t b, uint64_t* out) {
  return __builtin_mul_overflow(a, b, out);
}
}  // namespace

std::unique_ptr<SafetensorsFile> SafetensorsFile::open(const std::string& path) {
  std::unique_ptr<SafetensorsFile> f(new SafetensorsFile());
  f->path_ = path;
  f->fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  BUPO_CHECK(f->fd_ >= 0, path, ": cannot open file");
  struct stat st {};
  BUPO_CHECK(::fstat(f->fd_, &st) == 0 && S_ISREG(st.st_mode), path, ": not a regular file");
  f->size_ = static_cast<uint64_t>(st.st_size);
  BUPO_CHECK(f->size_ >= 8, path, ": truncated safetensors file: ", f->size_,
             " bytes, expected at least 8 for the header length");
  f->map_ = ::mmap(nullptr, f->size_, PROT_READ, MAP_PRIVATE, f->fd_, 0);
  if (f->map_ == MAP_FAILED) {
    f->map_ = nullptr;
    fail(path, ": mmap failed");
  }
  f->base_ = static_cast<const unsigned char*>(f->map_);
  f->parse_header();
  return f;
}

std::unique_ptr<SafetensorsFile> SafetensorsFile::parse(const uint8_t* data, uint64_t size,
                                                        const std::string& name) {
  std::unique_ptr<SafetensorsFile> f(new SafetensorsFile());
  f->path_ = name;
  f->size_ = size;
  f->base_ = data;
  BUPO_CHECK(size >= 8, name, ": truncated safetensors file: ", size,
             " bytes, expected at least 8 for the header length");
  f->parse_header();
  return f;
}

void SafetensorsFile::parse_header() {
  SafetensorsFile* f = this;
  const std::string& path = path_;
  const auto* base = base_;
  uint64_t hlen = 0;
  for (int i = 7; i >= 0; --i) hlen = (hlen << 8) | base[i];  // little-endian u64
  BUPO_CHECK(hlen <= f->size_ - 8, path, ": header length ", hlen, " exceeds the file (", f->size_,
             " bytes): truncated or not a safetensors file");
  BUPO_CHECK(hlen <= kMaxHeader, path, ": header length ", hlen, " exceeds the 100 MB limit");
  f->data_start_ = 8 + hlen;
  const uint64_t data_size = f->size_ - f->data_start_;

  const json h = parse_json_unique_keys(
      std::string_view(reinterpret_cast<const char*>(base + 8), hlen), path + ": header");
  BUPO_CHECK(h.is_object(), path, ": header: expected a JSON object");
  for (auto it = h.begin(); it != h.end(); ++it) {
    const std::string& name = it.key();
    const json& v = it.value();
    if (name == "__metadata__") {
      BUPO_CHECK(v.is_object(), path, ": '__metadata__': expected an object of strings");
      for (auto m = v.begin(); m != v.end(); ++m) {
        BUPO_CHECK(m.value().is_string(), path, ": '__metadata__.", m.key(),
                   "': expected a string");
        f->metadata_[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    const std::string where = path + ": tensor '" + name + "'";
    BUPO_CHECK(v.is_object(), where, ": expected an object with dtype, shape, data_offsets");
    TensorInfo t;
    t.name = name;
    auto dt = v.find("dtype");
    BUPO_CHECK(dt != v.end() && dt->is_string(), where, ": field 'dtype': expected a string");
    BUPO_CHECK(dtype_from_name(dt->get<std::string>(), &t.dtype), where,
               ": field 'dtype': unknown dtype '", dt->get<std::string>(),
               "' (expected one of F32, F16, BF16, F64, I64, I32, I16, I8, U8, BOOL)");
    auto sh = v.find("shape");
    BUPO_CHECK(sh != v.end() && sh->is_array(), where,
               ": field 'shape': expected a list of integers");
    uint64_t numel = 1;
    for (const auto& d : *sh) {
      BUPO_CHECK(d.is_number_unsigned() || (d.is_number_integer() && d.get<int64_t>() >= 0), where,
                 ": field 'shape': expected non-negative integers, got ", sh->dump());
      const uint64_t dv = d.get<uint64_t>();
      BUPO_CHECK(dv < (1ull << 62) && !mul_overflows(numel, dv, &numel), where, ": field 'shape' ",
                 sh->dump(), " overflows");
      t.shape.push_back(static_cast<int64_t>(dv));
    }
    auto off = v.find("data_offsets");
    BUPO_CHECK(off != v.end() && off->is_array() && off->size() == 2 &&
                   (*off)[0].is_number_unsigned() && (*off)[1].is_number_unsigned(),
               where, ": field 'data_offsets': expected [begin, end]");
    t.begin = (*off)[0].get<uint64_t>();
    t.end = (*off)[1].get<uint64_t>();
    BUPO_CHECK(t.begin <= t.end && t.end <= data_size, where, ": field 'data_offsets' [", t.begin,
               ", ", t.end, "] lies outside the data section (", data_size,
               " bytes): truncated file?");
    uint64_t nbytes = 0;
    BUPO_CHECK(!mul_overflows(numel, dtype_size(t.dtype), &nbytes) && nbytes == t.end - t.begin,
               where, ": shape ", sh->dump(), " of ", dt->get<std::string>(), " needs ",
               numel * dtype_size(t.dtype), " bytes but data_offsets span ", t.end - t.begin);
    f->tensors_.emplace(name, std::move(t));
  }
  // Two tensors sharing bytes is a corrupt (or hostile) file: a write to one would show in the
  // other. Sorted by start, each must begin at or after the previous one's end.
  std::vector<const TensorInfo*> by_start;
  for (const auto& [_, t] : f->tensors_)
    if (t.end > t.begin) by_start.push_back(&t);
  std::sort(by_start.begin(), by_start.end(),
            [](const TensorInfo* a, const TensorInfo* b) { return a->begin < b->begin; });
  for (size_t i = 1; i < by_start.size(); ++i)
    BUPO_CHECK(by_start[i]->begin >= by_start[i - 1]->end, path, ": tensors '",
               by_start[i - 1]->name, "' (data_offsets [", by_start[i - 1]->begin, ", ",
               by_start[i - 1]->end, "]) and '", by_start[i]->name, "' ([", by_start[i]->begin,
               ", ", by_start[i]->end, "]) overlap");
}

SafetensorsFile::~SafetensorsFile() {
  if (map_ && map_ != MAP_FAILED) ::munmap(map_, size_);
  if (fd_ >= 0) ::close(fd_);
}

const TensorInfo* SafetensorsFile::find(const std::string& name) const {
  auto it = tensors_.find(name);
  return it == tensors_.end() ? nullptr : &it->second;
}

void SafetensorsFile::read_f32(const TensorInfo& t, float* out) const {
  BUPO_CHECK(dtype_is_float_loadable(t.dtype), path_, ": tensor '", t.name, "': dtype ",
             dtype_name(t.dtype), " cannot be loaded as weights (expected F32, F16 or BF16)");
  const auto* base = base_ + data_start_ + t.begin;
  convert_to_f32(t.dtype, base, out, static_cast<size_t>(numel_of(t.shape)));
}

CheckpointReader CheckpointReader::open(const std::string& path) {
  CheckpointReader r;
  auto add_file = [&r](const std::string& file) {
    r.files_.push_back(SafetensorsFile::open(file));
    const size_t idx = r.files_.size() - 1;
    for (const auto& [name, _] : r.files_.back()->tensors()) {
      BUPO_CHECK(!r.where_.contains(name), file, ": tensor '", name, "' also appears in ",
                 r.files_[r.where_[name]]->path());
      r.where_[name] = idx;
    }
  };
  if (fs::is_regular_file(path)) {
    add_file(path);
    return r;
  }
  BUPO_CHECK(fs::is_directory(path), path, ": no such checkpoint file or directory");
  const fs::path dir(path);
  const fs::path index = dir / "model.safetensors.index.json";
  if (fs::exists(index)) {
    const json j = read_json_file(index.string());
    auto wm = j.find("weight_map");
    BUPO_CHECK(wm != j.end() && wm->is_object(), index.string(),
               ": field 'weight_map': expected an object {tensor: file}");
    std::map<std::string, size_t> file_idx;
    for (auto it = wm->begin(); it != wm->end(); ++it) {
      BUPO_CHECK(it.value().is_string(), index.string(), ": weight_map['", it.key(),
                 "']: expected a file name");
      const std::string fname = it.value().get<std::string>();
      BUPO_CHECK(fname.find('/') == std::string::npos && fname != ".." && fname != ".",
                 index.string(), ": weight_map['", it.key(), "']: file name '", fname,
                 "' must be a plain file name");
      if (!file_idx.contains(fname)) {
        add_file((dir / fname).string());
        file_idx[fname] = r.files_.size() - 1;
      }
      BUPO_CHECK(r.where_.contains(it.key()) && r.where_[it.key()] == file_idx[fname],
                 index.string(), ": weight_map says tensor '", it.key(), "' is in ", fname,
                 ", but that file does not hold it");
    }
    return r;
  }
  const fs::path single = dir / "model.safetensors";
  BUPO_CHECK(fs::exists(single), path,
             ": neither model.safetensors nor model.safetensors.index.json found");
  add_file(single.string());
  return r;
}

const TensorInfo& CheckpointReader::info(const std::string& name) const {
  auto it = where_.find(name);
  BUPO_CHECK(it != where_.end(), "checkpoint: tensor '", name, "' not found");
  return *files_[it->second]->find(name);
}
const SafetensorsFile& CheckpointReader::file_of(const std::string& name) const {
  auto it = where_.find(name);
  BUPO_CHECK(it != where_.end(), "checkpoint: tensor '", name, "' not found");
  return *files_[it->second];
}
std::vector<std::string> CheckpointReader::names() const {
  std::vector<std::string> out;
  for (const auto& [n, _] : where_) out.push_back(n);
  return out;
}

void save_safetensors(const std::string& path, const std::vector<NamedTensor>& tensors, DType dtype,
                      const std::map<std::string, std::string>& metadata) {
  BUPO_CHECK(dtype == DType::F32 || dtype == DType::F16 || dtype == DType::BF16, path,
             ": can only save F32, F16 or BF16");
  const size_t es = dtype_size(dtype);
  json h = json::object();
  if (!metadata.empty()) h["__metadata__"] = metadata;
  uint64_t off = 0;
  for (const auto& t : tensors) {
    const uint64_t nb = static_cast<uint64_t>(numel_of(t.shape)) * es;
    h[t.name] = {
        {"dtype", dtype_name(dtype)}, {"shape", t.shape}, {"data_offsets", {off, off + nb}}};
    off += nb;
  }
  std::string hs = h.dump();
  while ((8 + hs.size()) % 8 != 0) hs.push_back(' ');  // align the data section to 8 bytes
  {
    AtomicFile out(path);
    unsigned char len[8];
    uint64_t hl = hs.size();
    for (int i = 0; i < 8; ++i) len[i] = static_cast<unsigned char>((hl >> (8 * i)) & 0xff);
    out.write(len, 8);
    out.write(hs);
    std::vector<char> buf;
    for (const auto& t : tensors) {
      const size_t n = static_cast<size_t>(numel_of(t.shape));
      buf.resize(n * es);
      if (dtype == DType::F32) {
        std::memcpy(buf.data(), t.data, n * 4);
      } else {
        for (size_t i = 0; i < n; ++i) {
          const uint16_t v = dtype == DType::BF16 ? f32_to_bf16(t.data[i]) : f32_to_f16(t.data[i]);
          std::memcpy(buf.data() + 2 * i, &v, 2);
        }
      }
      out.write(buf.data(), buf.size());
    }
    out.commit();
  }
}

void save_checkpoint_weights(const std::string& dir, const std::vector<NamedTensor>& tensors,
                             DType dtype, uint64_t max_shard_bytes) {
  fs::create_directories(dir);
  const size_t es = dtype_size(dtype);
  std::vector<std::vector<NamedTensor>> shards(1);
  uint64_t cur = 0, total = 0;
  for (const auto& t : tensors) {
    const uint64_t nb = static_cast<uint64_t>(numel_of(t.shape)) * es;
    if (max_shard_bytes > 0 && cur > 0 && cur + nb > max_shard_bytes) {
      shards.emplace_back();
      cur = 0;
    }
    shards.back().push_back(t);
    cur += nb;
    total += nb;
  }
  const fs::path d(dir);
  if (shards.size() == 1) {
    save_safetensors((d / "model.safetensors").string(), tensors, dtype, {{"format", "pt"}});
    fs::remove(d / "model.safetensors.index.json");
    return;
  }
  json wm = json::object();
  const size_t n = shards.size();
  for (size_t i = 0; i < n; ++i) {
    char name[64];
    std::snprintf(name, sizeof name, "model-%05zu-of-%05zu.safetensors", i + 1, n);
    save_safetensors((d / name).string(), shards[i], dtype, {{"format", "pt"}});
    for (const auto& t : shards[i]) wm[t.name] = name;
  }
  json index = {{"metadata", {{"total_size", total}}}, {"weight_map", wm}};
  write_file_atomic((d / "model.safetensors.index.json").string(), index.dump(2) + "\n");
  fs::remove(d / "model.safetensors");
}

}  // namespace bupo
