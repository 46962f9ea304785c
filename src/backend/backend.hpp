// The backend contract (ggml's narrow interface, llm.c's memory discipline): every computation of
// the model, the lens, the optimizer and the sampler is one of the ops below, run by a Backend on
// tensors in its memory. The CPU backend (backend/cpu) is the reference every other backend is
// tested against (tests/unit/test_backend_ops.cpp); code above this interface never includes a
// device's kernels.
//
// Each op is a public, non-virtual, checked entry point (shapes, dtypes, devices — one message
// naming the op) that dispatches to a protected virtual `do_<op>`. A backend that lacks an op says
// so in supports(); calling it there is an error naming the op and the backend, never a silent
// fallback to another device.
//
// Shapes are written as in llm.c: x (N, d). `N` packed rows, `d` hidden width, `V` (local)
// vocabulary, `H`/`Hkv` local query/KV heads, `D` head dim. Optional tensors are empty views.
//
// Dtypes: activations, their gradients, the working copy of the weights and the KV cache are in
// the backend's compute dtype (compute_dtype(): F32 on the CPU, BF16 or F32 on CUDA); parameter
// gradients, optimizer state, normalisation statistics (rstd, lse), RoPE tables, lens statistics
// and sampling logits are F32 on every backend; indices are I32. Every softmax, entropy,
// log-prob and loss accumulates in fp32 or wider. supports(op, dtype) is asked for the compute
// dtype of the call.
// Communication is not a backend op: the callers (the model's tensor-parallel layers, the lens,
// the gradient reduction in parallel/) call a Comm between ops. The rule: MPI for host memory,
// NCCL for device memory — comm_memory() says which this backend's tensors need, device_comm()
// makes the matching communicator for a group.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "backend/memory.hpp"
#include "backend/tensor.hpp"

namespace bupo {

class Comm;

enum class Op : uint8_t {
  Gemm,
  LinearForward,
  LinearBackward,
  RmsNormForward,
  RmsNormBackward,
  RopeTables,
  RopeForward,
  RopeBackward,
  AttentionForward,
  AttentionBackward,
  AttentionDecode,
  KvAppend,
  SwigluForward,
  SwigluBackward,
  EmbeddingForward,
  EmbeddingBackward,
  GatherRows,
  ScatterAddRows,
  RowDots,
  Add,
  LensStats,
  LensRescale,
  LensOutputs,
  LensBackward,
  LensExpectation,
  AdamwUpdate,
  SumSquares,
  Scale,
  RowEntropy,
  Sample,
  kCount
};
constexpr size_t kNumOps = static_cast<size_t>(Op::kCount);
const char* op_name(Op op);
// The dtype an op is called with on a backend computing in `compute`: F32 for the ops on
// statistics, tables, optimizer state and logits; the compute dtype for the rest.
DType op_dtype(Op op, DType compute);

// Packed variable-length sequences (flash-attn's varlen layout): sequence s owns rows
// [cu[s], cu[s+1]). Host arrays drive loop structure and launch shapes; the *_dev tensors (I32,
// in the backend's memory) are what device kernels read. Cache ops also use pos (N) — each row's
// position — and slots (S) — the KV-cache slot each sequence continues.
struct SeqIndex {
  const int64_t* cu = nullptr;  // (S+1) host
  int64_t S = 0;
  int64_t max_len = 0;                // longest sequence
  const int32_t* pos = nullptr;       // (N) host, cache ops
  const int64_t* slots = nullptr;     // (S) host, cache ops
  Tensor cu_dev, pos_dev, slots_dev;  // the same, I32, on the device
  int64_t N() const { return S == 0 ? 0 : cu[S]; }
};

struct AttnShape {
  int64_t N = 0;    // packed rows
  int64_t H = 0;    // query heads (local to this rank)
  int64_t Hkv = 0;  // KV heads (local to this rank)
  int64_t D = 0;    // head dim
};

// Per-parameter constants of one AdamW step (torch.optim.AdamW, decoupled weight decay):
// w ← w·decay; m ← b1·m + (1−b1)·g; v ← b2·v + (1−b2)·g²; w ← w − step_size·m/(√v/bc2_sqrt + eps)
struct AdamStep {
  float step_size = 0, bc2_sqrt = 1, decay = 1, beta1 = 0.9f, beta2 = 0.999f, eps = 1e-8f;
};

enum class CommMemory : uint8_t { Host, Device };

struct WorkspaceNeed {      // the largest op shapes a run will use (Backend::workspace_bytes)
  int64_t max_seq_len = 0;  // attention: longest sequence (or query block)
  int64_t max_keys = 0;     // attention over a KV cache: longest key range
  int64_t lens_rows = 0;    // lens: rows per chunk
  int64_t lens_vocab = 0;   // lens: local vocabulary
  int64_t hidden = 0;       // d
  int64_t sample_rows = 0;  // sampling: rows of logits sampled at once
};

class Backend {
 public:
  virtual ~Backend() = default;
  Backend(const Backend&) = delete;
  Backend& operator=(const Backend&) = delete;

