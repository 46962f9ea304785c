#include "backend/cpu/cpu_backend.hpp"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <span>

#include "backend/cpu/attention.hpp"
#include "backend/cpu/elementwise.hpp"
#include "backend/cpu/embedding.hpp"
#include "backend/cpu/lens.hpp"
#include "backend/cpu/linear.hpp"
#include "backend/cpu/rmsnorm.hpp"
#include "backend/cpu/rope.hpp"
#include "backend/cpu/rows.hpp"
#include "backend/cpu/sampling.hpp"
#include "backend/cpu/swiglu.hpp"

namespace bupo {

Backend& cpu_backend() {
  static CpuBackend* be = new CpuBackend();  // never destroyed: outlives every model and lease
  return *be;
}

bool CpuBackend::supports(Op, DType t) const {
  return t == DType::F32;  // every op, in fp32
}

size_t CpuBackend::workspace_bytes(const WorkspaceNeed& n) const {
  const int64_t floats = std::max({cpu::attention_forward_work(n.max_seq_len),
                                   cpu::attention_backward_work(n.max_seq_len),
                                   cpu::attention_cached_work(n.max_seq_len, n.max_keys),
                                   cpu::lens_work(n.lens_rows, n.lens_vocab)});
  const int64_t sampling = n.lens_vocab * static_cast<int64_t>(sizeof(double) + sizeof(int32_t));
  return static_cast<size_t>(std::max(floats * 4, sampling)) + 2 * Arena::kAlign;
}

// ---------------------------------------------------------------------------- memory
void* CpuBackend::raw_alloc(size_t bytes) {
  const size_t n = (std::max<size_t>(bytes, 1) + Arena::kAlign - 1) / Arena::kAlign * Arena::kAlign;
  void* p = std::aligned_alloc(Arena::kAlign, n);
  if (p != nullptr) std::memset(p, 0, n);  // new blocks start zeroed (llm.c memsets too)
  return p;
}
void CpuBackend::raw_free(void* p) {
  std::free(p);
}
void CpuBackend::do_upload(void* dst, const void* src, size_t bytes) {
  std::memcpy(dst, src, bytes);
}
void CpuBackend::do_download(void* dst, const void* src, size_t bytes) {
  std::memcpy(dst, src, bytes);
}
void CpuBackend::do_copy(void* dst, const void* src, size_t bytes) {
  std::memmove(dst, src, bytes);
}
void CpuBackend::do_fill(const Tensor& dst, float value) {
  if (dst.dtype == DType::BF16)
    std::fill_n(static_cast<uint16_t*>(dst.data), dst.numel(), f32_to_bf16(value));
  else
    std::fill_n(dst.f32(), dst.numel(), value);
}
void CpuBackend::do_convert(const Tensor& dst, const Tensor& src) {
  const int64_t n = dst.numel();
  if (dst.dtype == DType::BF16) {  // F32 → BF16, round to nearest even (as torch)
    auto* d = static_cast<uint16_t*>(dst.data);
    const float* s = src.f32();
    for (int64_t i = 0; i < n; ++i) d[i] = f32_to_bf16(s[i]);
  } else {
    const auto* s = static_cast<const uint16_t*>(src.data);
    float* d = dst.f32();
    for (int64_t i = 0; i < n; ++i) d[i] = bf16_to_f32(s[i]);
  }
}

// ---------------------------------------------------------------------------- linear algebra
void CpuBackend::do_gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha,
                         const Tensor& A, int64_t lda, const Tensor& B, int64_t ldb, float beta,
                         const Tensor& C, int64_t ldc) {
  cpu::gemm(ta, tb, M, N, K, alpha, A.f32(), lda, B.f32(), ldb, beta, C.f32(), ldc);
}

void CpuBackend::do_linear_forward(const Tensor& y, const Tensor& x, const Tensor& W,
                                   const Tensor& b, bool accumulate) {
  const int64_t out = W.dim(0), in = W.row_numel();
  cpu::linear_forward(y.f32(), x.f32(), W.f32(), b.f32(), x.numel() / in, in, out, accumulate);
}

void CpuBackend::do_linear_backward(const Tensor& dx, const Tensor& dW, const Tensor& db,
                                    const Tensor& dy, const Tensor& x, const Tensor& W,
                                    bool accumulate_dx) {
  const int64_t out = W.dim(0), in = W.row_numel();
  cpu::linear_backward(dx.f32(), dW.f32(), db.f32(), dy.f32(), x.f32(), W.f32(), x.numel() / in, in,
                       out, accumulate_dx);
}

// ---------------------------------------------------------------------------- elementwise
void CpuBackend::do_rmsnorm_forward(const Tensor& y, const Tensor& rstd, const Tensor& x,
                                    const Tensor& w, float eps) {
  const int64_t C = w.numel();
  cpu::rmsnorm_forward(y.f32(), rstd.f32(), x.f32(), w.f32(), x.numel() / C, C, eps);
}

