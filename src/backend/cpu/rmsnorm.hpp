// RMSNorm as in HF Llama/Qwen: y = w ⊙ x / sqrt(mean(x²) + eps), rows of width C.
#pragma once
#include <cstdint>

namespace bupo::cpu {

// x, y (R, C); w (C); rstd (R) saved for the backward (may be null when not needed).
void rmsnorm_forward(float* y, float* rstd, const float* x, const float* w, int64_t R, int64_t C,
                     float eps);

// dx (R, C) (+)= ∂L/∂x;  dw (C) += Σ_r dy ⊙ x̂  (dw may be null).
void rmsnorm_backward(float* dx, float* dw, const float* dy, const float* x, const float* w,
                      const float* rstd, int64_t R, int64_t C, bool accumulate_dx = false);

}  // namespace bupo::cpu
