#include "rl/update.hpp"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <numeric>
#include <set>
#include <sstream>
#include <string>

#include "parallel/grads.hpp"
#include "parallel/mpi_comm.hpp"
#include "parallel/pipeline.hpp"
#include "parallel/zero.hpp"
#include "rl/advantage.hpp"
#include "rl/hapo.hpp"
#include "rl/run.hpp"

namespace bupo::rl {

void run_pipeline(Run& r, const MiniBatch& micros, PolicyPath path, bool entropy_grad,
                  const LossFn& loss, const EntropyFn* top_entropy) {
  ParallelContext& pc = r.pc;
  Model& model = *r.model;
  Backend& be = model.backend();
  const bool two_losses = top_entropy != nullptr && path.layer > 0;
  const PolicyPath full{0, path.lens, path.inv_temperature};
  const int policy_stage = r.stage_of_policy(path);
  const int loss_stage = two_losses ? r.stage_of_policy(full) : policy_stage;  // the deepest
  const int s = pc.pp_rank();
  if (s > loss_stage) return;
  const bool here = s == policy_stage, here_top = two_losses && s == loss_stage;
  const auto t_start = Clock::now();
  const double wait0 = r.pp_recv_wait();
  const auto m = static_cast<int64_t>(micros.size());
  const Lens lens = lens_for(model, path);
  std::vector<Packed> pk(static_cast<size_t>(m));
  std::vector<Activations> acts(static_cast<size_t>(m));  // ≤ loss_stage+1 - s hold memory
  auto forward = [&](int64_t i) {
    const auto u = static_cast<size_t>(i);
    pk[u] = pack(micros[u]);
    model.forward(pk[u].b, acts[u], /*keep=*/true, path.layer == 0 || two_losses ? -1 : path.layer);
    if (!here) return;
    ArenaScope scope(be.scratch());
    Tensor rows;
    const Tensor X = gather_response_rows(be, hidden_of(acts[u], path), pk[u], &rows);
    temper_rows(be, X, path);
    const int64_t R = static_cast<int64_t>(pk[u].rows.size());
    std::vector<float> lp(static_cast<size_t>(R)), H(static_cast<size_t>(R));
    lens.forward(X, pk[u].targets.data(), H.data(), lp.data());
    std::vector<float> g_lp(static_cast<size_t>(R), 0.0f), g_ent(static_cast<size_t>(R), 0.0f);
    loss(u, lp, H, g_lp, g_ent);
    const Tensor dX = be.scratch().alloc(X.dtype, {R, X.dim(1)});
    be.zero(dX);
    lens.backward(X, pk[u].targets.data(), g_lp.data(), entropy_grad ? g_ent.data() : nullptr, dX);
    temper_rows(be, dX, path);
    // dL/dH at the policy layer: the rows' gradients at their positions, zero elsewhere
    be.zero(acts[u].d_policy);
    be.scatter_add_rows(acts[u].d_policy, rows, dX);
  };
  // the full policy's entropy term on the last stage, right before its backward (1F1B runs the
  // last stage's forward and backward of a micro-batch back to back: dL/dY needs no storage)
  const Lens top_lens = lens_for(model, full);
  auto backward_two_losses = [&](size_t u) {
    ArenaScope scope(be.scratch());
    Tensor dY;
    if (here_top) {
      const int64_t R = static_cast<int64_t>(pk[u].rows.size());
      dY = be.scratch().alloc(acts[u].final_out.dtype,
                              {acts[u].final_out.dim(0), acts[u].final_out.dim(1)});
      be.zero(dY);
      ArenaScope rows_scope(be.scratch());
      Tensor rows;
      const Tensor X = gather_response_rows(be, hidden_of(acts[u], full), pk[u], &rows);
      temper_rows(be, X, full);
      std::vector<float> lp(static_cast<size_t>(R)), H(static_cast<size_t>(R));
      top_lens.forward(X, pk[u].targets.data(), H.data(), lp.data());
      std::vector<float> g_lp(static_cast<size_t>(R), 0.0f), g_ent(static_cast<size_t>(R), 0.0f);
      (*top_entropy)(u, H, g_ent);
      const Tensor dX = be.scratch().alloc(X.dtype, {R, X.dim(1)});
      be.zero(dX);
      top_lens.backward(X, pk[u].targets.data(), g_lp.data(), g_ent.data(), dX);
      temper_rows(be, dX, full);
      be.scatter_add_rows(dY, rows, dX);
    }
    model.backward_from_output(pk[u].b, acts[u], dY, path.layer,
                               here ? acts[u].d_policy : Tensor{});
    acts[u].release();
  };
  auto backward = [&](int64_t i) {
    const auto u = static_cast<size_t>(i);
    if (two_losses) return backward_two_losses(u);
    const Tensor g = here ? acts[u].d_policy : Tensor{};
    if (path.layer == 0)
      model.backward_from_output(pk[u].b, acts[u], g);
    else
      model.backward_from_layer(pk[u].b, acts[u], path.layer, g);
    acts[u].release();
  };
  run_pipeline_stage(one_f_one_b(s, loss_stage + 1, m), forward, backward);
  if (pc.pp_size() > 1) {
    if (auto* mc = dynamic_cast<MpiComm*>(pc.dev.pp.get())) mc->wait_sends();
    r.pipe.wall += seconds_since(t_start);
    r.pipe.wait += r.pp_recv_wait() - wait0;
    r.pipe.stages = std::max(r.pipe.stages, loss_stage + 1);
    r.pipe.micros = std::max<int64_t>(r.pipe.micros, m);
  }
}

void reduce_loss_stats(Run& r, std::vector<double>& v, std::vector<float>& mx, PolicyPath path) {
  r.share_from_stage(v, r.stage_of_policy(path));
  if (mx.empty()) return;
  r.pc.dp->allreduce_max(mx.data(), mx.size());
  if (r.pc.pp_size() > 1)
    r.pc.pp->broadcast(mx.data(), mx.size() * sizeof(float), r.stage_of_policy(path));
}

double linear_warmup(double lr, int64_t warmup, int64_t k) {
  if (warmup <= 0) return lr;
  return lr * std::min(1.0, static_cast<double>(std::max<int64_t>(k - 1, 0)) /
                                static_cast<double>(warmup));
}

double scheduled_lr(const TrainConfig& cfg, int64_t train_step, int64_t optimizer_step) {
  const int64_t k = cfg.optim.warmup_unit == "train_steps" ? train_step : optimizer_step;
  return linear_warmup(cfg.optim.lr, cfg.optim.warmup_steps, k);
}

double finish_grads(Run& r, Model& m, const AdamW& opt) {
  m.reduce_partial_grads();
  if (const ZeroShard* zs = opt.shard()) {  // ZeRO-1: each replica's part of the norm
    reduce_scatter_grads(m.params(), zs->layout, *r.pc.dp, *r.pc.dev.dp);
    double s = owned_grad_sumsq(m.params(), zs->layout);
    r.pc.dp->allreduce_sum(&s, 1);
    return model_parallel_grad_norm(r.pc, s);
  }
  allreduce_grads(m.params(), *r.pc.dp, *r.pc.dev.dp, r.cfg.parallel.grad_bucket_mb);
  return model_parallel_grad_norm(r.pc, grad_sumsq(m.params()));
}
double finish_grads(Run& r, const AdamW& opt) {
  return finish_grads(r, *r.model, opt);
}

std::vector<double> minibatch_weights(const Run& r, const MiniBatch& all_micros,
                                      std::vector<size_t>* w_off) {
  std::vector<int64_t> lens, micro_of;
  if (w_off) w_off->clear();
  for (size_t u = 0; u < all_micros.size(); ++u) {
    if (w_off) w_off->push_back(lens.size());
    for (const Rollout* x : all_micros[u]) {
      lens.push_back(x->resp_len());
      micro_of.push_back(static_cast<int64_t>(u));
    }
  }
  return r.cfg.algorithm.verl_microbatch_mean ? verl_microbatch_token_mean_weights(lens, micro_of)
                                              : aggregation_weights(r.agg, lens);
}

namespace {
// The decoder layer (1-based) a Hugging Face parameter name belongs to: 0 for the embedding,
// L + 1 for what sits above the last layer (the final norm, an untied lm_head).
int decoder_layer_of(const std::string& name, int L) {
  static const std::string kLayers = "model.layers.";
  if (name.rfind(kLayers, 0) == 0) return std::stoi(name.substr(kLayers.size())) + 1;
  return name.rfind("model.embed_tokens", 0) == 0 ? 0 : L + 1;
}

// Fault injection for tests: BUPO_FAULT_NAN_STEPS=2,3 poisons those steps' gradients (read at
// every update: a test changes it between runs of one process).
bool nan_injected_at(int64_t step) {
  std::set<int64_t> steps;
  if (const char* e = std::getenv("BUPO_FAULT_NAN_STEPS")) {
    std::stringstream ss(e);
    std::string x;
    while (std::getline(ss, x, ',')) steps.insert(std::stoll(x));
  }
  return steps.count(step) > 0;
}
}  // namespace

void update_minibatch(Run& r, const MiniBatch& all_micros, PolicyPath path, UpdateStats& us,
                      bool first) {
  const TrainConfig& cfg = r.cfg;
  // aggregation weights over the whole mini-batch (every rank knows every rollout)
  std::vector<size_t> w_off;  // first weight of each micro-batch
  const std::vector<double> w = minibatch_weights(r, all_micros, &w_off);
  const auto M = static_cast<int64_t>(all_micros.size());
  const auto u0 = static_cast<size_t>(M * r.pc.dp_rank() / r.pc.dp_size());
  const MiniBatch micros = replica_share(r.pc, all_micros);
  const KlKind klk = kl_kind_from_string(cfg.algorithm.kl_estimator);
  // BuPO phase 1's entropy bonus on the full policy π_θ, as the reference computes it from the
  // final logits (bupo.phase1_entropy = "full"); "internal": on π^l, which keeps the update
  // confined to layers <= l
  const bool full_entropy =
      path.layer > 0 && cfg.algorithm.entropy_coef != 0 && cfg.bupo.phase1_entropy == "full";
  r.model->params().zero_grad();
  // local sums: pg, kl, entropy, loss, tokens, clipped, clip_low, clip_high, dual, ratio, |adv|
  enum { kPg, kKl, kEnt, kLoss, kTok, kClip, kClipLo, kClipHi, kDual, kRatio, kAdv, kN };
  std::vector<double> v(kN, 0.0);
  std::vector<float> maxdev = {0.0f};
  const bool inject_nan = nan_injected_at(r.cur_step);
  auto loss = [&](size_t i, const std::vector<float>& lp, const std::vector<float>& H,
                  std::vector<float>& g_lp, std::vector<float>& g_ent) {
    const auto& mic = micros[i];
    const auto R = static_cast<int64_t>(lp.size());
    std::vector<float> ht(static_cast<size_t>(R), 0.0f);
    if (cfg.hapo.redistribution || cfg.hapo.adaptive_clip)
      entropy_h(H.data(), R, cfg.hapo.pivot, r.sign, ht.data());  // micro-batch statistics (§2.1)
    size_t t = 0, wi = w_off[u0 + i];
    for (const Rollout* x : mic) {
      for (int64_t j = 0; j < x->resp_len(); ++j, ++t, ++wi) {
        const double wt = w[wi];
        float el = static_cast<float>(cfg.algorithm.clip_low),
              er = static_cast<float>(cfg.algorithm.clip_high);
        if (cfg.hapo.adaptive_clip)
          adaptive_clip(ht[t], cfg.algorithm.clip_low, cfg.algorithm.clip_high, cfg.hapo.alpha, &el,
                        &er);
        const double old = x->old_logp[static_cast<size_t>(j)];
        const double ratio = std::exp(std::clamp(static_cast<double>(lp[t]) - old, -20.0, 20.0));
        double a = x->advantage_at(j);
        if (cfg.hapo.redistribution)
          a = redistribute_advantage(a, ht[t], ratio, el, er, cfg.hapo.beta);
        const TokenLoss tl = ppo_token_loss(lp[t], old, a, el, er, cfg.algorithm.dual_clip,
                                            cfg.algorithm.log_ratio_clamp);
        double g = wt * tl.dlogp, l = wt * tl.loss;
        v[kPg] += wt * tl.loss;
        if (r.ref && !cfg.algorithm.kl_in_reward) {
          double dk = 0;
          const double k = kl_value(klk, lp[t], x->ref_logp[static_cast<size_t>(j)], &dk);
          l += wt * cfg.algorithm.kl_coef * k;
          g += wt * cfg.algorithm.kl_coef * dk;
          v[kKl] += wt * k;
        }
        if (cfg.algorithm.entropy_coef != 0 && !full_entropy) {
          l -= wt * cfg.algorithm.entropy_coef * H[t];
          g_ent[t] = static_cast<float>(-wt * cfg.algorithm.entropy_coef);
        }
        if (!full_entropy) v[kEnt] += wt * H[t];
        v[kLoss] += l;
        g_lp[t] = static_cast<float>(g);
        v[kTok] += 1;
        v[kClip] += tl.clipped;
        v[kClipLo] += tl.clipped_low;
        v[kClipHi] += tl.clipped_high;
        v[kDual] += tl.dual_clipped;
        v[kRatio] += tl.ratio;
        v[kAdv] += std::fabs(a);
        if (first) maxdev[0] = std::max(maxdev[0], static_cast<float>(std::fabs(tl.ratio - 1.0)));
      }
    }
    if (inject_nan && !g_lp.empty()) g_lp[0] = std::numeric_limits<float>::quiet_NaN();
  };
  // the full policy's entropy term, on the last stage: its share of the loss and the logged
  // entropy (the reference's actor/entropy in phase 1)
  double ent_full[2] = {0, 0};  // Σ w·H, Σ w·(−coef·H)
  const EntropyFn top = [&](size_t i, const std::vector<float>& H, std::vector<float>& g_ent) {
    size_t t = 0, wi = w_off[u0 + i];
    for (const Rollout* x : micros[i])
      for (int64_t j = 0; j < x->resp_len(); ++j, ++t, ++wi) {
        ent_full[0] += w[wi] * H[t];
        ent_full[1] -= w[wi] * cfg.algorithm.entropy_coef * H[t];
        g_ent[t] = static_cast<float>(-w[wi] * cfg.algorithm.entropy_coef);
      }
  };
  run_pipeline(r, micros, path, cfg.algorithm.entropy_coef != 0 && !full_entropy, loss,
               full_entropy ? &top : nullptr);
  // Table 11's variants of phase 1: layers 1..l frozen (no gradient, as requires_grad = False:
  // no update, no decay, outside the gradient norm), or the layers above l at a smaller LR
  const int l = static_cast<int>(r.st.bupo_layer), L = r.model->num_layers();
  const bool variant_phase1 = r.st.bupo_layer > 0 && r.cur_step <= cfg.bupo.internal_steps &&
                              cfg.bupo.variant != "internal_policy";
  if (variant_phase1 && cfg.bupo.variant == "frozen_layers")
    for (Param& p : r.model->params().all())
      if (const int k = decoder_layer_of(p.name, L); k >= 1 && k <= l) p.has_grad = false;
  // the scales change only where phase 1 begins and ends (l and the parameters are fixed for the
  // run): set then, not at every mini-batch
  const bool scaled = variant_phase1 && cfg.bupo.variant == "layerwise_lr";
  if (scaled && r.optim->lr_scales().empty()) {
    std::vector<double> lr_scales;
    for (const Param& p : r.model->params().all())
      lr_scales.push_back(decoder_layer_of(p.name, L) > l ? cfg.bupo.layerwise_lr_scale : 1.0);
    r.optim->set_lr_scales(std::move(lr_scales));
  } else if (!scaled && !r.optim->lr_scales().empty()) {
    r.optim->set_lr_scales({});
  }
  if (full_entropy) {  // from the last stage to the stage of π^l, which reduce_loss_stats reads
    if (r.pc.pp_size() > 1) r.pc.pp->allreduce_sum(ent_full, 2);
    v[kEnt] = ent_full[0];
    v[kLoss] += ent_full[1];
  }
  reduce_loss_stats(r, v, maxdev, path);
  us.tok += v[kTok];
  us.clipped += v[kClip];
  us.clip_low += v[kClipLo];
  us.clip_high += v[kClipHi];
  us.dual += v[kDual];
  us.ratio_sum += v[kRatio];
  us.adv_abs += v[kAdv];
  if (first) us.first_maxdev = std::max(us.first_maxdev, static_cast<double>(maxdev[0]));
  // mini-batch loss terms are sums of weighted tokens: accumulate the per-mini-batch means
  ++us.minis;
  us.pg_loss += (v[kPg] - us.pg_loss) / static_cast<double>(us.minis);
  us.kl += (v[kKl] - us.kl) / static_cast<double>(us.minis);
  const double w_total = std::accumulate(w.begin(), w.end(), 0.0);
  us.entropy += (v[kEnt] / std::max(1e-12, w_total) - us.entropy) / static_cast<double>(us.minis);

  const double gn = finish_grads(r, *r.optim);
  if (!std::isfinite(v[kLoss]) || !std::isfinite(gn)) {  // the non-finite guard: skip the update
    r.model->params().zero_grad();
    ++us.nonfinite_skips;
    us.grad_norm_last = gn;
    return;
  }
  if (cfg.optim.grad_clip > 0) clip_grad_norm(r.model->params(), cfg.optim.grad_clip, gn);
  ++r.st.optimizer_steps;
  const double lr = scheduled_lr(cfg, r.cur_step, r.st.optimizer_steps);
  r.optim->config().lr = lr;
  r.optim->step();
  r.model->params().zero_grad();
  ++us.updates;
  us.grad_norm_last = gn;
  us.lr_last = lr;
}

}  // namespace bupo::rl
