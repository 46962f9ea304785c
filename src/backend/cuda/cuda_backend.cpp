#include "backend/cuda/cuda_backend.hpp"

#include <cublasLt.h>
#include <cublas_v2.h>
#include <cudnn.h>
#include <nccl.h>

#include <algorithm>
#include <cstring>

#include "backend/cuda/cuda_check.cuh"
#include "backend/cuda/kernels.cuh"
#include "parallel/nccl_comm.hpp"

namespace bupo::cuda {
namespace {
cublasLtHandle_t lt(void* h) {
  return static_cast<cublasLtHandle_t>(h);
}
cudaDataType_t cuda_type(DType t) {
  switch (t) {
    case DType::F32:
      return CUDA_R_32F;
    case DType::BF16:
      return CUDA_R_16BF;
    default:
      fail("CUDA GEMM: unsupported dtype ", dtype_name(t));
  }
}
constexpr size_t kLtWorkspace = size_t{32} << 20;  // cuBLASLt's workspace (Hopper wants 32 MiB)

// A cuBLASLt layout (column-major rows × cols, leading dimension ld); destroyed with its owner.
struct Layout {
  cublasLtMatrixLayout_t d = nullptr;
  Layout(cudaDataType_t t, int64_t rows, int64_t cols, int64_t ld) {
    CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&d, t, static_cast<uint64_t>(rows),
                                            static_cast<uint64_t>(cols), ld));
  }
  ~Layout() { cublasLtMatrixLayoutDestroy(d); }
};
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
  int rt = 0, nccl = 0;
  cudaRuntimeGetVersion(&rt);
  ncclGetVersion(&nccl);
  return "CUDA runtime " + std::to_string(rt) + ", cuBLASLt " +
         std::to_string(cublasLtGetVersion()) + ", cuDNN " + std::to_string(cudnnGetVersion()) +
         ", NCCL " + std::to_string(nccl);
}

CudaBackend::CudaBackend(int device, DType compute) : device_(device), compute_(compute) {
  BUPO_CHECK(compute == DType::BF16 || compute == DType::F32, "CUDA backend: compute dtype ",
             dtype_name(compute), " (expected BF16 or F32)");
  CUDA_CHECK(cudaSetDevice(device_));
  CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
  cublasLtHandle_t h = nullptr;
  CUBLAS_CHECK(cublasLtCreate(&h));
  lt_ = h;
  lt_workspace_ = allocate(MemRole::Scratch, kLtWorkspace);
}

CudaBackend::~CudaBackend() {
  if (stream_) cudaStreamSynchronize(stream_);
  release_memory();
  lt_workspace_ = Block();
  if (lt_) cublasLtDestroy(lt(lt_));
  if (stream_) cudaStreamDestroy(stream_);
}

std::string CudaBackend::name() const {
  return "cuda:" + std::to_string(device_) + (compute_ == DType::BF16 ? " (bf16)" : " (fp32)");
}

bool CudaBackend::supports(Op op, DType t) const {
  // every op; those on statistics, tables, optimizer state and logits in F32 only
  return op_dtype(op, t) == DType::F32 ? t == DType::F32 : (t == DType::F32 || t == DType::BF16);
}

std::shared_ptr<Comm> CudaBackend::device_comm(std::shared_ptr<Comm> host_group, double timeout_s) {
  CUDA_CHECK(cudaSetDevice(device_));
  auto c = std::make_shared<NcclComm>(host_group, host_group->name(), timeout_s);
  c->set_producer_stream(stream_);  // collectives wait for the compute stream's work
  return c;
}

size_t CudaBackend::workspace_bytes(const WorkspaceNeed& n) const {
  const size_t cdt = dtype_size(compute_);
  const LensTiles t = lens_tiles(std::max<int64_t>(n.lens_rows, 1),
                                 std::max<int64_t>(n.lens_vocab, 1), kLensTileBytes);
  const size_t rows = static_cast<size_t>(std::max<int64_t>(n.lens_rows, 1));
  const size_t lens = rows * static_cast<size_t>(t.tile) * (4 + cdt) +
                      rows * static_cast<size_t>(n.hidden) * 4 + 8 * rows * 4 + 8 * Arena::kAlign;
  const size_t sample = n.sample_rows > 0 ? sample_workspace_bytes(n.sample_rows, n.lens_vocab) : 0;
  return std::max(lens, sample) + (kSumBlocks + 1) * sizeof(double) + Arena::kAlign;
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
  launch_fill(dst, value, stream_);
}
void CudaBackend::do_convert(const Tensor& dst, const Tensor& src) {
  launch_convert(dst, src, stream_);
}

