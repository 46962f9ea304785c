#include "optim/adamw.hpp"

#include <cmath>

#include "core/error.hpp"

namespace bupo {

AdamW::AdamW(ParamStore& params, AdamWConfig cfg)
    : params_(params),
      cfg_(cfg),
      m_(params.total_elements(), 0.0f),
      v_(params.total_elements(), 0.0f),
      steps_(params.all().size(), 0) {}

void AdamW::step() {
  auto& ps = params_.all();
  for (size_t i = 0; i < ps.size(); ++i) {
    Param& p = ps[i];
    if (!p.has_grad || p.g == nullptr) continue;
    const int64_t t = ++steps_[i];
    const double bc1 = 1.0 - std::pow(cfg_.beta1, static_cast<double>(t));
    const double bc2 = 1.0 - std::pow(cfg_.beta2, static_cast<double>(t));
    const float step_size = static_cast<float>(cfg_.lr / bc1);
    const float bc2_sqrt = static_cast<float>(std::sqrt(bc2));
    const float decay = static_cast<float>(1.0 - cfg_.lr * cfg_.weight_decay);
    const float b1 = static_cast<float>(cfg_.beta1), b2 = static_cast<float>(cfg_.beta2);
    const float eps = static_cast<float>(cfg_.eps);
    float* w = p.w;
    const float* g = p.g;
    float* m = m_.data() + p.offset;
    float* v = v_.data() + p.offset;
    const int64_t n = p.numel();
#pragma omp parallel for simd schedule(static)
    for (int64_t j = 0; j < n; ++j) {
      w[j] *= decay;
      m[j] = b1 * m[j] + (1.0f - b1) * g[j];
      v[j] = b2 * v[j] + (1.0f - b2) * g[j] * g[j];
      w[j] -= step_size * m[j] / (std::sqrt(v[j]) / bc2_sqrt + eps);
    }
  }
}

void AdamW::set_step_counts(const std::vector<int64_t>& s) {
  BUPO_CHECK(s.size() == steps_.size(), "optimizer state: ", s.size(), " step counts for ",
             steps_.size(), " parameters");
  steps_ = s;
}

double grad_sumsq(const ParamStore& params) {
  double total = 0.0;
  for (const auto& p : params.all()) {
    if (!p.has_grad || p.g == nullptr || !p.counted) continue;
    double s = 0.0;
    for (int64_t j = 0; j < p.numel(); ++j) s += static_cast<double>(p.g[j]) * p.g[j];
    total += s;
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
      if (p.has_grad && p.g != nullptr)
        for (int64_t j = 0; j < p.numel(); ++j) p.g[j] *= c;
  }
  return norm;
}

}  // namespace bupo
