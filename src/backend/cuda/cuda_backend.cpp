#include "backend/cuda/cuda_backend.hpp"

#include <cublas_v2.h>
#include <cudnn.h>
#include <nccl.h>

#include "backend/cuda/cuda_check.cuh"
#include "backend/cuda/kernels.cuh"
#include "parallel/nccl_comm.hpp"

namespace bupo::cuda {
namespace {
cublasHandle_t blas(void* h) {
  return static_cast<cublasHandle_t>(h);
}
}  // namespace

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

CudaBackend::CudaBackend(int device) : device_(device) {
  CUDA_CHECK(cudaSetDevice(device_));
  CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
  cublasHandle_t h = nullptr;
  CUBLAS_CHECK(cublasCreate(&h));
  CUBLAS_CHECK(cublasSetStream(h, stream_));
  CUBLAS_CHECK(cublasSetMathMode(h, CUBLAS_PEDANTIC_MATH));  // true fp32: the reference check
  blas_ = h;
}

CudaBackend::~CudaBackend() {
  release_memory();
  if (blas_) cublasDestroy(blas(blas_));
  if (stream_) cudaStreamDestroy(stream_);
}

bool CudaBackend::supports(Op op, DType t) const {
  return t == DType::F32 && (op == Op::Gemm || op == Op::RmsNormForward);
}

void CudaBackend::missing(Op op) const {
  fail("backend '", name(), "': op '", op_name(op), "' is not implemented");
}

std::shared_ptr<Comm> CudaBackend::device_comm(std::shared_ptr<Comm> host_group, double timeout_s) {
  CUDA_CHECK(cudaSetDevice(device_));
  return std::make_shared<NcclComm>(host_group, host_group->name(), timeout_s);
}

size_t CudaBackend::workspace_bytes(const WorkspaceNeed&) const {
  return 0;  // the ops here need no workspace of their own
}

void CudaBackend::synchronize() {
  CUDA_CHECK(cudaStreamSynchronize(stream_));
}

// ---------------------------------------------------------------------------- memory
void* CudaBackend::raw_alloc(size_t bytes) {
  void* p = nullptr;
  if (cudaMalloc(&p, std::max<size_t>(bytes, 1)) != cudaSuccess) {
    cudaGetLastError();
    return nullptr;  // Backend::allocate reports it, naming the role
  }
  CUDA_CHECK(cudaMemsetAsync(p, 0, bytes, stream_));
  return p;
}
void CudaBackend::raw_free(void* p) {
  cudaStreamSynchronize(stream_);
  cudaFree(p);
}
void CudaBackend::do_upload(void* dst, const void* src, size_t bytes) {
  CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, stream_));
  CUDA_CHECK(cudaStreamSynchronize(stream_));  // the host buffer may be reused at once
}
void CudaBackend::do_download(void* dst, const void* src, size_t bytes) {
  CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, stream_));
  CUDA_CHECK(cudaStreamSynchronize(stream_));
}
void CudaBackend::do_copy(void* dst, const void* src, size_t bytes) {
  CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, stream_));
}
void CudaBackend::do_fill(const Tensor& dst, float value) {
  launch_fill(dst.f32(), value, dst.numel(), stream_);
}

// ---------------------------------------------------------------------------- ops
// Row-major C (M, N) = op(A) op(B) is column-major Cᵀ (N, M) = op(B)ᵀ op(A)ᵀ: cuBLAS gets B first.
void CudaBackend::do_gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha,
                          const Tensor& A, int64_t lda, const Tensor& B, int64_t ldb, float beta,
                          const Tensor& C, int64_t ldc) {
  CUBLAS_CHECK(cublasSgemm(blas(blas_), tb ? CUBLAS_OP_T : CUBLAS_OP_N,
                           ta ? CUBLAS_OP_T : CUBLAS_OP_N, static_cast<int>(N), static_cast<int>(M),
                           static_cast<int>(K), &alpha, B.f32(), static_cast<int>(ldb), A.f32(),
                           static_cast<int>(lda), &beta, C.f32(), static_cast<int>(ldc)));
}

void CudaBackend::do_rmsnorm_forward(const Tensor& y, const Tensor& rstd, const Tensor& x,
                                     const Tensor& w, float eps) {
  const int64_t C = w.numel();
  launch_rmsnorm_forward(y.f32(), rstd.f32(), x.f32(), w.f32(), x.numel() / C, C, eps, stream_);
}

namespace {
std::unique_ptr<Backend> make_cuda(const std::string& spec) {
  const int n = device_count();
  BUPO_CHECK(
      n > 0, "device \"", spec, "\": no CUDA device is visible (",
      "cudaGetDeviceCount found none: no GPU, no driver, or CUDA_VISIBLE_DEVICES hides them)");
  int dev = 0;
  const auto colon = spec.find(':');
  if (colon != std::string::npos) {
    try {
      dev = std::stoi(spec.substr(colon + 1));
    } catch (const std::exception&) {
      fail("device \"", spec, "\": expected cuda or cuda:N with N a device index");
    }
  }
  BUPO_CHECK(dev >= 0 && dev < n, "device \"", spec, "\": device index ", dev, " but ", n,
             " CUDA device(s) are visible");
  return std::make_unique<CudaBackend>(dev);
}
}  // namespace

}  // namespace bupo::cuda

void bupo_register_cuda_backend() {
  bupo::register_backend("cuda", &bupo::cuda::make_cuda);
}
