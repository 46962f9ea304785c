#include "io/folder_lock.hpp"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>

#include "core/error.hpp"

namespace bupo {

namespace fs = std::filesystem;

FolderLock FolderLock::acquire(const std::string& folder, const std::string& what) {
  FolderLock l;
  std::error_code ec;
  BUPO_CHECK(!fs::exists(folder, ec) || fs::is_directory(folder, ec), folder,
             ": exists and is not a folder (", what, " needs a folder here)");
  fs::create_directories(folder, ec);
  BUPO_CHECK(!ec, folder, ": cannot create the folder: ", ec.message());
  if (const char* e = std::getenv("BUPO_FOLDER_LOCK"); e && std::string(e) == "off") return l;
  const std::string path = (fs::path(folder) / ".bupo.lock").string();
  const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  BUPO_CHECK(fd >= 0, path, ": cannot open the lock file: ", std::strerror(errno));
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    const int err = errno;
    std::string owner(256, '\0');
    const ssize_t n = ::pread(fd, owner.data(), owner.size() - 1, 0);
    owner.resize(n > 0 ? static_cast<size_t>(n) : 0);
    while (!owner.empty() && (owner.back() == '\n' || owner.back() == '\0')) owner.pop_back();
    ::close(fd);
    if (err == EWOULDBLOCK)
      fail(folder, ": in use by another live process (", owner.empty() ? "unknown" : owner, "); ",
           what,
           " does not touch a folder another process owns — wait for it, stop it, "
           "or choose another folder");
    fail(path, ": flock failed: ", std::strerror(err),
         " (on Lustre mount the client with -o flock; BUPO_FOLDER_LOCK=off skips the lock)");
  }
  char host[256] = {0};
  ::gethostname(host, sizeof host - 1);
  const std::string me =
      std::string(host) + " pid " + std::to_string(::getpid()) + " (" + what + ")\n";
  // the owner line for whoever is refused next; the lock itself does not depend on it
  if (::ftruncate(fd, 0) == 0) {
    const ssize_t w = ::pwrite(fd, me.data(), me.size(), 0);
    (void)w;
  }
  l.fd_ = fd;
  return l;
}

FolderLock::~FolderLock() {
  if (fd_ >= 0) ::close(fd_);  // releases the flock
}
FolderLock::FolderLock(FolderLock&& o) noexcept : fd_(o.fd_) {
  o.fd_ = -1;
}
FolderLock& FolderLock::operator=(FolderLock&& o) noexcept {
  if (this != &o) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = o.fd_;
    o.fd_ = -1;
  }
  return *this;
}

}  // namespace bupo
