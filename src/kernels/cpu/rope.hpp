// Rotary position embedding, HF "rotate_half" convention: the head vector is split into halves
// [x1, x2] and rotated as (x1·cos − x2·sin, x2·cos + x1·sin) with frequencies inv_freq[i].
#pragma once
#include <cstdint>
#include <vector>

namespace bupo::cpu {

struct RopeScaling {  // Llama-3 `rope_scaling` (rope_type = "llama3"); factor <= 0 means none
  double factor = 0.0;
  double low_freq_factor = 1.0;
  double high_freq_factor = 4.0;
  double original_max_position_embeddings = 8192.0;
};

// inv_freq (head_dim/2), as HF computes it (fp32), with the Llama-3 smoothing when scaling is set.
std::vector<float> rope_inv_freq(int64_t head_dim, double theta, const RopeScaling& scaling);

// cos/sin tables for a batch of positions: (N, head_dim/2) each.
struct RopeCache {
  int64_t half = 0;
  std::vector<float> cos, sin;
  void build(const int32_t* pos, int64_t N, const std::vector<float>& inv_freq);
};

// x (N, H, D) rotated in place.  Backward is the inverse rotation: rope_backward(dx) in place.
void rope_forward(float* x, const RopeCache& rc, int64_t N, int64_t H, int64_t D);
void rope_backward(float* dx, const RopeCache& rc, int64_t N, int64_t H, int64_t D);

}  // namespace bupo::cpu
