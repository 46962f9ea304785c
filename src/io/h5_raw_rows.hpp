// Rows written into an HDF5 file without HDF5: for outputs whose size is known before the first
// row (`bupo entropy`). The file is created whole with fixed datasets (h5::create_fixed_rows, space
// allocated, never filled), closed and renamed into place; from then on this writer only puts raw
// bytes at the datasets' offsets with pwrite and then a progress counter, a small fixed dataset:
//   rows of a batch -> fdatasync -> progress = [rows written, records written]
// No HDF5 metadata is written after the rename, so no kill, torn write or full disk can make the
// file unreadable: a reader (any HDF5, HDF5's file locking on, while the writer runs) sees the
// whole structure, and the rows below `progress[0]` are final. A row the writer was in the middle
// of holds zeros or part of its bytes; it lies at or beyond `progress[0]`.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "io/h5.hpp"

namespace bupo::h5 {

class RawRowWriter {
 public:
  RawRowWriter() = default;
  // `path` is a closed HDF5 file holding the fixed datasets `datasets` and the fixed int64
  // dataset `progress` of 2 elements. The file's space is reserved (fallocate) so that a disk too
  // small fails here, before any work, with one error naming the file and the bytes it needs.
  RawRowWriter(const std::string& path, const std::map<std::string, Kind>& datasets,
               std::string progress);
  ~RawRowWriter();
  RawRowWriter(RawRowWriter&& o) noexcept;
  RawRowWriter& operator=(RawRowWriter&& o) noexcept;
  RawRowWriter(const RawRowWriter&) = delete;
  RawRowWriter& operator=(const RawRowWriter&) = delete;

  // Writes rows [first_row, first_row + rows) of `dataset` (row-major bytes of its Kind).
  void write(const std::string& dataset, int64_t first_row, const void* data, int64_t rows);
  // Makes the rows written so far durable, then records progress = {rows_done, records_done}.
  void commit(int64_t rows_done, int64_t records_done);
  void close();  // fdatasync and close; errors name the file
  const std::string& path() const { return path_; }

 private:
  void pwrite_all(const void* data, size_t bytes, uint64_t offset, const std::string& what);
  std::string path_;
  int fd_ = -1;
  std::map<std::string, RawLayout> layout_;
  RawLayout progress_;
};

}  // namespace bupo::h5
