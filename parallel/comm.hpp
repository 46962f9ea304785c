// Communicator interface: the collectives the model needs, counted for scaling studies.
// Backends: SelfComm (a group of one: every collective is the identity) and MpiComm (CPU tensors
// over an MPI communicator). The NCCL backend for GPU tensors implements the same interface.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

namespace bupo {

struct CommStats {
  uint64_t calls = 0;
  uint64_t bytes = 0;  // payload bytes handed to collectives by this rank
};

class Comm {
 public:
  virtual ~Comm() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  virtual std::string backend() const = 0;
  virtual void allreduce_sum(float* buf, size_t n) = 0;
  virtual void allreduce_max(float* buf, size_t n) = 0;
  virtual void allreduce_sum(double* buf, size_t n) = 0;
  virtual void broadcast(void* buf, size_t bytes, int root) = 0;
  // out (size()·n) = concatenation of every rank's in (n), in rank order
  virtual void allgather(const float* in, float* out, size_t n) = 0;
  virtual void barrier() = 0;
  const CommStats& stats() const { return stats_; }

 protected:
  void count(size_t bytes) {
    stats_.calls += 1;
    stats_.bytes += bytes;
  }
  CommStats stats_;
};

class SelfComm final : public Comm {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  std::string backend() const override { return "self"; }
  void allreduce_sum(float*, size_t) override {}
  void allreduce_max(float*, size_t) override {}
  void allreduce_sum(double*, size_t) override {}
  void broadcast(void*, size_t, int) override {}
  void allgather(const float* in, float* out, size_t n) override;
  void barrier() override {}
};

// The explicit parallel context every layer receives (no global communicators). On one process
// all groups have size 1 and the single-rank path is the parallel path.
struct ParallelContext {
  std::shared_ptr<Comm> tp, pp, dp;
  static ParallelContext single();
  int tp_rank() const { return tp->rank(); }
  int tp_size() const { return tp->size(); }
};

}  // namespace bupo
