// The crash-safe discipline of bupo's growing HDF5 files (diagnostics.h5, `bupo pick-layer`
// evidence; `bupo entropy`, whose size is known up front, uses io/h5_raw_rows.hpp instead). HDF5
// has no journal: a process killed while the library writes metadata in no particular order can
// leave a file nothing opens. So every change, structure and rows alike, is made on a private copy
// that is closed, fsync'ed and renamed over the file (create(), edit(), flush()): a reader sees the
// old file or the new one, whole, closed and fsync'ed, so it opens plainly with HDF5's file locking
// on at any instant, even after a write torn by a crash. The price is one copy of the file per
// flush (kilobytes per step, a step every seconds to minutes; docs/reliability.md gives the
// figures). tests/crash kills writers at every write system call of these paths and checks all of
// it.
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <tuple>
#include <vector>

#include "io/h5.hpp"

namespace bupo::h5 {

class AppendFile {
 public:
  using Edit = std::function<void(File&)>;
  AppendFile() = default;
  // A new file whose structure `init` creates (refusing to replace `path` unless overwrite).
  static AppendFile create(const std::string& path, bool overwrite, const Edit& init);
  // An existing file, for appending. Every dataset is read once (an unreadable one is an error
  // naming it); a file left marked by a writer that died is repaired first (says so in
  // repaired()).
  static AppendFile open(const std::string& path);
  // Queues rows × cols values (row-major) for `dataset`, written at the next flush(); a dataset
  // the file lacks is created then (one edit()) with `chunk_rows` rows per chunk.
  void append(const std::string& dataset, Kind kind, int64_t cols, const void* data, int64_t rows,
              int64_t chunk_rows = 1024);
  // Queues a new value for an existing int64 attribute (rewritten in place at the next flush).
  void update_attr(const std::string& obj, const std::string& name, int64_t value);
  // Commits everything queued (on a copy renamed over the file). Any failure (a full disk, a quota)
  // is one error naming the file and HDF5's cause; the file keeps its previous rows.
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
};

}  // namespace bupo::h5
