#include "rl/step_metrics.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "rl/run.hpp"

namespace bupo::rl {

CommSnapshot comm_snapshot(const Run& r) {
  const Comm* host[3] = {r.pc.tp.get(), r.pc.pp.get(), r.pc.dp.get()};
  const Comm* dev[3] = {r.pc.dev.tp.get(), r.pc.dev.pp.get(), r.pc.dev.dp.get()};
  CommSnapshot s;
  for (size_t g = 0; g < 3; ++g) {
    s[g] = host[g]->stats();
    if (dev[g] != host[g]) {
      for (size_t op = 0; op < s[g].by_op.size(); ++op) {
        s[g].by_op[op].calls += dev[g]->stats().by_op[op].calls;
        s[g].by_op[op].bytes += dev[g]->stats().by_op[op].bytes;
      }
      s[g].recv_wait_s += dev[g]->stats().recv_wait_s;
    }
  }
  return s;
}

namespace {
double mean(const std::vector<double>& v) {
  double a = 0;
  for (double x : v) a += x;
  return v.empty() ? 0.0 : a / static_cast<double>(v.size());
}
}  // namespace

Metrics step_metrics(Run& r, bool phase1, const RolloutBatch& rb, const UpdateStats& us,
                     const CriticStats* critic, double fallback_frac, const StepTimes& t,
                     const DiagnosticsWork& dw, const CommSnapshot& comm0, double step_seconds) {
  Metrics m;
  auto add = [&](const std::string& name, double v) { m.emplace_back(name, v); };
  const auto& rolls = rb.rolls;
  double trunc = 0, maxlen = 0, raw_ent = 0, temp = 0;
  int64_t ntok = 0, nprompt = 0;
  std::vector<double> rewards;
  for (const auto& x : rolls) {
    rewards.push_back(x.reward);
    trunc += x.truncated;
    maxlen = std::max(maxlen, static_cast<double>(x.resp_len()));
    for (size_t i = 0; i < x.raw_entropy.size(); ++i) {
      raw_ent += x.raw_entropy[i];
      temp += x.temperature[i];
    }
    ntok += x.resp_len();
    nprompt += x.prompt_len;
  }
  const double nt = std::max<double>(1.0, static_cast<double>(ntok));
  add("phase", phase1 ? 1.0 : 2.0);
  add("bupo_layer", phase1 ? static_cast<double>(r.st.bupo_layer) : 0.0);
  add("reward", mean(rb.all_rewards));
  add("accuracy", mean(rb.all_scores));
  add("reward_trained", mean(rewards));
  add("response_length", mean(rb.all_lengths));
  add("response_length_max", maxlen);
  add("truncated_frac", rolls.empty() ? 0.0 : trunc / static_cast<double>(rolls.size()));
  add("tokens", static_cast<double>(ntok));
  add("prompt_tokens", static_cast<double>(nprompt));  // the workload bupo plan models
  add("groups_kept_frac",
      rb.groups_seen ? static_cast<double>(rb.groups_kept) / static_cast<double>(rb.groups_seen)
                     : 0.0);
  add("gen_batches", static_cast<double>(rb.gen_batches));
  add("pg_loss", us.pg_loss);
  add("kl", us.kl);
  add("entropy", us.entropy);
  add("entropy_rollout", raw_ent / nt);
  // verl's rollout/actor probability gap: |log p when sampled − log p recomputed for the update|
  // over the tokens sampled from the untempered full policy (T = 1, or greedy, whose reported
  // distribution is T = 1), on the ranks that recomputed them. Undefined (null) in BuPO phase 1,
  // where the update recomputes π^l, not the policy that sampled.
  {
    double mm[2] = {0, 0};  // Σ|Δ|, tokens
    float mx = 0;
    for (const auto& x : rolls) {
      if (x.old_logp.size() != x.rollout_logp.size()) continue;  // not recomputed on this rank
      for (size_t i = 0; i < x.old_logp.size(); ++i) {
        if (x.temperature[i] > 0 && x.temperature[i] != 1.0f) continue;
        const float d = std::fabs(x.rollout_logp[i] - x.old_logp[i]);
        mm[0] += d;
        mm[1] += 1;
        mx = std::max(mx, d);
      }
    }
    r.pc.world->allreduce_sum(mm, 2);
    r.pc.world->allreduce_max(&mx, 1);
    const bool recomputes_pi_l = phase1 && r.cfg.bupo.variant == "internal_policy";
    const bool defined = !recomputes_pi_l && mm[1] > 0;
    add("logprob_mismatch_mean", defined ? mm[0] / mm[1] : NAN);
    add("logprob_mismatch_max", defined ? mx : NAN);
  }
  add("clip_frac", us.clip_frac());
  add("clip_frac_low", us.tok ? us.clip_low / us.tok : 0.0);
  add("clip_frac_high", us.tok ? us.clip_high / us.tok : 0.0);
  add("dual_clip_frac", us.tok ? us.dual / us.tok : 0.0);
  add("ratio_mean", us.tok ? us.ratio_sum / us.tok : 1.0);
  add("ratio_first_minibatch_maxdev", us.first_maxdev);
  add("adv_abs_mean", us.tok ? us.adv_abs / us.tok : 0.0);
  add("hapo_fallback_frac", fallback_frac);
  add("temperature_mean", ntok ? temp / nt : r.cfg.rollout.temperature);
  add("grad_norm", us.grad_norm_last);
  add("lr", us.lr_last);
  add("optimizer_steps", static_cast<double>(us.updates));
  add("nonfinite_skipped", static_cast<double>(us.nonfinite_skips));
  add("n_groups", static_cast<double>(static_cast<int64_t>(rolls.size()) / r.cfg.rollout.n));
  if (critic) {  // PPO's value model (verl's critic/* metrics)
    const CriticStats& c = *critic;
    add("critic_vf_loss", c.vf_loss);
    add("critic_vf_clipfrac", c.tok ? c.clipped / c.tok : 0.0);
    add("critic_vpred_mean", c.tok ? c.vpred_sum / c.tok : 0.0);
    add("critic_grad_norm", c.grad_norm_last);
    add("critic_lr", c.lr_last);
    add("critic_optimizer_steps", static_cast<double>(c.updates));
    add("critic_nonfinite_skipped", static_cast<double>(c.nonfinite_skips));
    // the rollout-time values against the returns: 1 − Var(R − V)/Var(R) (verl's
    // vf_explained_var), over every response token of the step (identical on every rank)
    double n = 0, sr = 0, sv = 0, srr = 0, sdd = 0, sd = 0;
    for (const auto& x : rolls)
      for (size_t i = 0; i < x.returns.size() && i < x.values.size(); ++i) {
        const double R = x.returns[i], d = R - x.values[i];
        n += 1;
        sr += R;
        sv += x.values[i];
        srr += R * R;
        sd += d;
        sdd += d * d;
      }
    const double var_r = n > 0 ? srr / n - (sr / n) * (sr / n) : 0.0,
                 var_d = n > 0 ? sdd / n - (sd / n) * (sd / n) : 0.0;
    add("critic_values_mean", n > 0 ? sv / n : 0.0);
    add("critic_returns_mean", n > 0 ? sr / n : 0.0);
    add("critic_explained_var", var_r > 0 ? 1.0 - var_d / var_r : NAN);
  }
  add("time_rollout", t.rollout);
  add("time_reward", t.reward);
  add("time_old_logprob", t.old_logprob);
  add("time_update", t.update);
  if (critic) {
    add("time_values", t.values);
    add("time_critic", t.critic);
  }
  add("time_diagnostics", t.diagnostics);
  add("diag_tokens", static_cast<double>(dw.tokens));
  add("diag_forward_tokens", static_cast<double>(dw.forward_tokens));
  add("time_validation", t.validation);
  add("time_log_write_prev", t.log_write_prev);
  // communication per group over all ranks; the pipeline bubble over the stages taking part
  const CommSnapshot now = comm_snapshot(r);
  std::vector<double> v;
  for (size_t g = 0; g < 3; ++g) {
    v.push_back(static_cast<double>(now[g].bytes() - comm0[g].bytes()));
    v.push_back(static_cast<double>(now[g].calls() - comm0[g].calls()));
    v.push_back(now[g].recv_wait_s - comm0[g].recv_wait_s);
  }
  v.push_back(r.pipe.wall);
  v.push_back(r.pipe.wait);
  r.pc.world->allreduce_sum(v.data(), v.size());
  const char* names[3] = {"tp", "pp", "dp"};
  for (size_t g = 0; g < 3; ++g) {
    add(std::string("comm_") + names[g] + "_bytes", v[3 * g]);
    add(std::string("comm_") + names[g] + "_calls", v[3 * g + 1]);
  }
  add("pp_recv_wait_s", v[3 * 1 + 2] / r.pc.world->size());  // per rank, mean
  if (r.pc.pp_size() > 1) {
    // the measured bubble of the update: idle (receive-wait) time over the wall time of the
    // pipelined passes, over all ranks of the stages taking part; and the 1F1B bound
    // (p-1)/(m+p-1) for p = those stages and m = micro-batches per replica and mini-batch
    add("pp_bubble_measured", v[10] > 0 ? v[10] / v[9] : 0.0);
    const double p = r.pipe.stages, mm = static_cast<double>(r.pipe.micros);
    add("pp_bubble_1f1b", mm > 0 ? (p - 1) / (mm + p - 1) : 0.0);
  }
  add("time_step", step_seconds);
  return m;
}

std::string step_line(const Run& r, int64_t s, bool phase1, const RolloutBatch& rb,
                      const UpdateStats& us, const CriticStats* critic, double seconds) {
  char line[512];
  char vf[48] = "";
  if (critic) std::snprintf(vf, sizeof vf, " vf %.4f", critic->vf_loss);
  std::snprintf(line, sizeof line,
                "step %4lld/%lld %s reward %.3f acc %.3f len %.1f loss %+.4f ent %.3f clip %.3f "
                "gn %.3f%s %.2fs",
                static_cast<long long>(s), static_cast<long long>(r.cfg.trainer.steps),
                phase1 ? ("[BuPO pi^" + std::to_string(r.st.bupo_layer) + "]").c_str() : "[full]",
                mean(rb.all_rewards), mean(rb.all_scores), mean(rb.all_lengths), us.pg_loss,
                us.entropy, us.clip_frac(), us.grad_norm_last, vf, seconds);
  return line;
}

}  // namespace bupo::rl
