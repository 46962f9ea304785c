#include "backend/backend.hpp"

#include <cstring>
#include <map>

#include "parallel/comm.hpp"

namespace bupo {

const char* op_name(Op op) {
  static const char* const kNames[kNumOps] = {"gemm",
                                              "linear_forward",
                                              "linear_backward",
                                              "rmsnorm_forward",
                                              "rmsnorm_backward",
                                              "rope_tables",
                                              "rope_forward",
                                              "rope_backward",
                                              "attention_forward",
                                              "attention_backward",
                                              "attention_decode",
                                              "kv_append",
                                              "swiglu_forward",
                                              "swiglu_backward",
                                              "embedding_forward",
                                              "embedding_backward",
                                              "gather_rows",
                                              "scatter_add_rows",
                                              "row_dots",
                                              "add",
                                              "lens_stats",
                                              "lens_rescale",
                                              "lens_outputs",
                                              "lens_backward",
                                              "lens_expectation",
                                              "adamw_update",
                                              "sum_squares",
                                              "scale",
                                              "row_entropy",
                                              "sample"};
  const auto i = static_cast<size_t>(op);
  return i < kNumOps ? kNames[i] : "?";
}

DType op_dtype(Op op, DType compute) {
  switch (op) {
    case Op::RopeTables:
    case Op::LensRescale:
    case Op::LensOutputs:
    case Op::AdamwUpdate:
    case Op::SumSquares:
    case Op::Scale:
    case Op::RowEntropy:
    case Op::Sample:
      return DType::F32;
    default:
      return compute;
  }
}

Backend::Backend()
    : activation_pool_(*this, MemRole::Activations),
      kv_pool_(*this, MemRole::KVCache),
      scratch_(*this, MemRole::Scratch) {}

void Backend::release_memory() {
  activation_pool_.clear();
  kv_pool_.clear();
  scratch_ = Arena(*this, MemRole::Scratch);
}

void Backend::require(Op op, DType t) const {
  BUPO_CHECK(supports(op, t), "backend '", name(), "' does not implement op '", op_name(op),
             "' for ", dtype_name(t),
             " tensors (no fallback to another device: choose a "
             "backend that has it, e.g. model.device = \"cpu\")");
}

std::shared_ptr<Comm> Backend::device_comm(std::shared_ptr<Comm> host_group, double) {
  BUPO_CHECK(comm_memory() == CommMemory::Host, "backend '", name(),
             "' keeps tensors in device memory but has no device communicator");
  return host_group;
}

// ---------------------------------------------------------------------------- memory
Block Backend::allocate(MemRole role, size_t bytes) {
  void* p = raw_alloc(bytes);
  BUPO_CHECK(p != nullptr, "backend '", name(), "': out of memory allocating ", bytes,
             " bytes for ", mem_role_name(role));
  MemCounters& c = counters_[static_cast<size_t>(role)];
  c.allocations += 1;
  c.bytes_live += bytes;
  c.bytes_peak = std::max(c.bytes_peak, c.bytes_live);
  return Block(this, role, p, bytes);
}

void Backend::release_block(void* p, size_t bytes, MemRole role) {
  MemCounters& c = counters_[static_cast<size_t>(role)];
  c.frees += 1;
  c.bytes_live -= bytes;
  raw_free(p);
}

uint64_t Backend::total_allocations() const {
  uint64_t n = 0;
  for (const auto& c : counters_) n += c.allocations;
  return n;
}

// ---------------------------------------------------------------------------- checks
void Backend::check(Op op, std::initializer_list<const Tensor*> ts) const {
  for (const Tensor* t : ts) {
    if (t->empty()) continue;
    BUPO_CHECK(t->device == device(), op_name(op), ": a ", device_name(t->device),
               " tensor given to backend '", name(), "'");
  }
}

namespace {
void need(bool ok, Op op, const char* what, const Tensor& t) {
  BUPO_CHECK(ok, op_name(op), ": ", what, " (got ", t.shape.str(), " ", dtype_name(t.dtype), ")");
}
// Every non-empty tensor of `ts` has dtype `t` (the call's compute dtype, or F32 for statistics).
void need_dtype(Op op, DType t, std::initializer_list<const Tensor*> ts, const char* role) {
  for (const Tensor* x : ts)
    if (!x->empty() && x->dtype != t)
      fail(op_name(op), ": ", role, " tensors must be ", dtype_name(t), " (got ", x->shape.str(),
           " ", dtype_name(x->dtype), ")");
}
void need_rows(Op op, const char* name, const Tensor& t, int64_t rows, int64_t cols) {
  need(t.numel() == rows * cols && (t.shape.rank() == 1 || t.rows() == rows), op, name, t);
}
// The extent of a strided (rows, cols) operand with leading dimension ld fits in the view.
void need_extent(Op op, const char* name, const Tensor& t, int64_t rows, int64_t cols, int64_t ld) {
  const int64_t extent = rows == 0 || cols == 0 ? 0 : (rows - 1) * ld + cols;
  BUPO_CHECK(ld >= cols && extent <= t.numel(), op_name(op), ": ", name, " (", rows, " x ", cols,
             ", ld ", ld, ") does not fit its view ", t.shape.str(), " ", dtype_name(t.dtype));
}
}  // namespace

// ---------------------------------------------------------------------------- transfers
void Backend::upload(const Tensor& dst, const void* src) {
  BUPO_CHECK(dst.device == device(), "upload: destination is not in backend '", name(), "'");
  if (dst.bytes() > 0) do_upload(dst.data, src, dst.bytes());
}
void Backend::download(void* dst, const Tensor& src) {
  BUPO_CHECK(src.device == device(), "download: source is not in backend '", name(), "'");
  if (src.bytes() > 0) do_download(dst, src.data, src.bytes());
}
void Backend::copy(const Tensor& dst, const Tensor& src) {
  BUPO_CHECK(dst.device == device() && src.device == device() && dst.bytes() == src.bytes(),
             "copy: ", dst.shape.str(), " ", dtype_name(dst.dtype), " <- ", src.shape.str(), " ",
             dtype_name(src.dtype), " on backend '", name(), "'");
  if (dst.bytes() > 0 && dst.data != src.data) do_copy(dst.data, src.data, dst.bytes());
}
void Backend::fill(const Tensor& dst, float value) {
  BUPO_CHECK(dst.device == device() && (dst.dtype == DType::F32 || dst.dtype == DType::BF16),
             "fill: an F32 or BF16 tensor of backend '", name(), "' expected");
  if (dst.numel() > 0) do_fill(dst, value);
}
void Backend::convert(const Tensor& dst, const Tensor& src) {
  const auto floating = [](DType t) { return t == DType::F32 || t == DType::BF16; };
  BUPO_CHECK(dst.device == device() && src.device == device() && floating(dst.dtype) &&
                 floating(src.dtype) && dst.numel() == src.numel(),
             "convert: ", dst.shape.str(), " ", dtype_name(dst.dtype), " <- ", src.shape.str(), " ",
             dtype_name(src.dtype), " on backend '", name(), "'");
  if (dst.numel() == 0) return;
  if (dst.dtype == src.dtype)
    copy(dst, src);
  else
    do_convert(dst, src);
}

// ---------------------------------------------------------------------------- linear algebra
void Backend::gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const Tensor& A,
                   int64_t lda, const Tensor& B, int64_t ldb, float beta, const Tensor& C,
                   int64_t ldc) {
  require(Op::Gemm, A.dtype);
  check(Op::Gemm, {&A, &B, &C});
  need_dtype(Op::Gemm, A.dtype, {&B}, "A and B");
  BUPO_CHECK(C.dtype == A.dtype || C.dtype == DType::F32, "gemm: C must be ", dtype_name(A.dtype),
             " or F32 (got ", dtype_name(C.dtype), ")");
  BUPO_CHECK(M >= 0 && N >= 0 && K >= 0, "gemm: negative size ", M, "x", N, "x", K);
  need_extent(Op::Gemm, "A", A, ta ? K : M, ta ? M : K, lda);
  need_extent(Op::Gemm, "B", B, tb ? N : K, tb ? K : N, ldb);
  need_extent(Op::Gemm, "C", C, M, N, ldc);
  do_gemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

void Backend::linear_forward(const Tensor& y, const Tensor& x, const Tensor& W, const Tensor& b,
                             bool accumulate) {
  const Op op = Op::LinearForward;
  require(op, x.dtype);
  check(op, {&y, &x, &W, &b});
  need_dtype(op, x.dtype, {&y, &W, &b}, "activation and weight");
  const int64_t out = W.dim(0), in = W.row_numel(), N = x.numel() / std::max<int64_t>(in, 1);
  need(W.shape.rank() == 2 && x.numel() == N * in, op, "x (N, in) with W (out, in) expected", x);
  need_rows(op, "y (N, out) expected", y, N, out);
  if (!b.empty()) need(b.numel() == out, op, "b (out) expected", b);
  do_linear_forward(y, x, W, b, accumulate);
}

void Backend::linear_backward(const Tensor& dx, const Tensor& dW, const Tensor& db,
                              const Tensor& dy, const Tensor& x, const Tensor& W,
                              bool accumulate_dx) {
  const Op op = Op::LinearBackward;
  require(op, dy.dtype);
  check(op, {&dx, &dW, &db, &dy, &x, &W});
  need_dtype(op, dy.dtype, {&dx, &x, &W}, "activation and weight");
  need_dtype(op, DType::F32, {&dW, &db}, "parameter gradient");
  const int64_t out = W.dim(0), in = W.row_numel(), N = x.numel() / std::max<int64_t>(in, 1);
  need(dy.numel() == N * out, op, "dy (N, out) expected", dy);
  if (!dx.empty()) need(dx.numel() == N * in, op, "dx (N, in) expected", dx);
  if (!dW.empty()) need(dW.numel() == out * in, op, "dW (out, in) expected", dW);
  if (!db.empty()) need(db.numel() == out, op, "db (out) expected", db);
  do_linear_backward(dx, dW, db, dy, x, W, accumulate_dx);
}

// ---------------------------------------------------------------------------- elementwise
void Backend::rmsnorm_forward(const Tensor& y, const Tensor& rstd, const Tensor& x, const Tensor& w,
                              float eps) {
  const Op op = Op::RmsNormForward;
  require(op, x.dtype);
  check(op, {&y, &rstd, &x, &w});
  need_dtype(op, x.dtype, {&y, &w}, "activation and weight");
  need_dtype(op, DType::F32, {&rstd}, "statistics");
  const int64_t C = w.numel(), R = x.numel() / std::max<int64_t>(C, 1);
  need(x.numel() == R * C && y.numel() == x.numel(), op, "x, y (R, C) with w (C) expected", x);
  if (!rstd.empty()) need(rstd.numel() == R, op, "rstd (R) expected", rstd);
  do_rmsnorm_forward(y, rstd, x, w, eps);
}

void Backend::rmsnorm_backward(const Tensor& dx, const Tensor& dw, const Tensor& dy,
                               const Tensor& x, const Tensor& w, const Tensor& rstd,
                               bool accumulate_dx) {
  const Op op = Op::RmsNormBackward;
  require(op, dy.dtype);
  check(op, {&dx, &dw, &dy, &x, &w, &rstd});
  need_dtype(op, dy.dtype, {&dx, &x, &w}, "activation and weight");
  need_dtype(op, DType::F32, {&dw, &rstd}, "gradient and statistics");
  const int64_t C = w.numel(), R = x.numel() / std::max<int64_t>(C, 1);
  need(x.numel() == R * C && dy.numel() == x.numel() && rstd.numel() == R, op,
       "dy, x (R, C), w (C), rstd (R) expected", dy);
  if (!dx.empty()) need(dx.numel() == x.numel(), op, "dx (R, C) expected", dx);
  if (!dw.empty()) need(dw.numel() == C, op, "dw (C) expected", dw);
  do_rmsnorm_backward(dx, dw, dy, x, w, rstd, accumulate_dx);
}

void Backend::rope_tables(const Tensor& cos, const Tensor& sin, const Tensor& pos,
                          const Tensor& inv_freq) {
  const Op op = Op::RopeTables;
  require(op, DType::F32);
  check(op, {&cos, &sin, &pos, &inv_freq});
  need_dtype(op, DType::F32, {&cos, &sin, &inv_freq}, "table");
  const int64_t N = pos.numel(), half = inv_freq.numel();
  need(pos.dtype == DType::I32, op, "pos (N) I32 expected", pos);
  need(cos.numel() == N * half && sin.numel() == N * half, op, "cos, sin (N, D/2) expected", cos);
  do_rope_tables(cos, sin, pos, inv_freq);
}

void Backend::rope_forward(const Tensor& x, const Tensor& cos, const Tensor& sin, int64_t H) {
  require(Op::RopeForward, x.dtype);
  check(Op::RopeForward, {&x, &cos, &sin});
  need_dtype(Op::RopeForward, DType::F32, {&cos, &sin}, "table");
  const int64_t N = cos.rows(), half = cos.row_numel();
  need(x.numel() == N * H * 2 * half, Op::RopeForward, "x (N, H·D) with cos (N, D/2) expected", x);
  do_rope(x, cos, sin, H, false);
}

void Backend::rope_backward(const Tensor& dx, const Tensor& cos, const Tensor& sin, int64_t H) {
  require(Op::RopeBackward, dx.dtype);
  check(Op::RopeBackward, {&dx, &cos, &sin});
  need_dtype(Op::RopeBackward, DType::F32, {&cos, &sin}, "table");
  const int64_t N = cos.rows(), half = cos.row_numel();
  need(dx.numel() == N * H * 2 * half, Op::RopeBackward, "dx (N, H·D) with cos (N, D/2) expected",
       dx);
  do_rope(dx, cos, sin, H, true);
}

void Backend::swiglu_forward(const Tensor& a, const Tensor& g, const Tensor& u) {
  require(Op::SwigluForward, g.dtype);
  check(Op::SwigluForward, {&a, &g, &u});
  need_dtype(Op::SwigluForward, g.dtype, {&a, &u}, "activation");
  need(a.numel() == g.numel() && u.numel() == g.numel(), Op::SwigluForward,
       "a, g, u of one size expected", a);
  do_swiglu_forward(a, g, u);
}

void Backend::swiglu_backward(const Tensor& dg, const Tensor& du, const Tensor& da, const Tensor& g,
                              const Tensor& u) {
  require(Op::SwigluBackward, g.dtype);
  check(Op::SwigluBackward, {&dg, &du, &da, &g, &u});
  need_dtype(Op::SwigluBackward, g.dtype, {&dg, &du, &da, &u}, "activation");
  need(dg.numel() == g.numel() && du.numel() == g.numel() && da.numel() == g.numel() &&
           u.numel() == g.numel(),
       Op::SwigluBackward, "dg, du, da, g, u of one size expected", da);
  do_swiglu_backward(dg, du, da, g, u);
}

void Backend::add(const Tensor& y, const Tensor& a, const Tensor& b) {
  require(Op::Add, y.dtype);
  check(Op::Add, {&y, &a, &b});
  need(a.numel() == y.numel() && b.numel() == y.numel() && a.dtype == y.dtype && b.dtype == y.dtype,
       Op::Add, "y, a, b of one size and dtype expected", y);
  do_add(y, a, b);
}

// ---------------------------------------------------------------------------- attention
namespace {
void need_seqs(Op op, const SeqIndex& s, int64_t N) {
  BUPO_CHECK(s.cu != nullptr && s.S >= 1 && s.cu[0] == 0 && s.cu[s.S] == N, op_name(op),
             ": sequence starts must run from 0 to N=", N);
  for (int64_t i = 0; i < s.S; ++i)
    BUPO_CHECK(s.cu[i + 1] >= s.cu[i] && s.cu[i + 1] - s.cu[i] <= s.max_len, op_name(op),
               ": sequence ", i, " has a bad length (max_len ", s.max_len, ")");
}
void need_heads(Op op, const AttnShape& a) {
  BUPO_CHECK(a.H > 0 && a.Hkv > 0 && a.D > 0 && a.H % a.Hkv == 0, op_name(op), ": H=", a.H,
             " must be a positive multiple of Hkv=", a.Hkv, " (D=", a.D, ")");
}
}  // namespace

void Backend::attention_forward(const Tensor& o, const Tensor& lse, const Tensor& q,
                                const Tensor& k, const Tensor& v, const SeqIndex& seqs,
                                const AttnShape& s) {
  const Op op = Op::AttentionForward;
  require(op, q.dtype);
  check(op, {&o, &lse, &q, &k, &v});
  need_dtype(op, q.dtype, {&o, &k, &v}, "activation");
  need_dtype(op, DType::F32, {&lse}, "statistics");
  need_heads(op, s);
  need_seqs(op, seqs, s.N);
  need(q.numel() == s.N * s.H * s.D && o.numel() == q.numel() && lse.numel() == s.N * s.H, op,
       "q, o (N, H·D) and lse (N, H) expected", q);
  need(k.numel() == s.N * s.Hkv * s.D && v.numel() == k.numel(), op, "k, v (N, Hkv·D) expected", k);
  do_attention_forward(o, lse, q, k, v, seqs, s);
}

void Backend::attention_backward(const Tensor& dq, const Tensor& dk, const Tensor& dv,
                                 const Tensor& dout, const Tensor& q, const Tensor& k,
                                 const Tensor& v, const Tensor& o, const Tensor& lse,
                                 const SeqIndex& seqs, const AttnShape& s) {
  const Op op = Op::AttentionBackward;
  require(op, q.dtype);
  check(op, {&dq, &dk, &dv, &dout, &q, &k, &v, &o, &lse});
  need_dtype(op, q.dtype, {&dq, &dk, &dv, &dout, &k, &v, &o}, "activation");
  need_dtype(op, DType::F32, {&lse}, "statistics");
  need_heads(op, s);
  need_seqs(op, seqs, s.N);
  const int64_t nq = s.N * s.H * s.D, nk = s.N * s.Hkv * s.D;
  need(q.numel() == nq && o.numel() == nq && dout.numel() == nq && dq.numel() == nq &&
           lse.numel() == s.N * s.H,
       op, "q, o, dout, dq (N, H·D) and lse (N, H) expected", q);
  need(k.numel() == nk && v.numel() == nk && dk.numel() == nk && dv.numel() == nk, op,
       "k, v, dk, dv (N, Hkv·D) expected", k);
  do_attention_backward(dq, dk, dv, dout, q, k, v, o, lse, seqs, s);
}

void Backend::kv_append(const Tensor& kc, const Tensor& vc, const Tensor& k, const Tensor& v,
                        int64_t max_len, const SeqIndex& seqs) {
  const Op op = Op::KvAppend;
  require(op, k.dtype);
  check(op, {&kc, &vc, &k, &v});
  need_dtype(op, k.dtype, {&kc, &vc, &v}, "cache and activation");
  const int64_t N = seqs.N(), width = k.numel() / std::max<int64_t>(N, 1);
  need_seqs(op, seqs, N);
  need(v.numel() == k.numel() && kc.numel() == vc.numel() && max_len > 0 &&
           kc.numel() % (max_len * std::max<int64_t>(width, 1)) == 0,
       op, "k, v (N, width) and caches (slots·max_len, width) expected", kc);
  const int64_t slots = kc.numel() / (max_len * std::max<int64_t>(width, 1));
  BUPO_CHECK(seqs.pos != nullptr && seqs.slots != nullptr, op_name(op), ": positions and slots");
  for (int64_t s = 0; s < seqs.S; ++s) {
    BUPO_CHECK(seqs.slots[s] >= 0 && seqs.slots[s] < slots, op_name(op), ": slot ", seqs.slots[s],
               " outside the cache's ", slots);
    for (int64_t n = seqs.cu[s]; n < seqs.cu[s + 1]; ++n)
      BUPO_CHECK(seqs.pos[n] >= 0 && seqs.pos[n] < max_len, op_name(op), ": position ", seqs.pos[n],
                 " outside the cache length ", max_len);
  }
  do_kv_append(kc, vc, k, v, max_len, seqs);
}

void Backend::attention_decode(const Tensor& o, const Tensor& q, const Tensor& kc, const Tensor& vc,
                               int64_t max_len, const SeqIndex& seqs, const AttnShape& s) {
  const Op op = Op::AttentionDecode;
  require(op, q.dtype);
  check(op, {&o, &q, &kc, &vc});
  need_dtype(op, q.dtype, {&o, &kc, &vc}, "cache and activation");
  need_heads(op, s);
  need_seqs(op, seqs, s.N);
  need(q.numel() == s.N * s.H * s.D && o.numel() == q.numel(), op, "q, o (N, H·D) expected", q);
  need(kc.numel() == vc.numel() && kc.numel() % (max_len * s.Hkv * s.D) == 0, op,
       "caches (slots·max_len, Hkv·D) expected", kc);
  BUPO_CHECK(seqs.pos != nullptr && seqs.slots != nullptr, op_name(op), ": positions and slots");
  do_attention_decode(o, q, kc, vc, max_len, seqs, s);
}

// ---------------------------------------------------------------------------- rows
void Backend::embedding_forward(const Tensor& y, const Tensor& ids, const Tensor& E,
                                int64_t vocab_start) {
  const Op op = Op::EmbeddingForward;
  require(op, E.dtype);
  check(op, {&y, &ids, &E});
  need_dtype(op, E.dtype, {&y}, "activation and weight");
  need(ids.dtype == DType::I32, op, "ids (N) I32 expected", ids);
  need_rows(op, "y (N, C) expected", y, ids.numel(), E.row_numel());
  do_embedding_forward(y, ids, E, vocab_start);
}

void Backend::embedding_backward(const Tensor& dE, const Tensor& ids, const Tensor& dy,
                                 int64_t vocab_start) {
  const Op op = Op::EmbeddingBackward;
  require(op, dy.dtype);
  check(op, {&dE, &ids, &dy});
  need_dtype(op, DType::F32, {&dE}, "parameter gradient");
  need(ids.dtype == DType::I32, op, "ids (N) I32 expected", ids);
  need(dy.numel() == ids.numel() * dE.row_numel(), op, "dy (N, C) expected", dy);
  do_embedding_backward(dE, ids, dy, vocab_start);
}

void Backend::gather_rows(const Tensor& out, const Tensor& x, const Tensor& rows) {
  const Op op = Op::GatherRows;
  require(op, x.dtype);
  check(op, {&out, &x, &rows});
  need_dtype(op, x.dtype, {&out}, "activation");
  need(rows.dtype == DType::I32, op, "rows (R) I32 expected", rows);
  need_rows(op, "out (R, C) expected", out, rows.numel(), x.row_numel());
  do_gather_rows(out, x, rows);
}

void Backend::scatter_add_rows(const Tensor& dx, const Tensor& rows, const Tensor& src) {
  const Op op = Op::ScatterAddRows;
  require(op, dx.dtype);
  check(op, {&dx, &rows, &src});
  need_dtype(op, dx.dtype, {&src}, "activation");
  need(rows.dtype == DType::I32, op, "rows (R) I32 expected", rows);
  need(src.numel() == rows.numel() * dx.row_numel(), op, "src (R, C) expected", src);
  do_scatter_add_rows(dx, rows, src);
}

void Backend::row_dots(const Tensor& out, const Tensor& a, const Tensor& b) {
  const Op op = Op::RowDots;
  require(op, a.dtype);
  check(op, {&out, &a, &b});
  need_dtype(op, a.dtype, {&b}, "activation");
  need(out.dtype == DType::F64, op, "out (n, 3) F64 expected", out);
  need(b.numel() == a.numel() && a.rows() > 0 && out.numel() == 3 * a.rows(), op,
       "a, b (n, C) of one shape and out (n, 3) expected", b);
  do_row_dots(out, a, b);
}

// ---------------------------------------------------------------------------- lens
void Backend::lens_stats(const Tensor& m, const Tensor& packed, const Tensor& x, const Tensor& E,
                         const Tensor& targets, int64_t v0) {
  const Op op = Op::LensStats;
  require(op, x.dtype);
  check(op, {&m, &packed, &x, &E, &targets});
  need_dtype(op, x.dtype, {&E}, "activation and weight");
  need_dtype(op, DType::F32, {&m, &packed}, "statistics");
  const int64_t d = E.row_numel(), n = x.numel() / std::max<int64_t>(d, 1);
  need(x.numel() == n * d && m.numel() == n && packed.numel() == 3 * n, op,
       "x (n, d), m (n), packed (n, 3) with E (V, d) expected", x);
  if (!targets.empty())
    need(targets.numel() == n && targets.dtype == DType::I32, op, "targets (n) I32 expected",
         targets);
  do_lens_stats(m, packed, x, E, targets, v0);
}

void Backend::lens_rescale(const Tensor& packed, const Tensor& m_local, const Tensor& m_global,
                           const Tensor& targets, int64_t v0, int64_t V_local) {
  const Op op = Op::LensRescale;
  require(op, DType::F32);
  check(op, {&packed, &m_local, &m_global, &targets});
  need_dtype(op, DType::F32, {&packed, &m_local, &m_global}, "statistics");
  const int64_t n = m_local.numel();
  need(packed.numel() == 3 * n && m_global.numel() == n, op, "packed (n, 3), m (n) expected",
       packed);
  do_lens_rescale(packed, m_local, m_global, targets, v0, V_local);
}

void Backend::lens_outputs(const Tensor& entropy, const Tensor& logprob, const Tensor& packed) {
  const Op op = Op::LensOutputs;
  require(op, DType::F32);
  check(op, {&entropy, &logprob, &packed});
  need_dtype(op, DType::F32, {&entropy, &logprob, &packed}, "statistics");
  const int64_t n = packed.numel() / 3;
  if (!entropy.empty()) need(entropy.numel() == n, op, "entropy (n) expected", entropy);
  if (!logprob.empty()) need(logprob.numel() == n, op, "logprob (n) expected", logprob);
  do_lens_outputs(entropy, logprob, packed);
}

void Backend::lens_backward(const Tensor& dx, const Tensor& dE, const Tensor& x, const Tensor& E,
                            const Tensor& m, const Tensor& packed, const Tensor& targets,
                            int64_t v0, const Tensor& g_logprob, const Tensor& g_entropy) {
  const Op op = Op::LensBackward;
  require(op, x.dtype);
  check(op, {&dx, &dE, &x, &E, &m, &packed, &targets, &g_logprob, &g_entropy});
  need_dtype(op, x.dtype, {&dx, &E}, "activation and weight");
  need_dtype(op, DType::F32, {&dE, &m, &packed, &g_logprob, &g_entropy}, "gradient and statistics");
  const int64_t d = E.row_numel(), n = m.numel();
  need(x.numel() == n * d && dx.numel() == n * d && dE.numel() == E.numel() &&
           packed.numel() == 3 * n,
       op, "x, dx (n, d), dE like E, packed (n, 3) expected", x);
  if (!g_logprob.empty()) {
    need(g_logprob.numel() == n, op, "g_logprob (n) expected", g_logprob);
    need(!targets.empty(), op, "log-prob gradients need targets", targets);
  }
  if (!g_entropy.empty()) need(g_entropy.numel() == n, op, "g_entropy (n) expected", g_entropy);
  do_lens_backward(dx, dE, x, E, m, packed, targets, v0, g_logprob, g_entropy);
}

void Backend::lens_expectation(const Tensor& ebar, const Tensor& x, const Tensor& E,
                               const Tensor& m, const Tensor& packed) {
  const Op op = Op::LensExpectation;
  require(op, x.dtype);
  check(op, {&ebar, &x, &E, &m, &packed});
  need_dtype(op, x.dtype, {&ebar, &E}, "activation and weight");
  need_dtype(op, DType::F32, {&m, &packed}, "statistics");
  const int64_t d = E.row_numel(), n = m.numel();
  need(x.numel() == n * d && ebar.numel() == n * d && packed.numel() == 3 * n, op,
       "x, ebar (n, d) and packed (n, 3) expected", x);
  do_lens_expectation(ebar, x, E, m, packed);
}

// ---------------------------------------------------------------------------- optimizer
void Backend::adamw_update(const Tensor& w, const Tensor& g, const Tensor& m, const Tensor& v,
                           const AdamStep& a) {
  require(Op::AdamwUpdate, DType::F32);
  check(Op::AdamwUpdate, {&w, &g, &m, &v});
  need_dtype(Op::AdamwUpdate, DType::F32, {&w, &g, &m, &v}, "master weight and state");
  need(g.numel() == w.numel() && m.numel() == w.numel() && v.numel() == w.numel(), Op::AdamwUpdate,
       "w, g, m, v of one size expected", w);
  do_adamw_update(w, g, m, v, a);
}

double Backend::sum_squares(const Tensor& x) {
  require(Op::SumSquares, DType::F32);
  check(Op::SumSquares, {&x});
  need_dtype(Op::SumSquares, DType::F32, {&x}, "gradient");
  return x.numel() == 0 ? 0.0 : do_sum_squares(x);
}

void Backend::scale(const Tensor& x, float c) {
  require(Op::Scale, DType::F32);
  check(Op::Scale, {&x});
  need_dtype(Op::Scale, DType::F32, {&x}, "gradient");
  if (x.numel() > 0) do_scale(x, c);
}

// ---------------------------------------------------------------------------- sampling
void Backend::row_entropy(const Tensor& entropy, const Tensor& z, int64_t cols) {
  require(Op::RowEntropy, DType::F32);
  check(Op::RowEntropy, {&entropy, &z});
  need_dtype(Op::RowEntropy, DType::F32, {&entropy, &z}, "logit and statistics");
  need(z.shape.rank() == 2 && entropy.numel() == z.rows() && cols >= 1 && cols <= z.dim(1),
       Op::RowEntropy, "z (S, ld), entropy (S), 1 <= cols <= ld expected", z);
  do_row_entropy(entropy, z, cols);
}

void Backend::sample(const Tensor& token, const Tensor& logprob, const Tensor& entropy,
                     const Tensor& z, int64_t cols, const Tensor& temperature,
                     const Tensor& uniform, float top_p, int64_t top_k) {
  const Op op = Op::Sample;
  require(op, DType::F32);
  check(op, {&token, &logprob, &entropy, &z, &temperature, &uniform});
  need_dtype(op, DType::F32, {&logprob, &entropy, &z, &temperature}, "logit and statistics");
  const int64_t S = z.rows();
  need(z.shape.rank() == 2 && cols >= 1 && cols <= z.dim(1), op, "z (S, ld), 1 <= cols <= ld", z);
  need(token.numel() == S && token.dtype == DType::I32, op, "token (S) I32 expected", token);
  need(logprob.numel() == S && entropy.numel() == S && temperature.numel() == S, op,
       "logprob, entropy, temperature (S) expected", logprob);
  need(uniform.numel() == S && uniform.dtype == DType::F64, op, "uniform (S) F64 expected",
       uniform);
  do_sample(token, logprob, entropy, z, cols, temperature, uniform, top_p, top_k);
}

// ---------------------------------------------------------------------------- staging
Tensor staged_input(Backend& be, const void* host, DType t, Dims d) {
  if (be.host_accessible()) return {const_cast<void*>(host), t, Device::CPU, d};
  Tensor v = be.scratch().alloc(t, d);
  be.upload(v, host);
  return v;
}
Tensor staged_output(Backend& be, float* host, Dims d) {
  if (be.host_accessible()) return Tensor::host(host, d);
  return be.scratch().alloc(DType::F32, d);
}
void fetch_output(Backend& be, const Tensor& view, float* host) {
  if (view.data != host) be.download(host, view);
}

// ---------------------------------------------------------------------------- registry
namespace {
std::map<std::string, BackendFactory>& factories() {
  static std::map<std::string, BackendFactory> f;
  return f;
}
std::map<std::string, std::unique_ptr<Backend>>& instances() {
  static auto* m = new std::map<std::string, std::unique_ptr<Backend>>();  // lives to exit
  return *m;
}
}  // namespace

void register_backend(const std::string& device, BackendFactory f) {
  factories()[device] = f;
}
bool backend_registered(const std::string& device) {
  return device == "cpu" || factories().contains(device);
}

Backend& backend_for(const std::string& spec, const std::string& source,
                     const std::string& precision) {
  BUPO_CHECK(precision == "auto" || precision == "bf16" || precision == "fp32", source,
             ": precision \"", precision, "\" (expected auto, bf16 or fp32)");
  if (spec == "cpu") {
    BUPO_CHECK(precision != "bf16", source, " = \"cpu\": the CPU backend computes in fp32 only ",
               "(precision bf16 needs device cuda)");
    return cpu_backend();
  }
  const std::string dev = spec.substr(0, spec.find(':'));
  BUPO_CHECK(dev == "cuda", source, " = \"", spec, "\": unknown device (expected \"cpu\" or ",
             "\"cuda\" / \"cuda:N\")");
  BUPO_CHECK(factories().contains(dev), source, " = \"", spec,
             "\": this build of bupo has no CUDA backend (it was configured without nvcc, or with "
             "-DBUPO_CUDA=OFF); rebuild on a machine with the CUDA toolkit, or use \"cpu\"");
  auto& inst = instances();
  const DType compute = precision == "fp32" ? DType::F32 : DType::BF16;
  const std::string key = spec + "/" + dtype_name(compute);
  auto it = inst.find(key);
  if (it == inst.end()) {
    std::unique_ptr<Backend> be;
    try {
      be = factories()[dev](spec, compute);
    } catch (const Error& e) {
      fail(source, " = \"", spec, "\": ", e.what());
    }
    it = inst.emplace(key, std::move(be)).first;
  }
  return *it->second;
}

}  // namespace bupo
