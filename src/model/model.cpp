#include "model/model.hpp"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <numbers>

#include "core/error.hpp"
#include "io/safetensors.hpp"
#include "model/gather.hpp"
#include "kernels/cpu/attention.hpp"
#include "kernels/cpu/rmsnorm.hpp"
#include "kernels/cpu/swiglu.hpp"

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

// ---------------------------------------------------------------------------- construction
Model::Model(const ModelConfig& cfg, ParallelContext pc) : cfg_(cfg), pc_(std::move(pc)) {
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
  if (kv_rep > 1) kv_rep_ = pc_.tp->split(static_cast<int>(r / kv_rep), static_cast<int>(r));
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
  const size_t head = cfg_.tie_word_embeddings ? emb : col("lm_head.weight", Vl, d);
  params_.finalize();

  auto P = [&](size_t i) { return i == SIZE_MAX ? nullptr : &params_.at(i); };
  embed_.weight = P(emb);
  lm_head_ = P(head);
  final_norm_ = P(fn);
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
    const bool shared = &p == embed_.weight || &p == lm_head_ || &p == final_norm_;
    if (p.shard_dim < 0 && r != 0) p.counted = false;
    if (kv && r % kv_rep != 0) p.counted = false;
    if (shared && !pc_.first_stage()) p.counted = false;
  }
  inv_freq_ = cpu::rope_inv_freq(D, cfg_.rope_theta, cfg_.rope_scaling);
  for (auto& p : params_.all())  // RMSNorm gains start at one
    if (p.name.ends_with("norm.weight") || p.name.ends_with("layernorm.weight"))
      std::fill(p.w, p.w + p.numel(), 1.0f);
}

const LayerParams& Model::layer(int l) const {
  BUPO_CHECK(owns_layer(l), "layer ", l, " lives on another pipeline stage (this stage owns ",
             lo_, "..", hi_, ")");
  return layers_.at(static_cast<size_t>(l - 1));
}

bool Model::is_pp_shared(const Param& p) const {
  return &p == embed_.weight || &p == lm_head_ || &p == final_norm_;
}

void Model::reduce_partial_grads() {
  // q_norm / k_norm gains are replicated across TP but see only the local heads' gradients;
  // replicated KV projections see only the local query heads' gradients.
  Comm& tpc = *pc_.tp;
  for (int l = lo_; l <= hi_ && tpc.size() > 1; ++l) {
    const LayerParams& lp = layers_[static_cast<size_t>(l - 1)];
    for (Param* p : {lp.q_norm, lp.k_norm})
      if (p && p->has_grad) tpc.allreduce_sum(p->g, static_cast<size_t>(p->numel()));
    if (kv_rep_)
      for (Param* p : {lp.k.weight, lp.k.bias, lp.v.weight, lp.v.bias})
        if (p && p->has_grad) kv_rep_->allreduce_sum(p->g, static_cast<size_t>(p->numel()));
  }
  // The PP-shared parameters: summed over the stages that used them, in one packed all-reduce.
  Comm& ppc = *pc_.pp;
  if (ppc.size() > 1) {
    std::vector<Param*> sh = {embed_.weight};
    if (lm_head_ != embed_.weight) sh.push_back(lm_head_);
    sh.push_back(final_norm_);
    std::vector<float> flags;
    for (Param* p : sh) flags.push_back(p->has_grad ? 1.0f : 0.0f);
    ppc.allreduce_max(flags.data(), flags.size());
    for (size_t i = 0; i < sh.size(); ++i) {
      if (flags[i] == 0.0f) continue;
      sh[i]->has_grad = true;  // (its gradient is zero on the stages that did not use it)
      ppc.allreduce_sum(sh[i]->g, static_cast<size_t>(sh[i]->numel()));
    }
  }
}

