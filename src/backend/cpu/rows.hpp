// Row movement (CPU reference): gathering rows, scattering gradients back, filling a KV cache.
#pragma once
#include <cstdint>

namespace bupo::cpu {

// out (R, C) = x[rows[r]]
void gather_rows(float* out, const float* x, const int32_t* rows, int64_t R, int64_t C);
// dx (·, C) += src (R, C) at rows, in order r = 0..R-1 for every element (deterministic).
void scatter_add_rows(float* dx, const int32_t* rows, const float* src, int64_t R, int64_t C);
// out (R, 3) = [a·b, a·a, b·b] per row, summed in fp64 in column order.
void row_dots(double* out, const float* a, const float* b, int64_t R, int64_t C);
// Cache rows (slot·max_len + pos[n]) of kc, vc (·, width) = k, v rows n of sequence s
// (cu (S+1), slots (S)).
void kv_append(float* kc, float* vc, const float* k, const float* v, int64_t width, int64_t max_len,
               const int64_t* cu, int64_t S, const int32_t* pos, const int64_t* slots);

}  // namespace bupo::cpu
