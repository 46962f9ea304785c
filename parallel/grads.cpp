#include "parallel/grads.hpp"

#include <cmath>

#include "optim/adamw.hpp"

namespace bupo {

GradReduceStats allreduce_grads(ParamStore& params, Comm& dp, double bucket_mb) {
  GradReduceStats st;
  if (dp.size() == 1) return st;
  auto& ps = params.all();
  // every replica must agree on which parameters take part (a replica may have had no tokens)
  std::vector<float> flags(ps.size());
  for (size_t i = 0; i < ps.size(); ++i) flags[i] = ps[i].has_grad ? 1.0f : 0.0f;
  dp.allreduce_max(flags.data(), flags.size());
  const auto cap = static_cast<size_t>(std::max(1.0, bucket_mb * 1048576.0 / sizeof(float)));
  std::vector<float> bucket;
  std::vector<Param*> members;
  auto flush = [&] {
    if (members.empty()) return;
    dp.allreduce_sum(bucket.data(), bucket.size());
    size_t o = 0;
    for (Param* p : members) {
      std::copy_n(bucket.data() + o, p->numel(), p->g);
      o += static_cast<size_t>(p->numel());
    }
    st.buckets += 1;
    st.bytes += static_cast<int64_t>(bucket.size() * sizeof(float));
    bucket.clear();
    members.clear();
  };
  for (size_t k = ps.size(); k-- > 0;) {
    Param& p = ps[k];
    if (flags[k] == 0.0f) continue;
    p.has_grad = true;  // (zero on a replica that saw no tokens)
    bucket.insert(bucket.end(), p.g, p.g + p.numel());
    members.push_back(&p);
    if (bucket.size() >= cap) flush();
  }
  flush();
  return st;
}

double model_parallel_grad_norm(Model& m) {
  double s = grad_sumsq(m.params());
  ParallelContext& pc = m.parallel();
  if (pc.tp_size() > 1) pc.tp->allreduce_sum(&s, 1);
  if (pc.pp_size() > 1) pc.pp->allreduce_sum(&s, 1);
  return std::sqrt(s);
}

}  // namespace bupo
