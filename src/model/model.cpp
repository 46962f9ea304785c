#include "model/model.hpp"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <numbers>

#include "core/error.hpp"
#include "io/safetensors.hpp"
#include "model/gather.hpp"
#include "model/rope_frequencies.hpp"

namespace bupo {
namespace fs = std::filesystem;

Batch Batch::from_sequences(const std::vector<std::vector<int32_t>>& seqs) {
  Batch b;
  b.cu_seqlens.push_back(0);
  for (const auto& s : seqs) {
    for (size_t t = 0; t < s.size(); ++t) {
      b.ids.push_back(s[t]);
      b.pos.push_back(static_cast<int32_t>(t));
    }
    b.cu_seqlens.push_back(b.N());
  }
  return b;
}

int64_t Batch::max_len() const {
  int64_t m = 0;
  for (size_t i = 0; i + 1 < cu_seqlens.size(); ++i)
    m = std::max(m, cu_seqlens[i + 1] - cu_seqlens[i]);
  return m;
}

// ---------------------------------------------------------------------------- construction
Model::Model(const ModelConfig& cfg, ParallelContext pc, Backend& be)
    : cfg_(cfg), pc_(std::move(pc)), be_(&be), params_(be) {
  if (be.comm_memory() == CommMemory::Host)
    pc_.dev = {pc_.tp, pc_.pp, pc_.dp};  // one memory: the host groups move the tensors too
  else
    BUPO_CHECK(!pc_.device_groups_are_host() || pc_.world->size() == 1, "model on backend '",
               be.name(), "': the parallel context has no communicators for device memory ",
               "(ParallelContext::with_device_comms)");
  // A backend that lacks an op the model runs is refused before any work, naming what is missing.
  std::string missing;
  for (size_t i = 0; i < kNumOps; ++i)
    if (!be.supports(static_cast<Op>(i), op_dtype(static_cast<Op>(i), be.compute_dtype())))
      missing += std::string(missing.empty() ? "" : ", ") + op_name(static_cast<Op>(i));
  BUPO_CHECK(missing.empty(), "backend '", be.name(), "' cannot run this model: it does not ",
             "implement ", missing, " (no fallback to another device)");
  const int64_t tp = pc_.tp_size(), r = pc_.tp_rank();
  const int64_t d = cfg_.hidden_size, D = cfg_.head_dim, V = cfg_.vocab_size,
                ff = cfg_.intermediate_size;
  const int64_t H = cfg_.num_heads, Hkv = cfg_.num_kv_heads;
  BUPO_CHECK(H % tp == 0 && (Hkv % tp == 0 || tp % Hkv == 0) && ff % tp == 0 && V % tp == 0,
             "parallel layout: tp=", tp, " must divide num_attention_heads=", H,
             ", intermediate_size=", ff, " and vocab_size=", V,
             ", and divide or be a multiple of num_key_value_heads=", Hkv);
  const int L = num_layers();
  lo_ = pc_.stage_lo(pc_.pp_rank(), L);
  hi_ = pc_.stage_hi(pc_.pp_rank(), L);
  BUPO_CHECK(lo_ >= 1 && hi_ <= L && lo_ <= hi_ + 1, "parallel layout: stage ", pc_.pp_rank(),
             " owns layers ", lo_, "..", hi_, " of a ", L, "-layer model");
  // KV heads: split across TP ranks, or — with fewer KV heads than ranks — one head per rank,
  // replicated on the tp/Hkv ranks whose query heads share it (Megatron's GQA layout).
  const int64_t kv_rep = Hkv < tp ? tp / Hkv : 1;
  const int64_t Hl = H / tp, Hkvl = Hkv < tp ? 1 : Hkv / tp, ffl = ff / tp, Vl = V / tp;
  if (kv_rep > 1)  // (device memory: the replicated KV gradients are summed there)
    kv_rep_ = pc_.dev.tp->split(static_cast<int>(r / kv_rep), static_cast<int>(r));
  const int64_t kv_off = (Hkv < tp ? r / kv_rep : r * Hkvl) * D;

  // Declare parameters in HF order; column-parallel: rows split (dim 0), row-parallel: dim 1.
  // Only this pipeline stage's layers exist here; the embedding, E_u and the final norm exist on
  // every stage (every layer's internal policy needs E_u) and their gradients are summed over PP.
  auto col = [&](const std::string& n, int64_t out_l, int64_t in) {
    return params_.add(n, {out_l, in}, {out_l * tp, in}, 0, r * out_l);
  };
  auto colb = [&](const std::string& n, int64_t out_l) {
    return params_.add(n, {out_l}, {out_l * tp}, 0, r * out_l);
  };
  auto kvw = [&](const std::string& n, bool bias) {
    return bias ? params_.add(n, {Hkvl * D}, {Hkv * D}, 0, kv_off)
                : params_.add(n, {Hkvl * D, d}, {Hkv * D, d}, 0, kv_off);
  };
  auto row = [&](const std::string& n, int64_t out, int64_t in_l) {
    return params_.add(n, {out, in_l}, {out, in_l * tp}, 1, r * in_l);
  };
  auto rep = [&](const std::string& n, int64_t c) { return params_.add(n, {c}, {c}); };

  struct Idx {
    size_t ln1, ln2, qn = SIZE_MAX, kn = SIZE_MAX, q, k, v, bq = SIZE_MAX, bk = SIZE_MAX,
                     bv = SIZE_MAX, o, g, u, dn;
  };
  const size_t emb = col("model.embed_tokens.weight", Vl, d);
  std::vector<Idx> idx(static_cast<size_t>(L));
  for (int64_t l = lo_ - 1; l < hi_; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    Idx& x = idx[static_cast<size_t>(l)];
    x.ln1 = rep(p + "input_layernorm.weight", d);
    x.q = col(p + "self_attn.q_proj.weight", Hl * D, d);
    x.k = kvw(p + "self_attn.k_proj.weight", false);
    x.v = kvw(p + "self_attn.v_proj.weight", false);
    if (cfg_.qkv_bias) {
      x.bq = colb(p + "self_attn.q_proj.bias", Hl * D);
      x.bk = kvw(p + "self_attn.k_proj.bias", true);
      x.bv = kvw(p + "self_attn.v_proj.bias", true);
    }
    x.o = row(p + "self_attn.o_proj.weight", d, Hl * D);
    if (cfg_.qk_norm) {
      x.qn = rep(p + "self_attn.q_norm.weight", D);
      x.kn = rep(p + "self_attn.k_norm.weight", D);
    }
    x.ln2 = rep(p + "post_attention_layernorm.weight", d);
    x.g = col(p + "mlp.gate_proj.weight", ffl, d);
    x.u = col(p + "mlp.up_proj.weight", ffl, d);
    x.dn = row(p + "mlp.down_proj.weight", d, ffl);
  }
  const size_t fn = rep("model.norm.weight", d);
  // a value model's scalar head replaces lm_head (replicated: one output, nothing to split)
  const size_t head = cfg_.value_head            ? SIZE_MAX
                      : cfg_.tie_word_embeddings ? emb
                                                 : col("lm_head.weight", Vl, d);
  const size_t sw = cfg_.value_head ? params_.add("score.weight", {1, d}, {1, d}) : SIZE_MAX;
  const size_t sb = cfg_.value_head ? params_.add("score.bias", {1}, {1}) : SIZE_MAX;
  params_.finalize();

  auto P = [&](size_t i) { return i == SIZE_MAX ? nullptr : &params_.at(i); };
  embed_.weight = P(emb);
  lm_head_ = P(head);
  final_norm_ = P(fn);
  score_w_ = P(sw);
  score_b_ = P(sb);
  layers_.resize(static_cast<size_t>(L));
  for (int l = lo_; l <= hi_; ++l) {
    const Idx& x = idx[static_cast<size_t>(l - 1)];
    LayerParams& lp = layers_[static_cast<size_t>(l - 1)];
    lp.ln1 = P(x.ln1);
    lp.ln2 = P(x.ln2);
    lp.q_norm = P(x.qn);
    lp.k_norm = P(x.kn);
    lp.q = {P(x.q), P(x.bq)};
    lp.k = {P(x.k), P(x.bk)};
    lp.v = {P(x.v), P(x.bv)};
    lp.o = {P(x.o)};
    lp.gate = {P(x.g), nullptr};
    lp.up = {P(x.u), nullptr};
    lp.down = {P(x.dn)};
  }
  // Which copies count in global sums: replicated-over-TP parameters on TP rank 0, replicated KV
  // shards on the first rank of their replication group, the PP-shared ones on stage 0.
  for (auto& p : params_.all()) {
    const bool kv = kv_rep > 1 && (p.name.find(".k_proj.") != std::string::npos ||
                                   p.name.find(".v_proj.") != std::string::npos);
    const bool shared = is_pp_shared(p);
    if (p.shard_dim < 0 && r != 0) p.counted = false;
    if (kv && r % kv_rep != 0) p.counted = false;
    if (shared && !pc_.first_stage()) p.counted = false;
  }
  Hl_ = Hl;
  Hkvl_ = Hkvl;
  ffl_ = ffl;
  const std::vector<float> inv = rope_inv_freq(D, cfg_.rope_theta, cfg_.rope_scaling);
  inv_freq_block_ = be.allocate(MemRole::Params, inv.size() * sizeof(float));
  inv_freq_ = inv_freq_block_.view(DType::F32, {static_cast<int64_t>(inv.size())});
  be.upload(inv_freq_, inv.data());
  for (auto& p : params_.all())  // RMSNorm gains start at one
    if (p.name.ends_with("norm.weight") || p.name.ends_with("layernorm.weight"))
      be.fill(p.weight(), 1.0f);
  params_.refresh_working_copy();
}

const LayerParams& Model::layer(int l) const {
  BUPO_CHECK(owns_layer(l), "layer ", l, " lives on another pipeline stage (this stage owns ", lo_,
             "..", hi_, ")");
  return layers_.at(static_cast<size_t>(l - 1));
}

bool Model::is_pp_shared(const Param& p) const {
  return &p == embed_.weight || &p == lm_head_ || &p == final_norm_ || &p == score_w_ ||
         &p == score_b_;
}

Param& Model::unembedding() {
  BUPO_CHECK(lm_head_ != nullptr, "a value model (", cfg_.architecture(), ") has no unembedding");
  return *lm_head_;
}
const Param& Model::unembedding() const {
  BUPO_CHECK(lm_head_ != nullptr, "a value model (", cfg_.architecture(), ") has no unembedding");
  return *lm_head_;
}
Param& Model::value_weight() const {
  BUPO_CHECK(score_w_ != nullptr, "a causal LM (", cfg_.architecture(), ") has no value head");
  return *score_w_;
}
Param& Model::value_bias() const {
  BUPO_CHECK(score_b_ != nullptr, "a causal LM (", cfg_.architecture(), ") has no value head");
  return *score_b_;
}

void Model::reduce_partial_grads() {
  // q_norm / k_norm gains are replicated across TP but see only the local heads' gradients;
  // replicated KV projections see only the local query heads' gradients.
  Comm& tpc = *pc_.dev.tp;
  for (int l = lo_; l <= hi_ && tpc.size() > 1; ++l) {
    const LayerParams& lp = layers_[static_cast<size_t>(l - 1)];
    for (Param* p : {lp.q_norm, lp.k_norm})
      if (p && p->has_grad) tpc.allreduce_sum(p->g, static_cast<size_t>(p->numel()));  // device
    if (kv_rep_)
      for (Param* p : {lp.k.weight, lp.k.bias, lp.v.weight, lp.v.bias})
        if (p && p->has_grad) kv_rep_->allreduce_sum(p->g, static_cast<size_t>(p->numel()));
  }
  // The PP-shared parameters: summed over the stages that used them (which ones: host flags).
  Comm& ppc = *pc_.pp;
  if (ppc.size() > 1) {
    std::vector<Param*> sh = {embed_.weight};
    if (lm_head_ && lm_head_ != embed_.weight) sh.push_back(lm_head_);
    sh.push_back(final_norm_);
    if (score_w_) sh.insert(sh.end(), {score_w_, score_b_});
    std::vector<float> flags;
    for (Param* p : sh) flags.push_back(p->has_grad ? 1.0f : 0.0f);
    ppc.allreduce_max(flags.data(), flags.size());
    for (size_t i = 0; i < sh.size(); ++i) {
      if (flags[i] == 0.0f) continue;
      sh[i]->has_grad = true;  // (its gradient is zero on the stages that did not use it)
      pc_.dev.pp->allreduce_sum(sh[i]->g, static_cast<size_t>(sh[i]->numel()));
    }
  }
}

// ---------------------------------------------------------------------------- memory plan
void Model::carve_activations(Arena& a, Activations& acts, int64_t N, int64_t S,
                              int nlayers) const {
  const int64_t d = cfg_.hidden_size, D = cfg_.head_dim, half = D / 2;
  const bool device_index = !be_->host_accessible();
  const DType cdt = be_->compute_dtype();
  auto act = [&](Tensor& t, Dims s) { t = a.alloc(cdt, s); };  // activations: compute dtype
  auto f32 = [&](Tensor& t, Dims s) { t = a.alloc_f32(s); };   // statistics and tables
  if (device_index) {  // host backends read the Batch's own arrays
    acts.ids = a.alloc(DType::I32, {N});
    acts.pos = a.alloc(DType::I32, {N});
    acts.seq_starts = a.alloc(DType::I32, {S + 1});
    acts.slots = a.alloc(DType::I32, {S});
  }
  f32(acts.rope_cos, {N, half});
  f32(acts.rope_sin, {N, half});
  act(acts.resid, {acts.keep ? nlayers + 1 : 2, N, d});
  acts.layers.resize(static_cast<size_t>(acts.keep ? nlayers : std::min(nlayers, 1)));
  for (LayerActs& l : acts.layers) {
    act(l.ln1, {N, d});
    f32(l.rstd1, {N});
    if (cfg_.qk_norm) {
      act(l.q_pre, {N, Hl_ * D});
      f32(l.rstd_q, {N * Hl_});
      act(l.k_pre, {N, Hkvl_ * D});
      f32(l.rstd_k, {N * Hkvl_});
    }
    act(l.q, {N, Hl_ * D});
    act(l.k, {N, Hkvl_ * D});
    act(l.v, {N, Hkvl_ * D});
    act(l.att, {N, Hl_ * D});
    f32(l.lse, {N, Hl_});
    act(l.attn_out, {N, d});
    act(l.h_mid, {N, d});
    act(l.ln2, {N, d});
    f32(l.rstd2, {N});
    act(l.g, {N, ffl_});
    act(l.u, {N, ffl_});
    act(l.act, {N, ffl_});
    act(l.ffn_out, {N, d});
  }
  act(acts.final_out, {N, d});
  f32(acts.rstd_f, {N});
  if (acts.keep) act(acts.d_policy, {N, d});
}

size_t Model::plan_activations(int64_t N, int64_t S, bool keep, int upto) const {
  if (upto < 0) upto = num_layers();
  Arena measure = Arena::measuring();
  Activations a;
  a.keep = keep;
  carve_activations(measure, a, N, S, std::max(0, std::min(hi_, upto) - (lo_ - 1)));
  return measure.high_water();
}

namespace {
// The backward's temporaries, in carve order.
struct BackwardScratch {
  Tensor dh, d_ln;           // (N, d)
  Tensor d_act, dg, du;      // (N, ffl)
  Tensor d_att, dq, dq_pre;  // (N, Hl·D)
  Tensor dk, dv, dk_pre;     // (N, Hkvl·D)
  BackwardScratch(Arena& a, DType t, int64_t N, int64_t d, int64_t ffl, int64_t q, int64_t kv) {
    dh = a.alloc(t, {N, d});
    d_ln = a.alloc(t, {N, d});
    d_act = a.alloc(t, {N, ffl});
    dg = a.alloc(t, {N, ffl});
    du = a.alloc(t, {N, ffl});
    d_att = a.alloc(t, {N, q});
    dq = a.alloc(t, {N, q});
    dq_pre = a.alloc(t, {N, q});
    dk = a.alloc(t, {N, kv});
    dv = a.alloc(t, {N, kv});
    dk_pre = a.alloc(t, {N, kv});
  }
};
}  // namespace

size_t Model::plan_backward_scratch(int64_t N) const {
  Arena measure = Arena::measuring();
  const DType cdt = be_->compute_dtype();
  measure.alloc(cdt, {N, cfg_.hidden_size});  // backward_from_output's dL/dH^L
  BackwardScratch(measure, cdt, N, cfg_.hidden_size, ffl_, Hl_ * cfg_.head_dim,
                  Hkvl_ * cfg_.head_dim);
  return measure.high_water();
}

size_t Model::plan_kv_cache(int64_t slots, int64_t max_len) const {
  Arena measure = Arena::measuring();
  const int64_t width = Hkvl_ * cfg_.head_dim;
  for (int l = lo_; l <= hi_; ++l) {
    measure.alloc(be_->compute_dtype(), {slots * max_len, width});
    measure.alloc(be_->compute_dtype(), {slots * max_len, width});
  }
  return measure.high_water();
}

void Model::reserve(const MemoryPlan& p) {
  const size_t acts = plan_activations(p.max_tokens, p.max_sequences, p.train);
  be_->activations().reserve(acts, static_cast<size_t>(std::max<int64_t>(1, p.in_flight)));
  WorkspaceNeed need;
  need.max_seq_len = p.max_seq_len;
  need.max_keys = p.max_seq_len;
  need.lens_rows = p.lens_rows;
  need.lens_vocab = lm_head_ ? lm_head_->shape[0] : 0;
  need.hidden = cfg_.hidden_size;
  need.sample_rows = p.max_sequences;
  const size_t scratch = (p.train ? plan_backward_scratch(p.max_tokens) : 0) +
                         be_->workspace_bytes(need) + static_cast<size_t>(p.extra_scratch);
  be_->scratch().reserve(std::max(be_->scratch().capacity(), scratch));
}

void Model::reserve_kv_cache(int64_t slots, int64_t max_len) {
  be_->kv_caches().reserve(plan_kv_cache(slots, max_len), 1);
}

// ---------------------------------------------------------------------------- forward
void Model::forward(const Batch& b, Activations& acts, bool keep, int upto, const TapFn* tap) {
  forward_impl(b, acts, keep, upto, tap, nullptr, nullptr);
}

void Model::forward_cached(const Batch& b, Activations& acts, KVCache& cache,
                           const std::vector<int64_t>& slots) {
  BUPO_CHECK(slots.size() + 1 == b.cu_seqlens.size(),
             "forward_cached: one slot per sequence expected");
  for (size_t s = 0; s < slots.size(); ++s) {
    BUPO_CHECK(slots[s] >= 0 && slots[s] < cache.slots, "forward_cached: slot ", slots[s],
               " out of range");
    for (int64_t n = b.cu_seqlens[s]; n < b.cu_seqlens[s + 1]; ++n)
      BUPO_CHECK(b.pos[static_cast<size_t>(n)] < cache.max_len, "generation: position ",
                 b.pos[static_cast<size_t>(n)], " exceeds the KV cache length ", cache.max_len);
  }
  forward_impl(b, acts, false, -1, nullptr, &cache, &slots);
}

KVCache Model::make_cache(int64_t slots, int64_t max_len) const {
  KVCache c;
  c.slots = slots;
  c.max_len = max_len;
  c.width = Hkvl_ * cfg_.head_dim;
  c.mem = be_->kv_caches().lease(plan_kv_cache(slots, max_len));
  c.k.resize(static_cast<size_t>(cfg_.num_layers));
  c.v.resize(static_cast<size_t>(cfg_.num_layers));
  for (int l = lo_; l <= hi_; ++l) {  // this stage's layers only
    c.k[static_cast<size_t>(l - 1)] =
        c.mem->alloc(be_->compute_dtype(), {slots * max_len, c.width});
    c.v[static_cast<size_t>(l - 1)] =
        c.mem->alloc(be_->compute_dtype(), {slots * max_len, c.width});
  }
  return c;
}

// Host backends read the Batch's arrays in place; device backends get I32 copies in the arena.
void Model::bind_batch(const Batch& b, Activations& acts, const std::vector<int64_t>* slots) const {
  const int64_t N = b.N();
  if (be_->host_accessible()) {
    acts.ids = Tensor::host(b.ids.data(), {N});
    acts.pos = Tensor::host(b.pos.data(), {N});
    return;
  }
  be_->upload(acts.ids, b.ids.data());
  be_->upload(acts.pos, b.pos.data());
  std::vector<int32_t> cu(b.cu_seqlens.begin(), b.cu_seqlens.end());
  be_->upload(acts.seq_starts, cu.data());
  if (slots) {
    const std::vector<int32_t> sl(slots->begin(), slots->end());
    be_->upload(acts.slots, sl.data());
  }
}

SeqIndex Model::seq_index(const Batch& b, const Activations& acts,
                          const std::vector<int64_t>* slots) const {
  SeqIndex s;
  s.cu = b.cu_seqlens.data();
  s.S = b.S();
  s.max_len = b.max_len();
  s.pos = b.pos.data();
  s.pos_dev = acts.pos;
  s.cu_dev = acts.seq_starts;
  s.slots_dev = acts.slots;
  if (slots) s.slots = slots->data();
  return s;
}

void Model::forward_impl(const Batch& b, Activations& acts, bool keep, int upto, const TapFn* tap,
                         KVCache* cache, const std::vector<int64_t>* slots) {
  Backend& be = *be_;
  const int L = num_layers();
  if (upto < 0) upto = L;
  BUPO_CHECK(upto <= L, "forward: upto=", upto, " exceeds the number of layers ", L);
  const int64_t N = b.N(), D = cfg_.head_dim;
  const float eps = static_cast<float>(cfg_.rms_norm_eps);
  BUPO_CHECK(b.pos.size() == b.ids.size(), "forward: ids and pos differ in length");
  BUPO_CHECK(b.cu_seqlens.size() >= 2 && b.cu_seqlens.front() == 0 && b.cu_seqlens.back() == N,
             "forward: cu_seqlens must start at 0 and end at N=", N);
  Comm& tpc = *pc_.dev.tp;

  // Pipeline: this stage runs layers lo_..min(hi_, upto) on H^{lo_-1} (the embedding on the
  // first stage, received from the previous stage otherwise) and sends H^{hi_} on when later
  // layers are wanted. A stage whose layers all lie above `upto` does nothing.
  const int top = std::min(hi_, upto);
  acts.N = N;
  acts.upto = upto;
  acts.keep = keep;
  acts.base = lo_ - 1;
  acts.top = top;
  if (lo_ > 1 && lo_ > upto) return;
  if (!acts.mem) acts.mem = be.activations().lease(plan_activations(N, b.S(), keep, upto));
  acts.mem->reset();
  carve_activations(*acts.mem, acts, N, b.S(), std::max(0, top - acts.base));
  bind_batch(b, acts, slots);
  const SeqIndex seqs = seq_index(b, acts, slots);
  be.rope_tables(acts.rope_cos, acts.rope_sin, acts.pos, inv_freq_);

  Comm& ppc = *pc_.dev.pp;
  if (lo_ == 1) {
    embed_.forward(tpc, acts.h(0), acts.ids);
    if (tap) (*tap)(LayerTaps{0, {}, {}, {}, {}, {}, {}, acts.h(0)});
  } else {
    recv_tensor(ppc, acts.h(lo_ - 1), ppc.rank() - 1);
  }

  const AttnShape ashape{N, Hl_, Hkvl_, D};
  for (int l = lo_; l <= top; ++l) {
    const LayerParams& lp = layers_[static_cast<size_t>(l - 1)];
    LayerActs& a = acts.layer(l);
    const Tensor x = acts.h(l - 1), y = acts.h(l);

    // attention block: A^l = o_proj(SDPA(RoPE(norm(q)), RoPE(norm(k)), v)) of LN_in(H^{l-1})
    be.rmsnorm_forward(a.ln1, a.rstd1, x, lp.ln1->compute_weight(), eps);
    lp.q.forward(a.q, a.ln1);
    lp.k.forward(a.k, a.ln1);
    lp.v.forward(a.v, a.ln1);
    if (cfg_.qk_norm) {
      be.copy(a.q_pre, a.q);
      be.copy(a.k_pre, a.k);
      be.rmsnorm_forward(a.q, a.rstd_q, a.q_pre, lp.q_norm->compute_weight(), eps);
      be.rmsnorm_forward(a.k, a.rstd_k, a.k_pre, lp.k_norm->compute_weight(), eps);
    }
    be.rope_forward(a.q, acts.rope_cos, acts.rope_sin, Hl_);
    be.rope_forward(a.k, acts.rope_cos, acts.rope_sin, Hkvl_);
    if (cache == nullptr) {
      be.attention_forward(a.att, a.lse, a.q, a.k, a.v, seqs, ashape);
    } else {
      const auto li = static_cast<size_t>(l - 1);
      be.kv_append(cache->k[li], cache->v[li], a.k, a.v, cache->max_len, seqs);
      be.attention_decode(a.att, a.q, cache->k[li], cache->v[li], cache->max_len, seqs, ashape);
    }
    lp.o.forward(tpc, a.attn_out, a.att);
    be.add(a.h_mid, x, a.attn_out);

    // FFN block: F^l = down(silu(gate(z)) ⊙ up(z)), z = LN_post(H^{l-1} + A^l)
    be.rmsnorm_forward(a.ln2, a.rstd2, a.h_mid, lp.ln2->compute_weight(), eps);
    lp.gate.forward(a.g, a.ln2);
    lp.up.forward(a.u, a.ln2);
    be.swiglu_forward(a.act, a.g, a.u);
    lp.down.forward(tpc, a.ffn_out, a.act);
    be.add(y, a.h_mid, a.ffn_out);

    if (tap) (*tap)(LayerTaps{l, x, a.ln1, a.attn_out, a.h_mid, a.ln2, a.ffn_out, y});
  }
  if (hi_ < upto) send_tensor(ppc, acts.h(hi_), ppc.rank() + 1);
  if (upto == L && hi_ == L)
    be.rmsnorm_forward(acts.final_out, acts.rstd_f, acts.h(L), final_norm_->compute_weight(), eps);
}

// ---------------------------------------------------------------------------- backward
void Model::backward_from_output(const Batch& b, Activations& acts, const Tensor& dY, int add_layer,
                                 const Tensor& add_dH) {
  const int L = num_layers();
  BUPO_CHECK(acts.keep && acts.upto == L,
             "backward_from_output: forward(keep=true) over all layers first");
  if (hi_ < L) {  // not the last stage: the gradient arrives from the next stage
    backward_from_layer(b, acts, L, Tensor{}, add_layer, add_dH);
    return;
  }
  const int64_t N = acts.N, d = cfg_.hidden_size;
  ArenaScope scope(be_->scratch());
  const Tensor dH = be_->scratch().alloc(be_->compute_dtype(), {N, d});
  be_->rmsnorm_backward(dH, final_norm_->grad(), dY, acts.h(L), final_norm_->compute_weight(),
                        acts.rstd_f);
  final_norm_->has_grad = true;
  backward_from_layer(b, acts, L, dH, add_layer, add_dH);
}

void Model::backward_from_layer(const Batch& b, Activations& acts, int top, const Tensor& dH,
                                int add_layer, const Tensor& add_dH) {
  BUPO_CHECK(params_.has_grads(),
             "backward: gradients are not allocated (ParamStore::allocate_grads)");
  BUPO_CHECK(acts.keep && top >= 0 && top <= acts.upto, "backward: layer ", top,
             " was not kept by the forward (upto=", acts.upto, ", keep=", acts.keep, ")");
  // Pipeline: stages above `top` do no work; a stage below the one holding `top` receives
  // dL/dH^{hi_} from the next stage; every stage but the first sends dL/dH^{lo_-1} back.
  if (lo_ > 1 && lo_ > top) return;
  Backend& be = *be_;
  const int64_t N = acts.N, d = cfg_.hidden_size, D = cfg_.head_dim;
  Comm& tpc = *pc_.dev.tp;
  Comm& ppc = *pc_.dev.pp;
  const AttnShape ashape{N, Hl_, Hkvl_, D};
  const SeqIndex seqs = seq_index(b, acts);

  ArenaScope scope(be.scratch());
  const BackwardScratch w(be.scratch(), be.compute_dtype(), N, d, ffl_, Hl_ * D, Hkvl_ * D);
  if (top > hi_) {
    recv_tensor(ppc, w.dh, ppc.rank() + 1);  // dL/dH^{hi_}
    top = hi_;
  } else {
    BUPO_CHECK(!dH.empty(), "backward: no gradient given at layer ", top);
    be.copy(w.dh, dH);  // (N, d) running dL/dH
  }

  for (int l = top; l >= lo_; --l) {
    if (l == add_layer && !add_dH.empty()) be.add(w.dh, w.dh, add_dH);  // dL/dH^l of both losses
    const LayerParams& lp = layers_[static_cast<size_t>(l - 1)];
    LayerActs& a = acts.layer(l);
    const Tensor x = acts.h(l - 1);

    // H^l = h_mid + down(act): dh flows to h_mid unchanged, plus the FFN branch.
    lp.down.backward(w.d_act, w.dh, a.act);
    be.swiglu_backward(w.dg, w.du, w.d_act, a.g, a.u);
    be.zero(w.d_ln);
    lp.gate.backward(w.d_ln, w.dg, a.ln2);
    lp.up.backward(w.d_ln, w.du, a.ln2);
    copy_to_tp_region_backward(tpc, w.d_ln);
    be.rmsnorm_backward(w.dh, lp.ln2->grad(), w.d_ln, a.h_mid, lp.ln2->compute_weight(), a.rstd2,
                        /*accumulate_dx=*/true);
    lp.ln2->has_grad = true;

    // h_mid = H^{l-1} + o_proj(att)
    lp.o.backward(w.d_att, w.dh, a.att);
    be.attention_backward(w.dq, w.dk, w.dv, w.d_att, a.q, a.k, a.v, a.att, a.lse, seqs, ashape);
    be.rope_backward(w.dq, acts.rope_cos, acts.rope_sin, Hl_);
    be.rope_backward(w.dk, acts.rope_cos, acts.rope_sin, Hkvl_);
    Tensor gq = w.dq, gk = w.dk;
    if (cfg_.qk_norm) {
      // q_norm/k_norm are replicated across TP ranks: their gradients are partial sums over the
      // local heads and get all-reduced over TP by reduce_partial_grads().
      be.rmsnorm_backward(w.dq_pre, lp.q_norm->grad(), w.dq, a.q_pre, lp.q_norm->compute_weight(),
                          a.rstd_q);
      be.rmsnorm_backward(w.dk_pre, lp.k_norm->grad(), w.dk, a.k_pre, lp.k_norm->compute_weight(),
                          a.rstd_k);
      lp.q_norm->has_grad = lp.k_norm->has_grad = true;
      gq = w.dq_pre;
      gk = w.dk_pre;
    }
    be.zero(w.d_ln);
    lp.q.backward(w.d_ln, gq, a.ln1);
    lp.k.backward(w.d_ln, gk, a.ln1);
    lp.v.backward(w.d_ln, w.dv, a.ln1);
    copy_to_tp_region_backward(tpc, w.d_ln);
    be.rmsnorm_backward(w.dh, lp.ln1->grad(), w.d_ln, x, lp.ln1->compute_weight(), a.rstd1,
                        /*accumulate_dx=*/true);
    lp.ln1->has_grad = true;
  }
  if (lo_ > 1)
    send_tensor(ppc, w.dh, ppc.rank() - 1);
  else
    embed_.backward(w.dh, acts.ids);
}

}  // namespace bupo
