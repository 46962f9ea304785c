// Every file bupo writes whole goes through here: the bytes go to `<path>.tmp.<pid>`, every write
// and the close are checked (a full disk is one error naming the file, never a 0-byte file and exit
// 0), the data is fsync'ed, the temporary renamed over `path`, and the folder fsync'ed so that the
// rename itself survives a crash. A reader sees the old file or the new one, never a part.
#pragma once
#include <cstddef>
#include <string>
#include <string_view>

namespace bupo {

class AtomicFile {
 public:
  explicit AtomicFile(std::string path);  // opens the temporary; error naming `path`
  ~AtomicFile();                          // without commit(): the temporary is removed
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;
  void write(const void* data, size_t bytes);  // all of it, or an error naming the file
  void write(std::string_view s) { write(s.data(), s.size()); }
  void commit();  // fsync, close, rename, fsync the folder
  const std::string& path() const { return path_; }

 private:
  std::string path_, tmp_;
  int fd_ = -1;
};

void write_file_atomic(const std::string& path, std::string_view bytes);
// Appends `bytes` to `path` (created when missing) with O_APPEND, every write checked, then
// fsync: for journals such as metrics.jsonl, whose last line a crash may tear but never the rest.
void append_durably(const std::string& path, std::string_view bytes);
// fsync of a file or folder by path (errors ignored: some filesystems refuse it for folders).
void fsync_path(const std::string& path);

}  // namespace bupo
