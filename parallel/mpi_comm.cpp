#include "parallel/mpi_comm.hpp"

#include <climits>

#include "core/error.hpp"

namespace bupo {
namespace {
void mpi_check(int rc, const char* call) {
  if (rc == MPI_SUCCESS) return;
  char msg[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(rc, msg, &len);
  fail("MPI: ", call, " failed: ", std::string(msg, static_cast<size_t>(len)));
}
int count_of(size_t n) {
  BUPO_CHECK(n <= static_cast<size_t>(INT_MAX), "MPI: message of ", n, " elements exceeds INT_MAX");
  return static_cast<int>(n);
}
}  // namespace

MpiSession::MpiSession(int* argc, char*** argv) {
  int provided = 0;
  mpi_check(MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided), "MPI_Init_thread");
  MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
}
MpiSession::~MpiSession() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized) MPI_Finalize();
}

MpiComm::MpiComm(MPI_Comm comm) {
  mpi_check(MPI_Comm_dup(comm, &comm_), "MPI_Comm_dup");
  MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN);
  MPI_Comm_rank(comm_, &rank_);
  MPI_Comm_size(comm_, &size_);
}
MpiComm::~MpiComm() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized && comm_ != MPI_COMM_NULL) MPI_Comm_free(&comm_);
}
void MpiComm::allreduce_sum(float* buf, size_t n) {
  count(n * sizeof(float));
  mpi_check(MPI_Allreduce(MPI_IN_PLACE, buf, count_of(n), MPI_FLOAT, MPI_SUM, comm_),
            "MPI_Allreduce(sum)");
}
void MpiComm::allreduce_max(float* buf, size_t n) {
  count(n * sizeof(float));
  mpi_check(MPI_Allreduce(MPI_IN_PLACE, buf, count_of(n), MPI_FLOAT, MPI_MAX, comm_),
            "MPI_Allreduce(max)");
}
void MpiComm::allreduce_sum(double* buf, size_t n) {
  count(n * sizeof(double));
  mpi_check(MPI_Allreduce(MPI_IN_PLACE, buf, count_of(n), MPI_DOUBLE, MPI_SUM, comm_),
            "MPI_Allreduce(sum)");
}
void MpiComm::broadcast(void* buf, size_t bytes, int root) {
  count(bytes);
  mpi_check(MPI_Bcast(buf, count_of(bytes), MPI_BYTE, root, comm_), "MPI_Bcast");
}
void MpiComm::allgather(const float* in, float* out, size_t n) {
  count(n * sizeof(float));
  mpi_check(MPI_Allgather(in, count_of(n), MPI_FLOAT, out, count_of(n), MPI_FLOAT, comm_),
            "MPI_Allgather");
}
void MpiComm::barrier() {
  mpi_check(MPI_Barrier(comm_), "MPI_Barrier");
}

}  // namespace bupo
