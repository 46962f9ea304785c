// NCCL backend of Comm for GPU tensors (pointers are device memory). The unique id travels over
// a bootstrap communicator (the MPI group with the same ranks). Communicators are created
// non-blocking (ncclConfig_t.blocking = 0) and every operation is watched: while it has not
// completed the host polls ncclCommGetAsyncError and the stream, and after the group's timeout
// it aborts the communicator (ncclCommAbort) and raises an error naming this rank, its host, the
// operation and the peer — so a dead or hung peer never becomes a silent hang
// (ecosystem.md §4: NCCL's asynchronous error handling, torch's watchdog).
//
// Collectives run on the compute stream; sends and receives on two separate streams, so a send
// that waits for its receiver never blocks a receive queued behind it (the 1F1B pipeline posts
// send-activation and receive-gradient back to back). send() copies the payload into a staging
// buffer and returns at once, like MpiComm's buffered sends; recv() returns when the data is in.
#pragma once
#include <cuda_runtime.h>
#include <nccl.h>

#include <deque>
#include <memory>
#include <string>
#include <vector>

#include "parallel/comm.hpp"

namespace bupo::cuda {

class NcclComm final : public Comm {
 public:
  // Collective over `bootstrap` (every rank calls it); the current CUDA device is used.
  NcclComm(std::shared_ptr<Comm> bootstrap, std::string name, double timeout_s);
  ~NcclComm() override;
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::string backend() const override { return "nccl"; }
  void allreduce_sum(float* buf, size_t n) override;
  void allreduce_max(float* buf, size_t n) override;
  void allreduce_sum(double* buf, size_t n) override;
  void broadcast(void* buf, size_t bytes, int root) override;
  void allgather(const float* in, float* out, size_t n) override;
  void reduce_scatter_sum(const float* in, float* out, size_t n) override;
  void send(const float* buf, size_t n, int peer) override;
  void recv(float* buf, size_t n, int peer) override;
  void barrier() override;
  void allreduce_sum_dtype(void* buf, size_t n, DType t) override;  // F32, BF16, F64
  void allgather_dtype(const void* in, void* out, size_t n, DType t) override;
  void send_dtype(const void* buf, size_t n, DType t, int peer) override;
  void recv_dtype(void* buf, size_t n, DType t, int peer) override;
  // The stream whose queued work writes the buffers (the backend's compute stream): every
  // operation waits for it through an event before NCCL touches the memory.
  void set_producer_stream(cudaStream_t s);
  std::shared_ptr<Comm> split(int color, int key) override;
  int world_rank_of(int r) const override { return world_ranks_.at(static_cast<size_t>(r)); }
  cudaStream_t stream() const { return coll_; }

 private:
  std::shared_ptr<Comm> boot_;
  ncclComm_t comm_ = nullptr;
  cudaStream_t coll_ = nullptr, send_ = nullptr, recv_ = nullptr;
  int rank_ = 0, size_ = 1;
  double timeout_s_ = 600;
  std::vector<int> world_ranks_;
  struct Staged {
    float* buf = nullptr;
    cudaEvent_t done = nullptr;
  };
  std::deque<Staged> staged_;
  cudaStream_t producer_ = nullptr;
  cudaEvent_t ready_ = nullptr;
  void wait_producer(cudaStream_t s);
  // Waits for an enqueue (ncclInProgress) and then for `stream`, watching for errors/timeouts.
  void finish(ncclResult_t enqueue_rc, cudaStream_t stream, CommOp op, size_t bytes, int peer);
  void reap_staged(bool all);
  [[noreturn]] void abort_with(const std::string& why, CommOp op, size_t bytes, int peer);
};

}  // namespace bupo::cuda
