#include "backend/cpu/rope.hpp"

#include <cmath>

namespace bupo::cpu {

void rope_tables(float* cos, float* sin, const int32_t* pos, int64_t N, const float* inv_freq,
                 int64_t half) {
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
void rotate(float* x, const float* cos, const float* sin, int64_t N, int64_t H, int64_t D) {
  const int64_t half = D / 2;
#pragma omp parallel for schedule(static)
  for (int64_t n = 0; n < N; ++n) {
    const float* c = cos + n * half;
    const float* s = sin + n * half;
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

void rope_rotate(float* x, const float* cos, const float* sin, int64_t N, int64_t H, int64_t D,
                 bool inverse) {
  if (inverse)
    rotate<true>(x, cos, sin, N, H, D);
  else
    rotate<false>(x, cos, sin, N, H, D);
}

void RopeCache::build(const int32_t* pos, int64_t N, const std::vector<float>& inv_freq) {
  half = static_cast<int64_t>(inv_freq.size());
  cos.resize(static_cast<size_t>(N * half));
  sin.resize(static_cast<size_t>(N * half));
  rope_tables(cos.data(), sin.data(), pos, N, inv_freq.data(), half);
}
void rope_forward(float* x, const RopeCache& rc, int64_t N, int64_t H, int64_t D) {
  rope_rotate(x, rc.cos.data(), rc.sin.data(), N, H, D, false);
}
void rope_backward(float* dx, const RopeCache& rc, int64_t N, int64_t H, int64_t D) {
  rope_rotate(dx, rc.cos.data(), rc.sin.data(), N, H, D, true);
}

}  // namespace bupo::cpu
