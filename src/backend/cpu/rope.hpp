// Rotary position embedding, HF "rotate_half" convention: the head vector is split into halves
// [x1, x2] and rotated as (x1·cos − x2·sin, x2·cos + x1·sin) with frequencies inv_freq[i]
// (model/rope_frequencies.hpp computes them, with Llama-3 scaling).
#pragma once
#include <cstdint>
#include <vector>

namespace bupo::cpu {

// cos/sin (N, half) for positions pos (N): angle = pos·inv_freq in fp32 as HF, cos/sin in fp64.
void rope_tables(float* cos, float* sin, const int32_t* pos, int64_t N, const float* inv_freq,
                 int64_t half);
// x (N, H, D) rotated in place; inverse: the transposed rotation (the backward of the forward).
void rope_rotate(float* x, const float* cos, const float* sin, int64_t N, int64_t H, int64_t D,
                 bool inverse);

// The tables for a batch of positions, owned (tests and standalone use).
struct RopeCache {
  int64_t half = 0;
  std::vector<float> cos, sin;
  void build(const int32_t* pos, int64_t N, const std::vector<float>& inv_freq);
};
void rope_forward(float* x, const RopeCache& rc, int64_t N, int64_t H, int64_t D);
void rope_backward(float* dx, const RopeCache& rc, int64_t N, int64_t H, int64_t D);

}  // namespace bupo::cpu