  virtual std::string name() const = 0;  // "cpu", "cuda:0"
  virtual Device device() const = 0;
  // True when this backend's memory is ordinary host memory (pointers may be dereferenced).
  virtual bool host_accessible() const = 0;
  virtual bool supports(Op op, DType t) const = 0;
  // The dtype of activations and working weights on this backend.
  virtual DType compute_dtype() const { return DType::F32; }
  void require(Op op, DType t) const;  // error naming the op, dtype and backend when unsupported
  virtual CommMemory comm_memory() const = 0;
  // The communicator for tensors in this backend's memory over the ranks of `host_group` (the CPU
  // backend returns host_group itself; CUDA makes an NCCL communicator bootstrapped over it).
  virtual std::shared_ptr<Comm> device_comm(std::shared_ptr<Comm> host_group, double timeout_s);

  // ---- memory: blocks by role (counted), pools and the scratch arena
  Block allocate(MemRole role, size_t bytes);
  const MemCounters& counters(MemRole r) const { return counters_[static_cast<size_t>(r)]; }
  uint64_t total_allocations() const;
  ArenaPool& activations() { return activation_pool_; }
  ArenaPool& kv_caches() { return kv_pool_; }
  Arena& scratch() { return scratch_; }  // LIFO temporaries of ops and of their callers
  // Bytes of scratch the ops need internally for shapes up to `need` (to reserve up-front).
  virtual size_t workspace_bytes(const WorkspaceNeed& need) const = 0;

  // ---- transfers (dst/src in this backend's memory unless named host)
  void upload(const Tensor& dst, const void* host_src);  // host → device, dst.bytes()
  void download(void* host_dst, const Tensor& src);      // device → host, src.bytes()
  void copy(const Tensor& dst, const Tensor& src);       // device → device, same size
  void fill(const Tensor& dst, float value);             // F32 or BF16
  void zero(const Tensor& dst) { fill(dst, 0.0f); }
  // dst = src converted elementwise (F32 ↔ BF16 with round-to-nearest-even, or a copy).
  void convert(const Tensor& dst, const Tensor& src);
  virtual void synchronize() {}

  // ---- linear algebra
  // C (M, N) = alpha·op(A)·op(B) + beta·C with op(A) (M, K), op(B) (K, N), row-major, leading
  // dimensions lda/ldb/ldc (elements). ta: A is stored (K, M); tb: B is stored (N, K).
  void gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const Tensor& A,
            int64_t lda, const Tensor& B, int64_t ldb, float beta, const Tensor& C, int64_t ldc);
  // y (N, out) = x (N, in)·Wᵀ + b    [nn.Linear layout W (out, in)]; accumulate: y +=
  void linear_forward(const Tensor& y, const Tensor& x, const Tensor& W, const Tensor& b,
                      bool accumulate = false);
  // dx (N, in) (+)= dy·W;  dW (out, in) += dyᵀ·x;  db (out) += Σ_n dy. Any of dx, dW, db empty.
  void linear_backward(const Tensor& dx, const Tensor& dW, const Tensor& db, const Tensor& dy,
                       const Tensor& x, const Tensor& W, bool accumulate_dx = false);

  // ---- normalisation, position, activation, residual
  // y, x (R, C); w (C); rstd (R) saved for the backward (may be empty).
  void rmsnorm_forward(const Tensor& y, const Tensor& rstd, const Tensor& x, const Tensor& w,
                       float eps);
  // dx (R, C) (+)= ∂L/∂x;  dw (C) += Σ_r dy ⊙ x̂  (dx or dw may be empty).
  void rmsnorm_backward(const Tensor& dx, const Tensor& dw, const Tensor& dy, const Tensor& x,
                        const Tensor& w, const Tensor& rstd, bool accumulate_dx = false);
  // cos, sin (N, D/2) for positions pos (N, I32) and inverse frequencies inv_freq (D/2).
  void rope_tables(const Tensor& cos, const Tensor& sin, const Tensor& pos, const Tensor& inv_freq);
  // x (N, H·D) rotated in place (HF rotate_half); backward: the inverse rotation of dx.
  void rope_forward(const Tensor& x, const Tensor& cos, const Tensor& sin, int64_t H);
  void rope_backward(const Tensor& dx, const Tensor& cos, const Tensor& sin, int64_t H);
  // a = silu(g) ⊙ u, all (n); backward writes dg, du from da.
  void swiglu_forward(const Tensor& a, const Tensor& g, const Tensor& u);
  void swiglu_backward(const Tensor& dg, const Tensor& du, const Tensor& da, const Tensor& g,
                       const Tensor& u);
  void add(const Tensor& y, const Tensor& a, const Tensor& b);  // y = a + b (y may alias a or b)