void Model::init_random(uint64_t seed, float stddev) {
  // splitmix64 + Box-Muller: the same weights on every platform and for every TP layout (each
  // element's value depends only on (seed, tensor name, global index)).
  auto mix = [](uint64_t z) {
    z += 0x9e3779b97f4a7c15ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  };
  for (auto& p : params_.all()) {
    if (p.name.ends_with("norm.weight") || p.name.ends_with("layernorm.weight")) continue;
    uint64_t h = seed;
    for (char c : p.name) h = mix(h ^ static_cast<unsigned char>(c));
    const int64_t cols = p.shape.size() == 2 ? p.shape[1] : 1;
    const int64_t full_cols = p.full_shape.size() == 2 ? p.full_shape[1] : 1;
    for (int64_t i = 0; i < p.numel(); ++i) {
      int64_t rr = i / cols, cc = i % cols;
      if (p.shard_dim == 0) rr += p.shard_offset;
      if (p.shard_dim == 1) cc += p.shard_offset;
      const uint64_t gi = static_cast<uint64_t>(rr * full_cols + cc);
      const uint64_t a = mix(h ^ (2 * gi)), b = mix(h ^ (2 * gi + 1));
      const double u1 = (static_cast<double>(a >> 11) + 1.0) / 9007199254740993.0;
      const double u2 = static_cast<double>(b >> 11) / 9007199254740992.0;
      p.w[i] = static_cast<float>(stddev * std::sqrt(-2.0 * std::log(u1)) *
                                  std::cos(2.0 * std::numbers::pi * u2));
    }
  }
}

// ---------------------------------------------------------------------------- checkpoints
std::unique_ptr<Model> Model::load(const std::string& dir, ParallelContext pc) {
  const fs::path cfg_path = fs::path(dir) / "config.json";
  BUPO_CHECK(fs::exists(cfg_path), dir,
             ": no config.json (expected a Hugging Face model directory)");
  auto m = std::make_unique<Model>(ModelConfig::load(cfg_path.string()), std::move(pc));
  m->load_weights(dir);
  return m;
}

void Model::load_weights(const std::string& path) {
  const CheckpointReader ck = CheckpointReader::open(path);
  std::vector<float> full;
  for (auto& p : params_.all()) {
    BUPO_CHECK(ck.contains(p.name), path, ": missing tensor '", p.name,
               "' (required by config.json: ", arch_name(cfg_.arch), ", ", cfg_.num_layers,
               " layers", cfg_.tie_word_embeddings ? ", tied embeddings" : ", untied embeddings",
               ")");
    const TensorInfo& t = ck.info(p.name);
    const SafetensorsFile& f = ck.file_of(p.name);
    BUPO_CHECK(t.shape == p.full_shape, f.path(), ": tensor '", p.name, "': shape ",
               shape_str(t.shape), " disagrees with config.json (expected ",
               shape_str(p.full_shape), ")");
    if (p.shard_dim < 0 || p.shape == p.full_shape) {
      f.read_f32(t, p.w);
      continue;
    }
    full.resize(static_cast<size_t>(numel_of(p.full_shape)));
    f.read_f32(t, full.data());
    copy_shard_from_full(p, full.data(), p.w);
  }
}

void Model::save(const std::string& dir, DType dtype, uint64_t max_shard_bytes) const {
  BUPO_CHECK(pc_.tp_size() == 1, "Model::save: gather TP shards first (tp=", pc_.tp_size(), ")");
  fs::create_directories(dir);
  std::vector<NamedTensor> ts;
  for (const auto& p : params_.all()) ts.push_back({p.name, p.shape, p.w});
  save_checkpoint_weights(dir, ts, dtype, max_shard_bytes);
  ModelConfig c = cfg_;
  c.torch_dtype = dtype == DType::BF16 ? "bfloat16" : dtype == DType::F16 ? "float16" : "float32";
  std::ofstream out(fs::path(dir) / "config.json");
  out << c.to_json().dump(2) << "\n";
  BUPO_CHECK(out.good(), dir, "/config.json: write failed");
}

// ---------------------------------------------------------------------------- forward
namespace {
void ensure(Tensor& t, Shape s) {
  if (t.shape != s) t.resize(std::move(s));
}
}  // namespace

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
  c.width = std::max<int64_t>(1, cfg_.num_kv_heads / pc_.tp_size()) * cfg_.head_dim;
  c.k.resize(static_cast<size_t>(cfg_.num_layers));
  for (int l = lo_; l <= hi_; ++l)  // this stage's layers only
    c.k[static_cast<size_t>(l - 1)].assign(static_cast<size_t>(slots * max_len * c.width), 0.0f);
  c.v = c.k;
  return c;
}

