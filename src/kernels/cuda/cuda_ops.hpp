// Host-side interface of the CUDA kernels (plain C++ header: usable from .cpp files).
// Every CUDA, cuBLAS, cuDNN and NCCL call is checked and reported with file and line.
#pragma once
#include <cstdint>
#include <string>

namespace bupo::cuda {

int device_count();              // 0 when no driver or no GPU is present (never throws)
std::string library_versions();  // "CUDA runtime x, cuBLAS y, cuDNN z, NCCL w"

// Device buffers owned by the caller through these helpers.
float* alloc_floats(int64_t n);
void free_floats(float* p);
void copy_to_device(float* dst, const float* src, int64_t n);
void copy_to_host(float* dst, const float* src, int64_t n);
void synchronize();

// Same contracts as bupo::cpu::rmsnorm_forward / linear_forward (fp32, device pointers).
void rmsnorm_forward(float* y, float* rstd, const float* x, const float* w, int64_t R, int64_t C,
                     float eps);
void linear_forward(float* y, const float* x, const float* W, int64_t N, int64_t in, int64_t out);

}  // namespace bupo::cuda
