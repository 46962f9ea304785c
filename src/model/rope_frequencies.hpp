// The inverse frequencies of rotary position embeddings, as HF computes them, with Llama-3's
// `rope_scaling` (rope_type = "llama3"). Host math of the model's configuration; the rotation
// itself is a backend op (Backend::rope_forward).
#pragma once
#include <cstdint>
#include <vector>

namespace bupo {

struct RopeScaling {  // factor <= 0 means none
  double factor = 0.0;
  double low_freq_factor = 1.0;
  double high_freq_factor = 4.0;
  double original_max_position_embeddings = 8192.0;
};

// inv_freq (head_dim/2) in fp32, with the Llama-3 smoothing when scaling is set.
std::vector<float> rope_inv_freq(int64_t head_dim, double theta, const RopeScaling& scaling);

}  // namespace bupo