void CpuBackend::do_rmsnorm_backward(const Tensor& dx, const Tensor& dw, const Tensor& dy,
                                     const Tensor& x, const Tensor& w, const Tensor& rstd,
                                     bool accumulate_dx) {
  const int64_t C = w.numel();
  cpu::rmsnorm_backward(dx.f32(), dw.f32(), dy.f32(), x.f32(), w.f32(), rstd.f32(), x.numel() / C,
                        C, accumulate_dx);
}

void CpuBackend::do_rope_tables(const Tensor& cos, const Tensor& sin, const Tensor& pos,
                                const Tensor& inv_freq) {
  cpu::rope_tables(cos.f32(), sin.f32(), pos.i32(), pos.numel(), inv_freq.f32(), inv_freq.numel());
}

void CpuBackend::do_rope(const Tensor& x, const Tensor& cos, const Tensor& sin, int64_t H,
                         bool inverse) {
  const int64_t N = cos.rows(), D = 2 * cos.row_numel();
  cpu::rope_rotate(x.f32(), cos.f32(), sin.f32(), N, H, D, inverse);
}

void CpuBackend::do_swiglu_forward(const Tensor& a, const Tensor& g, const Tensor& u) {
  cpu::swiglu_forward(a.f32(), g.f32(), u.f32(), a.numel());
}

void CpuBackend::do_swiglu_backward(const Tensor& dg, const Tensor& du, const Tensor& da,
                                    const Tensor& g, const Tensor& u) {
  cpu::swiglu_backward(dg.f32(), du.f32(), da.f32(), g.f32(), u.f32(), g.numel());
}

void CpuBackend::do_add(const Tensor& y, const Tensor& a, const Tensor& b) {
  cpu::add(y.f32(), a.f32(), b.f32(), y.numel());
}

// ---------------------------------------------------------------------------- attention
namespace {
std::span<const int64_t> starts(const SeqIndex& s) {
  return {s.cu, static_cast<size_t>(s.S + 1)};
}
cpu::AttnShape cpu_shape(const AttnShape& a) {
  return {a.N, a.H, a.Hkv, a.D};
}
}  // namespace

void CpuBackend::do_attention_forward(const Tensor& o, const Tensor& lse, const Tensor& q,
                                      const Tensor& k, const Tensor& v, const SeqIndex& seqs,
                                      const AttnShape& s) {
  ArenaScope scope(scratch());
  const Tensor w = scratch().alloc_f32({cpu::attention_forward_work(seqs.max_len)});
  cpu::attention_forward(o.f32(), lse.f32(), q.f32(), k.f32(), v.f32(), starts(seqs), cpu_shape(s),
                         w.f32());
}

void CpuBackend::do_attention_backward(const Tensor& dq, const Tensor& dk, const Tensor& dv,
                                       const Tensor& dout, const Tensor& q, const Tensor& k,
                                       const Tensor& v, const Tensor& o, const Tensor& lse,
                                       const SeqIndex& seqs, const AttnShape& s) {
  ArenaScope scope(scratch());
  const Tensor w = scratch().alloc_f32({cpu::attention_backward_work(seqs.max_len)});
  cpu::attention_backward(dq.f32(), dk.f32(), dv.f32(), dout.f32(), q.f32(), k.f32(), v.f32(),
                          o.f32(), lse.f32(), starts(seqs), cpu_shape(s), w.f32());
}

void CpuBackend::do_kv_append(const Tensor& kc, const Tensor& vc, const Tensor& k, const Tensor& v,
                              int64_t max_len, const SeqIndex& seqs) {
  const int64_t width = k.numel() / std::max<int64_t>(seqs.N(), 1);
  cpu::kv_append(kc.f32(), vc.f32(), k.f32(), v.f32(), width, max_len, seqs.cu, seqs.S, seqs.pos,
                 seqs.slots);
}

void CpuBackend::do_attention_decode(const Tensor& o, const Tensor& q, const Tensor& kc,
                                     const Tensor& vc, int64_t max_len, const SeqIndex& seqs,
                                     const AttnShape& s) {
  ArenaScope scope(scratch());
  const int64_t keys = cpu::attention_cached_keys(starts(seqs), seqs.pos);
  const Tensor w = scratch().alloc_f32({cpu::attention_cached_work(seqs.max_len, keys)});
  cpu::attention_cached_forward(o.f32(), q.f32(), kc.f32(), vc.f32(), max_len * s.Hkv * s.D,
                                starts(seqs), seqs.pos, {seqs.slots, static_cast<size_t>(seqs.S)},
                                cpu_shape(s), w.f32());
}

// ---------------------------------------------------------------------------- rows
void CpuBackend::do_embedding_forward(const Tensor& y, const Tensor& ids, const Tensor& E,
                                      int64_t vocab_start) {
  cpu::embedding_forward(y.f32(), ids.i32(), E.f32(), ids.numel(), E.row_numel(), vocab_start,
                         E.rows());
}

void CpuBackend::do_embedding_backward(const Tensor& dE, const Tensor& ids, const Tensor& dy,
                                       int64_t vocab_start) {
  cpu::embedding_backward(dE.f32(), ids.i32(), dy.f32(), ids.numel(), dE.row_numel(), vocab_start,
                          dE.rows());
}