  // ---- attention: causal, GQA (query head h reads KV head h / (H/Hkv)), packed sequences
  // q (N, H·D); k, v (N, Hkv·D); o (N, H·D); lse (N, H) saved for the backward.
  void attention_forward(const Tensor& o, const Tensor& lse, const Tensor& q, const Tensor& k,
                         const Tensor& v, const SeqIndex& seqs, const AttnShape& s);
  // dq (N, H·D), dk, dv (N, Hkv·D) overwritten.
  void attention_backward(const Tensor& dq, const Tensor& dk, const Tensor& dv, const Tensor& dout,
                          const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& o,
                          const Tensor& lse, const SeqIndex& seqs, const AttnShape& s);
  // The layer's KV cache kc, vc (slots·max_len, Hkv·D): rows k, v (N, Hkv·D) stored at slot
  // seqs.slots[s], position seqs.pos[n].
  void kv_append(const Tensor& kc, const Tensor& vc, const Tensor& k, const Tensor& v,
                 int64_t max_len, const SeqIndex& seqs);
  // New query rows q (N, H·D) over the cache: row n of sequence s sees keys 0..pos[n] of slot
  // slots[s]. o (N, H·D).
  void attention_decode(const Tensor& o, const Tensor& q, const Tensor& kc, const Tensor& vc,
                        int64_t max_len, const SeqIndex& seqs, const AttnShape& s);

  // ---- embedding and row movement
  // y (N, C) = rows of a vocabulary shard E (V_local, C) whose first row is global id
  // vocab_start; ids outside the shard give zero rows (an all-reduce over TP completes them).
  void embedding_forward(const Tensor& y, const Tensor& ids, const Tensor& E, int64_t vocab_start);
  // dE (V_local, C) += scatter of dy (N, C) (deterministic: no atomics).
  void embedding_backward(const Tensor& dE, const Tensor& ids, const Tensor& dy,
                          int64_t vocab_start);
  // out (R, C) = x[rows[r]];  dx (N, C) += scatter of src (R, C) at rows (I32, R).
  void gather_rows(const Tensor& out, const Tensor& x, const Tensor& rows);
  void scatter_add_rows(const Tensor& dx, const Tensor& rows, const Tensor& src);
  // out (n, 3) F64 = [a·b, a·a, b·b] of each row pair of a, b (n, C), accumulated in fp64: the
  // cosines of the residual-stream diagnostics and the dot products of Lens::kl.
  void row_dots(const Tensor& out, const Tensor& a, const Tensor& b);

  // ---- the internal-policy lens softmax(x·E_uᵀ) over a vocabulary shard, one chunk of rows
  // m (n): row max of z = x·Eᵀ (x (n, d), E (V_local, d)); packed (n, 3): [Σe^{z−m},
  // Σe^{z−m}(z−m), z_target−m (0 when the target is not in this shard)]. targets (n, I32) global
  // ids or empty; the shard holds ids [v0, v0 + V_local).
  void lens_stats(const Tensor& m, const Tensor& packed, const Tensor& x, const Tensor& E,
                  const Tensor& targets, int64_t v0);
  // Vocabulary-parallel combination: packed of this shard, relative to its own max m_local,
  // rescaled to the global max m_global (after an all-reduce max); then an all-reduce sum.
  void lens_rescale(const Tensor& packed, const Tensor& m_local, const Tensor& m_global,
                    const Tensor& targets, int64_t v0, int64_t V_local);
  // entropy H = log S − T/S and log-prob z_t − m − log S per row (either may be empty).
  void lens_outputs(const Tensor& entropy, const Tensor& logprob, const Tensor& packed);
  // The backward of Σ_r g_lp[r]·logp[r] + g_ent[r]·H[r] with the (global) m, packed:
  // dz = g_lp(δ_t − p) − g_ent·p(log p + H);  dE (V_local, d) += dzᵀ x;  dx (n, d) = dz·E
  // (a partial sum over vocabulary shards). g_lp / g_ent (n) may be empty.
  void lens_backward(const Tensor& dx, const Tensor& dE, const Tensor& x, const Tensor& E,
                     const Tensor& m, const Tensor& packed, const Tensor& targets, int64_t v0,
                     const Tensor& g_logprob, const Tensor& g_entropy);
  // ebar (n, d) = Σ_v p_v E_v with p = softmax(z) from the (global) m, packed: the expected
  // unembedding row under the lens policy, a partial sum over vocabulary shards. With it
  // Σ_v p_v (z_v − z'_v) = (x − x')·ebar for a second policy softmax(x'·Eᵀ) (Lens::kl).
  void lens_expectation(const Tensor& ebar, const Tensor& x, const Tensor& E, const Tensor& m,
                        const Tensor& packed);

