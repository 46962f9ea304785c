#include "optim/adamw.hpp"

#include <cmath>

#include "core/error.hpp"

namespace bupo {

AdamW::AdamW(ParamStore& params, AdamWConfig cfg) : AdamW(params, cfg, ZeroShard{}) {}

AdamW::AdamW(ParamStore& params, AdamWConfig cfg, ZeroShard shard)
    : params_(params), cfg_(cfg), steps_(params.all().size(), 0) {
  Backend& be = params.backend();
  const auto total = static_cast<int64_t>(params.total_elements());
  if (shard.layout.ranks() > 1) {  // (a layout of one rank: the replicated state)
    BUPO_CHECK(shard.layout.total() == total, "AdamW: a ZeRO layout of ", shard.layout.total(),
               " elements for a model of ", total);
    BUPO_CHECK(shard.host && shard.dev && shard.host->size() == shard.layout.ranks() &&
                   shard.dev->size() == shard.layout.ranks(),
               "AdamW: a ZeRO layout over ", shard.layout.ranks(),
               " ranks needs the data-parallel groups of that size");
    shard_ = std::move(shard);
  }
  const int64_t n = shard_ ? shard_->layout.shard_elements() : total;
  state_ = be.allocate(MemRole::OptState, 2 * static_cast<size_t>(std::max<int64_t>(n, 1)) * 4);
  m_ = state_.view(DType::F32, {n});
  v_ = state_.view(DType::F32, {n}, static_cast<size_t>(n) * 4);
  be.zero(m_);
  be.zero(v_);
}

void AdamW::step() {
  Backend& be = params_.backend();
  auto& ps = params_.all();
  for (size_t i = 0; i < ps.size(); ++i) {
    Param& p = ps[i];
    if (!p.has_grad || p.g == nullptr) continue;
    const int64_t t = ++steps_[i];
    const double bc1 = 1.0 - std::pow(cfg_.beta1, static_cast<double>(t));
    const double bc2 = 1.0 - std::pow(cfg_.beta2, static_cast<double>(t));
    const double lr = lr_scales_.empty() ? cfg_.lr : cfg_.lr * lr_scales_[i];
    AdamStep a;
    a.step_size = static_cast<float>(lr / bc1);
    a.bc2_sqrt = static_cast<float>(std::sqrt(bc2));
    a.decay = static_cast<float>(1.0 - lr * cfg_.weight_decay);
    a.beta1 = static_cast<float>(cfg_.beta1);
    a.beta2 = static_cast<float>(cfg_.beta2);
    a.eps = static_cast<float>(cfg_.eps);
    const auto off = static_cast<int64_t>(p.offset);
    if (!shard_) {
      be.adamw_update(p.weight(), p.grad(), m_.flat(off, p.numel()), v_.flat(off, p.numel()), a);
      continue;
    }
    const Tensor W = params_.weight_arena(), G = params_.grad_arena();
    shard_->layout.for_owned(off, off + p.numel(), [&](int64_t at, int64_t s, int64_t k) {
      be.adamw_update(W.flat(at, k), G.flat(at, k), m_.flat(s, k), v_.flat(s, k), a);
    });
  }
  if (shard_) allgather_weights(params_, shard_->layout, *shard_->dev);
  params_.refresh_working_copy();  // the compute-dtype copy follows the fp32 masters
}

void AdamW::set_lr_scales(std::vector<double> scales) {
  BUPO_CHECK(scales.empty() || scales.size() == steps_.size(), "optimizer: ", scales.size(),
             " LR scales for ", steps_.size(), " parameters");
  lr_scales_ = std::move(scales);
}

void AdamW::set_step_counts(const std::vector<int64_t>& s) {
  BUPO_CHECK(s.size() == steps_.size(), "optimizer state: ", s.size(), " step counts for ",
             steps_.size(), " parameters");
  steps_ = s;
}

namespace {
std::vector<float> moment_to_host(const ParamStore& params, const Tensor& t,
                                  const std::optional<ZeroShard>& shard) {
  std::vector<float> h(static_cast<size_t>(t.numel()));
  params.backend().download(h.data(), t);
  return shard ? gather_shards(h, shard->layout, *shard->host) : h;
}
}  // namespace

std::vector<float> AdamW::exp_avg_to_host() const {
  return moment_to_host(params_, m_, shard_);
}
std::vector<float> AdamW::exp_avg_sq_to_host() const {
  return moment_to_host(params_, v_, shard_);
}
void AdamW::moments_from_host(const std::vector<float>& m, const std::vector<float>& v) {
  const auto total = static_cast<size_t>(params_.total_elements());
  BUPO_CHECK(m.size() == total && v.size() == total, "optimizer state: moments of ", m.size(), "/",
             v.size(), " elements for ", total, " parameters' elements");
  if (!shard_) {
    params_.backend().upload(m_, m.data());
    params_.backend().upload(v_, v.data());
    return;
  }
  params_.backend().upload(m_, slice_shard(m, shard_->layout).data());
  params_.backend().upload(v_, slice_shard(v, shard_->layout).data());
}

double grad_sumsq(const ParamStore& params) {
  double total = 0.0;
  for (const auto& p : params.all()) {
    if (!p.has_grad || p.g == nullptr || !p.counted) continue;
    total += params.backend().sum_squares(p.grad());
  }
  return total;
}
double grad_norm(const ParamStore& params) {
  return std::sqrt(grad_sumsq(params));
}

double clip_grad_norm(ParamStore& params, double max_norm) {
  return clip_grad_norm(params, max_norm, grad_norm(params));
}
double clip_grad_norm(ParamStore& params, double max_norm, double norm) {
  const double coef = max_norm / (norm + 1e-6);
  if (coef < 1.0) {
    const float c = static_cast<float>(coef);
    for (auto& p : params.all())
      if (p.has_grad && p.g != nullptr) params.backend().scale(p.grad(), c);
  }
  return norm;
}

}  // namespace bupo
