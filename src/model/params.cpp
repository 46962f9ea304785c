#include "model/params.hpp"

#include <algorithm>

namespace bupo {

size_t ParamStore::add(std::string name, Shape local, Shape full, int shard_dim,
                       int64_t shard_offset) {
  BUPO_CHECK(!finalized_, "ParamStore: cannot add '", name, "' after finalize()");
  BUPO_CHECK(!index_.contains(name), "ParamStore: duplicate parameter '", name, "'");
  Param p;
  p.name = std::move(name);
  p.shape = std::move(local);
  p.full_shape = std::move(full);
  p.shard_dim = shard_dim;
  p.shard_offset = shard_offset;
  p.offset = total_;
  // keep every parameter 64-byte aligned inside the arena
  total_ += (static_cast<size_t>(p.numel()) + 15) / 16 * 16;
  index_.emplace(p.name, params_.size());
  params_.push_back(std::move(p));
  return params_.size() - 1;
}

void ParamStore::finalize() {
  weights_.assign(total_, 0.0f);
  for (auto& p : params_) p.w = weights_.data() + p.offset;
  finalized_ = true;
}

void ParamStore::allocate_grads() {
  BUPO_CHECK(finalized_, "ParamStore: allocate_grads() before finalize()");
  grads_.assign(total_, 0.0f);
  for (auto& p : params_) p.g = grads_.data() + p.offset;
}

void ParamStore::zero_grad() {
  std::fill(grads_.begin(), grads_.end(), 0.0f);
  for (auto& p : params_) p.has_grad = false;
}

Param* ParamStore::find(const std::string& name) {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &params_[it->second];
}
const Param* ParamStore::find(const std::string& name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &params_[it->second];
}

}  // namespace bupo
