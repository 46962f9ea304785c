// Launchers of this backend's hand-written kernels (plain C++ declarations, callable from .cpp).
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

namespace bupo::cuda {

// y (R, C) = w ⊙ x / sqrt(mean(x²) + eps); rstd (R) may be null.
void launch_rmsnorm_forward(float* y, float* rstd, const float* x, const float* w, int64_t R,
                            int64_t C, float eps, cudaStream_t s);
void launch_fill(float* y, float v, int64_t n, cudaStream_t s);

}  // namespace bupo::cuda
