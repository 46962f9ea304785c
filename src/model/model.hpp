// Llama / Qwen2 / Qwen3 pre-norm decoder with explicit forward and backward, written once against
// the backend interface (backend/backend.hpp): the same code runs on the CPU and on a GPU.
// Layer numbering follows the BuPO paper (papers.md §1.1): H^0 is the embedding output and layer
// l = 1..L reads H^{l-1} and writes A^l, F^l and H^l = H^{l-1} + A^l + F^l.
//   attn_in  = LN_in(H^{l-1})          (input_layernorm, with its gain)
//   attn_out = A^l                     (o_proj output)
//   ffn_in   = LN_post(H^{l-1} + A^l)  (post_attention_layernorm)
//   ffn_out  = F^l                     (down_proj output)
// Every linear layer is a tensor-parallel building block (parallel/tensor_parallel.hpp) driven by
// an explicit ParallelContext; on one process its groups have size 1.
//
// Memory (llm.c's discipline): parameters and gradients in one block each of the backend's memory;
// each forward's activations carved from one arena leased from the backend's activation pool
// (returned when the Activations object is released, reused by the next forward); backward
// temporaries from the backend's scratch arena. plan_* give the bytes for given shapes, so a run
// can reserve everything before its first step (Model::reserve).
#pragma once
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "backend/backend.hpp"
#include "io/dtype.hpp"
#include "model/config.hpp"
#include "model/params.hpp"
#include "parallel/comm.hpp"
#include "parallel/tensor_parallel.hpp"

namespace bupo {

// Packed variable-length sequences: row n is token ids[n] at position pos[n] of sequence s with
// cu_seqlens[s] <= n < cu_seqlens[s+1]. Host data: the model uploads what its backend needs.
struct Batch {
  std::vector<int32_t> ids;         // (N)
  std::vector<int32_t> pos;         // (N)
  std::vector<int64_t> cu_seqlens;  // (S+1)
  int64_t N() const { return static_cast<int64_t>(ids.size()); }
  int64_t S() const { return static_cast<int64_t>(cu_seqlens.size()) - 1; }
  int64_t max_len() const;
  static Batch from_sequences(const std::vector<std::vector<int32_t>>& seqs);
};

// Views of one layer's residual stream and module tensors, all (N, d), handed to a tap callback:
// h_in = H^{l-1}, attn_in = LN_in(H^{l-1}), attn_out = A^l, h_mid = H^{l-1} + A^l,
// ffn_in = LN_post(h_mid), ffn_out = F^l, h_out = H^l = h_mid + F^l. For layer 0 only h_out
// (= H^0) is set.
struct LayerTaps {
  int layer = 0;
  Tensor h_in, attn_in, attn_out, h_mid, ffn_in, ffn_out, h_out;
};
using TapFn = std::function<void(const LayerTaps&)>;

struct LayerActs {         // local sizes: Hl = H/tp heads, Hkvl = Hkv/tp, ffl = ff/tp
  Tensor ln1, rstd1;       // (N, d), (N)
  Tensor q_pre, rstd_q;    // (N, Hl·D), (N·Hl)   Qwen3 only: q before q_norm
  Tensor k_pre, rstd_k;    // (N, Hkvl·D), (N·Hkvl)
  Tensor q, k, v;          // (N, Hl·D), (N, Hkvl·D) ×2   (q, k after norm and RoPE)
  Tensor att, lse;         // (N, Hl·D), (N, Hl)
  Tensor attn_out, h_mid;  // (N, d) ×2
  Tensor ln2, rstd2;       // (N, d), (N)
  Tensor g, u, act;        // (N, ffl) ×3
  Tensor ffn_out;          // (N, d)
};

// One forward's activations on this pipeline stage: H^base .. H^top with base = (first layer of
// the stage) - 1 (0 without pipeline parallelism). All views into `mem`, an arena leased from the
// backend's activation pool for as long as this object holds it (release() or destruction).
struct Activations {
  int64_t N = 0;
  int upto = 0;                   // last layer the forward was asked for
  int base = 0, top = 0;          // residual rows held: H^base .. H^top
  bool keep = false;              // every layer kept for the backward
  std::vector<LayerActs> layers;  // top-base entries when keep, else 1 reused
  Tensor resid;                   // (top-base+1, N, d) when keep, else (2, N, d) ping-pong
  Tensor final_out, rstd_f;       // (N, d): LN_final(H^L), (N) — on the last stage
  Tensor rope_cos, rope_sin;      // (N, D/2)
  Tensor ids, pos, seq_starts;    // (N), (N), (S+1) I32: the batch on the device
  Tensor slots;                   // (S) I32: the KV-cache slot of each sequence (device, cached)
  Tensor d_policy;                // (N, d) when keep: dL/dH at the policy's layer (set by a loss)
  ArenaLease mem;

