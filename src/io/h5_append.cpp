#include "io/h5_append.hpp"

#include <cstring>
#include <filesystem>

#include "core/error.hpp"
#include "io/atomic_file.hpp"

namespace fs = std::filesystem;

namespace bupo::h5 {
namespace {
size_t kind_bytes(Kind k) {
  return k == Kind::F32 || k == Kind::I32 ? 4 : 8;
}

// Builds a file under `tmp` with `build`, then fsync + rename over `path` + fsync of the folder.
void replace_with(const std::string& path, const std::string& tmp,
                  const std::function<void(File&)>& build, bool from_copy) {
  std::error_code ec;
  fs::remove(tmp, ec);
  try {
    if (from_copy) {
      fs::copy_file(path, tmp, ec);
      if (ec) fail(path, ": cannot copy it to ", tmp, ": ", ec.message());
    }
    File f = from_copy ? File::open(tmp, Access::Repair) : File::create(tmp);
    build(f);
    f.close();
    fsync_path(tmp);
    fs::rename(tmp, path, ec);
    if (ec) fail(tmp, ": cannot rename it to ", path, ": ", ec.message());
  } catch (...) {
    fs::remove(tmp, ec);  // the file at `path` is untouched
    throw;
  }
  const fs::path parent = fs::path(path).parent_path();
  fsync_path(parent.empty() ? "." : parent.string());
}
}  // namespace

AppendFile AppendFile::create(const std::string& path, bool overwrite, const Edit& init) {
  BUPO_CHECK(overwrite || !fs::exists(path), path,
             ": output file exists; refusing to overwrite it (pass --overwrite)");
  AppendFile a;
  a.path_ = path;
  replace_with(path, path + ".create.tmp", init, false);
  a.scan();
  return a;
}

AppendFile AppendFile::open(const std::string& path) {
  AppendFile a;
  a.path_ = path;
  bool marked = false;
  const hid_t id = H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
  if (id < 0) {
    error_detail();
    marked = true;  // a writer died in a flush (or the file is damaged: the repair says which)
  } else {
    H5Fclose(id);
  }
  if (marked) {
    replace_with(
        path, path + ".repair.tmp", [](File&) {}, true);
    a.repaired_ = true;
  }
  a.scan();
  // every row readable, or an error naming the dataset
  File f = File::open(path, Access::Read);
  for (const auto& [ds, n] : a.rows_) {
    (void)n;
    if (dataset_kind(f.id(), ds) == Kind::F32)
      read_f32(f.id(), ds);
    else
      read_i64(f.id(), ds);
  }
  f.close();
  return a;
}

void AppendFile::scan() {
  rows_.clear();
  File f = File::open(path_, Access::Read);
  for (const auto& ds : list_datasets(f.id())) rows_[ds] = dataset_shape(f.id(), ds).at(0);
  f.close();
}

void AppendFile::append(const std::string& dataset, Kind kind, int64_t cols, const void* data,
                        int64_t rows, int64_t chunk_rows) {
  if (rows <= 0) return;
  auto& q = queued_[dataset];
  BUPO_CHECK(q.rows == 0 || (q.kind == kind && q.cols == cols), path_, ": dataset ", dataset,
             " appended with two shapes");
  q.kind = kind;
  q.cols = cols;
  q.chunk_rows = chunk_rows;
  const size_t n = static_cast<size_t>(rows) * static_cast<size_t>(std::max<int64_t>(1, cols)) *
                   kind_bytes(kind);
  const size_t at = q.bytes.size();
  q.bytes.resize(at + n);
  std::memcpy(q.bytes.data() + at, data, n);
  q.rows += rows;
}

void AppendFile::update_attr(const std::string& obj, const std::string& name, int64_t value) {
  attrs_.emplace_back(obj, name, value);
}

void AppendFile::flush() {
  if (queued_.empty() && attrs_.empty() && edits_.empty()) return;
  auto write_queued = [this](File& f) {
    for (const auto& change : edits_) change(f);
    for (const auto& [ds, q] : queued_) {
      if (!exists(f.id(), ds)) create_rows(f.id(), ds, q.kind, q.cols, q.chunk_rows, "");
      append_rows(f.id(), ds, q.kind, q.bytes.data(), q.rows);
    }
    for (const auto& [obj, name, v] : attrs_) f.update_attr(obj, name, v);
  };
  try {
    replace_with(path_, path_ + ".edit.tmp", write_queued, true);
  } catch (const Error& e) {
    fail(path_, ": writing the queued rows failed: ", e.what());
  }
  for (const auto& [ds, q] : queued_) rows_[ds] += q.rows;
  queued_.clear();
  attrs_.clear();
  if (!edits_.empty()) {
    edits_.clear();
    scan();  // an edit may have created datasets no row was queued for
  }
}

void AppendFile::edit_at_flush(Edit change) {
  edits_.push_back(std::move(change));
}

void AppendFile::edit(const Edit& change) {
  flush();
  replace_with(path_, path_ + ".edit.tmp", change, true);
  scan();
}

int64_t AppendFile::rows(const std::string& dataset) const {
  int64_t n = 0;
  if (auto it = rows_.find(dataset); it != rows_.end()) n += it->second;
  if (auto it = queued_.find(dataset); it != queued_.end()) n += it->second.rows;
  return n;
}
bool AppendFile::has(const std::string& dataset) const {
  return rows_.count(dataset) > 0 || queued_.count(dataset) > 0;
}

std::vector<std::string> AppendFile::datasets(const std::string& prefix) const {
  std::vector<std::string> out;
  for (const auto& [ds, n] : rows_)
    if (ds.rfind(prefix, 0) == 0) out.push_back(ds);
  for (const auto& [ds, q] : queued_)
    if (ds.rfind(prefix, 0) == 0 && !rows_.count(ds)) out.push_back(ds);
  return out;
}

}  // namespace bupo::h5
