// Launchers of the CUDA backend's kernels (plain C++ declarations, called from cuda_backend.cpp).
// Tensors are views in the backend's device memory; every launch goes on stream `s` and is
// checked. Shapes and dtype rules are those of backend/backend.hpp (already checked there).
#pragma once
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "backend/backend.hpp"

namespace bupo::cuda {

// elementwise.cu
void launch_fill(const Tensor& y, float v, cudaStream_t s);
void launch_convert(const Tensor& y, const Tensor& x, cudaStream_t s);
void launch_add(const Tensor& y, const Tensor& a, const Tensor& b, cudaStream_t s);
void launch_swiglu_forward(const Tensor& a, const Tensor& g, const Tensor& u, cudaStream_t s);
void launch_swiglu_backward(const Tensor& dg, const Tensor& du, const Tensor& da, const Tensor& g,
                            const Tensor& u, cudaStream_t s);
void launch_rope_tables(const Tensor& cs, const Tensor& sn, const Tensor& pos,
                        const Tensor& inv_freq, cudaStream_t s);
void launch_rope(const Tensor& x, const Tensor& cs, const Tensor& sn, int64_t H, bool inverse,
                 cudaStream_t s);
void launch_rmsnorm_forward(const Tensor& y, const Tensor& rstd, const Tensor& x, const Tensor& w,
                            float eps, cudaStream_t s);
void launch_rmsnorm_backward(const Tensor& dx, const Tensor& dw, const Tensor& dy, const Tensor& x,
                             const Tensor& w, const Tensor& rstd, bool accumulate, cudaStream_t s);
void launch_adamw(const Tensor& w, const Tensor& g, const Tensor& m, const Tensor& v,
                  const AdamStep& a, cudaStream_t s);
void launch_scale(const Tensor& x, float c, cudaStream_t s);
// db (out, F32) += column sums of dy (N, out): the bias gradient without a fused epilogue
void launch_bias_grad(const Tensor& db, const Tensor& dy, cudaStream_t s);
// y (N, out) += b (out) broadcast over rows: the bias without a fused epilogue
void launch_add_bias(const Tensor& y, const Tensor& b, cudaStream_t s);
// out (1 double, device) = Σx²; partial: kSumBlocks doubles of device scratch
void launch_sum_squares(double* out, double* partial, const Tensor& x, cudaStream_t s);

// rows.cu
void launch_embedding_forward(const Tensor& y, const Tensor& ids, const Tensor& E,
                              int64_t vocab_start, cudaStream_t s);
void launch_embedding_backward(const Tensor& dE, const Tensor& ids, const Tensor& dy,
                               int64_t vocab_start, cudaStream_t s);
void launch_gather_rows(const Tensor& out, const Tensor& x, const Tensor& rows, cudaStream_t s);
void launch_scatter_add_rows(const Tensor& dx, const Tensor& rows, const Tensor& src,
                             cudaStream_t s);
void launch_row_dots(const Tensor& out, const Tensor& a, const Tensor& b, cudaStream_t s);
void launch_kv_append(const Tensor& kc, const Tensor& vc, const Tensor& k, const Tensor& v,
                      int64_t max_len, const SeqIndex& seqs, cudaStream_t s);

// attention.cu
void launch_attention_forward(const Tensor& o, const Tensor& lse, const Tensor& q, const Tensor& k,
                              const Tensor& v, const SeqIndex& seqs, const AttnShape& a,
                              cudaStream_t s);
void launch_attention_backward(const Tensor& dq, const Tensor& dk, const Tensor& dv,
                               const Tensor& dout, const Tensor& q, const Tensor& k,
                               const Tensor& v, const Tensor& o, const Tensor& lse,
                               const SeqIndex& seqs, const AttnShape& a, cudaStream_t s);
void launch_attention_decode(const Tensor& o, const Tensor& q, const Tensor& kc, const Tensor& vc,
                             int64_t max_len, const SeqIndex& seqs, const AttnShape& a,
                             cudaStream_t s);

// lens.cu (per-row statistics m, S, T, zt: F32 arrays of `rows`)
void launch_lens_tile_reduce(float* m, float* S, float* T, float* zt, const float* z, int64_t rows,
                             int64_t tile, int64_t col0, const int32_t* targets, int64_t v0,
                             bool first, cudaStream_t s);
void launch_lens_finish(float* mout, float* packed, const float* m, const float* S, const float* T,
                        const float* zt, int64_t rows, cudaStream_t s);
void launch_lens_rescale(const Tensor& packed, const Tensor& m_local, const Tensor& m_global,
                         const Tensor& targets, int64_t v0, int64_t V_local, cudaStream_t s);
void launch_lens_outputs(const Tensor& entropy, const Tensor& logprob, const Tensor& packed,
                         cudaStream_t s);
void launch_lens_probs(const Tensor& p, const float* z, int64_t rows, int64_t tile, const float* m,
                       const float* packed, cudaStream_t s);
void launch_lens_dlogits(const Tensor& dz, const float* z, int64_t rows, int64_t tile, int64_t col0,
                         const float* m, const float* packed, const int32_t* targets, int64_t v0,
                         const float* glp, const float* gent, cudaStream_t s);

// sampling.cu
void launch_row_entropy(const Tensor& entropy, const Tensor& z, int64_t cols, cudaStream_t s);
size_t sample_workspace_bytes(int64_t rows, int64_t cols);
void launch_sample(const Tensor& token, const Tensor& logprob, const Tensor& entropy,
                   const Tensor& z, int64_t cols, const Tensor& temperature, const Tensor& uniform,
                   float top_p, int64_t top_k, void* work, size_t work_bytes, cudaStream_t s);

}  // namespace bupo::cuda
