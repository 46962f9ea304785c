#include "backend/cpu/embedding.hpp"

#include <algorithm>

namespace bupo::cpu {

void embedding_forward(float* y, const int32_t* ids, const float* E, int64_t N, int64_t C,
                       int64_t vocab_start, int64_t V_local) {
#pragma omp parallel for schedule(static)
  for (int64_t n = 0; n < N; ++n) {
    const int64_t r = static_cast<int64_t>(ids[n]) - vocab_start;
    float* yr = y + n * C;
    if (r >= 0 && r < V_local)
      std::copy(E + r * C, E + (r + 1) * C, yr);
    else
      std::fill(yr, yr + C, 0.0f);
  }
}

void embedding_backward(float* dE, const int32_t* ids, const float* dy, int64_t N, int64_t C,
                        int64_t vocab_start, int64_t V_local) {
  constexpr int64_t kBlock = 64;
  const int64_t nblocks = (C + kBlock - 1) / kBlock;
#pragma omp parallel for schedule(static)
  for (int64_t b = 0; b < nblocks; ++b) {
    const int64_t c0 = b * kBlock, c1 = std::min(C, c0 + kBlock);
    for (int64_t n = 0; n < N; ++n) {
      const int64_t r = static_cast<int64_t>(ids[n]) - vocab_start;
      if (r < 0 || r >= V_local) continue;
      for (int64_t c = c0; c < c1; ++c) dE[r * C + c] += dy[n * C + c];
    }
  }
}

}  // namespace bupo::cpu
