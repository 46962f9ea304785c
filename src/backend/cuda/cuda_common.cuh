// What every kernel file of the CUDA backend shares: element types (float, bf16) with fp32
// arithmetic, the dispatch from a tensor's dtype to a kernel instantiation, warp and block
// reductions, and launch shapes.
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "backend/cuda/cuda_check.cuh"
#include "backend/device_math.hpp"
#include "backend/tensor.hpp"

namespace bupo::cuda {

using bf16 = __nv_bfloat16;

template <typename T>
__device__ __forceinline__ float to_f(T x);
template <>
__device__ __forceinline__ float to_f<float>(float x) {
  return x;
}
template <>
__device__ __forceinline__ float to_f<bf16>(bf16 x) {
  return __bfloat162float(x);
}
template <typename T>
__device__ __forceinline__ T from_f(float x);
template <>
__device__ __forceinline__ float from_f<float>(float x) {
  return x;
}
template <>
__device__ __forceinline__ bf16 from_f<bf16>(float x) {
  return __float2bfloat16_rn(x);  // round to nearest even, as dmath::f32_to_bf16_bits
}

// f(T{}) with T the element type of `dtype` (F32 or BF16).
template <typename F>
void dispatch_float(DType dtype, F&& f) {
  if (dtype == DType::BF16)
    f(bf16{});
  else
    f(float{});
}

__device__ __forceinline__ float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ double warp_sum(double v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ float warp_max(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// Sum over the block (blockDim.x a multiple of 32, <= 1024), in a fixed order: deterministic.
template <typename V>
__device__ V block_sum(V v) {
  __shared__ V part[32];
  v = warp_sum(v);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) part[warp] = v;
  __syncthreads();
  const int nw = static_cast<int>(blockDim.x >> 5);
  V r = lane < nw ? part[lane] : V(0);
  if (warp == 0) r = warp_sum(r);
  if (threadIdx.x == 0) part[0] = r;
  __syncthreads();
  r = part[0];
  __syncthreads();
  return r;
}
__device__ inline float block_max(float v) {
  __shared__ float part[32];
  v = warp_max(v);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) part[warp] = v;
  __syncthreads();
  const int nw = static_cast<int>(blockDim.x >> 5);
  float r = lane < nw ? part[lane] : -INFINITY;
  if (warp == 0) r = warp_max(r);
  if (threadIdx.x == 0) part[0] = r;
  __syncthreads();
  r = part[0];
  __syncthreads();
  return r;
}

inline unsigned blocks_for(int64_t n, int threads) {
  return static_cast<unsigned>((n + threads - 1) / threads);
}
constexpr int kThreads = 256;

}  // namespace bupo::cuda
