#include "backend/cpu/swiglu.hpp"

#include <cmath>

namespace bupo::cpu {

void swiglu_forward(float* a, const float* g, const float* u, int64_t n) {
#pragma omp parallel for simd schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    const float sg = 1.0f / (1.0f + std::exp(-g[i]));
    a[i] = g[i] * sg * u[i];
  }
}

void swiglu_backward(float* dg, float* du, const float* da, const float* g, const float* u,
                     int64_t n) {
#pragma omp parallel for simd schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    const float sg = 1.0f / (1.0f + std::exp(-g[i]));
    const float silu = g[i] * sg;
    du[i] = da[i] * silu;
    dg[i] = da[i] * u[i] * sg * (1.0f + g[i] * (1.0f - sg));
  }
}

}  // namespace bupo::cpu
