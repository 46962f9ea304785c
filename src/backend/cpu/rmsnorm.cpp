#include "backend/cpu/rmsnorm.hpp"

#include <cmath>

namespace bupo::cpu {

void rmsnorm_forward(float* y, float* rstd, const float* x, const float* w, int64_t R, int64_t C,
                     float eps) {
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < R; ++r) {
    const float* xr = x + r * C;
    double ss = 0.0;
    for (int64_t c = 0; c < C; ++c) ss += static_cast<double>(xr[c]) * xr[c];
    const float s = 1.0f / std::sqrt(static_cast<float>(ss / static_cast<double>(C)) + eps);
    if (rstd != nullptr) rstd[r] = s;
    float* yr = y + r * C;
    for (int64_t c = 0; c < C; ++c) yr[c] = w[c] * (xr[c] * s);
  }
}

void rmsnorm_backward(float* dx, float* dw, const float* dy, const float* x, const float* w,
                      const float* rstd, int64_t R, int64_t C, bool accumulate_dx) {
  if (dx != nullptr) {
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < R; ++r) {
      const float* xr = x + r * C;
      const float* gr = dy + r * C;
      const float s = rstd[r];
      double dot = 0.0;  // Σ_c (dy·w)·x̂
      for (int64_t c = 0; c < C; ++c) dot += static_cast<double>(gr[c]) * w[c] * (xr[c] * s);
      const float m = static_cast<float>(dot / static_cast<double>(C));
      float* dr = dx + r * C;
      for (int64_t c = 0; c < C; ++c) {
        const float v = s * (gr[c] * w[c] - xr[c] * s * m);
        dr[c] = accumulate_dx ? dr[c] + v : v;
      }
    }
  }
  if (dw != nullptr) {
#pragma omp parallel for schedule(static)
    for (int64_t c = 0; c < C; ++c) {
      double acc = 0.0;
      for (int64_t r = 0; r < R; ++r)
        acc += static_cast<double>(dy[r * C + c]) * (x[r * C + c] * rstd[r]);
      dw[c] += static_cast<float>(acc);
    }
  }
}

}  // namespace bupo::cpu
