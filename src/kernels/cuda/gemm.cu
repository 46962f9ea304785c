// fp32 linear layer through cuBLAS: y (N, out) = x (N, in) · W (out, in)ᵀ, row-major.
// Row-major y = x Wᵀ is column-major yᵀ = W xᵀ: cublasSgemm(T, N) with W as the first operand.
#include "kernels/cuda/cuda_check.cuh"
#include "kernels/cuda/cuda_ops.hpp"

namespace bupo::cuda {
namespace {
cublasHandle_t handle() {
  static cublasHandle_t h = [] {
    cublasHandle_t x = nullptr;
    CUBLAS_CHECK(cublasCreate(&x));
    CUBLAS_CHECK(cublasSetMathMode(x, CUBLAS_PEDANTIC_MATH));  // true fp32, for the reference check
    return x;
  }();
  return h;
}
}  // namespace

void linear_forward(float* y, const float* x, const float* W, int64_t N, int64_t in, int64_t out) {
  const float one = 1.0f, zero = 0.0f;
  CUBLAS_CHECK(cublasSgemm(handle(), CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(out),
                           static_cast<int>(N), static_cast<int>(in), &one, W, static_cast<int>(in),
                           x, static_cast<int>(in), &zero, y, static_cast<int>(out)));
}

}  // namespace bupo::cuda
