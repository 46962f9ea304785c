// The RL loop of DESIGN.md, one step as data flow: rollout + reward → advantage → old log-probs →
// update → diagnostics → validation → metrics, then checkpoints and the preemption protocol.
// Each stage lives in its own file (run.hpp lists them); this file strings them together.
#include "rl/trainer.hpp"

#include <unistd.h>

#include <atomic>
#include <csignal>
#include <cstdio>
#include <cstdlib>

#include <filesystem>

#include "io/atomic_file.hpp"
#include "model/gather.hpp"
#include "parallel/mpi_comm.hpp"
#include "rl/advantage.hpp"
#include "rl/critic.hpp"
#include "rl/diagnostics.hpp"
#include "rl/hapo.hpp"
#include "rl/loss.hpp"
#include "rl/run.hpp"
#include "rl/step_metrics.hpp"
#include "rl/update.hpp"
#include "rl/validation.hpp"

namespace bupo::rl {

namespace fs = std::filesystem;

// ---------------------------------------------------------------------------- preemption
namespace {
std::atomic<int> g_signal{0};
extern "C" void on_preempt(int sig) {
  g_signal.store(sig);
  // a rank blocked in a collective whose peer died cannot finish the step: the watchdog ends it
  // after parallel.stop_grace_s (parallel/mpi_comm.hpp); USR1, the advance warning, waits on
  if (sig == SIGTERM || sig == SIGINT || sig == SIGUSR2) note_stop_signal(sig);
}
}  // namespace
void install_preemption_handlers() {
  std::signal(SIGTERM, on_preempt);
  std::signal(SIGUSR1, on_preempt);
  std::signal(SIGINT, on_preempt);   // Ctrl-C: the same orderly stop
  std::signal(SIGUSR2, on_preempt);  // SIGTERM relayed by jobs/mpirun.sh (mpirun cannot relay it)
}

bool Run::stop_requested_everywhere() const {
  float sig = static_cast<float>(g_signal.load());
  pc.world->allreduce_max(&sig, 1);
  if (sig != 0) g_signal.store(static_cast<int>(sig));
  return sig != 0;
}

void Run::stop_before_start(const std::string& during) {
  stopped_before_start = true;
  if (root()) write_file_atomic((fs::path(out_dir) / kPreemptedMarker).string(), during + "\n");
  say("stopped by signal " + std::to_string(g_signal.load()) + " during " + during +
      ", before step 1: nothing to checkpoint yet; --resume starts the run afresh");
}
void reset_preemption_flag() {
  g_signal.store(0);
  note_stop_signal(0);
}

// ---------------------------------------------------------------------------- the step's glue
namespace {

void maybe_inject_fault(const Run& r, int64_t s) {
  if (r.fault_step != s || r.fault_rank != r.pc.world->world_rank_of(r.pc.world->rank())) return;
  std::fprintf(stderr, "bupo: fault injection: %s %s at step %lld\n",
               rank_name(r.fault_rank).c_str(), r.fault_kind == "die" ? "dies" : "hangs",
               static_cast<long long>(s));
  std::fflush(stderr);
  if (r.fault_kind == "die") std::_Exit(1);
  for (;;) pause();  // hang: alive, never answering
}

// BuPO (papers.md §1.5): steps 1..s_inter optimise π^l, later steps the full policy.
bool bupo_phase1(const Run& r, int64_t s) {
  return r.st.bupo_layer > 0 && s <= r.cfg.bupo.internal_steps;
}
PolicyPath policy_of_step(const Run& r, int64_t s) {
  // Table 11's variants train the full policy in phase 1 (update_minibatch freezes or slows
  // layers)
  const bool internal = r.cfg.bupo.variant == "internal_policy";
  const int l = bupo_phase1(r, s) && internal ? static_cast<int>(r.st.bupo_layer) : 0;
  // pi^L follows the reference: its k = L-1 reads HF's hidden_states[L], which is already
  // final-normed, so pi^L is the model's own policy and phase 1 at l = L is GRPO (issue 15, 1.4)
  PolicyPath p{l == r.model->num_layers() ? 0 : l, lens_mode_from_string(r.cfg.bupo.lens)};
  const double t = r.cfg.rollout.temperature;
  if (r.cfg.algorithm.tempered_logprobs && t > 0 && t != 1.0)
    p.inv_temperature = static_cast<float>(1.0 / t);
  return p;
}

// KL(old ‖ ref) of every response token of the step, on every rank: the old and reference
// log-probs live on the pipeline stage that holds the policy, each data-parallel replica's for its
// own share of the rollouts.
std::vector<double> token_kl_everywhere(Run& r, const std::vector<Rollout>& rolls,
                                        PolicyPath path) {
  const KlKind klk = kl_kind_from_string(r.cfg.algorithm.kl_estimator);
  std::vector<double> kl;
  for (const Rollout& x : rolls) {
    const auto n = static_cast<size_t>(x.resp_len());
    const bool here = x.old_logp.size() == n && x.ref_logp.size() == n;
    for (size_t t = 0; t < n; ++t) {
      double d = 0;
      kl.push_back(here ? kl_value(klk, x.old_logp[t], x.ref_logp[t], &d) : 0.0);
    }
  }
  r.share_from_stage(kl, r.stage_of_policy(path));
  return kl;
}

// The advantages of algorithm.adv_estimator, or HAPO B's token-level ones (returns HAPO B's
// fallback share). After the old log-probs: the KL in the reward reads them.
double assign_advantages(Run& r, std::vector<Rollout>& rolls, PolicyPath path) {
  if (rolls.empty()) return 0;
  const TrainConfig& cfg = r.cfg;
  const int64_t G = cfg.rollout.n;
  // token rewards (verl's token_level_rewards): the sequence reward on the last token, minus
  // kl_coef·KL(old ‖ ref) on every token when the KL is in the reward
  const std::vector<double> kl =
      cfg.algorithm.kl_in_reward ? token_kl_everywhere(r, rolls, path) : std::vector<double>{};
  std::vector<std::vector<double>> token_rewards(rolls.size());
  std::vector<double> rewards;
  std::vector<int64_t> lengths;
  size_t k = 0;
  for (size_t i = 0; i < rolls.size(); ++i) {
    const Rollout& x = rolls[i];
    auto& tr = token_rewards[i];
    tr.assign(static_cast<size_t>(x.resp_len()), 0.0);
    if (cfg.algorithm.kl_in_reward)
      for (double& v : tr) v = -cfg.algorithm.kl_coef * kl[k++];
    double total = x.reward;  // the sequence's score: its token rewards summed, as verl
    for (double v : tr) total += v;
    if (!tr.empty()) tr.back() += x.reward;
    rewards.push_back(total);
    lengths.push_back(x.resp_len());
  }
  double fallback = 0;
  std::vector<double> adv;
  if (cfg.hapo.token_advantage) {
    const auto tg =
        token_group_advantages(rewards, lengths, G, cfg.hapo.fallback, 1e-6,
                               cfg.hapo.fallback_includes_padding ? cfg.rollout.max_tokens : 0);
    adv = tg.advantages;
    for (auto f : tg.fell_back) fallback += f;
    fallback /= static_cast<double>(tg.fell_back.size());
  } else if (cfg.algorithm.adv_estimator == "reinforce_plus_plus") {
    const auto at = reinforce_pp_advantages(token_rewards, cfg.algorithm.gamma);
    for (size_t i = 0; i < rolls.size(); ++i) {
      rolls[i].adv_tok.assign(at[i].begin(), at[i].end());
      rolls[i].adv = 0;
    }
    return fallback;
  } else if (cfg.algorithm.adv_estimator == "gae") {  // PPO: the critic's values (compute_values)
    std::vector<std::vector<double>> values(rolls.size());
    for (size_t i = 0; i < rolls.size(); ++i)
      values[i].assign(rolls[i].values.begin(), rolls[i].values.end());
    const GaeResult g =
        gae_advantages(token_rewards, values, cfg.algorithm.gamma, cfg.algorithm.lam);
    for (size_t i = 0; i < rolls.size(); ++i) {
      rolls[i].adv_tok.assign(g.advantages[i].begin(), g.advantages[i].end());
      rolls[i].returns.assign(g.returns[i].begin(), g.returns[i].end());
      rolls[i].adv = 0;
    }
    return fallback;
  } else if (cfg.algorithm.adv_estimator == "rloo") {
    adv = rloo_advantages(rewards, G);
  } else {
    adv = grpo_advantages(rewards, G, cfg.algorithm.std_normalize);
  }
  for (size_t i = 0; i < rolls.size(); ++i) {
    rolls[i].adv = adv[i];
    rolls[i].adv_tok.clear();
  }
  return fallback;
}

// Mini-batches of trainer.mini_batch_prompts groups, each cut into micro-batches; the same split
// serves the old log-probs and the update.
std::vector<MiniBatch> split_minibatches(const Run& r, const std::vector<Rollout>& rolls) {
  const int64_t per_mini = r.cfg.trainer.mini_batch_prompts * r.cfg.rollout.n,
                per_micro = r.cfg.trainer.micro_batch_seqs, n = static_cast<int64_t>(rolls.size());
  std::vector<MiniBatch> minis;
  for (int64_t m0 = 0; m0 < n; m0 += per_mini) {
    const int64_t m1 = std::min(m0 + per_mini, n);
    std::vector<const Rollout*> seqs;
    for (int64_t i = m0; i < m1; ++i) seqs.push_back(&rolls[static_cast<size_t>(i)]);
    minis.push_back(r.cfg.trainer.balance_batch ? balanced_micro_batches(seqs, per_micro)
                                                : contiguous_micro_batches(seqs, per_micro));
  }
  return minis;
}

// trainer.epochs passes over the mini-batches, one optimizer step each.
UpdateStats update_policy(Run& r, const std::vector<MiniBatch>& minis, PolicyPath path) {
  UpdateStats us;
  for (int64_t ep = 0; ep < r.cfg.trainer.epochs; ++ep)
    for (size_t mi = 0; mi < minis.size(); ++mi)
      update_minibatch(r, minis[mi], path, us, ep == 0 && mi == 0);
  if (us.nonfinite_skips > 0 && us.updates == 0)
    ++r.st.nonfinite_in_row;
  else if (us.updates > 0)
    r.st.nonfinite_in_row = 0;
  return us;
}

// HAPO A: the sampler's entropy statistics for the next step, from this step's T=1 entropies.
void update_hapo_statistics(Run& r, const std::vector<Rollout>& rolls) {
  if (!r.cfg.hapo.adaptive_temperature) return;
  std::vector<float> H;
  for (const auto& x : rolls) H.insert(H.end(), x.raw_entropy.begin(), x.raw_entropy.end());
  if (!H.empty())
    r.st.hapo_stats = entropy_stats(H.data(), static_cast<int64_t>(H.size()), r.cfg.hapo.pivot);
}

}  // namespace

// ---------------------------------------------------------------------------- the trainer
struct Trainer::Impl {
  Run r;
  Metrics metrics;
  std::vector<Rollout> last_rolls;
  double last_write_s = 0;
  std::vector<uint64_t> step_allocations;  // backend block allocations during each step