// ---------------------------------------------------------------------------- cuBLASLt
bool CudaBackend::lt_gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha,
                          const Tensor& A, int64_t lda, const Tensor& B, int64_t ldb, float beta,
                          const Tensor& C, int64_t ldc, Epilogue ep, const Tensor& bias,
                          const Tensor& bias_grad) {
  if (M == 0 || N == 0) return true;
  const LtProblem p = lt_problem(ta, tb, M, N, K, lda, ldb, ldc);
  GemmKey key;
  key.a_type = cuda_type(B.dtype);  // cuBLASLt's A is our B
  key.b_type = cuda_type(A.dtype);
  key.c_type = cuda_type(C.dtype);
  key.p = p;
  key.epilogue = ep;
  key.beta_zero = beta == 0.0f;
  key.alignment = pointer_alignment(A.data, B.data, C.data);

  cublasLtMatmulDesc_t op = nullptr;
  CUBLAS_CHECK(cublasLtMatmulDescCreate(&op, CUBLAS_COMPUTE_32F, CUDA_R_32F));  // fp32, no TF32
  struct OpGuard {
    cublasLtMatmulDesc_t d;
    ~OpGuard() { cublasLtMatmulDescDestroy(d); }
  } guard{op};
  const cublasOperation_t opa = p.trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
  const cublasOperation_t opb = p.trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
  CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSA, &opa, sizeof opa));
  CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSB, &opb, sizeof opb));
  if (ep != Epilogue::None) {
    const cublasLtEpilogue_t e =
        ep == Epilogue::Bias ? CUBLASLT_EPILOGUE_BIAS : CUBLASLT_EPILOGUE_BGRADB;
    const Tensor& vec = ep == Epilogue::Bias ? bias : bias_grad;
    const void* ptr = vec.data;
    const cudaDataType_t vt = cuda_type(vec.dtype);
    CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_EPILOGUE, &e, sizeof e));
    CUBLAS_CHECK(
        cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &ptr, sizeof ptr));
    CUBLAS_CHECK(
        cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &vt, sizeof vt));
  }
  const Layout la(cuda_type(B.dtype), p.a_rows, p.a_cols, p.lda),
      lb(cuda_type(A.dtype), p.b_rows, p.b_cols, p.ldb),
      lc(cuda_type(C.dtype), p.c_rows, p.c_cols, p.ldc);

  auto it = algos_.find(key);
  if (it == algos_.end()) {  // once per shape: ask the heuristic, keep its first answer
    cublasLtMatmulPreference_t pref = nullptr;
    CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
    const size_t ws = kLtWorkspace;
    CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(
        pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws));
    cublasLtMatmulHeuristicResult_t res{};
    int found = 0;
    const cublasStatus_t st =
        cublasLtMatmulAlgoGetHeuristic(lt(lt_), op, la.d, lb.d, lc.d, lc.d, pref, 1, &res, &found);
    cublasLtMatmulPreferenceDestroy(pref);
    Algo a;
    a.usable = st == CUBLAS_STATUS_SUCCESS && found > 0;
    BUPO_CHECK(a.usable || ep != Epilogue::None, "cuBLASLt: no algorithm for a ", M, "x", N, "x", K,
               " GEMM (", dtype_name(A.dtype), " -> ", dtype_name(C.dtype), ")");
    static_assert(sizeof(cublasLtMatmulAlgo_t) <= sizeof a.bytes);
    if (a.usable) std::memcpy(a.bytes, &res.algo, sizeof(cublasLtMatmulAlgo_t));
    it = algos_.emplace(key, a).first;  // a refused epilogue is remembered too
  }
  if (!it->second.usable) {  // the epilogue is what cuBLASLt refused: the plain GEMM
    lt_gemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    return false;  // the caller applies the epilogue by hand
  }
  cublasLtMatmulAlgo_t algo;
  std::memcpy(&algo, it->second.bytes, sizeof algo);
  CUBLAS_CHECK(cublasLtMatmul(lt(lt_), op, &alpha, B.data, la.d, A.data, lb.d, &beta, C.data, lc.d,
                              C.data, lc.d, &algo, lt_workspace_.data(), kLtWorkspace, stream_));
  return true;
}