  // ---- optimizer
  void adamw_update(const Tensor& w, const Tensor& g, const Tensor& m, const Tensor& v,
                    const AdamStep& a);
  double sum_squares(const Tensor& x);  // Σx² in fp64, fixed order (deterministic)
  void scale(const Tensor& x, float c);

  // ---- sampling over logits rows z (S, ld) of which the first `cols` are the vocabulary
  // entropy (S) of softmax(z) in fp64 (the untempered distribution, for temperature hooks)
  void row_entropy(const Tensor& entropy, const Tensor& z, int64_t cols);
  // One token per row with the row's temperature (<= 0: greedy), top-k (0: off), top-p (1: off),
  // inverse-CDF sampling at uniform (S, F64) in token-id order (or in probability order after a
  // top-k/top-p cut). Writes token (S, I32), logprob and entropy of the tempered distribution.
  void sample(const Tensor& token, const Tensor& logprob, const Tensor& entropy, const Tensor& z,
              int64_t cols, const Tensor& temperature, const Tensor& uniform, float top_p,
              int64_t top_k);

 protected:
  Backend();
  // Frees the pools and the scratch arena; every concrete backend's destructor calls it (the
  // blocks are freed through raw_free, which is gone once the derived object is destroyed).
  void release_memory();
  friend class Block;
  virtual void* raw_alloc(size_t bytes) = 0;
  virtual void raw_free(void* p) = 0;
  void release_block(void* p, size_t bytes, MemRole role);
  virtual void do_upload(void* dst, const void* src, size_t bytes) = 0;
  virtual void do_download(void* dst, const void* src, size_t bytes) = 0;
  virtual void do_copy(void* dst, const void* src, size_t bytes) = 0;
  virtual void do_fill(const Tensor& dst, float value) = 0;
  virtual void do_convert(const Tensor& dst, const Tensor& src) = 0;