  void step(int64_t s) {
    const auto t_step = Clock::now();
    const uint64_t allocations0 = r.backend->total_allocations();
    maybe_inject_fault(r, s);
    const CommSnapshot comm0 = comm_snapshot(r);
    r.pipe = {};
    const bool phase1 = bupo_phase1(r, s);
    const PolicyPath path = policy_of_step(r, s);
    StepTimes t;
    t.log_write_prev = last_write_s;

    r.status("step " + std::to_string(s) + ": rollout");
    RolloutBatch rb = collect_rollouts(r, s);  // rollout + reward (+ dynamic sampling)
    t.rollout = rb.seconds;
    const std::vector<MiniBatch> minis = split_minibatches(r, rb.rolls);
    r.status("step " + std::to_string(s) + ": old log-probs");
    t.old_logprob = compute_old_logprobs(r, minis, path);         // old (and reference) log-probs
    if (r.critic) t.values = compute_values(r, minis, rb.rolls);  // PPO: the critic's values
    auto t0 = Clock::now();
    const double fallback = assign_advantages(r, rb.rolls, path);  // advantage
    t.reward = seconds_since(t0);
    r.status("step " + std::to_string(s) + ": update");
    CriticStats cs;
    if (r.critic) cs = update_critic(r, minis);  // the critic first, as verl
    t.critic = cs.seconds;
    t0 = Clock::now();
    // the actor waits critic.warmup_steps critic-only steps (verl's critic_warmup = N: N − 1)
    const bool actor_learns = !r.critic || s > r.cfg.critic.warmup_steps;
    const UpdateStats us = actor_learns ? update_policy(r, minis, path) : UpdateStats{};  // update
    t.update = seconds_since(t0);
    update_hapo_statistics(r, rb.rolls);

    t0 = Clock::now();  // diagnostics: every stage its own layers; rank 0 writes
    DiagnosticsWork dw;
    if (r.cfg.diagnostics.every > 0 && s % r.cfg.diagnostics.every == 0 && !rb.rolls.empty()) {
      const EntropySummary es = entropy_summary(r, rb.rolls);
      if (r.log) r.log->write_entropy(s, es);
      dw = {es.tokens, es.forward_tokens};
      t.diagnostics = seconds_since(t0);
    }
    t0 = Clock::now();
    if (r.cfg.validation.every > 0 && s % r.cfg.validation.every == 0) validate(r, s);
    t.validation = seconds_since(t0);

    metrics = step_metrics(r, phase1, rb, us, r.critic ? &cs : nullptr, fallback, t, dw, comm0,
                           seconds_since(t_step));
    t0 = Clock::now();
    if (r.log) {
      r.log->write_step(s, metrics);
      r.log->flush();
    }
    last_write_s = seconds_since(t0);
    step_allocations.push_back(r.backend->total_allocations() - allocations0);
    r.say(step_line(r, s, phase1, rb, us, r.critic ? &cs : nullptr, seconds_since(t_step)));
    last_rolls = std::move(rb.rolls);
    if (us.nonfinite_skips > 0)
      r.say("step " + std::to_string(s) + ": skipped " + std::to_string(us.nonfinite_skips) +
            " update(s) with a non-finite loss or gradient (" +
            std::to_string(r.st.nonfinite_in_row) + " step(s) in a row)");
    if (r.st.nonfinite_in_row >= r.cfg.trainer.max_nonfinite_in_row) {
      const std::string ck = latest_checkpoint(r.out_dir);
      fail("step ", s, ": ", r.st.nonfinite_in_row,
           " steps in a row had only non-finite losses or gradients (trainer.max_nonfinite_in_row "
           "= ",
           r.cfg.trainer.max_nonfinite_in_row, "); stopping. ",
           ck.empty() ? std::string("No checkpoint has been written yet.")
                      : "The last checkpoint (" + ck + ") is intact.");
    }
  }

