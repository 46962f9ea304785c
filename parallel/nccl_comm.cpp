#include "parallel/nccl_comm.hpp"

#include <chrono>
#include <thread>

#include "backend/cuda/cuda_check.cuh"
#include "core/error.hpp"
#include "parallel/mpi_comm.hpp"

namespace bupo::cuda {
namespace {
using Clock = std::chrono::steady_clock;
double since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}
}  // namespace

NcclComm::NcclComm(std::shared_ptr<Comm> bootstrap, std::string name, double timeout_s)
    : boot_(std::move(bootstrap)),
      rank_(boot_->rank()),
      size_(boot_->size()),
      timeout_s_(timeout_s) {
  name_ = std::move(name);
  for (int r = 0; r < size_; ++r) world_ranks_.push_back(boot_->world_rank_of(r));
  ncclUniqueId id{};
  if (rank_ == 0) {
    const ncclResult_t rc = ncclGetUniqueId(&id);
    BUPO_CHECK(rc == ncclSuccess, "NCCL: ncclGetUniqueId failed on ", rank_name(world_rank()), ": ",
               ncclGetErrorString(rc));
  }
  boot_->broadcast(&id, sizeof id, 0);
  CUDA_CHECK(cudaStreamCreateWithFlags(&coll_, cudaStreamNonBlocking));
  CUDA_CHECK(cudaStreamCreateWithFlags(&send_, cudaStreamNonBlocking));
  CUDA_CHECK(cudaStreamCreateWithFlags(&recv_, cudaStreamNonBlocking));
  ncclConfig_t cfg = NCCL_CONFIG_INITIALIZER;
  cfg.blocking = 0;  // non-blocking: init and collectives return ncclInProgress; we poll
  finish(ncclCommInitRankConfig(&comm_, size_, id, rank_, &cfg), nullptr, CommOp::Barrier, 0, -1);
}

NcclComm::~NcclComm() {
  if (!comm_) return;
  reap_staged(true);
  cudaStreamSynchronize(coll_);
  ncclCommFinalize(comm_);
  ncclResult_t st = ncclInProgress;
  const auto t0 = Clock::now();
  while (st == ncclInProgress && since(t0) < timeout_s_) ncclCommGetAsyncError(comm_, &st);
  if (st == ncclSuccess)
    ncclCommDestroy(comm_);
  else
    ncclCommAbort(comm_);
  for (cudaStream_t s : {coll_, send_, recv_}) cudaStreamDestroy(s);
  if (ready_ != nullptr) cudaEventDestroy(ready_);
}

void NcclComm::abort_with(const std::string& why, CommOp op, size_t bytes, int peer) {
  std::string what = std::string(comm_op_name(op)) + " of " + std::to_string(bytes) +
                     " B on NCCL group '" + name_ + "' (world ranks";
  for (int r = 0; r < size_; ++r) {  // (appended piecewise: GCC 12 -Wrestrict misfires on a + b)
    what += r ? "," : " ";
    what += std::to_string(world_ranks_[static_cast<size_t>(r)]);
  }
  what += ")";
  if (peer >= 0) {
    what += op == CommOp::Recv ? " from " : " to ";
    what += rank_name(world_rank_of(peer));
  }
  if (comm_) ncclCommAbort(comm_);  // unblocks every kernel of this communicator
  comm_ = nullptr;
  fail("NCCL on ", rank_name(world_rank()), ": ", what, ": ", why);
}

void NcclComm::finish(ncclResult_t rc, cudaStream_t stream, CommOp op, size_t bytes, int peer) {
  const auto t0 = Clock::now();
  int spins = 0;
  for (;;) {
    ncclResult_t st = rc;
    if (comm_) {
      const ncclResult_t q = ncclCommGetAsyncError(comm_, &st);
      if (q != ncclSuccess) st = q;
    }
    if (st != ncclSuccess && st != ncclInProgress)
      abort_with(ncclGetErrorString(st), op, bytes, peer);
    if (st == ncclSuccess) {
      if (stream == nullptr) return;
      const cudaError_t e = cudaStreamQuery(stream);
      if (e == cudaSuccess) return;
      if (e != cudaErrorNotReady) abort_with(cudaGetErrorString(e), op, bytes, peer);
    }
    rc = ncclSuccess;
    if (timeout_s_ > 0 && since(t0) > timeout_s_)
      abort_with("did not complete within " + std::to_string(timeout_s_) +
                     " s (parallel.timeout_s): a peer rank died or hangs",
                 op, bytes, peer);
    if (++spins > 1000) std::this_thread::sleep_for(std::chrono::microseconds(50));
  }
}

namespace {
ncclDataType_t nccl_type(DType t) {
  switch (t) {
    case DType::F32:
      return ncclFloat32;
    case DType::BF16:
      return ncclBfloat16;
    case DType::F64:
      return ncclFloat64;
    default:
      fail("NCCL: no transfers of ", dtype_name(t), " buffers");
  }
}
}  // namespace

void NcclComm::set_producer_stream(cudaStream_t s) {
  producer_ = s;
  if (producer_ != nullptr && ready_ == nullptr)
    CUDA_CHECK(cudaEventCreateWithFlags(&ready_, cudaEventDisableTiming));
}
// NCCL's streams start after the work the compute stream has queued (its kernels wrote the data).
void NcclComm::wait_producer(cudaStream_t s) {
  if (producer_ == nullptr) return;
  CUDA_CHECK(cudaEventRecord(ready_, producer_));
  CUDA_CHECK(cudaStreamWaitEvent(s, ready_, 0));
}

