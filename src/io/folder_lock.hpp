// One owner per folder: an exclusive advisory lock (flock(2), LOCK_EX | LOCK_NB) on
// <folder>/.bupo.lock, held from before anything in the folder is touched until the process ends.
// The kernel releases it when the process dies in any way (kill -9 included), so no lock is ever
// stale. The file records the owner ("host pid command"), which a refused process names.
//
// Filesystems: local disks and NFS (Linux emulates flock with NLM/NFSv4 byte-range locks, visible
// to every client) work as they are; Lustre needs the client mount option `flock`
// (cluster-coherent) — with `localflock` the lock holds on one node only, without either flock
// fails with ENOSYS and this is an error saying so. BUPO_FOLDER_LOCK=off skips the lock (at the
// user's risk).
#pragma once
#include <string>

namespace bupo {

class FolderLock {
 public:
  FolderLock() = default;
  // Locks `folder` (created if missing) for `what` (e.g. "bupo train"), or throws naming the owner.
  static FolderLock acquire(const std::string& folder, const std::string& what);
  ~FolderLock();
  FolderLock(FolderLock&& o) noexcept;
  FolderLock& operator=(FolderLock&& o) noexcept;
  FolderLock(const FolderLock&) = delete;
  FolderLock& operator=(const FolderLock&) = delete;
  bool held() const { return fd_ >= 0; }

 private:
  int fd_ = -1;
};

}  // namespace bupo