void Model::forward_impl(const Batch& b, Activations& acts, bool keep, int upto, const TapFn* tap,
                         KVCache* cache, const std::vector<int64_t>* slots) {
  const int L = num_layers();
  if (upto < 0) upto = L;
  BUPO_CHECK(upto <= L, "forward: upto=", upto, " exceeds the number of layers ", L);
  const int64_t N = b.N(), d = cfg_.hidden_size, D = cfg_.head_dim, tp = pc_.tp_size();
  const int64_t Hl = cfg_.num_heads / tp, Hkvl = std::max<int64_t>(1, cfg_.num_kv_heads / tp),
                ffl = cfg_.intermediate_size / tp;
  const float eps = static_cast<float>(cfg_.rms_norm_eps);
  BUPO_CHECK(b.pos.size() == b.ids.size(), "forward: ids and pos differ in length");
  Comm& tpc = *pc_.tp;

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
  acts.layers.resize(keep ? static_cast<size_t>(std::max(0, top - acts.base)) : 1);
  ensure(acts.resid, {keep ? top - acts.base + 1 : 2, N, d});
  acts.rope.build(b.pos.data(), N, inv_freq_);

  Comm& ppc = *pc_.pp;
  if (lo_ == 1) {
    embed_.forward(tpc, acts.h(0), b.ids.data(), N);
    if (tap) (*tap)(LayerTaps{0, nullptr, nullptr, nullptr, nullptr, nullptr, acts.h(0)});
  } else {
    ppc.recv(acts.h(lo_ - 1), static_cast<size_t>(N * d), ppc.rank() - 1);
  }

  const cpu::AttnShape ashape{N, Hl, Hkvl, D};
  for (int l = lo_; l <= top; ++l) {
    const LayerParams& lp = layers_[static_cast<size_t>(l - 1)];
    LayerActs& a = acts.layer(l);
    const float* x = acts.h(l - 1);
    float* y = acts.h(l);
    ensure(a.ln1, {N, d});
    ensure(a.rstd1, {N});
    ensure(a.q, {N, Hl * D});
    ensure(a.k, {N, Hkvl * D});
    ensure(a.v, {N, Hkvl * D});
    ensure(a.att, {N, Hl * D});
    ensure(a.lse, {N, Hl});
    ensure(a.attn_out, {N, d});
    ensure(a.h_mid, {N, d});
    ensure(a.ln2, {N, d});
    ensure(a.rstd2, {N});
    ensure(a.g, {N, ffl});
    ensure(a.u, {N, ffl});
    ensure(a.act, {N, ffl});
    ensure(a.ffn_out, {N, d});

    // attention block: A^l = o_proj(SDPA(RoPE(norm(q)), RoPE(norm(k)), v)) of LN_in(H^{l-1})
    cpu::rmsnorm_forward(a.ln1.ptr(), a.rstd1.ptr(), x, lp.ln1->w, N, d, eps);
    lp.q.forward(a.q.ptr(), a.ln1.ptr(), N);
    lp.k.forward(a.k.ptr(), a.ln1.ptr(), N);
    lp.v.forward(a.v.ptr(), a.ln1.ptr(), N);
    if (cfg_.qk_norm) {
      a.q_pre = a.q;
      a.k_pre = a.k;
      ensure(a.rstd_q, {N * Hl});
      ensure(a.rstd_k, {N * Hkvl});
      cpu::rmsnorm_forward(a.q.ptr(), a.rstd_q.ptr(), a.q_pre.ptr(), lp.q_norm->w, N * Hl, D, eps);
      cpu::rmsnorm_forward(a.k.ptr(), a.rstd_k.ptr(), a.k_pre.ptr(), lp.k_norm->w, N * Hkvl, D,
                           eps);
    }
    cpu::rope_forward(a.q.ptr(), acts.rope, N, Hl, D);
    cpu::rope_forward(a.k.ptr(), acts.rope, N, Hkvl, D);
    if (cache == nullptr) {
      cpu::attention_forward(a.att.ptr(), a.lse.ptr(), a.q.ptr(), a.k.ptr(), a.v.ptr(),
                             b.cu_seqlens, ashape);
    } else {
      const int li = l - 1;
      for (size_t sq = 0; sq + 1 < b.cu_seqlens.size(); ++sq)
        for (int64_t n = b.cu_seqlens[sq]; n < b.cu_seqlens[sq + 1]; ++n) {
          const int64_t p = b.pos[static_cast<size_t>(n)];
          std::copy_n(a.k.ptr() + n * cache->width, cache->width, cache->k_at(li, (*slots)[sq], p));
          std::copy_n(a.v.ptr() + n * cache->width, cache->width, cache->v_at(li, (*slots)[sq], p));
        }
      cpu::attention_cached_forward(a.att.ptr(), a.q.ptr(), cache->k_at(li, 0, 0),
                                    cache->v_at(li, 0, 0), cache->max_len * cache->width,
                                    b.cu_seqlens, b.pos.data(), *slots, ashape);
    }
    lp.o.forward(tpc, a.attn_out.ptr(), a.att.ptr(), N);
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < N * d; ++i) a.h_mid.data[i] = x[i] + a.attn_out.data[i];

    // FFN block: F^l = down(silu(gate(z)) ⊙ up(z)), z = LN_post(H^{l-1} + A^l)
    cpu::rmsnorm_forward(a.ln2.ptr(), a.rstd2.ptr(), a.h_mid.ptr(), lp.ln2->w, N, d, eps);
    lp.gate.forward(a.g.ptr(), a.ln2.ptr(), N);
    lp.up.forward(a.u.ptr(), a.ln2.ptr(), N);
    cpu::swiglu_forward(a.act.ptr(), a.g.ptr(), a.u.ptr(), N * ffl);
    lp.down.forward(tpc, a.ffn_out.ptr(), a.act.ptr(), N);
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < N * d; ++i) y[i] = a.h_mid.data[i] + a.ffn_out.data[i];

    if (tap)
      (*tap)(LayerTaps{l, x, a.ln1.ptr(), a.attn_out.ptr(), a.ln2.ptr(), a.ffn_out.ptr(), y});
  }
  if (hi_ < upto) ppc.send(acts.h(hi_), static_cast<size_t>(N * d), ppc.rank() + 1);
  if (upto == L && hi_ == L) {
    ensure(acts.final_out, {N, d});
    ensure(acts.rstd_f, {N});
    cpu::rmsnorm_forward(acts.final_out.ptr(), acts.rstd_f.ptr(), acts.h(L), final_norm_->w, N, d,
                         eps);
  }
}

