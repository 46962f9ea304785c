#include "model/rope_frequencies.hpp"

#include <cmath>
#include <numbers>

namespace bupo {

std::vector<float> rope_inv_freq(int64_t head_dim, double theta, const RopeScaling& sc) {
  const int64_t half = head_dim / 2;
  std::vector<float> f(static_cast<size_t>(half));
  for (int64_t i = 0; i < half; ++i) {
    // HF: 1.0 / (base ** (arange(0, dim, 2).float() / dim)) evaluated in fp32
    const float expo = static_cast<float>(2 * i) / static_cast<float>(head_dim);
    f[static_cast<size_t>(i)] =
        1.0f / static_cast<float>(std::pow(static_cast<double>(static_cast<float>(theta)), expo));
  }
  if (sc.factor > 0.0) {
    const double low_wavelen = sc.original_max_position_embeddings / sc.low_freq_factor;
    const double high_wavelen = sc.original_max_position_embeddings / sc.high_freq_factor;
    for (auto& v : f) {
      const double wavelen = 2.0 * std::numbers::pi / v;
      if (wavelen > low_wavelen) {
        v = static_cast<float>(v / sc.factor);
      } else if (wavelen >= high_wavelen) {  // medium band: smooth interpolation
        const double smooth = (sc.original_max_position_embeddings / wavelen - sc.low_freq_factor) /
                              (sc.high_freq_factor - sc.low_freq_factor);
        v = static_cast<float>((1.0 - smooth) * v / sc.factor + smooth * v);
      }
    }
  }
  return f;
}

}  // namespace bupo
