// MPI backend of Comm for CPU tensors, and the job-wide pieces every backend shares: the MPI
// session, the host of every rank, and the watchdog that ends the job when a collective or a
// receive does not complete in time (a dead or hung peer must never become a silent hang).
#pragma once
#include <mpi.h>

#include <deque>
#include <string>
#include <vector>

#include "parallel/comm.hpp"

namespace bupo {

// Exit status of a rank whose watchdog fired, and of the fault-injected rank death.
constexpr int kExitCommTimeout = 70;

// True when this process was started by an MPI launcher (mpirun/mpiexec, srun --mpi=pmix/pmi2):
// the CLI initialises MPI only then, so a plain `bupo ...` never needs a launcher.
bool launched_by_mpi();

// RAII MPI_Init_thread / MPI_Finalize; errors from MPI calls become bupo::Error naming the call.
// Records the host of every world rank for messages.
class MpiSession {
 public:
  MpiSession(int* argc, char*** argv);
  ~MpiSession();
  MpiSession(const MpiSession&) = delete;
  MpiSession& operator=(const MpiSession&) = delete;
  static bool active();
  // Ends every rank of the job (MPI_Abort) after printing msg; used when one rank fails.
  [[noreturn]] static void abort_job(int code);
};

// "rank R (host H)" for a world rank; the host is known once an MpiSession exists.
std::string rank_name(int world_rank);
int world_rank();
int world_size();

// Collective/receive timeout in seconds (default 600; env BUPO_COMM_TIMEOUT or the config key
// parallel.timeout_s). The watchdog thread starts with the first guarded operation.
void set_comm_timeout(double seconds);
double comm_timeout();

// A stop signal this process received: SIGTERM, SIGINT, or SIGUSR2 (SIGTERM relayed by
// jobs/mpirun.sh). Async-signal-safe (the trainer's handler calls it). The orderly stop finishes
// the step and checkpoints, but a rank blocked in a collective whose peer died never gets there:
// once noted, the watchdog ends a rank that stays blocked in one operation for stop_grace_s
// (parallel.stop_grace_s, default 10 s: below Slurm's default KillWait of 30 s) with exit 128 +
// the signal, naming the rank, the operation and the peer. SIGUSR1 (the advance warning) is not
// noted: after it only the timeout ends a wait.
void note_stop_signal(int sig);       // 0 clears it
void set_stop_grace(double seconds);  // 0: never end a blocked rank early

// Marks this rank as inside a blocking communication for the watchdog.
class CommGuard {
 public:
  CommGuard(const Comm& c, CommOp op, size_t bytes, int peer = -1);
  ~CommGuard();
  CommGuard(const CommGuard&) = delete;
  CommGuard& operator=(const CommGuard&) = delete;
};

class MpiComm final : public Comm {
 public:
  explicit MpiComm(MPI_Comm comm, std::string name = "world");  // duplicates comm
  ~MpiComm() override;
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::string backend() const override { return "mpi"; }
  void allreduce_sum(float* buf, size_t n) override;
  void allreduce_max(float* buf, size_t n) override;
  void allreduce_sum(double* buf, size_t n) override;
  void broadcast(void* buf, size_t bytes, int root) override;
  void allgather(const float* in, float* out, size_t n) override;
  void reduce_scatter_sum(const float* in, float* out, size_t n) override;
  void send(const float* buf, size_t n, int peer) override;
  void recv(float* buf, size_t n, int peer) override;
  void barrier() override;
  std::shared_ptr<Comm> split(int color, int key) override;
  int world_rank_of(int r) const override { return world_ranks_.at(static_cast<size_t>(r)); }
  MPI_Comm handle() const { return comm_; }
  void wait_sends();  // completes every buffered send

 private:
  struct Pending {
    std::vector<float> buf;
    MPI_Request req = MPI_REQUEST_NULL;
  };
  MPI_Comm comm_ = MPI_COMM_NULL;
  int rank_ = 0, size_ = 1;
  std::vector<int> world_ranks_;
  std::deque<Pending> sends_;
  void reap_sends();
  void allreduce(void* buf, size_t n, MPI_Datatype type, size_t elem, MPI_Op op);
};

}  // namespace bupo