// ---------------------------------------------------------------------------- backward
void Model::backward_from_output(const Batch& b, Activations& acts, const float* dY) {
  const int L = num_layers();
  BUPO_CHECK(acts.keep && acts.upto == L,
             "backward_from_output: forward(keep=true) over all layers first");
  if (hi_ < L) {  // not the last stage: the gradient arrives from the next stage
    backward_from_layer(b, acts, L, nullptr);
    return;
  }
  const int64_t N = acts.N, d = cfg_.hidden_size;
  std::vector<float> dH(static_cast<size_t>(N * d), 0.0f);
  cpu::rmsnorm_backward(dH.data(), final_norm_->g, dY, acts.h(L), final_norm_->w, acts.rstd_f.ptr(),
                        N, d);
  final_norm_->has_grad = true;
  backward_from_layer(b, acts, L, dH.data());
}

void Model::backward_from_layer(const Batch& b, Activations& acts, int top, const float* dH) {
  BUPO_CHECK(params_.has_grads(),
             "backward: gradients are not allocated (ParamStore::allocate_grads)");
  BUPO_CHECK(acts.keep && top >= 0 && top <= acts.upto, "backward: layer ", top,
             " was not kept by the forward (upto=", acts.upto, ", keep=", acts.keep, ")");
  // Pipeline: stages above `top` do no work; a stage below the one holding `top` receives
  // dL/dH^{hi_} from the next stage; every stage but the first sends dL/dH^{lo_-1} back.
  if (lo_ > 1 && lo_ > top) return;
  const int64_t N = acts.N, d = cfg_.hidden_size, D = cfg_.head_dim, tp = pc_.tp_size();
  const int64_t Hl = cfg_.num_heads / tp, Hkvl = std::max<int64_t>(1, cfg_.num_kv_heads / tp),
                ffl = cfg_.intermediate_size / tp;
  Comm& tpc = *pc_.tp;
  Comm& ppc = *pc_.pp;
  const cpu::AttnShape ashape{N, Hl, Hkvl, D};

  std::vector<float> dh(static_cast<size_t>(N * d));  // (N, d) running dL/dH
  if (top > hi_) {
    ppc.recv(dh.data(), dh.size(), ppc.rank() + 1);
    top = hi_;
  } else {
    BUPO_CHECK(dH != nullptr, "backward: no gradient given at layer ", top);
    std::copy_n(dH, N * d, dh.data());
  }
  std::vector<float> d_ln(static_cast<size_t>(N * d));  // (N, d)
  std::vector<float> d_act(static_cast<size_t>(N * ffl)), dg(d_act.size()), du(d_act.size());
  std::vector<float> d_att(static_cast<size_t>(N * Hl * D)), dq(d_att.size()), dq_pre(d_att.size());
  std::vector<float> dk(static_cast<size_t>(N * Hkvl * D)), dv(dk.size()), dk_pre(dk.size());

  for (int l = top; l >= lo_; --l) {
    const LayerParams& lp = layers_[static_cast<size_t>(l - 1)];
    LayerActs& a = acts.layer(l);
    const float* x = acts.h(l - 1);

    // H^l = h_mid + down(act): dh flows to h_mid unchanged, plus the FFN branch.
    lp.down.backward(d_act.data(), dh.data(), a.act.ptr(), N);
    cpu::swiglu_backward(dg.data(), du.data(), d_act.data(), a.g.ptr(), a.u.ptr(), N * ffl);
    std::fill(d_ln.begin(), d_ln.end(), 0.0f);
    lp.gate.backward(d_ln.data(), dg.data(), a.ln2.ptr(), N);
    lp.up.backward(d_ln.data(), du.data(), a.ln2.ptr(), N);
    copy_to_tp_region_backward(tpc, d_ln.data(), N * d);
    cpu::rmsnorm_backward(dh.data(), lp.ln2->g, d_ln.data(), a.h_mid.ptr(), lp.ln2->w,
                          a.rstd2.ptr(), N, d,
                          /*accumulate_dx=*/true);
    lp.ln2->has_grad = true;

    // h_mid = H^{l-1} + o_proj(att)
    lp.o.backward(d_att.data(), dh.data(), a.att.ptr(), N);
    cpu::attention_backward(dq.data(), dk.data(), dv.data(), d_att.data(), a.q.ptr(), a.k.ptr(),
                            a.v.ptr(), a.att.ptr(), a.lse.ptr(), b.cu_seqlens, ashape);
    cpu::rope_backward(dq.data(), acts.rope, N, Hl, D);
    cpu::rope_backward(dk.data(), acts.rope, N, Hkvl, D);
    const float* gq = dq.data();
    const float* gk = dk.data();
    if (cfg_.qk_norm) {
      // q_norm/k_norm are replicated across TP ranks: their gradients are partial sums over the
      // local heads and get all-reduced over TP by the optimizer's replicated-gradient step.
      cpu::rmsnorm_backward(dq_pre.data(), lp.q_norm->g, dq.data(), a.q_pre.ptr(), lp.q_norm->w,
                            a.rstd_q.ptr(), N * Hl, D);
      cpu::rmsnorm_backward(dk_pre.data(), lp.k_norm->g, dk.data(), a.k_pre.ptr(), lp.k_norm->w,
                            a.rstd_k.ptr(), N * Hkvl, D);
      lp.q_norm->has_grad = lp.k_norm->has_grad = true;
      gq = dq_pre.data();
      gk = dk_pre.data();
    }
    std::fill(d_ln.begin(), d_ln.end(), 0.0f);
    lp.q.backward(d_ln.data(), gq, a.ln1.ptr(), N);
    lp.k.backward(d_ln.data(), gk, a.ln1.ptr(), N);
    lp.v.backward(d_ln.data(), dv.data(), a.ln1.ptr(), N);
    copy_to_tp_region_backward(tpc, d_ln.data(), N * d);
    cpu::rmsnorm_backward(dh.data(), lp.ln1->g, d_ln.data(), x, lp.ln1->w, a.rstd1.ptr(), N, d,
                          /*accumulate_dx=*/true);
    lp.ln1->has_grad = true;
  }
  if (lo_ > 1)
    ppc.send(dh.data(), dh.size(), ppc.rank() - 1);
  else
    embed_.backward(dh.data(), b.ids.data(), N);
}

}  // namespace bupo
