// The CUDA backend: tensors in one GPU's memory, ops as CUDA kernels and cuBLAS calls, device
// communicators over NCCL. This file is the contract's CUDA side; what it implements so far is
// what supports() says (the rest of the ops are issue 12's), and running a model on it is refused
// up-front naming the ops it lacks. Every CUDA/cuBLAS call is checked with file and line.
#pragma once
#include <cuda_runtime.h>

#include "backend/backend.hpp"

namespace bupo::cuda {

int device_count();              // 0 when no driver or no GPU is present (never throws)
std::string library_versions();  // "CUDA runtime x, cuBLAS y, cuDNN z, NCCL w"

class CudaBackend final : public Backend {
 public:
  explicit CudaBackend(int device);
  ~CudaBackend() override;
  std::string name() const override { return "cuda:" + std::to_string(device_); }
  Device device() const override { return Device::CUDA; }
  bool host_accessible() const override { return false; }
  bool supports(Op op, DType t) const override;
  CommMemory comm_memory() const override { return CommMemory::Device; }
  std::shared_ptr<Comm> device_comm(std::shared_ptr<Comm> host_group, double timeout_s) override;
  size_t workspace_bytes(const WorkspaceNeed& need) const override;
  void synchronize() override;
  cudaStream_t stream() const { return stream_; }

 protected:
  void* raw_alloc(size_t bytes) override;
  void raw_free(void* p) override;
  void do_upload(void* dst, const void* src, size_t bytes) override;
  void do_download(void* dst, const void* src, size_t bytes) override;
  void do_copy(void* dst, const void* src, size_t bytes) override;
  void do_fill(const Tensor& dst, float value) override;

  void do_gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const Tensor& A,
               int64_t lda, const Tensor& B, int64_t ldb, float beta, const Tensor& C,
               int64_t ldc) override;
  void do_rmsnorm_forward(const Tensor& y, const Tensor& rstd, const Tensor& x, const Tensor& w,
                          float eps) override;

  // Not yet on this backend (supports() is false; require() refuses before these are reached).
  [[noreturn]] void missing(Op op) const;
  void do_linear_forward(const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                         bool) override {
    missing(Op::LinearForward);
  }
  void do_linear_backward(const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                          const Tensor&, bool) override {
    missing(Op::LinearBackward);
  }
  void do_rmsnorm_backward(const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                           const Tensor&, const Tensor&, bool) override {
    missing(Op::RmsNormBackward);
  }
  void do_rope_tables(const Tensor&, const Tensor&, const Tensor&, const Tensor&) override {
    missing(Op::RopeTables);
  }
  void do_rope(const Tensor&, const Tensor&, const Tensor&, int64_t, bool) override {
    missing(Op::RopeForward);
  }
  void do_swiglu_forward(const Tensor&, const Tensor&, const Tensor&) override {
    missing(Op::SwigluForward);
  }
  void do_swiglu_backward(const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                          const Tensor&) override {
    missing(Op::SwigluBackward);
  }
  void do_add(const Tensor&, const Tensor&, const Tensor&) override { missing(Op::Add); }
  void do_attention_forward(const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                            const Tensor&, const SeqIndex&, const AttnShape&) override {
    missing(Op::AttentionForward);
  }
  void do_attention_backward(const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                             const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                             const Tensor&, const SeqIndex&, const AttnShape&) override {
    missing(Op::AttentionBackward);
  }
  void do_kv_append(const Tensor&, const Tensor&, const Tensor&, const Tensor&, int64_t,
                    const SeqIndex&) override {
    missing(Op::KvAppend);
  }
  void do_attention_decode(const Tensor&, const Tensor&, const Tensor&, const Tensor&, int64_t,
                           const SeqIndex&, const AttnShape&) override {
    missing(Op::AttentionDecode);
  }
  void do_embedding_forward(const Tensor&, const Tensor&, const Tensor&, int64_t) override {
    missing(Op::EmbeddingForward);
  }
  void do_embedding_backward(const Tensor&, const Tensor&, const Tensor&, int64_t) override {
    missing(Op::EmbeddingBackward);
  }
  void do_gather_rows(const Tensor&, const Tensor&, const Tensor&) override {
    missing(Op::GatherRows);
  }
  void do_scatter_add_rows(const Tensor&, const Tensor&, const Tensor&) override {
    missing(Op::ScatterAddRows);
  }
  void do_lens_stats(const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                     int64_t) override {
    missing(Op::LensStats);
  }
  void do_lens_rescale(const Tensor&, const Tensor&, const Tensor&, const Tensor&, int64_t,
                       int64_t) override {
    missing(Op::LensRescale);
  }
  void do_lens_outputs(const Tensor&, const Tensor&, const Tensor&) override {
    missing(Op::LensOutputs);
  }
  void do_lens_backward(const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                        const Tensor&, const Tensor&, int64_t, const Tensor&,
                        const Tensor&) override {
    missing(Op::LensBackward);
  }
  void do_adamw_update(const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                       const AdamStep&) override {
    missing(Op::AdamwUpdate);
  }
  double do_sum_squares(const Tensor&) override { missing(Op::SumSquares); }
  void do_scale(const Tensor&, float) override { missing(Op::Scale); }
  void do_row_entropy(const Tensor&, const Tensor&, int64_t) override { missing(Op::RowEntropy); }
  void do_sample(const Tensor&, const Tensor&, const Tensor&, const Tensor&, int64_t, const Tensor&,
                 const Tensor&, float, int64_t) override {
    missing(Op::Sample);
  }

 private:
  int device_ = 0;
  cudaStream_t stream_ = nullptr;
  void* blas_ = nullptr;  // cublasHandle_t
};

}  // namespace bupo::cuda

// Makes "cuda" / "cuda:N" known to backend_for(); the bupo binary calls it at start-up.
void bupo_register_cuda_backend();
