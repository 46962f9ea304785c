// Elementwise ops of the residual stream and the optimizer (CPU reference).
#pragma once
#include <cstdint>

namespace bupo::cpu {

void add(float* y, const float* a, const float* b, int64_t n);  // y = a + b
void scale(float* x, float c, int64_t n);                       // x *= c, in order
double sum_squares(const float* x, int64_t n);                  // Σx² in fp64, in order

// torch.optim.AdamW on n elements (decoupled weight decay, bias corrections precomputed):
// w ← w·decay; m ← b1·m + (1−b1)·g; v ← b2·v + (1−b2)·g²; w ← w − step·m/(√v/bc2_sqrt + eps)
void adamw_update(float* w, const float* g, float* m, float* v, int64_t n, float step_size,
                  float bc2_sqrt, float decay, float b1, float b2, float eps);

}  // namespace bupo::cpu
