// The crash-safe discipline every HDF5 file bupo writes follows (diagnostics.h5, `bupo entropy`
// output, `bupo pick-layer` evidence). HDF5 has no journal: a process killed while the library
// writes metadata in no particular order can leave a file nothing opens. So structure (groups,
// datasets, attributes; truncation on resume) is only ever changed on a private copy that is
// closed, fsync'ed and renamed over the file: readers see the old file or the new one (create(),
// edit()). Rows are committed by flush() in one of two ways:
//   - Commit::Replace (diagnostics.h5: kilobytes per step, a step every seconds to minutes): the
//     same copy-append-rename. The file a reader opens is always whole, closed and fsync'ed, so it
//     opens plainly with HDF5's file locking on, at any instant, even after a write torn by a
//     crash; the price is one copy of the file per flush (docs/reliability.md gives the figures).
//   - Commit::Swmr (`bupo entropy`: up to gigabytes, a batch every second): appended in place
//     under SWMR writing (H5F_ACC_SWMR_WRITE), which orders the metadata flushes so the file is
//     coherent after every write system call, to unfiltered chunks whose old rows are rewritten
//     with their own bytes (io/h5.hpp). The file is open only during flush(): between flushes any
//     reader opens it plainly; during one, and after a writer died in one, a reader needs SWMR
//     (h5py: swmr=True) until open() repairs it. What SWMR does not survive is a write torn inside
//     an object header (a multi-page write cut by the kill at a page boundary): that object's rows
//     are lost.
// tests/crash kills writers at every write system call of these paths and checks all of it.
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <tuple>
#include <vector>

#include "io/h5.hpp"

namespace bupo::h5 {

enum class Commit { Replace, Swmr };

class AppendFile {
 public:
  using Edit = std::function<void(File&)>;
  AppendFile() = default;
  // A new file whose structure `init` creates (refusing to replace `path` unless overwrite).
  static AppendFile create(const std::string& path, bool overwrite, const Edit& init,
                           Commit commit = Commit::Replace);
  // An existing file, for appending. Every dataset is read once (an unreadable one is an error
  // naming it); a file left marked by a writer that died is repaired first (says so in
  // repaired()).
  static AppendFile open(const std::string& path, Commit commit = Commit::Replace);
  // Queues rows × cols values (row-major) for `dataset`, written at the next flush(); a dataset
  // the file lacks is created then (one edit()) with `chunk_rows` rows per chunk.
  void append(const std::string& dataset, Kind kind, int64_t cols, const void* data, int64_t rows,
              int64_t chunk_rows = 1024);
  // Queues a new value for an existing int64 attribute (rewritten in place at the next flush).
  void update_attr(const std::string& obj, const std::string& name, int64_t value);
  // Commits everything queued (see Commit). Any failure (a full disk, a quota) is one error
  // naming the file and HDF5's cause; the file keeps its previous rows.
  void flush();
  // A structural change on a copy renamed over the file, now (after the queued rows are flushed).
  void edit(const Edit& change);
  // The same change made by the next flush(), in the copy that commits its rows (before them), so
  // that a step's new datasets and rows land in one rename.
  void edit_at_flush(Edit change);
  int64_t rows(const std::string& dataset) const;  // written + queued; 0 for an unknown one
  bool has(const std::string& dataset) const;      // in the file or queued
  // The datasets (in the file or queued) whose path starts with `prefix`.
  std::vector<std::string> datasets(const std::string& prefix) const;
  const std::string& path() const { return path_; }
  bool repaired() const { return repaired_; }

 private:
  struct Queued {
    Kind kind = Kind::F32;
    int64_t cols = 0, chunk_rows = 1024, rows = 0;
    std::vector<char> bytes;
  };
  void scan();  // rows_ from the file's datasets
  std::string path_;
  std::map<std::string, int64_t> rows_;  // rows on disk
  std::map<std::string, Queued> queued_;
  std::vector<std::tuple<std::string, std::string, int64_t>> attrs_;
  std::vector<Edit> edits_;
  bool repaired_ = false;
  Commit commit_ = Commit::Replace;
};

}  // namespace bupo::h5
