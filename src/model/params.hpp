// Parameters live in one block of the backend's memory (and their gradients in a second one,
// allocated only for training), llm.c style. On a backend whose compute dtype is not F32 (bf16 on
// CUDA) a third block holds the working copy the forward and backward read, refreshed from the
// fp32 master weights after every change (refresh_working_copy); each Param is a named view with
// its HF name, its local (per-rank) shape and how it is sharded across the tensor-parallel group.
// `w` and `g` point into the backend's memory (fp32 master weights on every backend): code above
// the backends reads them through weight()/grad() views and the store's host transfers, and
// dereferences them only on host backends (tests do, on the CPU backend).
#pragma once
#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

#include "backend/backend.hpp"
#include "core/shape.hpp"

namespace bupo {

struct Param {
  std::string name;    // Hugging Face tensor name, e.g. model.layers.0.self_attn.q_proj.weight
  Shape shape;         // local shape on this rank
  Shape full_shape;    // global shape in the checkpoint
  int shard_dim = -1;  // dimension split across TP ranks (-1: replicated)
  int64_t shard_offset = 0;  // first index of this rank's slice along shard_dim
  size_t offset = 0;         // element offset into the arenas
  float* w = nullptr;        // weights (local shard), in the backend's memory
  float* g = nullptr;        // gradient, or null when gradients are not allocated
  bool has_grad = false;     // set by backward when a gradient reached this parameter
  // This rank's copy counts in global sums (gradient norms, checkpoints): false for the copies of
  // a replicated parameter on all but one rank of the group that replicates it.
  bool counted = true;
  Backend* backend = nullptr;  // whose memory w and g are in
  void* wc = nullptr;          // working copy in the compute dtype, or null (then w is used)
  DType wc_dtype = DType::F32;
  int64_t numel() const { return numel_of(shape); }
  Tensor weight() const { return {w, DType::F32, backend->device(), Dims(shape)}; }  // master
  Tensor grad() const { return {g, DType::F32, backend->device(), Dims(shape)}; }
  // What the forward and backward compute with: the working copy, or the master weights.
  Tensor compute_weight() const {
    return wc ? Tensor{wc, wc_dtype, backend->device(), Dims(shape)} : weight();
  }
};

// Loaded weights must be finite: a NaN or Inf would give NaN entropies and log-probs downstream
// (or, through max/argmax, plausible-looking garbage). Error naming the file, the tensor and the
// element.
void require_finite_weights(const std::string& file, const std::string& tensor, const float* w,
                            size_t n);

class ParamStore {
 public:
  explicit ParamStore(Backend& be = cpu_backend()) : be_(&be) {}
  // Declare a parameter before finalize(); returns its index.
  size_t add(std::string name, Shape local, Shape full, int shard_dim = -1,
             int64_t shard_offset = 0);
  void finalize();        // allocate the (zeroed) weight block(s) and point every Param into it
  void allocate_grads();  // allocate the gradient block (zeroed)
  void zero_grad();       // zero gradients and clear has_grad

  Param& at(size_t i) { return params_[i]; }
  const Param& at(size_t i) const { return params_[i]; }
  Param* find(const std::string& name);
  const Param* find(const std::string& name) const;
  std::vector<Param>& all() { return params_; }
  const std::vector<Param>& all() const { return params_; }
  size_t total_elements() const { return total_; }
  bool has_grads() const { return grads_.data() != nullptr; }
  Backend& backend() const { return *be_; }

  // The whole weight / gradient arena (total_elements floats, parameters at their offsets).
  Tensor weight_arena() const;
  Tensor grad_arena() const;
  std::vector<float> weights_to_host() const;
  void weights_from_host(const std::vector<float>& w);  // total_elements() floats
  void copy_weights_from(const ParamStore& other);      // same layout, any backends
  // After the master weights changed (load, init, optimizer step): the working copy follows.
  void refresh_working_copy();
  bool has_working_copy() const { return working_.data() != nullptr; }

 private:
  Backend* be_;
  std::vector<Param> params_;
  std::unordered_map<std::string, size_t> index_;
  Block weights_, grads_, working_;
  size_t total_ = 0;
  bool finalized_ = false;
};

}  // namespace bupo
