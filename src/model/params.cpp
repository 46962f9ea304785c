#include "model/params.hpp"

#include <algorithm>
#include <cmath>

namespace bupo {

void require_finite_weights(const std::string& file, const std::string& tensor, const float* w,
                            size_t n) {
  for (size_t i = 0; i < n; ++i)
    if (!std::isfinite(w[i]))
      fail(file, ": tensor '", tensor, "' holds a non-finite value (", w[i], ") at element ", i,
           " of ", n, "; refusing corrupt weights");
}

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
  weights_ = be_->allocate(MemRole::Params, std::max<size_t>(total_, 1) * sizeof(float));
  finalized_ = true;
  be_->zero(weight_arena());
  const DType cdt = be_->compute_dtype();
  if (cdt != DType::F32) {
    working_ = be_->allocate(MemRole::Params, std::max<size_t>(total_, 1) * dtype_size(cdt));
    be_->zero(working_.view(cdt, {static_cast<int64_t>(total_)}));
  }
  for (auto& p : params_) {
    p.w = static_cast<float*>(weights_.data()) + p.offset;
    p.backend = be_;
    if (cdt != DType::F32) {
      p.wc = static_cast<char*>(working_.data()) + p.offset * dtype_size(cdt);
      p.wc_dtype = cdt;
    }
  }
  finalized_ = true;
}

void ParamStore::allocate_grads() {
  BUPO_CHECK(finalized_, "ParamStore: allocate_grads() before finalize()");
  grads_ = be_->allocate(MemRole::Grads, std::max<size_t>(total_, 1) * sizeof(float));
  be_->zero(grad_arena());
  for (auto& p : params_) p.g = static_cast<float*>(grads_.data()) + p.offset;
}

void ParamStore::zero_grad() {
  if (has_grads()) be_->zero(grad_arena());
  for (auto& p : params_) p.has_grad = false;
}

Tensor ParamStore::weight_arena() const {
  BUPO_CHECK(finalized_, "ParamStore: weights before finalize()");
  return weights_.view(DType::F32, {static_cast<int64_t>(total_)});
}
Tensor ParamStore::grad_arena() const {
  BUPO_CHECK(has_grads(), "ParamStore: gradients are not allocated");
  return grads_.view(DType::F32, {static_cast<int64_t>(total_)});
}

std::vector<float> ParamStore::weights_to_host() const {
  std::vector<float> h(total_);
  be_->download(h.data(), weight_arena());
  return h;
}

void ParamStore::weights_from_host(const std::vector<float>& w) {
  BUPO_CHECK(w.size() == total_, "ParamStore: ", w.size(), " weights for an arena of ", total_);
  be_->upload(weight_arena(), w.data());
  refresh_working_copy();
}

void ParamStore::refresh_working_copy() {
  if (!has_working_copy()) return;
  const DType cdt = be_->compute_dtype();
  be_->convert(working_.view(cdt, {static_cast<int64_t>(total_)}), weight_arena());
}

void ParamStore::copy_weights_from(const ParamStore& o) {
  BUPO_CHECK(o.total_ == total_, "ParamStore: copying weights between different layouts (",
             o.total_, " vs ", total_, " elements)");
  if (&o.backend() == be_) {
    be_->copy(weight_arena(), o.weight_arena());
    refresh_working_copy();
  } else {
    weights_from_host(o.weights_to_host());
  }
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
