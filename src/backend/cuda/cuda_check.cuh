// Error checking for every CUDA-library call, with file and line (llm.c's cudaCheck style).
#pragma once
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

namespace bupo::cuda {
[[noreturn]] inline void raise(const char* lib, const std::string& what, const char* file,
                               int line) {
  throw std::runtime_error(std::string(lib) + " error: " + what + " at " + file + ":" +
                           std::to_string(line));
}
}  // namespace bupo::cuda

#define CUDA_CHECK(call)                                                       \
  do {                                                                         \
    cudaError_t e_ = (call);                                                   \
    if (e_ != cudaSuccess)                                                     \
      ::bupo::cuda::raise("CUDA", cudaGetErrorString(e_), __FILE__, __LINE__); \
  } while (0)
#define CUBLAS_CHECK(call)                                                          \
  do {                                                                              \
    cublasStatus_t s_ = (call);                                                     \
    if (s_ != CUBLAS_STATUS_SUCCESS)                                                \
      ::bupo::cuda::raise("cuBLAS", cublasGetStatusString(s_), __FILE__, __LINE__); \
  } while (0)