  virtual void do_gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha,
                       const Tensor& A, int64_t lda, const Tensor& B, int64_t ldb, float beta,
                       const Tensor& C, int64_t ldc) = 0;
  virtual void do_linear_forward(const Tensor& y, const Tensor& x, const Tensor& W, const Tensor& b,
                                 bool accumulate) = 0;
  virtual void do_linear_backward(const Tensor& dx, const Tensor& dW, const Tensor& db,
                                  const Tensor& dy, const Tensor& x, const Tensor& W,
                                  bool accumulate_dx) = 0;
  virtual void do_rmsnorm_forward(const Tensor& y, const Tensor& rstd, const Tensor& x,
                                  const Tensor& w, float eps) = 0;
  virtual void do_rmsnorm_backward(const Tensor& dx, const Tensor& dw, const Tensor& dy,
                                   const Tensor& x, const Tensor& w, const Tensor& rstd,
                                   bool accumulate_dx) = 0;
  virtual void do_rope_tables(const Tensor& cos, const Tensor& sin, const Tensor& pos,
                              const Tensor& inv_freq) = 0;
  virtual void do_rope(const Tensor& x, const Tensor& cos, const Tensor& sin, int64_t H,
                       bool inverse) = 0;
  virtual void do_swiglu_forward(const Tensor& a, const Tensor& g, const Tensor& u) = 0;
  virtual void do_swiglu_backward(const Tensor& dg, const Tensor& du, const Tensor& da,
                                  const Tensor& g, const Tensor& u) = 0;
  virtual void do_add(const Tensor& y, const Tensor& a, const Tensor& b) = 0;
  virtual void do_attention_forward(const Tensor& o, const Tensor& lse, const Tensor& q,
                                    const Tensor& k, const Tensor& v, const SeqIndex& seqs,
                                    const AttnShape& s) = 0;
  virtual void do_attention_backward(const Tensor& dq, const Tensor& dk, const Tensor& dv,
                                     const Tensor& dout, const Tensor& q, const Tensor& k,
                                     const Tensor& v, const Tensor& o, const Tensor& lse,
                                     const SeqIndex& seqs, const AttnShape& s) = 0;
  virtual void do_kv_append(const Tensor& kc, const Tensor& vc, const Tensor& k, const Tensor& v,
                            int64_t max_len, const SeqIndex& seqs) = 0;
  virtual void do_attention_decode(const Tensor& o, const Tensor& q, const Tensor& kc,
                                   const Tensor& vc, int64_t max_len, const SeqIndex& seqs,
                                   const AttnShape& s) = 0;
  virtual void do_embedding_forward(const Tensor& y, const Tensor& ids, const Tensor& E,
                                    int64_t vocab_start) = 0;
  virtual void do_embedding_backward(const Tensor& dE, const Tensor& ids, const Tensor& dy,
                                     int64_t vocab_start) = 0;
  virtual void do_gather_rows(const Tensor& out, const Tensor& x, const Tensor& rows) = 0;
  virtual void do_scatter_add_rows(const Tensor& dx, const Tensor& rows, const Tensor& src) = 0;
  virtual void do_row_dots(const Tensor& out, const Tensor& a, const Tensor& b) = 0;
  virtual void do_lens_stats(const Tensor& m, const Tensor& packed, const Tensor& x,
                             const Tensor& E, const Tensor& targets, int64_t v0) = 0;
  virtual void do_lens_rescale(const Tensor& packed, const Tensor& m_local, const Tensor& m_global,
                               const Tensor& targets, int64_t v0, int64_t V_local) = 0;
  virtual void do_lens_outputs(const Tensor& entropy, const Tensor& logprob,
                               const Tensor& packed) = 0;
  virtual void do_lens_backward(const Tensor& dx, const Tensor& dE, const Tensor& x,
                                const Tensor& E, const Tensor& m, const Tensor& packed,
                                const Tensor& targets, int64_t v0, const Tensor& g_logprob,
                                const Tensor& g_entropy) = 0;
  virtual void do_lens_expectation(const Tensor& ebar, const Tensor& x, const Tensor& E,
                                   const Tensor& m, const Tensor& packed) = 0;
  virtual void do_adamw_update(const Tensor& w, const Tensor& g, const Tensor& m, const Tensor& v,
                               const AdamStep& a) = 0;
  virtual double do_sum_squares(const Tensor& x) = 0;
  virtual void do_scale(const Tensor& x, float c) = 0;
  virtual void do_row_entropy(const Tensor& entropy, const Tensor& z, int64_t cols) = 0;
  virtual void do_sample(const Tensor& token, const Tensor& logprob, const Tensor& entropy,
                         const Tensor& z, int64_t cols, const Tensor& temperature,
                         const Tensor& uniform, float top_p, int64_t top_k) = 0;

 private:
  MemCounters counters_[kMemRoles];
  ArenaPool activation_pool_, kv_pool_;
  Arena scratch_;
  void check(Op op, std::initializer_list<const Tensor*> ts) const;
};

// ---- choosing a backend: "cpu" always; "cuda" when this build has it and a GPU is visible.
Backend& cpu_backend();
using BackendFactory = std::unique_ptr<Backend> (*)(const std::string& spec, DType compute);
// Called by the CUDA library's bupo_register_cuda_backend() (the bupo binary calls that at start).
void register_backend(const std::string& device, BackendFactory f);
// "cpu", "cuda" or "cuda:N"; errors name `source` (a config key or flag) and say what is missing.
// precision: "auto" (the device's default: fp32 on the CPU, bf16 on CUDA), "bf16" or "fp32".
Backend& backend_for(const std::string& spec, const std::string& source,
                     const std::string& precision = "auto");
bool backend_registered(const std::string& device);

// A view of host data usable by `be`'s ops: the data itself on host backends, else a copy in
// be.scratch() (the caller scopes it with an ArenaScope).
Tensor staged_input(Backend& be, const void* host, DType t, Dims d);
inline Tensor staged_input(Backend& be, const float* host, Dims d) {
  return staged_input(be, host, DType::F32, d);
}
inline Tensor staged_input(Backend& be, const int32_t* host, Dims d) {
  return staged_input(be, host, DType::I32, d);
}
// Room for an op's host-bound output: `host` itself on host backends, else scratch; finish with
// fetch_output(be, view, host) (a no-op on host backends).
Tensor staged_output(Backend& be, float* host, Dims d);
void fetch_output(Backend& be, const Tensor& view, float* host);

}  // namespace bupo
