#include "lens/lens.hpp"

#include <algorithm>
#include <cmath>
#include <vector>

#include "core/error.hpp"
#include "parallel/tensor_parallel.hpp"

namespace bupo {

LensMode lens_mode_from_string(const std::string& s) {
  if (s == "raw") return LensMode::Raw;
  if (s == "normed") return LensMode::Normed;
  fail("lens: expected 'raw' or 'normed', got '", s, "'");
}
const char* lens_mode_name(LensMode m) {
  return m == LensMode::Raw ? "raw" : "normed";
}

int64_t Lens::chunk_for(int64_t n) const {
  if (chunk_rows > 0) return std::min(chunk_rows, std::max<int64_t>(n, 1));
  // about 8 M logits (32 MiB) per chunk, at least 4 rows
  const int64_t c =
      std::max<int64_t>(4, (int64_t{8} << 20) / std::max<int64_t>(unembed->shape[0], 1));
  return std::min(c, std::max<int64_t>(n, 1));
}

namespace {

// One chunk's buffers in the backend's scratch, in carve order (planning uses the same list).
struct ChunkBuffers {
  Tensor xn, rstd;    // (rows, d), (rows): the normed rows, when mode == Normed
  Tensor m, m_local;  // (rows): row maxima (global after the TP reduction), this shard's
  Tensor packed;      // (rows, 3)
  Tensor dxin;        // (rows, d): backward only
  Tensor ebar, dots;  // (rows, d), (rows, 3) F64: forward with a KL reference only
  ChunkBuffers(Arena& a, DType t, int64_t rows, int64_t d, bool normed, bool vocab_parallel,
               bool backward, bool expectation = false) {  // t: the compute dtype of the rows
    if (normed) {
      xn = a.alloc(t, {rows, d});
      rstd = a.alloc_f32({rows});
    }
    m = a.alloc_f32({rows});
    if (vocab_parallel) m_local = a.alloc_f32({rows});
    packed = a.alloc_f32({rows, 3});
    if (backward) dxin = a.alloc(t, {rows, d});
    if (expectation) {
      ebar = a.alloc(t, {rows, d});
      dots = a.alloc(DType::F64, {rows, 3});
    }
  }
};

struct Chunk {
  const Lens& L;
  Backend& be;
  int64_t r0, rows;
  ChunkBuffers buf;
  Tensor xr, xin, tg;  // this chunk's rows, the lens input (xr or its norm), targets on device

  Chunk(const Lens& lens, const Tensor& x, const int32_t* targets, int64_t row0, int64_t n,
        bool backward, bool expectation = false)
      : L(lens),
        be(lens.backend()),
        r0(row0),
        rows(n),
        buf(be.scratch(), x.dtype, n, lens.unembed->shape[1], lens.mode == LensMode::Normed,
            lens.tp && lens.tp->size() > 1, backward, expectation) {
    const int64_t V = L.unembed->full_shape[0];
    if (targets != nullptr)
      for (int64_t r = r0; r < r0 + rows; ++r)
        BUPO_CHECK(targets[r] >= 0 && targets[r] < V, "lens: target id ", targets[r],
                   " outside the vocabulary [0, ", V, ")");
    xr = x.rows(r0, rows);
    xin = xr;
    if (L.mode == LensMode::Normed) {
      be.rmsnorm_forward(buf.xn, buf.rstd, xr, L.norm->compute_weight(), L.eps);
      xin = buf.xn;
    }
    if (targets != nullptr) tg = staged_input(be, targets + r0, {rows});
  }

