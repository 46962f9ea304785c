// RMSNorm forward: one block per row, warp-shuffle reduction of Σx² in fp32.
#include "backend/cuda/cuda_check.cuh"
#include "backend/cuda/kernels.cuh"

namespace bupo::cuda {
namespace {
constexpr int kThreads = 256;

__global__ void rmsnorm_forward_kernel(float* __restrict__ y, float* __restrict__ rstd,
                                       const float* __restrict__ x, const float* __restrict__ w,
                                       int64_t C, float eps) {
  const int64_t r = blockIdx.x;
  const float* xr = x + r * C;
  float ss = 0.0f;
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) ss += xr[c] * xr[c];
  for (int o = 16; o > 0; o >>= 1) ss += __shfl_xor_sync(0xffffffffu, ss, o);
  __shared__ float warp_sums[kThreads / 32];
  if ((threadIdx.x & 31) == 0) warp_sums[threadIdx.x >> 5] = ss;
  __syncthreads();
  if (threadIdx.x < 32) {
    float v = threadIdx.x < blockDim.x / 32 ? warp_sums[threadIdx.x] : 0.0f;
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    if (threadIdx.x == 0) warp_sums[0] = rsqrtf(v / static_cast<float>(C) + eps);
  }
  __syncthreads();
  const float s = warp_sums[0];
  if (threadIdx.x == 0 && rstd != nullptr) rstd[r] = s;
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) y[r * C + c] = w[c] * (xr[c] * s);
}

__global__ void fill_kernel(float* __restrict__ y, float v, int64_t n) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) y[i] = v;
}
}  // namespace

void launch_rmsnorm_forward(float* y, float* rstd, const float* x, const float* w, int64_t R,
                            int64_t C, float eps, cudaStream_t s) {
  if (R == 0) return;
  rmsnorm_forward_kernel<<<static_cast<unsigned>(R), kThreads, 0, s>>>(y, rstd, x, w, C, eps);
  CUDA_CHECK(cudaGetLastError());
}

void launch_fill(float* y, float v, int64_t n, cudaStream_t s) {
  if (n == 0) return;
  fill_kernel<<<static_cast<unsigned>((n + 255) / 256), 256, 0, s>>>(y, v, n);
  CUDA_CHECK(cudaGetLastError());
}

}  // namespace bupo::cuda
