#include "rl/policy_eval.hpp"

#include "rl/run.hpp"

namespace bupo::rl {

Packed pack(const std::vector<const Rollout*>& seqs) {
  Packed p;
  std::vector<std::vector<int32_t>> s;
  s.reserve(seqs.size());
  for (const Rollout* r : seqs) s.push_back(r->ids);
  p.b = Batch::from_sequences(s);
  for (size_t i = 0; i < seqs.size(); ++i) {
    const int64_t off = p.b.cu_seqlens[i];
    const Rollout& r = *seqs[i];
    for (int64_t t = r.prompt_len; t < static_cast<int64_t>(r.ids.size()); ++t) {
      p.rows.push_back(static_cast<int32_t>(off + t - 1));
      p.targets.push_back(r.ids[static_cast<size_t>(t)]);
    }
  }
  return p;
}

Lens lens_for(Model& m, PolicyPath path) {
  return Lens{&m.unembedding(),
              path.layer == 0 ? nullptr : &m.final_norm(),
              path.layer == 0 ? LensMode::Raw : path.lens,
              static_cast<float>(m.config().rms_norm_eps),
              m.parallel().dev.tp.get(),
              0};
}

void temper_rows(Backend& be, const Tensor& x, PolicyPath path) {
  if (path.inv_temperature != 1.0f) be.scale(x, path.inv_temperature);
}

Tensor hidden_of(const Activations& acts, PolicyPath path) {
  return path.layer == 0 ? acts.final_out : acts.h(path.layer);
}

Tensor gather_response_rows(Backend& be, const Tensor& x, const Packed& p, Tensor* rows_out) {
  const auto R = static_cast<int64_t>(p.rows.size());
  const Tensor rows = staged_input(be, p.rows.data(), {R});
  const Tensor X = be.scratch().alloc(x.dtype, {R, x.dim(1)});
  be.gather_rows(X, x, rows);
  if (rows_out) *rows_out = rows;
  return X;
}

bool holds_policy(const Model& model, PolicyPath path) {
  return path.layer == 0 ? model.last_layer() == model.num_layers() : model.owns_layer(path.layer);
}

void policy_logprobs(Model& model, const std::vector<const Rollout*>& seqs, PolicyPath path,
                     std::vector<float>& logp, std::vector<float>* entropy) {
  const Packed p = pack(seqs);
  Activations acts;
  model.forward(p.b, acts, /*keep=*/false, path.layer == 0 ? -1 : path.layer);
  logp.clear();
  if (entropy) entropy->clear();
  if (!holds_policy(model, path)) return;  // another pipeline stage holds π^l
  Backend& be = model.backend();
  ArenaScope scope(be.scratch());
  const Tensor X = gather_response_rows(be, hidden_of(acts, path), p);
  temper_rows(be, X, path);
  logp.resize(p.rows.size());
  if (entropy) entropy->resize(p.rows.size());
  lens_for(model, path)
      .forward(X, p.targets.data(), entropy ? entropy->data() : nullptr, logp.data());
}

double compute_old_logprobs(Run& r, const std::vector<MiniBatch>& minis, PolicyPath path) {
  const auto t0 = Clock::now();
  for (const auto& all_micros : minis)
    for (const auto& mic : replica_share(r.pc, all_micros)) {
      std::vector<float> lp, rl;
      policy_logprobs(*r.model, mic, path, lp, nullptr);
      if (r.ref) policy_logprobs(*r.ref, mic, path, rl, nullptr);
      if (lp.empty()) continue;  // another pipeline stage holds the policy
      size_t o = 0;
      for (const Rollout* x : mic) {
        auto* w =
            const_cast<Rollout*>(x);  // the rollouts belong to this step; micro-batches view them
        const auto n = static_cast<size_t>(x->resp_len());
        w->old_logp.assign(lp.begin() + static_cast<std::ptrdiff_t>(o),
                           lp.begin() + static_cast<std::ptrdiff_t>(o + n));
        if (r.ref)
          w->ref_logp.assign(rl.begin() + static_cast<std::ptrdiff_t>(o),
                             rl.begin() + static_cast<std::ptrdiff_t>(o + n));
        o += n;
      }
    }
  return seconds_since(t0);
}

}  // namespace bupo::rl