  int run() {
    install_preemption_handlers();
    if (r.stopped_before_start) return kExitPreempted;
    const TrainConfig& cfg = r.cfg;
    const int64_t last = r.opt.stop_after_step > 0
                             ? std::min(r.opt.stop_after_step, cfg.trainer.steps)
                             : cfg.trainer.steps;
    if (r.st.step == 0)
      r.say("training " + std::to_string(cfg.trainer.steps) + " steps; run folder " + r.out_dir);
    while (r.st.step < last) {
      r.cur_step = r.st.step + 1;
      step(r.cur_step);
      r.st.step = r.cur_step;
      const bool periodic =
          cfg.trainer.checkpoint_every > 0 && r.st.step % cfg.trainer.checkpoint_every == 0;
      // Every rank stops after the same step: decide on the reduced value only (a signal that
      // lands during the all-reduce is seen by this rank's flag but not by its peers': the next
      // step's check stops them all).
      if (r.stop_requested_everywhere()) {
        write_checkpoint(r);
        r.say("preempted by signal " + std::to_string(g_signal.load()) + ": stopped after step " +
              std::to_string(r.st.step) + " with a checkpoint; continue with --resume");
        return kExitPreempted;
      }
      if (periodic || r.st.step == last) write_checkpoint(r);
    }
    if (r.st.step == cfg.trainer.steps && cfg.trainer.export_hf) export_final_model(r);
    return 0;
  }
};

Trainer::Trainer(TrainConfig cfg, TrainOptions opt) : impl_(std::make_unique<Impl>()) {
  install_preemption_handlers();  // from the first second: loading and the warm start included
  impl_->r.cfg = std::move(cfg);
  impl_->r.opt = std::move(opt);
  load_run(impl_->r);
  open_run_folder(impl_->r);
}
Trainer::~Trainer() = default;
int Trainer::run() {
  return impl_->run();
}
namespace {
// The whole of a model sharded over the job, on world rank 0 (nullptr elsewhere); collective.
std::unique_ptr<Model> whole_on_rank0(Model& m) {
  if (m.parallel().world->size() == 1) {
    auto w = std::make_unique<Model>(m.config(), ParallelContext::single());
    w->params().copy_weights_from(m.params());
    return w;
  }
  return gather_model(m, {}, nullptr, nullptr, nullptr);
}
}  // namespace

Model& Trainer::model() {
  return *impl_->r.model;
}
std::unique_ptr<Model> Trainer::gathered_model() {
  return whole_on_rank0(*impl_->r.model);
}
std::unique_ptr<Model> Trainer::gathered_critic() {
  return impl_->r.critic ? whole_on_rank0(*impl_->r.critic) : nullptr;
}
const std::vector<Rollout>& Trainer::last_rollouts() const {
  return impl_->last_rolls;
}
const std::vector<std::pair<std::string, double>>& Trainer::last_metrics() const {
  return impl_->metrics;
}
Backend& Trainer::backend() {
  return *impl_->r.backend;
}
const std::vector<uint64_t>& Trainer::step_allocations() const {
  return impl_->step_allocations;
}

}  // namespace bupo::rl
