#include "parallel/grads.hpp"

#include <algorithm>
#include <cmath>

#include "optim/adamw.hpp"

namespace bupo {

void agree_on_trained_params(ParamStore& params, Comm& dp_host) {
  if (dp_host.size() == 1) return;
  auto& ps = params.all();
  std::vector<float> flags(ps.size());
  for (size_t i = 0; i < ps.size(); ++i) flags[i] = ps[i].has_grad ? 1.0f : 0.0f;
  dp_host.allreduce_max(flags.data(), flags.size());
  for (size_t i = 0; i < ps.size(); ++i) ps[i].has_grad = flags[i] != 0.0f;
}

GradReduceStats allreduce_grads(ParamStore& params, Comm& dp_host, Comm& dp_dev, double bucket_mb) {
  GradReduceStats st;
  if (dp_host.size() == 1) return st;
  Backend& be = params.backend();
  auto& ps = params.all();
  agree_on_trained_params(params, dp_host);
  const auto cap = static_cast<int64_t>(std::max(1.0, bucket_mb * 1048576.0 / sizeof(float)));
  int64_t largest = 0;
  for (const Param& p : ps) largest = std::max(largest, p.numel());
  // one bucket buffer in the backend's scratch: a bucket closes once it holds >= cap floats
  ArenaScope scope(be.scratch());
  const Tensor bucket = be.scratch().alloc_f32(
      {std::min<int64_t>(cap + largest, static_cast<int64_t>(params.total_elements()))});
  int64_t used = 0;
  std::vector<Param*> members;
  auto flush = [&] {
    if (members.empty()) return;
    dp_dev.allreduce_sum(bucket.f32(), static_cast<size_t>(used));
    int64_t o = 0;
    for (Param* p : members) {
      be.copy(p->grad(), bucket.flat(o, p->numel()).view(Dims(p->shape)));
      o += p->numel();
    }
    st.buckets += 1;
    st.bytes += used * static_cast<int64_t>(sizeof(float));
    used = 0;
    members.clear();
  };
  for (size_t k = ps.size(); k-- > 0;) {
    Param& p = ps[k];
    if (!p.has_grad) continue;
    be.copy(bucket.flat(used, p.numel()).view(Dims(p.shape)), p.grad());
    used += p.numel();
    members.push_back(&p);
    if (used >= cap) flush();
  }
  flush();
  return st;
}

double model_parallel_grad_norm(ParallelContext& pc, double local_sumsq) {
  double s = local_sumsq;
  if (pc.tp_size() > 1) pc.tp->allreduce_sum(&s, 1);
  if (pc.pp_size() > 1) pc.pp->allreduce_sum(&s, 1);
  return std::sqrt(s);
}

}  // namespace bupo
