// MPI backend of Comm for CPU tensors. The caller owns MPI_Init/MPI_Finalize (see MpiSession).
#pragma once
#include <mpi.h>

#include "parallel/comm.hpp"

namespace bupo {

// RAII MPI_Init_thread / MPI_Finalize; errors from MPI calls become bupo::Error naming the call.
class MpiSession {
 public:
  MpiSession(int* argc, char*** argv);
  ~MpiSession();
  MpiSession(const MpiSession&) = delete;
  MpiSession& operator=(const MpiSession&) = delete;
};

class MpiComm final : public Comm {
 public:
  explicit MpiComm(MPI_Comm comm);  // duplicates comm; freed in the destructor
  ~MpiComm() override;
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::string backend() const override { return "mpi"; }
  void allreduce_sum(float* buf, size_t n) override;
  void allreduce_max(float* buf, size_t n) override;
  void allreduce_sum(double* buf, size_t n) override;
  void broadcast(void* buf, size_t bytes, int root) override;
  void allgather(const float* in, float* out, size_t n) override;
  void barrier() override;
  MPI_Comm handle() const { return comm_; }

 private:
  MPI_Comm comm_ = MPI_COMM_NULL;
  int rank_ = 0, size_ = 1;
};

}  // namespace bupo
