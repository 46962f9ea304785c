// The CUDA backend: tensors in one GPU's memory, every op of the contract as a CUDA kernel or a
// cuBLASLt call, device communicators over NCCL. Compute dtype BF16 (fp32 accumulation in every
// GEMM, softmax, entropy, log-prob and reduction; fp32 master weights, gradients and optimizer
// state) or F32 (exact fp32 GEMMs, no TF32: the reference path of the backend-ops test). All work
// runs on one compute stream; NCCL waits for it through events. Every CUDA/cuBLAS call is checked
// with file and line.
#pragma once
#include <cuda_runtime.h>

#include <memory>
#include <unordered_map>

#include "backend/backend.hpp"
#include "backend/cuda/plans.hpp"

namespace bupo::cuda {

int device_count();              // 0 when no driver or no GPU is present (never throws)
std::string library_versions();  // "CUDA runtime x, cuBLAS y, cuDNN z, NCCL w"

class CudaBackend final : public Backend {
 public:
  CudaBackend(int device, DType compute);
  ~CudaBackend() override;
  std::string name() const override;
  Device device() const override { return Device::CUDA; }
  bool host_accessible() const override { return false; }
  bool supports(Op op, DType t) const override;
  DType compute_dtype() const override { return compute_; }
  CommMemory comm_memory() const override { return CommMemory::Device; }
  std::shared_ptr<Comm> device_comm(std::shared_ptr<Comm> host_group, double timeout_s) override;
  size_t workspace_bytes(const WorkspaceNeed& need) const override;
  void synchronize() override;
  cudaStream_t stream() const { return stream_; }
  int device_index() const { return device_; }
  size_t cached_gemm_algorithms() const { return algos_.size(); }

 protected:
  void* raw_alloc(size_t bytes) override;
  void raw_free(void* p) override;
  void do_upload(void* dst, const void* src, size_t bytes) override;
  void do_download(void* dst, const void* src, size_t bytes) override;
  void do_copy(void* dst, const void* src, size_t bytes) override;
  void do_fill(const Tensor& dst, float value) override;
  void do_convert(const Tensor& dst, const Tensor& src) override;

  void do_gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const Tensor& A,
               int64_t lda, const Tensor& B, int64_t ldb, float beta, const Tensor& C,
               int64_t ldc) override;
  void do_linear_forward(const Tensor& y, const Tensor& x, const Tensor& W, const Tensor& b,
                         bool accumulate) override;
  void do_linear_backward(const Tensor& dx, const Tensor& dW, const Tensor& db, const Tensor& dy,
                          const Tensor& x, const Tensor& W, bool accumulate_dx) override;
  void do_rmsnorm_forward(const Tensor& y, const Tensor& rstd, const Tensor& x, const Tensor& w,
                          float eps) override;
  void do_rmsnorm_backward(const Tensor& dx, const Tensor& dw, const Tensor& dy, const Tensor& x,
                           const Tensor& w, const Tensor& rstd, bool accumulate_dx) override;
  void do_rope_tables(const Tensor& cos, const Tensor& sin, const Tensor& pos,
                      const Tensor& inv_freq) override;
  void do_rope(const Tensor& x, const Tensor& cos, const Tensor& sin, int64_t H,
               bool inverse) override;
  void do_swiglu_forward(const Tensor& a, const Tensor& g, const Tensor& u) override;
  void do_swiglu_backward(const Tensor& dg, const Tensor& du, const Tensor& da, const Tensor& g,
                          const Tensor& u) override;
  void do_add(const Tensor& y, const Tensor& a, const Tensor& b) override;
  void do_attention_forward(const Tensor& o, const Tensor& lse, const Tensor& q, const Tensor& k,
                            const Tensor& v, const SeqIndex& seqs, const AttnShape& s) override;
  void do_attention_backward(const Tensor& dq, const Tensor& dk, const Tensor& dv,
                             const Tensor& dout, const Tensor& q, const Tensor& k, const Tensor& v,
                             const Tensor& o, const Tensor& lse, const SeqIndex& seqs,
                             const AttnShape& s) override;
  void do_kv_append(const Tensor& kc, const Tensor& vc, const Tensor& k, const Tensor& v,
                    int64_t max_len, const SeqIndex& seqs) override;
  void do_attention_decode(const Tensor& o, const Tensor& q, const Tensor& kc, const Tensor& vc,
                           int64_t max_len, const SeqIndex& seqs, const AttnShape& s) override;
  void do_embedding_forward(const Tensor& y, const Tensor& ids, const Tensor& E,
                            int64_t vocab_start) override;
  void do_embedding_backward(const Tensor& dE, const Tensor& ids, const Tensor& dy,
                             int64_t vocab_start) override;
  void do_gather_rows(const Tensor& out, const Tensor& x, const Tensor& rows) override;
  void do_scatter_add_rows(const Tensor& dx, const Tensor& rows, const Tensor& src) override;
  void do_row_dots(const Tensor& out, const Tensor& a, const Tensor& b) override;
  void do_lens_stats(const Tensor& m, const Tensor& packed, const Tensor& x, const Tensor& E,
                     const Tensor& targets, int64_t v0) override;
  void do_lens_rescale(const Tensor& packed, const Tensor& m_local, const Tensor& m_global,
                       const Tensor& targets, int64_t v0, int64_t V_local) override;
  void do_lens_outputs(const Tensor& entropy, const Tensor& logprob, const Tensor& packed) override;
  void do_lens_backward(const Tensor& dx, const Tensor& dE, const Tensor& x, const Tensor& E,
                        const Tensor& m, const Tensor& packed, const Tensor& targets, int64_t v0,
                        const Tensor& g_logprob, const Tensor& g_entropy) override;
  void do_lens_expectation(const Tensor& ebar, const Tensor& x, const Tensor& E, const Tensor& m,
                           const Tensor& packed) override;
  void do_adamw_update(const Tensor& w, const Tensor& g, const Tensor& m, const Tensor& v,
                       const AdamStep& a) override;
  double do_sum_squares(const Tensor& x) override;
  void do_scale(const Tensor& x, float c) override;
  void do_row_entropy(const Tensor& entropy, const Tensor& z, int64_t cols) override;
  void do_sample(const Tensor& token, const Tensor& logprob, const Tensor& entropy, const Tensor& z,
                 int64_t cols, const Tensor& temperature, const Tensor& uniform, float top_p,
                 int64_t top_k) override;

 private:
  int device_ = 0;
  DType compute_;
  cudaStream_t stream_ = nullptr;
  void* lt_ = nullptr;  // cublasLtHandle_t
  Block lt_workspace_;
  struct Algo {
    unsigned char bytes[64];  // cublasLtMatmulAlgo_t (opaque, 64 bytes)
    bool usable = false;      // false: cuBLASLt has no algorithm for this epilogue
  };
  std::unordered_map<GemmKey, Algo, GemmKeyHash> algos_;
  // C = alpha op(A) op(B) + beta C through cuBLASLt (row-major arguments as Backend::gemm);
  // `bias` (epilogue Bias) or `bias_grad` (epilogue BiasGradB, written, not accumulated).
  // false: cuBLASLt refused the epilogue, the plain GEMM ran, the caller applies the epilogue.
  bool lt_gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const Tensor& A,
               int64_t lda, const Tensor& B, int64_t ldb, float beta, const Tensor& C, int64_t ldc,
               Epilogue ep = Epilogue::None, const Tensor& bias = {}, const Tensor& bias_grad = {});
};

}  // namespace bupo::cuda

// Makes "cuda" / "cuda:N" known to backend_for(); the bupo binary calls it at start-up.
void bupo_register_cuda_backend();
