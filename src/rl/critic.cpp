#include "rl/critic.hpp"

#include <algorithm>
#include <cmath>

#include "model/gguf_import.hpp"
#include "parallel/mpi_comm.hpp"
#include "parallel/pipeline.hpp"
#include "parallel/topology.hpp"
#include "rl/loss.hpp"
#include "rl/run.hpp"
#include "rl/update.hpp"

namespace bupo::rl {

void value_head_forward(Model& critic, const Tensor& X, std::vector<float>& v) {
  Backend& be = critic.backend();
  const int64_t R = X.dim(0);
  v.assign(static_cast<size_t>(R), 0.0f);
  if (R == 0) return;
  ArenaScope scope(be.scratch());
  const Tensor y = be.scratch().alloc(X.dtype, {R, 1});  // (R, 1)
  be.linear_forward(y, X, critic.value_weight().compute_weight(),
                    critic.value_bias().compute_weight());
  const Tensor out = staged_output(be, v.data(), {R, 1});
  be.convert(out, y);  // fp32 on the host
  fetch_output(be, out, v.data());
}

void value_head_backward(Model& critic, const Tensor& X, const std::vector<float>& g,
                         const Tensor& dX) {
  Backend& be = critic.backend();
  const int64_t R = X.dim(0);
  if (R == 0) return;
  ArenaScope scope(be.scratch());
  const Tensor g32 = staged_input(be, g.data(), {R, 1});
  Tensor dy = g32;
  if (X.dtype != DType::F32) {
    dy = be.scratch().alloc(X.dtype, {R, 1});
    be.convert(dy, g32);
  }
  Param &w = critic.value_weight(), &b = critic.value_bias();
  be.linear_backward(dX, w.grad(), b.grad(), dy, X, w.compute_weight());
  w.has_grad = b.has_grad = true;
}

namespace {

// The run's layout tp × pp × dp with its stage weighting (parallel.*_stage_layers).
ParallelLayout layout_of(const Run& r) {
  ParallelLayout lay;
  lay.tp = r.pc.tp_size();
  lay.pp = r.pc.pp_size();
  lay.dp = r.pc.dp_size();
  lay.first_stage_layers = static_cast<int>(r.cfg.parallel.first_stage_layers);
  lay.last_stage_layers = static_cast<int>(r.cfg.parallel.last_stage_layers);
  return lay;
}

// The critic's stage split: the policy's, recomputed for the critic's depth when it differs.
ParallelContext critic_context(const Run& r, const ModelConfig& mc) {
  ParallelContext pc = r.pc;
  pc.stage_begin =
      stage_begins(layout_of(r), static_cast<int>(mc.num_layers), r.cfg.source + " (the critic)");
  return pc;
}

// Copies every parameter of `src` that `dst` has (same name, same local shape): a causal LM's
// layers into a value model. Both on one backend and one layout.
void copy_matching_weights(Model& dst, const Model& src, const std::string& what) {
  Backend& be = dst.backend();
  for (Param& p : dst.params().all()) {
    const Param* q = src.params().find(p.name);
    if (q == nullptr) {
      BUPO_CHECK(p.name.rfind("score.", 0) == 0, what, ": no tensor '", p.name, "' for the critic");
      continue;  // the value head stays fresh
    }
    BUPO_CHECK(q->shape == p.shape, what, ": tensor '", p.name, "' has shape ",
               shape_str(q->full_shape), "; the critic expects ", shape_str(p.full_shape));
    be.copy(p.weight(), q->weight());
  }
  dst.params().refresh_working_copy();
}

using ValueLossFn =
    std::function<void(size_t micro, const std::vector<float>& v, std::vector<float>& g)>;

// The forward and backward of one critic step over this replica's micro-batches, 1F1B over every
// stage: the last stage applies the value head, asks `loss` for dL/dv and starts the backward.
void run_critic_pipeline(Run& r, const MiniBatch& micros, const ValueLossFn& loss) {
  Model& c = *r.critic;
  Backend& be = c.backend();
  const bool here =
      holds_policy(c, PolicyPath{});  // the head sits after LN_final, on the last stage
  const auto m = static_cast<int64_t>(micros.size());
  std::vector<Packed> pk(static_cast<size_t>(m));
  std::vector<Activations> acts(static_cast<size_t>(m));
  auto forward = [&](int64_t i) {
    const auto u = static_cast<size_t>(i);
    pk[u] = pack(micros[u]);
    c.forward(pk[u].b, acts[u], /*keep=*/true);
    if (!here) return;
    ArenaScope scope(be.scratch());
    Tensor rows;
    const Tensor X = gather_response_rows(be, acts[u].final_out, pk[u], &rows);  // (R, d)
    std::vector<float> v, g;
    value_head_forward(c, X, v);
    g.assign(v.size(), 0.0f);
    loss(u, v, g);
    const Tensor dX = be.scratch().alloc(X.dtype, {X.dim(0), X.dim(1)});
    value_head_backward(c, X, g, dX);
    be.zero(acts[u].d_policy);  // dL/d LN_final(H^L): the rows' gradients, zero elsewhere
    be.scatter_add_rows(acts[u].d_policy, rows, dX);
  };
  auto backward = [&](int64_t i) {
    const auto u = static_cast<size_t>(i);
    c.backward_from_output(pk[u].b, acts[u], here ? acts[u].d_policy : Tensor{});
    acts[u].release();
  };
  run_pipeline_stage(one_f_one_b(r.pc.pp_rank(), r.pc.pp_size(), m), forward, backward);
  if (r.pc.pp_size() > 1)
    if (auto* mc = dynamic_cast<MpiComm*>(r.pc.dev.pp.get())) mc->wait_sends();
}

// One critic AdamW step on a mini-batch (its micro-batches over every replica).
void critic_minibatch(Run& r, const MiniBatch& all_micros, CriticStats& cs) {
  const TrainConfig& cfg = r.cfg;
  Model& c = *r.critic;
  std::vector<size_t> w_off;
  const std::vector<double> w = minibatch_weights(r, all_micros, &w_off);
  const auto M = static_cast<int64_t>(all_micros.size());
  const auto u0 = static_cast<size_t>(M * r.pc.dp_rank() / r.pc.dp_size());
  const MiniBatch micros = replica_share(r.pc, all_micros);
  c.params().zero_grad();
  enum { kLoss, kClip, kTok, kV, kN };
  std::vector<double> v(kN, 0.0);
  const ValueLossFn loss = [&](size_t i, const std::vector<float>& vp, std::vector<float>& g) {
    size_t t = 0, wi = w_off[u0 + i];
    for (const Rollout* x : micros[i])
      for (int64_t j = 0; j < x->resp_len(); ++j, ++t, ++wi) {
        const auto jj = static_cast<size_t>(j);
        const ValueTokenLoss vl =
            value_token_loss(vp[t], x->values[jj], x->returns[jj], cfg.critic.cliprange_value);
        g[t] = static_cast<float>(w[wi] * vl.dv);
        v[kLoss] += w[wi] * vl.loss;
        v[kClip] += vl.clipped;
        v[kTok] += 1;
        v[kV] += vp[t];
      }
  };
  run_critic_pipeline(r, micros, loss);
  r.share_from_stage(v, r.pc.pp_size() - 1);  // from the stage of the value head
  ++cs.minis;
  cs.vf_loss += (v[kLoss] - cs.vf_loss) / static_cast<double>(cs.minis);
  cs.clipped += v[kClip];
  cs.tok += v[kTok];
  cs.vpred_sum += v[kV];

  const double gn = finish_grads(r, c, *r.critic_optim);
  cs.grad_norm_last = gn;
  if (!std::isfinite(v[kLoss]) || !std::isfinite(gn)) {  // the non-finite guard: skip the step
    c.params().zero_grad();
    ++cs.nonfinite_skips;
    return;
  }
  if (cfg.critic.grad_clip > 0) clip_grad_norm(c.params(), cfg.critic.grad_clip, gn);
  const double lr = linear_warmup(cfg.critic.lr, cfg.critic.lr_warmup_steps, r.cur_step);
  r.critic_optim->config().lr = lr;
  r.critic_optim->step();
  c.params().zero_grad();
  ++cs.updates;
  cs.lr_last = lr;
}

}  // namespace

void make_critic(Run& r) {
  const TrainConfig& cfg = r.cfg;
  if (!cfg.has_critic()) return;
  const std::string where = cfg.source + ": key 'critic.model'";
  ModelConfig mc = cfg.critic.model.empty() ? r.model->config() : model_config_of(cfg.critic.model);
  mc.value_head = true;
  BUPO_CHECK(mc.vocab_size >= r.tok->vocab_size(), where, ": the critic's vocabulary (",
             mc.vocab_size, ") is smaller than the tokenizer's (", r.tok->vocab_size(), ")");
  validate_layout(layout_of(r), r.pc.world->size(), mc, cfg.source + " (the critic)");
  r.critic = std::make_unique<Model>(mc, critic_context(r, mc), *r.backend);
  r.critic->init_random(static_cast<uint64_t>(cfg.critic.init_seed));
  r.critic->params().allocate_grads();
  r.critic_optim = make_optimizer(r, r.critic->params(),
                                  adamw_config(cfg, cfg.critic.lr, cfg.critic.weight_decay));
}

void init_critic(Run& r) {
  if (!r.critic) return;
  const TrainConfig& cfg = r.cfg;
  if (cfg.critic.model.empty()) {
    copy_matching_weights(*r.critic, *r.model, "the policy");
    return;
  }
  auto src = load_model(cfg.critic.model, r.critic->parallel(), *r.backend);
  copy_matching_weights(*r.critic, *src, cfg.critic.model);
}

double compute_values(Run& r, const std::vector<MiniBatch>& minis, std::vector<Rollout>& rolls) {
  const auto t0 = Clock::now();
  Model& c = *r.critic;
  Backend& be = c.backend();
  for (const auto& all_micros : minis)
    for (const auto& mic : replica_share(r.pc, all_micros)) {
      const Packed p = pack(mic);
      Activations acts;
      c.forward(p.b, acts, /*keep=*/false);
      if (!holds_policy(c, PolicyPath{})) continue;
      std::vector<float> v;
      {
        ArenaScope scope(be.scratch());
        value_head_forward(c, gather_response_rows(be, acts.final_out, p), v);
      }
      size_t o = 0;
      for (const Rollout* x : mic) {
        auto* w = const_cast<Rollout*>(x);  // the step's rollouts; micro-batches view them
        const auto n = static_cast<size_t>(x->resp_len());
        w->values.assign(v.begin() + static_cast<std::ptrdiff_t>(o),
                         v.begin() + static_cast<std::ptrdiff_t>(o + n));
        o += n;
      }
    }
  // every rank: each replica's last stage holds its own rollouts' values, zeros elsewhere
  std::vector<double> all;
  for (const Rollout& x : rolls) {
    const auto n = static_cast<size_t>(x.resp_len());
    for (size_t t = 0; t < n; ++t) all.push_back(x.values.size() == n ? x.values[t] : 0.0);
  }
  r.share_from_stage(all, r.pc.pp_size() - 1);
  size_t k = 0;
  for (Rollout& x : rolls) {
    x.values.resize(static_cast<size_t>(x.resp_len()));
    for (float& v : x.values) v = static_cast<float>(all[k++]);
  }
  return seconds_since(t0);
}

CriticStats update_critic(Run& r, const std::vector<MiniBatch>& minis) {
  const auto t0 = Clock::now();
  CriticStats cs;
  for (int64_t ep = 0; ep < r.cfg.trainer.epochs; ++ep)
    for (const MiniBatch& mb : minis) critic_minibatch(r, mb, cs);
  cs.seconds = seconds_since(t0);
  return cs;
}

}  // namespace bupo::rl
