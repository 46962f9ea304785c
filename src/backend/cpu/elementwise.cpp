#include "backend/cpu/elementwise.hpp"

#include <cmath>

namespace bupo::cpu {

void add(float* y, const float* a, const float* b, int64_t n) {
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) y[i] = a[i] + b[i];
}

void scale(float* x, float c, int64_t n) {
  for (int64_t i = 0; i < n; ++i) x[i] *= c;
}

double sum_squares(const float* x, int64_t n) {
  double s = 0.0;
  for (int64_t i = 0; i < n; ++i) s += static_cast<double>(x[i]) * x[i];
  return s;
}

void adamw_update(float* w, const float* g, float* m, float* v, int64_t n, float step_size,
                  float bc2_sqrt, float decay, float b1, float b2, float eps) {
#pragma omp parallel for simd schedule(static)
  for (int64_t j = 0; j < n; ++j) {
    w[j] *= decay;
    m[j] = b1 * m[j] + (1.0f - b1) * g[j];
    v[j] = b2 * v[j] + (1.0f - b2) * g[j] * g[j];
    w[j] -= step_size * m[j] / (std::sqrt(v[j]) / bc2_sqrt + eps);
  }
}

}  // namespace bupo::cpu
