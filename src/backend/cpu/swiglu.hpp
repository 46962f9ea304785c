// SwiGLU activation of the Llama/Qwen MLP: a = silu(g) ⊙ u, with silu(g) = g·σ(g).
#pragma once
#include <cstdint>

namespace bupo::cpu {
// a, g, u (n)
void swiglu_forward(float* a, const float* g, const float* u, int64_t n);
// dg, du (n) overwritten from da (n)
void swiglu_backward(float* dg, float* du, const float* da, const float* g, const float* u,
                     int64_t n);
}  // namespace bupo::cpu