void CpuBackend::do_gather_rows(const Tensor& out, const Tensor& x, const Tensor& rows) {
  cpu::gather_rows(out.f32(), x.f32(), rows.i32(), rows.numel(), x.row_numel());
}

void CpuBackend::do_scatter_add_rows(const Tensor& dx, const Tensor& rows, const Tensor& src) {
  cpu::scatter_add_rows(dx.f32(), rows.i32(), src.f32(), rows.numel(), dx.row_numel());
}

void CpuBackend::do_row_dots(const Tensor& out, const Tensor& a, const Tensor& b) {
  cpu::row_dots(out.f64(), a.f32(), b.f32(), a.rows(), a.numel() / a.rows());
}

// ---------------------------------------------------------------------------- lens
void CpuBackend::do_lens_stats(const Tensor& m, const Tensor& packed, const Tensor& x,
                               const Tensor& E, const Tensor& targets, int64_t v0) {
  const int64_t d = E.row_numel(), rows = x.numel() / d;
  ArenaScope scope(scratch());
  const Tensor z = scratch().alloc_f32({cpu::lens_work(rows, E.rows())});
  cpu::lens_stats(m.f32(), packed.f32(), x.f32(), rows, E.f32(), E.rows(), d, targets.i32(), v0,
                  z.f32());
}

void CpuBackend::do_lens_rescale(const Tensor& packed, const Tensor& m_local,
                                 const Tensor& m_global, const Tensor& targets, int64_t v0,
                                 int64_t V_local) {
  cpu::lens_rescale(packed.f32(), m_local.f32(), m_global.f32(), targets.i32(), v0, V_local,
                    m_local.numel());
}

void CpuBackend::do_lens_outputs(const Tensor& entropy, const Tensor& logprob,
                                 const Tensor& packed) {
  cpu::lens_outputs(entropy.f32(), logprob.f32(), packed.f32(), packed.numel() / 3);
}

void CpuBackend::do_lens_backward(const Tensor& dx, const Tensor& dE, const Tensor& x,
                                  const Tensor& E, const Tensor& m, const Tensor& packed,
                                  const Tensor& targets, int64_t v0, const Tensor& g_logprob,
                                  const Tensor& g_entropy) {
  const int64_t d = E.row_numel(), rows = m.numel();
  ArenaScope scope(scratch());
  const Tensor z = scratch().alloc_f32({cpu::lens_work(rows, E.rows())});
  cpu::lens_backward(dx.f32(), dE.f32(), x.f32(), rows, E.f32(), E.rows(), d, m.f32(), packed.f32(),
                     targets.i32(), v0, g_logprob.f32(), g_entropy.f32(), z.f32());
}

void CpuBackend::do_lens_expectation(const Tensor& ebar, const Tensor& x, const Tensor& E,
                                     const Tensor& m, const Tensor& packed) {
  const int64_t d = E.row_numel(), rows = m.numel();
  ArenaScope scope(scratch());
  const Tensor z = scratch().alloc_f32({cpu::lens_work(rows, E.rows())});
  cpu::lens_expectation(ebar.f32(), x.f32(), rows, E.f32(), E.rows(), d, m.f32(), packed.f32(),
                        z.f32());
}

// ---------------------------------------------------------------------------- optimizer
void CpuBackend::do_adamw_update(const Tensor& w, const Tensor& g, const Tensor& m, const Tensor& v,
                                 const AdamStep& a) {
  cpu::adamw_update(w.f32(), g.f32(), m.f32(), v.f32(), w.numel(), a.step_size, a.bc2_sqrt, a.decay,
                    a.beta1, a.beta2, a.eps);
}

double CpuBackend::do_sum_squares(const Tensor& x) {
  return cpu::sum_squares(x.f32(), x.numel());
}

void CpuBackend::do_scale(const Tensor& x, float c) {
  cpu::scale(x.f32(), c, x.numel());
}

// ---------------------------------------------------------------------------- sampling
void CpuBackend::do_row_entropy(const Tensor& entropy, const Tensor& z, int64_t cols) {
  const int64_t S = z.rows(), ld = z.dim(1);
  for (int64_t i = 0; i < S; ++i) entropy.f32()[i] = cpu::entropy_of_logits(z.f32() + i * ld, cols);
}

void CpuBackend::do_sample(const Tensor& token, const Tensor& logprob, const Tensor& entropy,
                           const Tensor& z, int64_t cols, const Tensor& temperature,
                           const Tensor& uniform, float top_p, int64_t top_k) {
  const int64_t S = z.rows(), ld = z.dim(1);
  ArenaScope scope(scratch());
  const Tensor wp = scratch().alloc(DType::F64, {cols});
  const Tensor wi = scratch().alloc(DType::I32, {cols});
  for (int64_t i = 0; i < S; ++i)
    token.i32()[i] = cpu::sample_token(z.f32() + i * ld, cols, temperature.f32()[i], top_p, top_k,
                                       uniform.f64()[i], logprob.f32() + i, entropy.f32() + i,
                                       wp.f64(), wi.i32());
}

}  // namespace bupo