void CudaBackend::do_gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha,
                          const Tensor& A, int64_t lda, const Tensor& B, int64_t ldb, float beta,
                          const Tensor& C, int64_t ldc) {
  lt_gemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

void CudaBackend::do_linear_forward(const Tensor& y, const Tensor& x, const Tensor& W,
                                    const Tensor& b, bool accumulate) {
  const int64_t out = W.dim(0), in = W.row_numel(), N = x.numel() / in;
  const bool fused = lt_gemm(false, true, N, out, in, 1.0f, x, in, W, in, accumulate ? 1.0f : 0.0f,
                             y, out, b.empty() ? Epilogue::None : Epilogue::Bias, b);
  if (!fused) launch_add_bias(y, b, stream_);
}

void CudaBackend::do_linear_backward(const Tensor& dx, const Tensor& dW, const Tensor& db,
                                     const Tensor& dy, const Tensor& x, const Tensor& W,
                                     bool accumulate_dx) {
  const int64_t out = W.dim(0), in = W.row_numel(), N = x.numel() / in;
  if (!dx.empty())
    lt_gemm(false, false, N, in, out, 1.0f, dy, out, W, in, accumulate_dx ? 1.0f : 0.0f, dx, in);
  if (!dW.empty()) {
    if (db.empty()) {
      lt_gemm(true, false, out, in, N, 1.0f, dy, out, x, in, 1.0f, dW, in);
    } else {  // dW += dyᵀx with the bias gradient from the same GEMM (BGRADB), added into db
      ArenaScope scope(scratch());
      const Tensor g = scratch().alloc_f32({out});
      if (lt_gemm(true, false, out, in, N, 1.0f, dy, out, x, in, 1.0f, dW, in, Epilogue::BiasGradB,
                  {}, g))
        launch_add(db, db, g, stream_);
      else
        launch_bias_grad(db, dy, stream_);
    }
  } else if (!db.empty()) {
    launch_bias_grad(db, dy, stream_);
  }
}

// ---------------------------------------------------------------------------- elementwise
void CudaBackend::do_rmsnorm_forward(const Tensor& y, const Tensor& rstd, const Tensor& x,
                                     const Tensor& w, float eps) {
  launch_rmsnorm_forward(y, rstd, x, w, eps, stream_);
}
void CudaBackend::do_rmsnorm_backward(const Tensor& dx, const Tensor& dw, const Tensor& dy,
                                      const Tensor& x, const Tensor& w, const Tensor& rstd,
                                      bool accumulate_dx) {
  launch_rmsnorm_backward(dx, dw, dy, x, w, rstd, accumulate_dx, stream_);
}
void CudaBackend::do_rope_tables(const Tensor& cos, const Tensor& sin, const Tensor& pos,
                                 const Tensor& inv_freq) {
  launch_rope_tables(cos, sin, pos, inv_freq, stream_);
}
void CudaBackend::do_rope(const Tensor& x, const Tensor& cos, const Tensor& sin, int64_t H,
                          bool inverse) {
  launch_rope(x, cos, sin, H, inverse, stream_);
}
void CudaBackend::do_swiglu_forward(const Tensor& a, const Tensor& g, const Tensor& u) {
  launch_swiglu_forward(a, g, u, stream_);
}
void CudaBackend::do_swiglu_backward(const Tensor& dg, const Tensor& du, const Tensor& da,
                                     const Tensor& g, const Tensor& u) {
  launch_swiglu_backward(dg, du, da, g, u, stream_);
}
void CudaBackend::do_add(const Tensor& y, const Tensor& a, const Tensor& b) {
  launch_add(y, a, b, stream_);
}

// ---------------------------------------------------------------------------- attention
void CudaBackend::do_attention_forward(const Tensor& o, const Tensor& lse, const Tensor& q,
                                       const Tensor& k, const Tensor& v, const SeqIndex& seqs,
                                       const AttnShape& s) {
  launch_attention_forward(o, lse, q, k, v, seqs, s, stream_);
}
void CudaBackend::do_attention_backward(const Tensor& dq, const Tensor& dk, const Tensor& dv,
                                        const Tensor& dout, const Tensor& q, const Tensor& k,
                                        const Tensor& v, const Tensor& o, const Tensor& lse,
                                        const SeqIndex& seqs, const AttnShape& s) {
  launch_attention_backward(dq, dk, dv, dout, q, k, v, o, lse, seqs, s, stream_);
}
void CudaBackend::do_kv_append(const Tensor& kc, const Tensor& vc, const Tensor& k, const Tensor& v,
                               int64_t max_len, const SeqIndex& seqs) {
  launch_kv_append(kc, vc, k, v, max_len, seqs, stream_);
}
void CudaBackend::do_attention_decode(const Tensor& o, const Tensor& q, const Tensor& kc,
                                      const Tensor& vc, int64_t max_len, const SeqIndex& seqs,
                                      const AttnShape& s) {
  launch_attention_decode(o, q, kc, vc, max_len, seqs, s, stream_);
}

// ---------------------------------------------------------------------------- rows
void CudaBackend::do_embedding_forward(const Tensor& y, const Tensor& ids, const Tensor& E,
                                       int64_t vocab_start) {
  launch_embedding_forward(y, ids, E, vocab_start, stream_);
}
void CudaBackend::do_embedding_backward(const Tensor& dE, const Tensor& ids, const Tensor& dy,
                                        int64_t vocab_start) {
  launch_embedding_backward(dE, ids, dy, vocab_start, stream_);
}
void CudaBackend::do_gather_rows(const Tensor& out, const Tensor& x, const Tensor& rows) {
  launch_gather_rows(out, x, rows, stream_);
}
void CudaBackend::do_scatter_add_rows(const Tensor& dx, const Tensor& rows, const Tensor& src) {
  launch_scatter_add_rows(dx, rows, src, stream_);
}
void CudaBackend::do_row_dots(const Tensor& out, const Tensor& a, const Tensor& b) {
  launch_row_dots(out, a, b, stream_);
}

// ---------------------------------------------------------------------------- lens
// Logits of the chunk against one vocabulary tile at a time (cuBLASLt, F32 out) reduced into the
// rows' running statistics; never more than kLensTileBytes of logits.
void CudaBackend::do_lens_stats(const Tensor& m, const Tensor& packed, const Tensor& x,
                                const Tensor& E, const Tensor& targets, int64_t v0) {
  const int64_t Vl = E.rows(), d = E.row_numel(), rows = m.numel();
  const LensTiles t = lens_tiles(rows, Vl, kLensTileBytes);
  ArenaScope scope(scratch());
  const Tensor z = scratch().alloc_f32({rows * t.tile});
  const Tensor st = scratch().alloc_f32({4 * rows});  // running m, S, T, z_target
  float* rm = st.f32();
  for (int64_t i = 0; i < t.count; ++i) {
    const int64_t c0 = i * t.tile, w = std::min(t.tile, Vl - c0);
    lt_gemm(false, true, rows, w, d, 1.0f, x, d, E.rows(c0, w), d, 0.0f, z, w);
    launch_lens_tile_reduce(rm, rm + rows, rm + 2 * rows, rm + 3 * rows, z.f32(), rows, w, c0,
                            targets.i32(), v0, i == 0, stream_);
  }
  launch_lens_finish(m.f32(), packed.f32(), rm, rm + rows, rm + 2 * rows, rm + 3 * rows, rows,
                     stream_);
}

void CudaBackend::do_lens_rescale(const Tensor& packed, const Tensor& m_local,
                                  const Tensor& m_global, const Tensor& targets, int64_t v0,
                                  int64_t V_local) {
  launch_lens_rescale(packed, m_local, m_global, targets, v0, V_local, stream_);
}

void CudaBackend::do_lens_outputs(const Tensor& entropy, const Tensor& logprob,
                                  const Tensor& packed) {
  launch_lens_outputs(entropy, logprob, packed, stream_);
}

// Per tile: the logits again, dL/dz in the compute dtype, dE_tile += dzᵀx (F32), and dx
// accumulated in F32 over the tiles (then converted), so bf16 rounding does not compound.
void CudaBackend::do_lens_backward(const Tensor& dx, const Tensor& dE, const Tensor& x,
                                   const Tensor& E, const Tensor& m, const Tensor& packed,
                                   const Tensor& targets, int64_t v0, const Tensor& g_logprob,
                                   const Tensor& g_entropy) {
  const int64_t Vl = E.rows(), d = E.row_numel(), rows = m.numel();
  const LensTiles t = lens_tiles(rows, Vl, kLensTileBytes);
  ArenaScope scope(scratch());
  const Tensor z = scratch().alloc_f32({rows * t.tile});
  const Tensor dz = scratch().alloc(x.dtype, {rows * t.tile});
  const Tensor acc = dx.dtype == DType::F32 ? dx : scratch().alloc_f32({rows, d});
  for (int64_t i = 0; i < t.count; ++i) {
    const int64_t c0 = i * t.tile, w = std::min(t.tile, Vl - c0);
    const Tensor Et = E.rows(c0, w);
    lt_gemm(false, true, rows, w, d, 1.0f, x, d, Et, d, 0.0f, z, w);
    launch_lens_dlogits(dz, z.f32(), rows, w, c0, m.f32(), packed.f32(), targets.i32(), v0,
                        g_logprob.f32(), g_entropy.f32(), stream_);
    lt_gemm(true, false, w, d, rows, 1.0f, dz, w, x, d, 1.0f, dE.rows(c0, w), d);
    lt_gemm(false, false, rows, d, w, 1.0f, dz, w, Et, d, i == 0 ? 0.0f : 1.0f, acc, d);
  }
  if (acc.data != dx.data) launch_convert(dx, acc, stream_);
}

// Per tile: the logits again, p in the compute dtype, ebar += p·E_tile accumulated in F32 over
// the tiles (then converted), as the backward's dx.
void CudaBackend::do_lens_expectation(const Tensor& ebar, const Tensor& x, const Tensor& E,
                                      const Tensor& m, const Tensor& packed) {
  const int64_t Vl = E.rows(), d = E.row_numel(), rows = m.numel();
  const LensTiles t = lens_tiles(rows, Vl, kLensTileBytes);
  ArenaScope scope(scratch());
  const Tensor z = scratch().alloc_f32({rows * t.tile});
  const Tensor p = scratch().alloc(x.dtype, {rows * t.tile});
  const Tensor acc = ebar.dtype == DType::F32 ? ebar : scratch().alloc_f32({rows, d});
  for (int64_t i = 0; i < t.count; ++i) {
    const int64_t c0 = i * t.tile, w = std::min(t.tile, Vl - c0);
    const Tensor Et = E.rows(c0, w);
    lt_gemm(false, true, rows, w, d, 1.0f, x, d, Et, d, 0.0f, z, w);
    launch_lens_probs(p, z.f32(), rows, w, m.f32(), packed.f32(), stream_);
    lt_gemm(false, false, rows, d, w, 1.0f, p, w, Et, d, i == 0 ? 0.0f : 1.0f, acc, d);
  }
  if (acc.data != ebar.data) launch_convert(ebar, acc, stream_);
}

// ---------------------------------------------------------------------------- optimizer
void CudaBackend::do_adamw_update(const Tensor& w, const Tensor& g, const Tensor& m,
                                  const Tensor& v, const AdamStep& a) {
  launch_adamw(w, g, m, v, a, stream_);
}

double CudaBackend::do_sum_squares(const Tensor& x) {
  ArenaScope scope(scratch());
  const Tensor part = scratch().alloc(DType::F64, {kSumBlocks + 1});
  launch_sum_squares(part.f64() + kSumBlocks, part.f64(), x, stream_);
  double out = 0;
  download(&out, part.flat(kSumBlocks, 1));
  return out;
}

void CudaBackend::do_scale(const Tensor& x, float c) {
  launch_scale(x, c, stream_);
}

// ---------------------------------------------------------------------------- sampling
void CudaBackend::do_row_entropy(const Tensor& entropy, const Tensor& z, int64_t cols) {
  launch_row_entropy(entropy, z, cols, stream_);
}

void CudaBackend::do_sample(const Tensor& token, const Tensor& logprob, const Tensor& entropy,
                            const Tensor& z, int64_t cols, const Tensor& temperature,
                            const Tensor& uniform, float top_p, int64_t top_k) {
  const size_t bytes = sample_workspace_bytes(z.rows(), cols);
  ArenaScope scope(scratch());
  const Tensor w = scratch().alloc(DType::U8, {static_cast<int64_t>(bytes)});
  launch_sample(token, logprob, entropy, z, cols, temperature, uniform, top_p, top_k, w.data, bytes,
                stream_);
}

// ---------------------------------------------------------------------------- registration
namespace {
std::unique_ptr<Backend> make_cuda(const std::string& spec, DType compute) {
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
  return std::make_unique<CudaBackend>(dev, compute);
}
}  // namespace

}  // namespace bupo::cuda

void bupo_register_cuda_backend() {
  bupo::register_backend("cuda", &bupo::cuda::make_cuda);
}