  Tensor h(int l) const { return resid.rows(row(l), 1).view({N, resid.dim(2)}); }
  LayerActs& layer(int l) { return layers[keep ? static_cast<size_t>(l - base - 1) : 0]; }
  void release() { *this = Activations{}; }

 private:
  int64_t row(int l) const { return keep ? l - base : (l - base) % 2; }
};

// Key/value cache for generation: per layer, (slots, max_len, Hkv_local·D) for K (after q/k-norm
// and RoPE) and V, carved from an arena leased from the backend's KV pool. A batch names the slot
// each of its sequences continues.
struct KVCache {
  int64_t slots = 0, max_len = 0, width = 0;
  std::vector<Tensor> k, v;  // per layer (slots·max_len, width); empty for other stages' layers
  ArenaLease mem;
};

struct LayerParams {
  Param *ln1 = nullptr, *ln2 = nullptr, *q_norm = nullptr, *k_norm = nullptr;
  ColumnParallelLinear q, k, v, gate, up;
  RowParallelLinear o, down;
};

// The largest shapes a run will give the model, for reserving all memory up-front.
struct MemoryPlan {
  int64_t max_tokens = 0;     // rows of one forward (a micro-batch, a prefill)
  int64_t max_seq_len = 0;    // longest sequence
  int64_t max_sequences = 0;  // sequences of one forward
  int64_t in_flight = 1;      // forwards alive at once (1F1B: up to the pipeline depth)
  bool train = false;         // forwards keep activations and run backwards
  int64_t lens_rows = 0;      // rows of one lens chunk
  int64_t extra_scratch = 0;  // bytes the caller's own scratch use adds (lens buffers, ...)
};

class Model {
 public:
  Model(const ModelConfig& cfg, ParallelContext pc, Backend& be = cpu_backend());
  Model(const Model&) = delete;
  Model& operator=(const Model&) = delete;

  // Load config.json and the safetensors weights of a HF checkpoint directory.
  static std::unique_ptr<Model> load(const std::string& dir, ParallelContext pc,
                                     Backend& be = cpu_backend());
  void load_weights(const std::string& path);  // dir or .safetensors file
  // Write config.json + weights (single file or sharded). TP size 1 only.
  void save(const std::string& dir, DType dtype, uint64_t max_shard_bytes = 0) const;
  void init_random(uint64_t seed, float stddev = 0.02f);

  const ModelConfig& config() const { return cfg_; }
  ParallelContext& parallel() { return pc_; }
  const ParallelContext& parallel() const { return pc_; }
  Backend& backend() const { return *be_; }
  ParamStore& params() { return params_; }
  const ParamStore& params() const { return params_; }
  int num_layers() const { return static_cast<int>(cfg_.num_layers); }
  int64_t hidden() const { return cfg_.hidden_size; }

  Param& embedding() { return *embed_.weight; }
  Param& unembedding();  // E_u: lm_head, or the embedding when tied (not in a value model)
  const Param& unembedding() const;
  // A value model's head (config().value_head): v = LN_final(H^L)·scoreᵀ + bias, per token; it
  // exists on every pipeline stage like the final norm.
  bool has_value_head() const { return score_w_ != nullptr; }
  Param& value_weight() const;  // (1, d)
  Param& value_bias() const;    // (1)
  Param& final_norm() { return *final_norm_; }
  const Param& final_norm() const { return *final_norm_; }
  const LayerParams& layer(int l) const;  // l must be one of this stage's layers
  // Pipeline stage: layers first_layer()..last_layer() live here (all of them without PP).
  int first_layer() const { return lo_; }
  int last_layer() const { return hi_; }
  bool owns_layer(int l) const { return l >= lo_ && l <= hi_; }
  // The embedding, E_u, the final norm and a value head exist on every stage.
  bool is_pp_shared(const Param& p) const;
  // After the backward of an optimizer step: sums the gradients that are partial on this rank
  // (q/k-norm gains and replicated KV heads over TP, the PP-shared parameters over PP).
  void reduce_partial_grads();

