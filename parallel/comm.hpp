// Communicator interface: the collectives and point-to-point transfers the model needs, each one
// counted (calls, bytes) for scaling studies. Backends: SelfComm (a group of one: collectives are
// the identity), MpiComm (CPU tensors over an MPI communicator) and NcclComm (GPU tensors,
// src/kernels/cuda/nccl_comm.hpp). Pointers are host memory for MPI, device memory for NCCL.
//
// Semantics every backend keeps:
//   send()  never blocks: the payload is copied (or enqueued on a stream) and delivered in order;
//           any schedule in which every stage handles micro-batches in the same order is
//           deadlock-free (the 1F1B pipeline relies on it).
//   recv()  blocks until the matching send arrived.
//   A collective or recv that does not complete within the group's timeout ends the whole job
//   with a message naming this rank, its host, the operation, the group and its ranks.
#pragma once
#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "io/dtype.hpp"

namespace bupo {

class Backend;

enum class CommOp : int {
  AllReduce = 0,
  AllGather,
  ReduceScatter,
  Broadcast,
  Send,
  Recv,
  Barrier,
  kCount
};
const char* comm_op_name(CommOp op);

struct CommCount {
  uint64_t calls = 0;
  uint64_t bytes = 0;  // payload bytes handed to the operation by this rank
};

struct CommStats {
  std::array<CommCount, static_cast<size_t>(CommOp::kCount)> by_op{};
  double recv_wait_s = 0;  // time blocked in recv (the pipeline bubble, seen from this rank)
  uint64_t calls() const;
  uint64_t bytes() const;
  const CommCount& operator[](CommOp op) const { return by_op[static_cast<size_t>(op)]; }
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
  // out (n) = this rank's n-slice of the sum over ranks of in (size()·n)
  virtual void reduce_scatter_sum(const float* in, float* out, size_t n) = 0;
  virtual void send(const float* buf, size_t n, int peer) = 0;
  virtual void recv(float* buf, size_t n, int peer) = 0;
  virtual void barrier() = 0;
  // The same transfers for any dtype the communicator's memory holds (tensors of the compute
  // dtype: BF16 on CUDA). Defaults: F32 (and F64 for the sum) go to the typed methods above;
  // another dtype is an error naming the communicator.
  virtual void allreduce_sum_dtype(void* buf, size_t n, DType t);
  virtual void allgather_dtype(const void* in, void* out, size_t n, DType t);
  virtual void send_dtype(const void* buf, size_t n, DType t, int peer);
  virtual void recv_dtype(void* buf, size_t n, DType t, int peer);
  // A sub-group of the ranks with the same color, ordered by key (collective over this group).
  virtual std::shared_ptr<Comm> split(int color, int key) = 0;
  // The world rank of group rank r (for messages).
  virtual int world_rank_of(int r) const = 0;

  const CommStats& stats() const { return stats_; }
  const std::string& name() const { return name_; }
  void set_name(std::string n) { name_ = std::move(n); }

 protected:
  void add_wait(double s) { stats_.recv_wait_s += s; }
  void count(CommOp op, size_t bytes) {
    auto& c = stats_.by_op[static_cast<size_t>(op)];
    c.calls += 1;
    c.bytes += bytes;
  }
  CommStats stats_;
  std::string name_ = "comm";
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
  void reduce_scatter_sum(const float* in, float* out, size_t n) override;
  void send(const float*, size_t, int peer) override;
  void recv(float*, size_t, int peer) override;
  void barrier() override {}
  std::shared_ptr<Comm> split(int, int) override { return std::make_shared<SelfComm>(); }
  int world_rank_of(int) const override { return 0; }
};

// The explicit parallel context every layer receives (no global communicators). Ranks are laid
// out as in Megatron-LM: world rank = tp_rank + tp·(dp_rank + dp·pp_rank) — TP neighbours are
// adjacent, then DP, then PP. On one process every group has size 1 and the single-rank path is
// the parallel path.
//
// Which communicator for which memory: `tp, pp, dp, world` move host data (MPI, or SelfComm on one
// process) — metrics, rollouts, flags, checkpoint gathers. `dev` holds the same groups for tensors
// in the model's backend memory (activations, gradients, lens statistics): the host groups
// themselves on the CPU backend, NCCL communicators on CUDA (Backend::device_comm,
// with_device_comms below). Counting tools sum both when they differ.
struct ParallelContext {
  std::shared_ptr<Comm> tp, pp, dp, world;
  struct DeviceGroups {
    std::shared_ptr<Comm> tp, pp, dp;
  } dev;
  // Pipeline stage s owns layers stage_begin[s] .. stage_begin[s+1]-1 (1-based); empty: every
  // layer on the one stage.
  std::vector<int> stage_begin;
  static ParallelContext single();
  // This context with `dev` made for a backend's memory (collective over every group).
  ParallelContext with_device_comms(Backend& be, double timeout_s) const;
  bool device_groups_are_host() const { return dev.tp == tp && dev.pp == pp && dev.dp == dp; }
  int tp_rank() const { return tp->rank(); }
  int tp_size() const { return tp->size(); }
  int pp_rank() const { return pp->rank(); }
  int pp_size() const { return pp->size(); }
  int dp_rank() const { return dp->rank(); }
  int dp_size() const { return dp->size(); }
  bool first_stage() const { return pp->rank() == 0; }
  bool last_stage() const { return pp->rank() == pp->size() - 1; }
  // First and last layer (1-based, inclusive) of pipeline stage s of a model with L layers.
  int stage_lo(int s, int L) const;
  int stage_hi(int s, int L) const;
  int stage_of_layer(int l, int L) const;  // layer 0 (the embedding) is on stage 0
};

}  // namespace bupo
