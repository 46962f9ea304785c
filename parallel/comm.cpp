#include "parallel/comm.hpp"

#include <algorithm>

namespace bupo {

void SelfComm::allgather(const float* in, float* out, size_t n) {
  std::copy(in, in + n, out);
}

ParallelContext ParallelContext::single() {
  ParallelContext pc;
  pc.tp = std::make_shared<SelfComm>();
  pc.pp = std::make_shared<SelfComm>();
  pc.dp = std::make_shared<SelfComm>();
  return pc;
}

}  // namespace bupo
