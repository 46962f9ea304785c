#include "optim/adamw.hpp"

#include <cmath>

#include "core/error.hpp"

namespace bupo {

AdamW::AdamW(ParamStore& params, AdamWConfig cfg)
    : params_(params), cfg_(cfg), steps_(params.all().size(), 0) {
  Backend& be = params.backend();
  const auto n = static_cast<int64_t>(params.total_elements());
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
    AdamStep a;
    a.step_size = static_cast<float>(cfg_.lr / bc1);
    a.bc2_sqrt = static_cast<float>(std::sqrt(bc2));
    a.decay = static_cast<float>(1.0 - cfg_.lr * cfg_.weight_decay);
    a.beta1 = static_cast<float>(cfg_.beta1);
    a.beta2 = static_cast<float>(cfg_.beta2);
    a.eps = static_cast<float>(cfg_.eps);
    const auto off = static_cast<int64_t>(p.offset);
    be.adamw_update(p.weight(), p.grad(), m_.flat(off, p.numel()), v_.flat(off, p.numel()), a);
  }
  params_.refresh_working_copy();  // the compute-dtype copy follows the fp32 masters
}

void AdamW::set_step_counts(const std::vector<int64_t>& s) {
  BUPO_CHECK(s.size() == steps_.size(), "optimizer state: ", s.size(), " step counts for ",
             steps_.size(), " parameters");
  steps_ = s;
}

std::vector<float> AdamW::exp_avg_to_host() const {
  std::vector<float> h(static_cast<size_t>(m_.numel()));
  params_.backend().download(h.data(), m_);
  return h;
}
std::vector<float> AdamW::exp_avg_sq_to_host() const {
  std::vector<float> h(static_cast<size_t>(v_.numel()));
  params_.backend().download(h.data(), v_);
  return h;
}
void AdamW::moments_from_host(const std::vector<float>& m, const std::vector<float>& v) {
  BUPO_CHECK(
      static_cast<int64_t>(m.size()) == m_.numel() && static_cast<int64_t>(v.size()) == v_.numel(),
      "optimizer state: moments of ", m.size(), "/", v.size(), " elements for ", m_.numel(),
      " parameters' elements");
  params_.backend().upload(m_, m.data());
  params_.backend().upload(v_, v.data());
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
