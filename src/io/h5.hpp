// A small RAII layer over the HDF5 C API for extendible, chunked, compressed row datasets that
// are appended to and flushed batch by batch: a killed writer leaves a file whose flushed rows
// are readable (ecosystem.md §2.2: default libver + H5Fflush after each append).
#pragma once
#include <hdf5.h>

#include <cstdint>
#include <string>
#include <vector>

namespace bupo::h5 {

class Handle {  // owns one hid_t, closed with the matching H5?close
 public:
  Handle() = default;
  Handle(hid_t id, herr_t (*closer)(hid_t)) : id_(id), closer_(closer) {}
  ~Handle() { reset(); }
  Handle(Handle&& o) noexcept : id_(o.id_), closer_(o.closer_) { o.id_ = -1; }
  Handle& operator=(Handle&& o) noexcept {
    if (this != &o) {
      reset();
      id_ = o.id_;
      closer_ = o.closer_;
      o.id_ = -1;
    }
    return *this;
  }
  Handle(const Handle&) = delete;
  Handle& operator=(const Handle&) = delete;
  hid_t id() const { return id_; }
  void reset() {
    if (id_ >= 0 && closer_) closer_(id_);
    id_ = -1;
  }

 private:
  hid_t id_ = -1;
  herr_t (*closer_)(hid_t) = nullptr;
};

enum class Kind { F32, I32, I64 };

// A dataset of rows: shape (rows, cols) with cols fixed (cols = 0 means 1-D (rows)).
class RowDataset {
 public:
  RowDataset() = default;
  RowDataset(hid_t loc, const std::string& path, Kind kind, int64_t cols, int64_t chunk_rows,
             const std::string& description);
  // An existing extendible dataset, for appending after a restart.
  static RowDataset open(hid_t loc, const std::string& path, Kind kind);
  void append(const void* data, int64_t rows);  // rows × cols values, row-major
  void truncate(int64_t rows);                  // shrink to the first `rows` rows
  int64_t rows() const { return rows_; }
  int64_t cols() const { return cols_; }

 private:
  Handle ds_;
  Kind kind_ = Kind::F32;
  int64_t cols_ = 0, rows_ = 0;
  std::string path_;
};

class File {
 public:
  // Creates a new file; refuses to replace an existing one unless overwrite.
  static File create(const std::string& path, bool overwrite);
  static File open_read(const std::string& path);
  static File open_rw(const std::string& path);  // an existing file, for appending
  hid_t id() const { return file_.id(); }
  const std::string& path() const { return path_; }
  void create_group(const std::string& name);
  void set_attr(const std::string& obj, const std::string& name, const std::string& value);
  void set_attr(const std::string& obj, const std::string& name, int64_t value);
  void set_attr(const std::string& obj, const std::string& name, double value);
  void flush();

 private:
  Handle file_;
  std::string path_;
};

bool exists(hid_t file, const std::string& path);  // a link of that path exists (groups included)

// Readers used by tests and tools.
std::vector<int64_t> dataset_shape(hid_t file, const std::string& path);
std::vector<float> read_f32(hid_t file, const std::string& path);
std::vector<int64_t> read_i64(hid_t file, const std::string& path);
std::string read_attr_string(hid_t file, const std::string& obj, const std::string& name);
int64_t read_attr_int(hid_t file, const std::string& obj, const std::string& name);

}  // namespace bupo::h5