  // m, packed of the whole vocabulary: this shard's statistics, then (TP) one max and one packed
  // sum all-reduce.
  void stats() {
    const Param& E = *L.unembed;
    be.lens_stats(buf.m, buf.packed, xin, E.compute_weight(), tg, E.shard_offset);
    if (L.tp == nullptr || L.tp->size() == 1) return;
    be.copy(buf.m_local, buf.m);
    L.tp->allreduce_max(buf.m.f32(), static_cast<size_t>(rows));
    be.lens_rescale(buf.packed, buf.m_local, buf.m, tg, E.shard_offset, E.shape[0]);
    L.tp->allreduce_sum(buf.packed.f32(), static_cast<size_t>(3 * rows));
  }
};

// lse (rows) = m + log Σe^{z−m} of a chunk whose stats() ran: host arithmetic on two small
// downloads.
void log_partition(const Chunk& c, float* lse) {
  std::vector<float> m(static_cast<size_t>(c.rows)), p(static_cast<size_t>(3 * c.rows));
  c.be.download(m.data(), c.buf.m);
  c.be.download(p.data(), c.buf.packed);
  for (size_t r = 0; r < m.size(); ++r)
    lse[r] =
        static_cast<float>(static_cast<double>(m[r]) + std::log(static_cast<double>(p[3 * r])));
}

}  // namespace

void Lens::forward(const Tensor& x, const int32_t* targets, float* entropy, float* logprob,
                   float* lse, const KlToReference* kl) const {
  BUPO_CHECK(unembed != nullptr && (mode == LensMode::Raw || norm != nullptr),
             "lens: not configured");
  BUPO_CHECK(logprob == nullptr || targets != nullptr, "lens: log-probs need target ids");
  BUPO_CHECK(kl == nullptr || (kl->ref.numel() == x.numel() && kl->ref.dtype == x.dtype &&
                               kl->lse_ref != nullptr && kl->kl != nullptr),
             "lens: the KL reference rows must match x (", x.rows(), " rows of ", x.row_numel(),
             ") and come with their log-partition");
  Backend& be = backend();
  const int64_t n = x.rows(), C = chunk_for(n);
  std::vector<float> ent_kl;  // the entropy KL needs when the caller wants none
  std::vector<double> dots;
  for (int64_t r0 = 0; r0 < n; r0 += C) {
    ArenaScope scope(be.scratch());
    Chunk c(*this, x, targets, r0, std::min(C, n - r0), false, kl != nullptr);
    c.stats();
    float* ent_host = entropy ? entropy + r0 : nullptr;
    if (kl && !ent_host) {
      ent_kl.resize(static_cast<size_t>(c.rows));
      ent_host = ent_kl.data();
    }
    const Tensor ent = ent_host ? staged_output(be, ent_host, {c.rows}) : Tensor{};
    const Tensor lp = logprob ? staged_output(be, logprob + r0, {c.rows}) : Tensor{};
    be.lens_outputs(ent, lp, c.buf.packed);
    if (ent_host) fetch_output(be, ent, ent_host);
    if (logprob) fetch_output(be, lp, logprob + r0);
    if (lse) log_partition(c, lse + r0);
    if (kl) {
      be.lens_expectation(c.buf.ebar, c.xin, unembed->compute_weight(), c.buf.m, c.buf.packed);
      if (tp) all_reduce_sum(*tp, c.buf.ebar);  // Ē over the vocabulary shards
      be.row_dots(c.buf.dots, kl->ref.rows(r0, c.rows), c.buf.ebar);
      dots.resize(static_cast<size_t>(3 * c.rows));
      be.download(dots.data(), c.buf.dots);
      for (int64_t r = 0; r < c.rows; ++r)
        kl->kl[r0 + r] =
            static_cast<float>(static_cast<double>(kl->lse_ref[r0 + r]) -
                               dots[static_cast<size_t>(3 * r)] - static_cast<double>(ent_host[r]));
    }
  }
}

void Lens::backward(const Tensor& x, const int32_t* targets, const float* g_logprob,
                    const float* g_entropy, const Tensor& dx) const {
  BUPO_CHECK(unembed != nullptr && unembed->g != nullptr,
             "lens backward: E_u has no gradient buffer");
  BUPO_CHECK(g_logprob == nullptr || targets != nullptr,
             "lens backward: log-probs need target ids");
  BUPO_CHECK(mode == LensMode::Raw || norm->g != nullptr,
             "lens backward: final norm has no gradient buffer");
  Backend& be = backend();
  const int64_t n = x.rows(), C = chunk_for(n);
  for (int64_t r0 = 0; r0 < n; r0 += C) {
    ArenaScope scope(be.scratch());
    Chunk c(*this, x, targets, r0, std::min(C, n - r0), true);
    c.stats();
    const Tensor gl = g_logprob ? staged_input(be, g_logprob + r0, {c.rows}) : Tensor{};
    const Tensor ge = g_entropy ? staged_input(be, g_entropy + r0, {c.rows}) : Tensor{};
    be.lens_backward(c.buf.dxin, unembed->grad(), c.xin, unembed->compute_weight(), c.buf.m,
                     c.buf.packed, c.tg, unembed->shard_offset, gl, ge);
    unembed->has_grad = true;
    if (tp) all_reduce_sum(*tp, c.buf.dxin);
    const Tensor dxr = dx.rows(r0, c.rows);
    if (mode == LensMode::Raw) {
      be.add(dxr, dxr, c.buf.dxin);
    } else {
      be.rmsnorm_backward(dxr, norm->grad(), c.buf.dxin, c.xr, norm->compute_weight(), c.buf.rstd,
                          /*accumulate_dx=*/true);
      norm->has_grad = true;
    }
  }
}

void Lens::logits(const Tensor& x, const Tensor& out) const {
  Backend& be = backend();
  const int64_t Vl = unembed->shape[0], d = unembed->shape[1], n = x.rows();
  ArenaScope scope(be.scratch());
  Tensor xin = x;
  if (mode == LensMode::Normed) {
    xin = be.scratch().alloc(x.dtype, {n, d});
    be.rmsnorm_forward(xin, be.scratch().alloc_f32({n}), x, norm->compute_weight(), eps);
  }
  be.gemm(false, true, n, Vl, d, 1.0f, xin, d, unembed->compute_weight(), d, 0.0f, out, Vl);
}

size_t Lens::scratch_bytes(int64_t n) const {
  Arena measure = Arena::measuring();
  ChunkBuffers(measure, backend().compute_dtype(), chunk_for(n), unembed->shape[1],
               mode == LensMode::Normed, tp && tp->size() > 1, true, true);
  return measure.high_water() + 6 * Arena::kAlign;  // + staged targets/outputs on devices
}

}  // namespace bupo
