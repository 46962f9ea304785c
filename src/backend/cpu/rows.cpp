#include "backend/cpu/rows.hpp"

#include <algorithm>

namespace bupo::cpu {

void gather_rows(float* out, const float* x, const int32_t* rows, int64_t R, int64_t C) {
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < R; ++r)
    std::copy_n(x + static_cast<int64_t>(rows[r]) * C, C, out + r * C);
}

void row_dots(double* out, const float* a, const float* b, int64_t R, int64_t C) {
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < R; ++r) {
    const float *ar = a + r * C, *br = b + r * C;
    double ab = 0, aa = 0, bb = 0;
    for (int64_t c = 0; c < C; ++c) {
      const double x = ar[c], y = br[c];
      ab += x * y;
      aa += x * x;
      bb += y * y;
    }
    out[3 * r] = ab;
    out[3 * r + 1] = aa;
    out[3 * r + 2] = bb;
  }
}

void scatter_add_rows(float* dx, const int32_t* rows, const float* src, int64_t R, int64_t C) {
  // threads own column blocks; each element sums its rows in order
  constexpr int64_t kBlock = 64;
  const int64_t nblocks = (C + kBlock - 1) / kBlock;
#pragma omp parallel for schedule(static)
  for (int64_t b = 0; b < nblocks; ++b) {
    const int64_t c0 = b * kBlock, c1 = std::min(C, c0 + kBlock);
    for (int64_t r = 0; r < R; ++r) {
      float* dst = dx + static_cast<int64_t>(rows[r]) * C;
      const float* s = src + r * C;
      for (int64_t c = c0; c < c1; ++c) dst[c] += s[c];
    }
  }
}

void kv_append(float* kc, float* vc, const float* k, const float* v, int64_t width, int64_t max_len,
               const int64_t* cu, int64_t S, const int32_t* pos, const int64_t* slots) {
  for (int64_t s = 0; s < S; ++s)
    for (int64_t n = cu[s]; n < cu[s + 1]; ++n) {
      const int64_t row = slots[s] * max_len + pos[n];
      std::copy_n(k + n * width, width, kc + row * width);
      std::copy_n(v + n * width, width, vc + row * width);
    }
}

}  // namespace bupo::cpu
