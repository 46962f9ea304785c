#include "io/h5_raw_rows.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <bit>
#include <cerrno>
#include <cstring>
#include <utility>

#include "core/error.hpp"

namespace bupo::h5 {

static_assert(std::endian::native == std::endian::little,
              "RawRowWriter writes native bytes into little-endian HDF5 datasets");

RawRowWriter::RawRowWriter(const std::string& path, const std::map<std::string, Kind>& datasets,
                           std::string progress)
    : path_(path) {
  {
    File f = File::open(path, Access::Read);
    for (const auto& [ds, kind] : datasets) layout_[ds] = raw_layout(f.id(), ds, kind);
    progress_ = raw_layout(f.id(), progress, Kind::I64);
    f.close();
  }
  BUPO_CHECK(progress_.rows == 2 && progress_.cols == 0, path, ": dataset ", progress,
             " must hold 2 int64 values (rows written, records written)");
  fd_ = ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
  if (fd_ < 0) fail(path, ": cannot open for writing: ", std::strerror(errno));
  const off_t size = ::lseek(fd_, 0, SEEK_END);
  if (size < 0) fail(path, ": cannot find its size: ", std::strerror(errno));
  // Reserve the blocks of every row now; a filesystem without fallocate (EOPNOTSUPP) still gets
  // its disk-full error, later, from the pwrite that meets it.
  if (size > 0 && ::fallocate(fd_, 0, 0, size) != 0 && errno != EOPNOTSUPP && errno != ENOSYS) {
    const int e = errno;
    ::close(fd_);
    fd_ = -1;
    fail(path, ": cannot reserve its ", static_cast<long long>(size),
         " bytes on disk: ", std::strerror(e), e == ENOSPC ? " (the disk is full)" : "");
  }
}

RawRowWriter::~RawRowWriter() {
  if (fd_ >= 0) ::close(fd_);
}
RawRowWriter::RawRowWriter(RawRowWriter&& o) noexcept
    : path_(std::move(o.path_)),
      fd_(std::exchange(o.fd_, -1)),
      layout_(std::move(o.layout_)),
      progress_(o.progress_) {}
RawRowWriter& RawRowWriter::operator=(RawRowWriter&& o) noexcept {
  if (this != &o) {
    if (fd_ >= 0) ::close(fd_);
    path_ = std::move(o.path_);
    fd_ = std::exchange(o.fd_, -1);
    layout_ = std::move(o.layout_);
    progress_ = o.progress_;
  }
  return *this;
}

void RawRowWriter::pwrite_all(const void* data, size_t bytes, uint64_t offset,
                              const std::string& what) {
  const char* p = static_cast<const char*>(data);
  while (bytes > 0) {
    const ssize_t n = ::pwrite(fd_, p, bytes, static_cast<off_t>(offset));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      const int e = n < 0 ? errno : ENOSPC;
      fail(path_, ": writing ", what, " failed: ", std::strerror(e),
           e == ENOSPC ? " (the disk is full; the rows before it are intact)" : "");
    }
    p += n;
    bytes -= static_cast<size_t>(n);
    offset += static_cast<uint64_t>(n);
  }
}

void RawRowWriter::write(const std::string& dataset, int64_t first_row, const void* data,
                         int64_t rows) {
  BUPO_CHECK(fd_ >= 0, path_, ": write after close");
  const auto it = layout_.find(dataset);
  BUPO_CHECK(it != layout_.end(), path_, ": no fixed dataset ", dataset);
  const RawLayout& l = it->second;
  BUPO_CHECK(first_row >= 0 && rows >= 0 && first_row + rows <= l.rows, path_, ": rows [",
             first_row, ", ", first_row + rows, ") outside dataset ", dataset, " of ", l.rows,
             " rows");
  if (rows == 0) return;
  pwrite_all(data, static_cast<size_t>(rows) * l.row_bytes,
             l.offset + static_cast<uint64_t>(first_row) * l.row_bytes, dataset);
}

void RawRowWriter::commit(int64_t rows_done, int64_t records_done) {
  BUPO_CHECK(fd_ >= 0, path_, ": commit after close");
  if (::fdatasync(fd_) != 0)
    fail(path_, ": fdatasync failed: ", std::strerror(errno), " (the rows are not durable)");
  // Rows first in the counter: a write cut after its first 8 bytes reports the new rows with the
  // old record count, a prefix that is still true.
  const int64_t v[2] = {rows_done, records_done};
  pwrite_all(v, sizeof v, progress_.offset, "the progress counter");
}

void RawRowWriter::close() {
  if (fd_ < 0) return;
  const int fd = std::exchange(fd_, -1);
  const bool synced = ::fdatasync(fd) == 0;
  const int e = errno;
  if (::close(fd) != 0 || !synced)
    fail(path_, ": closing failed: ", std::strerror(synced ? errno : e));
}

}  // namespace bupo::h5