void NcclComm::allreduce_sum_dtype(void* buf, size_t n, DType t) {
  const size_t bytes = n * dtype_size(t);
  count(CommOp::AllReduce, bytes);
  wait_producer(coll_);
  finish(ncclAllReduce(buf, buf, n, nccl_type(t), ncclSum, comm_, coll_), coll_, CommOp::AllReduce,
         bytes, -1);
}
void NcclComm::allreduce_sum(float* buf, size_t n) {
  allreduce_sum_dtype(buf, n, DType::F32);
}
void NcclComm::allreduce_max(float* buf, size_t n) {
  count(CommOp::AllReduce, n * 4);
  wait_producer(coll_);
  finish(ncclAllReduce(buf, buf, n, ncclFloat32, ncclMax, comm_, coll_), coll_, CommOp::AllReduce,
         n * 4, -1);
}
void NcclComm::allreduce_sum(double* buf, size_t n) {
  allreduce_sum_dtype(buf, n, DType::F64);
}
void NcclComm::broadcast(void* buf, size_t bytes, int root) {
  count(CommOp::Broadcast, bytes);
  wait_producer(coll_);
  finish(ncclBroadcast(buf, buf, bytes, ncclUint8, root, comm_, coll_), coll_, CommOp::Broadcast,
         bytes, -1);
}
void NcclComm::allgather_dtype(const void* in, void* out, size_t n, DType t) {
  const size_t bytes = n * dtype_size(t);
  count(CommOp::AllGather, bytes);
  wait_producer(coll_);
  finish(ncclAllGather(in, out, n, nccl_type(t), comm_, coll_), coll_, CommOp::AllGather, bytes,
         -1);
}
void NcclComm::allgather(const float* in, float* out, size_t n) {
  allgather_dtype(in, out, n, DType::F32);
}
void NcclComm::reduce_scatter_sum(const float* in, float* out, size_t n) {
  count(CommOp::ReduceScatter, n * static_cast<size_t>(size_) * 4);
  wait_producer(coll_);
  finish(ncclReduceScatter(in, out, n, ncclFloat32, ncclSum, comm_, coll_), coll_,
         CommOp::ReduceScatter, n * static_cast<size_t>(size_) * 4, -1);
}
void NcclComm::reap_staged(bool all) {
  while (!staged_.empty()) {
    Staged& s = staged_.front();
    if (all) {
      finish(ncclSuccess, send_, CommOp::Send, 0, -1);
    } else if (cudaEventQuery(s.done) != cudaSuccess) {
      break;
    }
    cudaEventDestroy(s.done);
    cudaFree(s.buf);
    staged_.pop_front();
  }
}
void NcclComm::send_dtype(const void* buf, size_t n, DType t, int peer) {
  const size_t bytes = n * dtype_size(t);
  count(CommOp::Send, bytes);
  reap_staged(false);
  Staged st;
  wait_producer(send_);
  CUDA_CHECK(cudaMallocAsync(reinterpret_cast<void**>(&st.buf), bytes, send_));
  CUDA_CHECK(cudaMemcpyAsync(st.buf, buf, bytes, cudaMemcpyDeviceToDevice, send_));
  ncclResult_t rc = ncclSend(st.buf, n, nccl_type(t), peer, comm_, send_);
  if (rc == ncclInProgress)
    finish(rc, nullptr, CommOp::Send, bytes, peer);  // enqueued only
  else if (rc != ncclSuccess)
    abort_with(ncclGetErrorString(rc), CommOp::Send, bytes, peer);
  CUDA_CHECK(cudaEventCreateWithFlags(&st.done, cudaEventDisableTiming));
  CUDA_CHECK(cudaEventRecord(st.done, send_));
  staged_.push_back(st);
}
void NcclComm::send(const float* buf, size_t n, int peer) {
  send_dtype(buf, n, DType::F32, peer);
}
void NcclComm::recv_dtype(void* buf, size_t n, DType t, int peer) {
  const size_t bytes = n * dtype_size(t);
  count(CommOp::Recv, bytes);
  const auto t0 = Clock::now();
  wait_producer(recv_);  // the buffer may still be read by queued compute work
  finish(ncclRecv(buf, n, nccl_type(t), peer, comm_, recv_), recv_, CommOp::Recv, bytes, peer);
  add_wait(since(t0));
}
void NcclComm::recv(float* buf, size_t n, int peer) {
  recv_dtype(buf, n, DType::F32, peer);
}
void NcclComm::barrier() {
  count(CommOp::Barrier, 0);
  reap_staged(true);
  float* one = nullptr;
  CUDA_CHECK(cudaMallocAsync(reinterpret_cast<void**>(&one), 4, coll_));
  finish(ncclAllReduce(one, one, 1, ncclFloat32, ncclSum, comm_, coll_), coll_, CommOp::Barrier, 0,
         -1);
  CUDA_CHECK(cudaFreeAsync(one, coll_));
}
std::shared_ptr<Comm> NcclComm::split(int color, int key) {
  auto c = std::make_shared<NcclComm>(boot_->split(color, key), name_ + ".split", timeout_s_);
  c->set_producer_stream(producer_);
  return c;
}

}  // namespace bupo::cuda
