#include "kernels/cpu/rope.hpp"

#include <cmath>
#include <numbers>

namespace bupo::cpu {

std::vector<float> rope_inv_freq(int64_t head_dim, double theta, const RopeScaling& sc) {
  const int64_t half = head_dim / 2;
  std::vector<float> f(half);
  for (int64_t i = 0; i < half; ++i) {
    // HF: 1.0 / (base ** (arange(0, dim, 2).float() / dim)) evaluated in fp32
    const float expo = static_cast<float>(2 * i) / static_cast<float>(head_dim);
    f[i] =
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

void RopeCache::build(const int32_t* pos, int64_t N, const std::vector<float>& inv_freq) {
  half = static_cast<int64_t>(inv_freq.size());
  cos.resize(N * half);
  sin.resize(N * half);
#pragma omp parallel for schedule(static)
  for (int64_t n = 0; n < N; ++n)
    for (int64_t i = 0; i < half; ++i) {
      const float a = static_cast<float>(pos[n]) * inv_freq[i];  // fp32 product as in HF
      cos[n * half + i] = static_cast<float>(std::cos(static_cast<double>(a)));
      sin[n * half + i] = static_cast<float>(std::sin(static_cast<double>(a)));
    }
}

namespace {
template <bool kInverse>
void rotate(float* x, const RopeCache& rc, int64_t N, int64_t H, int64_t D) {
  const int64_t half = D / 2;
#pragma omp parallel for schedule(static)
  for (int64_t n = 0; n < N; ++n) {
    const float* c = rc.cos.data() + n * half;
    const float* s = rc.sin.data() + n * half;
    for (int64_t h = 0; h < H; ++h) {
      float* v = x + (n * H + h) * D;
      for (int64_t i = 0; i < half; ++i) {
        const float a = v[i], b = v[i + half];
        const float si = kInverse ? -s[i] : s[i];
        v[i] = a * c[i] - b * si;
        v[i + half] = b * c[i] + a * si;
      }
    }
  }
}
}  // namespace

void rope_forward(float* x, const RopeCache& rc, int64_t N, int64_t H, int64_t D) {
  rotate<false>(x, rc, N, H, D);
}
void rope_backward(float* dx, const RopeCache& rc, int64_t N, int64_t H, int64_t D) {
  rotate<true>(dx, rc, N, H, D);
}

}  // namespace bupo::cpu
