#include "parallel/comm.hpp"

#include <algorithm>

#include "backend/backend.hpp"
#include "core/error.hpp"

namespace bupo {

const char* comm_op_name(CommOp op) {
  switch (op) {
    case CommOp::AllReduce:
      return "all_reduce";
    case CommOp::AllGather:
      return "all_gather";
    case CommOp::ReduceScatter:
      return "reduce_scatter";
    case CommOp::Broadcast:
      return "broadcast";
    case CommOp::Send:
      return "send";
    case CommOp::Recv:
      return "recv";
    case CommOp::Barrier:
      return "barrier";
    case CommOp::kCount:
      break;
  }
  return "?";
}

uint64_t CommStats::calls() const {
  uint64_t s = 0;
  for (const auto& c : by_op) s += c.calls;
  return s;
}
uint64_t CommStats::bytes() const {
  uint64_t s = 0;
  for (const auto& c : by_op) s += c.bytes;
  return s;
}

namespace {
[[noreturn]] void no_dtype(const Comm& c, const char* op, DType t) {
  fail("communicator '", c.name(), "' (", c.backend(), ") cannot ", op, " ", dtype_name(t),
       " buffers");
}
}  // namespace

void Comm::allreduce_sum_dtype(void* buf, size_t n, DType t) {
  if (t == DType::F32) return allreduce_sum(static_cast<float*>(buf), n);
  if (t == DType::F64) return allreduce_sum(static_cast<double*>(buf), n);
  no_dtype(*this, "all-reduce", t);
}
void Comm::allgather_dtype(const void* in, void* out, size_t n, DType t) {
  if (t == DType::F32) return allgather(static_cast<const float*>(in), static_cast<float*>(out), n);
  no_dtype(*this, "all-gather", t);
}
void Comm::send_dtype(const void* buf, size_t n, DType t, int peer) {
  if (t == DType::F32) return send(static_cast<const float*>(buf), n, peer);
  no_dtype(*this, "send", t);
}
void Comm::recv_dtype(void* buf, size_t n, DType t, int peer) {
  if (t == DType::F32) return recv(static_cast<float*>(buf), n, peer);
  no_dtype(*this, "receive", t);
}

void SelfComm::allgather(const float* in, float* out, size_t n) {
  std::copy(in, in + n, out);
}
void SelfComm::reduce_scatter_sum(const float* in, float* out, size_t n) {
  std::copy(in, in + n, out);
}
void SelfComm::send(const float*, size_t, int peer) {
  fail("SelfComm: send to rank ", peer, " in a group of one");
}
void SelfComm::recv(float*, size_t, int peer) {
  fail("SelfComm: recv from rank ", peer, " in a group of one");
}

ParallelContext ParallelContext::single() {
  ParallelContext pc;
  pc.tp = std::make_shared<SelfComm>();
  pc.pp = std::make_shared<SelfComm>();
  pc.dp = std::make_shared<SelfComm>();
  pc.world = std::make_shared<SelfComm>();
  pc.dev = {pc.tp, pc.pp, pc.dp};
  return pc;
}

ParallelContext ParallelContext::with_device_comms(Backend& be, double timeout_s) const {
  ParallelContext pc = *this;
  if (be.comm_memory() == CommMemory::Host) {
    pc.dev = {tp, pp, dp};
    return pc;
  }
  pc.dev.tp = be.device_comm(tp, timeout_s);
  pc.dev.pp = be.device_comm(pp, timeout_s);
  pc.dev.dp = be.device_comm(dp, timeout_s);
  return pc;
}

int ParallelContext::stage_lo(int s, int /*L*/) const {
  if (stage_begin.empty()) return 1;
  return stage_begin.at(static_cast<size_t>(s));
}
int ParallelContext::stage_hi(int s, int L) const {
  if (stage_begin.empty()) return L;
  return stage_begin.at(static_cast<size_t>(s) + 1) - 1;
}
int ParallelContext::stage_of_layer(int l, int L) const {
  for (int s = 0; s < pp_size(); ++s)
    if (l <= stage_hi(s, L)) return s;
  fail("stage_of_layer: layer ", l, " beyond the last stage (", L, " layers)");
}

}  // namespace bupo
