// A small RAII layer over the HDF5 C API: files in the HDF5 1.10 format (superblock v3),
// extendible row datasets without filters, fixed contiguous datasets, attributes and readers. The
// crash-safe disciplines built on it are io/h5_append.hpp and io/h5_raw_rows.hpp.
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
  hid_t release() {
    const hid_t id = id_;
    id_ = -1;
    return id;
  }
  void reset() {
    if (id_ >= 0 && closer_) closer_(id_);
    id_ = -1;
  }

 private:
  hid_t id_ = -1;
  herr_t (*closer_)(hid_t) = nullptr;
};

enum class Kind { F32, I32, I64 };

// The innermost messages of HDF5's error stack (e.g. "... errno = 28, error message = 'No space
// left on device'"), for our own error text; "" when the stack is empty. Clears the stack.
std::string error_detail();

// How a file is opened.
enum class Access {
  Read,    // read only; a file a SWMR writer holds (or died holding: files of earlier bupo
           // versions, other tools) is opened SWMR-read
  Write,   // read-write: only on a private copy (io/h5_append.hpp)
  Repair,  // read-write, clearing the status flags a dead SWMR writer left and moving the
           // end-of-allocation up to the end of the file (what `h5clear -s --increment=0` does)
};

class File {
 public:
  File() = default;
  // A new file in the 1.10 format (replaces `path` when it exists: callers decide).
  static File create(const std::string& path);
  static File open(const std::string& path, Access access);
  static File open_read(const std::string& path) { return open(path, Access::Read); }
  hid_t id() const { return file_.id(); }
  bool is_open() const { return file_.id() >= 0; }
  const std::string& path() const { return path_; }
  void create_group(const std::string& name);
  void set_attr(const std::string& obj, const std::string& name, const std::string& value);
  void set_attr(const std::string& obj, const std::string& name, int64_t value);
  void set_attr(const std::string& obj, const std::string& name, double value);
  // Rewrites an existing int64 attribute in place.
  void update_attr(const std::string& obj, const std::string& name, int64_t value);
  void flush();
  void close();  // checked: the close writes the last metadata

 private:
  Handle file_;
  std::string path_;
};

// Row datasets: shape (rows, cols) with cols fixed (cols = 0 means 1-D (rows)), chunked along
// rows, extendible without bound. No filters: an unfiltered chunk keeps its size and address,
// so appending rewrites the bytes of the rows already there with the same values and a write
// torn by a crash cannot damage them (a compressed chunk is rewritten whole, elsewhere).
void create_rows(hid_t file, const std::string& path, Kind kind, int64_t cols, int64_t chunk_rows,
                 const std::string& description);
void append_rows(hid_t file, const std::string& path, Kind kind, const void* data, int64_t rows);
void truncate_rows(hid_t file, const std::string& path, int64_t rows);

// Fixed datasets: shape (rows, cols) (cols = 0: 1-D) stored contiguously, their space allocated
// when created and never filled (a sparse region until written), so that their rows can be written
// later as raw bytes at fixed file offsets without HDF5 touching any metadata (io/h5_raw_rows.hpp).
void create_fixed_rows(hid_t file, const std::string& path, Kind kind, int64_t rows, int64_t cols,
                       const std::string& description);
struct RawLayout {
  uint64_t offset = 0;  // of row 0 in the file; meaningless when rows == 0
  int64_t rows = 0, cols = 0;
  size_t row_bytes = 0;  // cols (or 1) x the element size
};
// Where a fixed dataset's bytes are; an error naming it unless it is contiguous, allocated,
// unfiltered and of a little-endian type of `kind`.
RawLayout raw_layout(hid_t file, const std::string& path, Kind kind);

bool exists(hid_t file, const std::string& path);  // a link of that path exists (groups included)
// Every dataset under `group` (recursively), as absolute paths.
std::vector<std::string> list_datasets(hid_t file, const std::string& group = "/");

// Readers used by tests and tools.
std::vector<int64_t> dataset_shape(hid_t file, const std::string& path);
Kind dataset_kind(hid_t file, const std::string& path);  // the nearest Kind of its stored type
std::vector<float> read_f32(hid_t file, const std::string& path);
std::vector<int64_t> read_i64(hid_t file, const std::string& path);
std::string read_attr_string(hid_t file, const std::string& obj, const std::string& name);
int64_t read_attr_int(hid_t file, const std::string& obj, const std::string& name);
bool attr_exists(hid_t file, const std::string& obj, const std::string& name);

}  // namespace bupo::h5
