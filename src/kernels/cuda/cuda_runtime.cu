#include <cudnn.h>
#include <nccl.h>

#include "kernels/cuda/cuda_check.cuh"
#include "kernels/cuda/cuda_ops.hpp"

namespace bupo::cuda {

int device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky "no driver" error
    return 0;
  }
  return n;
}

std::string library_versions() {
  int rt = 0, nccl = 0, cublas = 0;
  cudaRuntimeGetVersion(&rt);
  ncclGetVersion(&nccl);
  cublasGetProperty(MAJOR_VERSION, &cublas);
  return "CUDA runtime " + std::to_string(rt) + ", cuBLAS " + std::to_string(cublas) + ", cuDNN " +
         std::to_string(cudnnGetVersion()) + ", NCCL " + std::to_string(nccl);
}

float* alloc_floats(int64_t n) {
  void* p = nullptr;
  CUDA_CHECK(cudaMalloc(&p, static_cast<size_t>(n) * sizeof(float)));
  return static_cast<float*>(p);
}
void free_floats(float* p) {
  CUDA_CHECK(cudaFree(p));
}
void copy_to_device(float* dst, const float* src, int64_t n) {
  CUDA_CHECK(cudaMemcpy(dst, src, static_cast<size_t>(n) * sizeof(float), cudaMemcpyHostToDevice));
}
void copy_to_host(float* dst, const float* src, int64_t n) {
  CUDA_CHECK(cudaMemcpy(dst, src, static_cast<size_t>(n) * sizeof(float), cudaMemcpyDeviceToHost));
}
void synchronize() {
  CUDA_CHECK(cudaDeviceSynchronize());
}

}  // namespace bupo::cuda
