#include "parallel/mpi_comm.hpp"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <climits>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <thread>

#include "core/error.hpp"

namespace bupo {
namespace {
void mpi_check(int rc, const char* call) {
  if (rc == MPI_SUCCESS) return;
  char msg[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(rc, msg, &len);
  fail("MPI: ", call, " failed on ", rank_name(world_rank()), ": ",
       std::string(msg, static_cast<size_t>(len)));
}
// Completes a request by polling with a growing sleep: spinning for the first 50 µs keeps the
// latency of a dedicated core, sleeping afterwards leaves an oversubscribed core (laptop, CI, a
// pipeline stage waiting out its bubble) to the ranks that compute.
int env_int(const char* name, int dflt) {
  const char* e = std::getenv(name);
  return e ? std::atoi(e) : dflt;
}
void wait_for(MPI_Request& req, MPI_Status* st, const char* call) {
  static const double spin_s = env_int("BUPO_COMM_SPIN_US", 50) * 1e-6;
  static const int max_sleep_us = env_int("BUPO_COMM_MAX_SLEEP_US", 500);
  int done = 0;
  const double t0 = MPI_Wtime();
  int sleep_us = 5;
  for (;;) {
    const int rc = MPI_Test(&req, &done, st);
    if (rc != MPI_SUCCESS) mpi_check(rc, call);
    if (done) return;
    if (MPI_Wtime() - t0 < spin_s) continue;
    if (max_sleep_us <= 0) {
      std::this_thread::yield();
      continue;
    }
    std::this_thread::sleep_for(std::chrono::microseconds(sleep_us));
    sleep_us = std::min(sleep_us * 2, max_sleep_us);
  }
}
int count_of(size_t n) {
  BUPO_CHECK(n <= static_cast<size_t>(INT_MAX), "MPI: message of ", n, " elements exceeds INT_MAX");
  return static_cast<int>(n);
}

bool g_session = false;
std::vector<std::string> g_hosts;
int g_world_rank = 0, g_world_size = 1;

std::atomic<int> g_stop_signal{0};  // lock-free: stored from a signal handler
static_assert(std::atomic<int>::is_always_lock_free);

// ---------------------------------------------------------------------------- the watchdog
// One thread per process; a blocking operation registers itself (CommGuard) and the thread ends
// the process when it is still inside after the timeout. The launcher (mpirun, srun
// --kill-on-bad-exit) then ends every other rank. The thread never calls MPI (the library is
// initialised MPI_THREAD_FUNNELED), it only prints and exits.
class Watchdog {
 public:
  static Watchdog& get() {
    static Watchdog w;
    return w;
  }
  // The description is formatted only when the timeout fires (the operation is still inside).
  void enter(const Comm* c, CommOp op, size_t bytes, int peer) {
    std::lock_guard<std::mutex> lk(mu_);
    if (!thread_.joinable()) thread_ = std::thread([this] { loop(); });
    comm_ = c;
    op_ = op;
    bytes_ = bytes;
    peer_ = peer;
    since_ = std::chrono::steady_clock::now();
    active_ = true;
  }
  void leave() {
    std::lock_guard<std::mutex> lk(mu_);
    active_ = false;
  }
  std::atomic<double> timeout_s{600.0};
  std::atomic<double> stop_grace_s{10.0};
  ~Watchdog() {
    {
      std::lock_guard<std::mutex> lk(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    if (thread_.joinable()) thread_.join();
  }

 private:
  Watchdog() {
    if (const char* e = std::getenv("BUPO_COMM_TIMEOUT")) timeout_s = std::atof(e);
  }
  void loop() {
    std::unique_lock<std::mutex> lk(mu_);
    while (!stop_) {
      const double t = timeout_s.load(), grace = stop_grace_s.load();
      const double tick = std::min(t > 0 ? t / 20.0 : 1.0, grace > 0 ? grace / 10.0 : 1.0);
      cv_.wait_for(lk, std::chrono::duration<double>(std::clamp(tick, 0.02, 1.0)));
      if (stop_) continue;
      const auto now = std::chrono::steady_clock::now();
      const int sig = g_stop_signal.load();
      if (sig == 0) {
        stop_seen_ = false;  // none yet, or cleared by note_stop_signal(0)
      } else if (!stop_seen_) {
        stop_seen_ = true;
        stop_at_ = now;
      }
      if (!active_) continue;
      const double waited = std::chrono::duration<double>(now - since_).count();
      if (t > 0 && waited >= t) {
        std::fprintf(stderr,
                     "bupo: %s: %s did not complete within %.3g s (parallel.timeout_s): a peer "
                     "rank died or hangs; ending the job\n",
                     rank_name(g_world_rank).c_str(), describe().c_str(), t);
        std::fflush(stderr);
        std::_Exit(kExitCommTimeout);
      }
      // blocked since the signal (or since entering, when that came later)
      const double blocked =
          std::chrono::duration<double>(now - std::max(since_, stop_at_)).count();
      if (stop_seen_ && grace > 0 && blocked >= grace) {
        std::fprintf(stderr,
                     "bupo: %s: signal %d received, and %s has been blocked for %.3g s since "
                     "(parallel.stop_grace_s): a peer rank died or hangs, so no checkpoint can be "
                     "written; ending now (the newest complete checkpoint resumes)\n",
                     rank_name(g_world_rank).c_str(), sig, describe().c_str(), blocked);
        std::fflush(stderr);
        std::_Exit(128 + sig);
      }
    }
  }
  std::mutex mu_;
  std::condition_variable cv_;
  std::thread thread_;
  bool active_ = false, stop_ = false, stop_seen_ = false;
  std::chrono::steady_clock::time_point stop_at_;
  const Comm* comm_ = nullptr;
  CommOp op_ = CommOp::Barrier;
  size_t bytes_ = 0;
  int peer_ = -1;
  std::chrono::steady_clock::time_point since_;
  std::string describe() const {
    std::string w = comm_op_name(op_);
    w += " of " + std::to_string(bytes_) + " B on group '" + comm_->name() + "' (world ranks";
    for (int r = 0; r < comm_->size(); ++r) {
      w += r ? "," : " ";
      w += std::to_string(comm_->world_rank_of(r));
    }
    w += ")";
    if (peer_ >= 0) {
      w += op_ == CommOp::Recv ? " from " : " to ";
      w += rank_name(comm_->world_rank_of(peer_));
    }
    return w;
  }
};
}  // namespace

bool launched_by_mpi() {
  for (const char* v : {"OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_RANK", "PMI_SIZE",
                        "MPI_LOCALNRANKS", "MV2_COMM_WORLD_SIZE"})
    if (std::getenv(v)) return true;
  return false;
}

std::string rank_name(int r) {
  std::string s = "rank " + std::to_string(r);
  if (r >= 0 && static_cast<size_t>(r) < g_hosts.size())
    s += " (host " + g_hosts[static_cast<size_t>(r)] + ")";
  return s;
}
int world_rank() {
  return g_world_rank;
}
int world_size() {
  return g_world_size;
}

void note_stop_signal(int sig) {
  g_stop_signal.store(sig);
}
void set_stop_grace(double seconds) {
  Watchdog::get().stop_grace_s = seconds;
}

void set_comm_timeout(double seconds) {
  Watchdog::get().timeout_s = seconds;
}
double comm_timeout() {
  return Watchdog::get().timeout_s.load();
}

CommGuard::CommGuard(const Comm& c, CommOp op, size_t bytes, int peer) {
  Watchdog::get().enter(&c, op, bytes, peer);
}
CommGuard::~CommGuard() {
  Watchdog::get().leave();
}

MpiSession::MpiSession(int* argc, char*** argv) {
  int provided = 0, inited = 0;
  MPI_Initialized(&inited);
  if (!inited)
    mpi_check(MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided), "MPI_Init_thread");
  MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
  MPI_Comm_rank(MPI_COMM_WORLD, &g_world_rank);
  MPI_Comm_size(MPI_COMM_WORLD, &g_world_size);
  char name[MPI_MAX_PROCESSOR_NAME] = {};
  int len = 0;
  MPI_Get_processor_name(name, &len);
  constexpr int kW = 64;
  std::vector<char> mine(kW, 0), all(static_cast<size_t>(kW * g_world_size));
  std::memcpy(mine.data(), name, static_cast<size_t>(std::min(len, kW - 1)));
  mpi_check(MPI_Allgather(mine.data(), kW, MPI_CHAR, all.data(), kW, MPI_CHAR, MPI_COMM_WORLD),
            "MPI_Allgather(host names)");
  g_hosts.clear();
  for (int r = 0; r < g_world_size; ++r) g_hosts.emplace_back(all.data() + r * kW);
  g_session = true;
}
MpiSession::~MpiSession() {
  g_session = false;
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized) MPI_Finalize();
}
bool MpiSession::active() {
  return g_session;
}
void MpiSession::abort_job(int code) {
  std::fflush(stderr);
  std::fflush(stdout);
  if (g_session && g_world_size > 1) MPI_Abort(MPI_COMM_WORLD, code);
  std::_Exit(code);
}

// ---------------------------------------------------------------------------- MpiComm
MpiComm::MpiComm(MPI_Comm comm, std::string name) {
  mpi_check(MPI_Comm_dup(comm, &comm_), "MPI_Comm_dup");
  MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN);
  MPI_Comm_rank(comm_, &rank_);
  MPI_Comm_size(comm_, &size_);
  name_ = std::move(name);
  MPI_Group g, wg;
  MPI_Comm_group(comm_, &g);
  MPI_Comm_group(MPI_COMM_WORLD, &wg);
  std::vector<int> mine(static_cast<size_t>(size_));
  for (int i = 0; i < size_; ++i) mine[static_cast<size_t>(i)] = i;
  world_ranks_.resize(static_cast<size_t>(size_));
  MPI_Group_translate_ranks(g, size_, mine.data(), wg, world_ranks_.data());
  MPI_Group_free(&g);
  MPI_Group_free(&wg);
}
MpiComm::~MpiComm() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (finalized || comm_ == MPI_COMM_NULL) return;
  try {
    wait_sends();
  } catch (...) {
  }
  MPI_Comm_free(&comm_);
}
void MpiComm::allreduce(void* buf, size_t n, MPI_Datatype type, size_t elem, MPI_Op op) {
  count(CommOp::AllReduce, n * elem);
  CommGuard g(*this, CommOp::AllReduce, n * elem);
  MPI_Request r;
  mpi_check(MPI_Iallreduce(MPI_IN_PLACE, buf, count_of(n), type, op, comm_, &r), "MPI_Iallreduce");
  wait_for(r, MPI_STATUS_IGNORE, "MPI_Iallreduce");
}
void MpiComm::allreduce_sum(float* buf, size_t n) {
  allreduce(buf, n, MPI_FLOAT, sizeof(float), MPI_SUM);
}
void MpiComm::allreduce_max(float* buf, size_t n) {
  allreduce(buf, n, MPI_FLOAT, sizeof(float), MPI_MAX);
}
void MpiComm::allreduce_sum(double* buf, size_t n) {
  allreduce(buf, n, MPI_DOUBLE, sizeof(double), MPI_SUM);
}
void MpiComm::broadcast(void* buf, size_t bytes, int root) {
  count(CommOp::Broadcast, bytes);
  CommGuard g(*this, CommOp::Broadcast, bytes);
  MPI_Request r;
  mpi_check(MPI_Ibcast(buf, count_of(bytes), MPI_BYTE, root, comm_, &r), "MPI_Ibcast");
  wait_for(r, MPI_STATUS_IGNORE, "MPI_Ibcast");
}
void MpiComm::allgather(const float* in, float* out, size_t n) {
  count(CommOp::AllGather, n * sizeof(float));
  CommGuard g(*this, CommOp::AllGather, n * sizeof(float));
  MPI_Request r;
  mpi_check(MPI_Iallgather(in, count_of(n), MPI_FLOAT, out, count_of(n), MPI_FLOAT, comm_, &r),
            "MPI_Iallgather");
  wait_for(r, MPI_STATUS_IGNORE, "MPI_Iallgather");
}
void MpiComm::reduce_scatter_sum(const float* in, float* out, size_t n) {
  count(CommOp::ReduceScatter, n * static_cast<size_t>(size_) * sizeof(float));
  CommGuard g(*this, CommOp::ReduceScatter, n * static_cast<size_t>(size_) * sizeof(float));
  MPI_Request r;
  mpi_check(MPI_Ireduce_scatter_block(in, out, count_of(n), MPI_FLOAT, MPI_SUM, comm_, &r),
            "MPI_Ireduce_scatter_block");
  wait_for(r, MPI_STATUS_IGNORE, "MPI_Ireduce_scatter_block");
}
void MpiComm::reap_sends() {
  while (!sends_.empty()) {
    int done = 0;
    mpi_check(MPI_Test(&sends_.front().req, &done, MPI_STATUS_IGNORE), "MPI_Test(send)");
    if (!done) break;
    sends_.pop_front();
  }
}
void MpiComm::send(const float* buf, size_t n, int peer) {
  count(CommOp::Send, n * sizeof(float));
  reap_sends();
  sends_.emplace_back();
  Pending& p = sends_.back();
  p.buf.assign(buf, buf + n);
  mpi_check(MPI_Isend(p.buf.data(), count_of(n), MPI_FLOAT, peer, 0, comm_, &p.req), "MPI_Isend");
}
void MpiComm::recv(float* buf, size_t n, int peer) {
  count(CommOp::Recv, n * sizeof(float));
  reap_sends();
  CommGuard g(*this, CommOp::Recv, n * sizeof(float), peer);
  MPI_Status st;
  const double t0 = MPI_Wtime();
  MPI_Request r;
  mpi_check(MPI_Irecv(buf, count_of(n), MPI_FLOAT, peer, 0, comm_, &r), "MPI_Irecv");
  wait_for(r, &st, "MPI_Irecv");
  add_wait(MPI_Wtime() - t0);
  int got = 0;
  MPI_Get_count(&st, MPI_FLOAT, &got);
  BUPO_CHECK(static_cast<size_t>(got) == n, "pipeline: ", rank_name(world_rank()), " expected ", n,
             " floats from ", rank_name(world_rank_of(peer)), ", got ", got,
             " (the stages disagree about the micro-batch)");
}
void MpiComm::wait_sends() {
  if (sends_.empty()) return;
  CommGuard g(*this, CommOp::Send, 0);
  for (auto& p : sends_) wait_for(p.req, MPI_STATUS_IGNORE, "MPI_Isend");
  sends_.clear();
}
void MpiComm::barrier() {
  count(CommOp::Barrier, 0);
  wait_sends();
  CommGuard g(*this, CommOp::Barrier, 0);
  MPI_Request r;
  mpi_check(MPI_Ibarrier(comm_, &r), "MPI_Ibarrier");
  wait_for(r, MPI_STATUS_IGNORE, "MPI_Ibarrier");
}
std::shared_ptr<Comm> MpiComm::split(int color, int key) {
  MPI_Comm c = MPI_COMM_NULL;
  mpi_check(MPI_Comm_split(comm_, color, key, &c), "MPI_Comm_split");
  auto out = std::make_shared<MpiComm>(c, name_ + ".split");
  MPI_Comm_free(&c);
  return out;
}

}  // namespace bupo
