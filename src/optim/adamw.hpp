// AdamW with decoupled weight decay (Loshchilov & Hutter; torch.optim.AdamW semantics) and global
// gradient-norm clipping. A parameter that received no gradient in a step (Param::has_grad ==
// false) is skipped entirely — no decay, no moment update, no step count — exactly as torch skips
// parameters whose .grad is None. This is what keeps layers above the BuPO layer bit-identical
// during phase 1 (papers.md §1.5). The moments live in the parameters' backend memory (one block,
// laid out like the weight arena); the update and the norms are backend ops.
//
// With a ZeroShard (ZeRO-1, parallel/zero.hpp) the moments cover only this data-parallel rank's
// part of the arena: step() updates the owned elements of the trained parameters (their
// gradients already reduce-scattered into place) and then all-gathers the updated weights over
// the group; the host transfers of the moments stay in the consolidated layout (collective over
// the group), so checkpoints do not depend on the sharding.
#pragma once
#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

#include "model/params.hpp"
#include "parallel/zero.hpp"

namespace bupo {

struct AdamWConfig {
  double lr = 1e-6;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 0.01;
};

struct ZeroShard {
  ZeroLayout layout;
  std::shared_ptr<Comm> host, dev;  // the data-parallel group, for host and backend memory
};

class AdamW {
 public:
  AdamW(ParamStore& params, AdamWConfig cfg);
  AdamW(ParamStore& params, AdamWConfig cfg, ZeroShard shard);
  void step();  // uses Param::g and Param::has_grad
  AdamWConfig& config() { return cfg_; }
  const AdamWConfig& config() const { return cfg_; }
  int64_t step_count(size_t param) const { return steps_[param]; }
  const std::vector<int64_t>& step_counts() const { return steps_; }
  void set_step_counts(const std::vector<int64_t>& s);  // restoring a checkpoint
  // Per-parameter LR multipliers for the next steps (torch param groups with their own lr: the
  // step and the decoupled decay both scale); empty: 1 for all.
  void set_lr_scales(std::vector<double> scales);
  const std::vector<double>& lr_scales() const { return lr_scales_; }
  // The moments as host arrays in the weight arena's layout (checkpoints), and back.
  std::vector<float> exp_avg_to_host() const;
  std::vector<float> exp_avg_sq_to_host() const;
  void moments_from_host(const std::vector<float>& exp_avg, const std::vector<float>& exp_avg_sq);
  const ZeroShard* shard() const { return shard_ ? &*shard_ : nullptr; }
  int64_t state_elements() const { return m_.numel(); }  // per moment, on this rank

 private:
  ParamStore& params_;
  AdamWConfig cfg_;
  Block state_;  // m then v, each total_elements floats
  Tensor m_, v_;
  std::vector<int64_t> steps_;  // per parameter, as torch keeps state['step']
  std::vector<double> lr_scales_;
  std::optional<ZeroShard> shard_;
};

// Global L2 norm over parameters that have a gradient (fp64 accumulation, fixed order); only the
// copies with Param::counted enter, so that the sums of grad_sumsq over the model-parallel ranks
// give the norm of the whole model.
double grad_sumsq(const ParamStore& params);
double grad_norm(const ParamStore& params);
// Scale gradients so the global norm is at most max_norm (torch.nn.utils.clip_grad_norm_:
// coef = max_norm / (norm + 1e-6), applied only when < 1). Returns the norm before clipping.
double clip_grad_norm(ParamStore& params, double max_norm);
// The same with the norm already known (the model-parallel norm).
double clip_grad_norm(ParamStore& params, double max_norm, double norm);

}  // namespace bupo