  // Run layers 1..upto (upto = L also applies the final norm into acts.final_out). keep: store
  // every layer's activations for backward. tap (optional) sees H^0 and every layer's modules.
  // Under pipeline parallelism each stage runs its own layers (receiving H^{lo-1} from the
  // previous stage, sending H^{hi} to the next) and taps only them; results of layer l are on the
  // stage that owns l, the final norm on the last stage. Every stage calls it for every batch.
  void forward(const Batch& b, Activations& acts, bool keep, int upto = -1,
               const TapFn* tap = nullptr);
  // Inference with a KV cache: sequence s of the batch continues cache slot slots[s] at positions
  // b.pos (its earlier positions must already be cached). Runs all layers and the final norm.
  void forward_cached(const Batch& b, Activations& acts, KVCache& cache,
                      const std::vector<int64_t>& slots);
  KVCache make_cache(int64_t slots, int64_t max_len) const;

  // Gradients into parameter .g (accumulating), starting from dL/dH^l (N, d) at layer l:
  // only layers <= l and the embedding receive gradient (papers.md §1.5, Eq. 14–15). Under PP
  // dH is read on the stage that owns l (empty elsewhere); stages above l do nothing, stages
  // below receive the gradient from the next stage.
  // add_dH (N, d), when given, is a second loss's dL/dH^add_layer, added to the running gradient
  // as the backward passes that layer (read on the stage that owns it).
  void backward_from_layer(const Batch& b, Activations& acts, int l, const Tensor& dH,
                           int add_layer = 0, const Tensor& add_dH = Tensor{});
  // Starting from dL/d LN_final(H^L) (N, d): the final norm and every layer receive gradient
  // (plus add_dH at add_layer: BuPO phase 1 with the full policy's entropy bonus).
  void backward_from_output(const Batch& b, Activations& acts, const Tensor& dY, int add_layer = 0,
                            const Tensor& add_dH = Tensor{});

  // Bytes of one forward's activation arena, of the backward's scratch and of a KV cache.
  size_t plan_activations(int64_t N, int64_t S, bool keep, int upto = -1) const;
  size_t plan_backward_scratch(int64_t N) const;
  size_t plan_kv_cache(int64_t slots, int64_t max_len) const;
  // Reserves the activation pool, the scratch arena (backward + the ops' workspace + the caller's
  // extra) for `plan`; KV caches with reserve_kv_cache. Nothing in the step loop allocates after.
  void reserve(const MemoryPlan& plan);
  void reserve_kv_cache(int64_t slots, int64_t max_len);

 private:
  ModelConfig cfg_;
  ParallelContext pc_;
  Backend* be_;
  ParamStore params_;
  VocabParallelEmbedding embed_;
  Param* lm_head_ = nullptr;
  Param* final_norm_ = nullptr;
  Param *score_w_ = nullptr, *score_b_ = nullptr;  // a value model's head
  std::vector<LayerParams> layers_;
  Block inv_freq_block_;
  Tensor inv_freq_;                      // (D/2) on the device
  int lo_ = 1, hi_ = 0;                  // this pipeline stage's layers
  std::shared_ptr<Comm> kv_rep_;         // TP ranks sharing one replicated KV head (or null)
  int64_t Hl_ = 0, Hkvl_ = 0, ffl_ = 0;  // local heads, KV heads, FFN width

  // Every tensor of a forward's activations with its shape, in carve order: planning (a
  // measuring arena) and carving use this one list (llm.c's fill_in_activation_sizes).
  void carve_activations(Arena& a, Activations& acts, int64_t N, int64_t S, int nlayers) const;
  void bind_batch(const Batch& b, Activations& acts, const std::vector<int64_t>* slots) const;
  SeqIndex seq_index(const Batch& b, const Activations& acts,
                     const std::vector<int64_t>* slots = nullptr) const;
  void forward_impl(const Batch& b, Activations& acts, bool keep, int upto, const TapFn* tap,
                    KVCache* cache, const std::vector<int64_t>* slots);
};

}  // namespace bupo
