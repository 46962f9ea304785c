#include "plan/perf_model.hpp"

#include <algorithm>
#include <cmath>
#include <optional>
#include <string>

#include "core/error.hpp"
#include "model/gguf_import.hpp"
#include "parallel/topology.hpp"
#include "parallel/zero.hpp"

namespace bupo::plan {

std::string Layout::name() const {
  return "tp" + std::to_string(tp) + "_pp" + std::to_string(pp) + "_dp" + std::to_string(dp) +
         "_u" + std::to_string(micro_seqs) + "_z" + (zero ? "1" : "0");
}

namespace {
int64_t pad16(int64_t n) {
  return (n + 15) / 16 * 16;
}

// One TP rank's share of the model's dimensions (model.cpp's sharding: column-parallel QKV and
// gate/up, row-parallel o/down, vocabulary-parallel embedding and head; KV heads replicated on
// tp/Hkv ranks when tp > Hkv).
struct Shard {
  int64_t d, D, Hl, Hkvl, ffl, Vl;
  Shard(const ModelConfig& m, int tp)
      : d(m.hidden_size),
        D(m.head_dim),
        Hl(m.num_heads / tp),
        Hkvl(m.num_kv_heads < tp ? 1 : m.num_kv_heads / tp),
        ffl(m.intermediate_size / tp),
        Vl(m.vocab_size / tp) {}
};

// The parameter tensors of one layer on one TP rank, in ParamStore order.
std::vector<int64_t> layer_tensors(const ModelConfig& m, const Shard& s) {
  std::vector<int64_t> t = {s.d, s.Hl * s.D * s.d, s.Hkvl * s.D * s.d, s.Hkvl * s.D * s.d};
  if (m.qkv_bias) t.insert(t.end(), {s.Hl * s.D, s.Hkvl * s.D, s.Hkvl * s.D});
  t.push_back(s.d * s.Hl * s.D);
  if (m.qk_norm) t.insert(t.end(), {s.D, s.D});
  t.insert(t.end(), {s.d, s.ffl * s.d, s.ffl * s.d, s.d * s.ffl});
  return t;
}

// One stage's parameter tensors on one TP rank, in ParamStore order (model.cpp: the embedding,
// each layer's tensors, the final norm, an untied head), and which of them a step trains.
struct ArenaTensor {
  int64_t numel;
  bool trained, pp_shared;
};
std::vector<ArenaTensor> stage_arena(const ModelConfig& m, const Shard& s, int lo, int hi,
                                     int trained_upto, bool norm_trained) {
  std::vector<ArenaTensor> a = {{s.Vl * s.d, true, true}};  // every pass uses the embedding
  const std::vector<int64_t> lt = layer_tensors(m, s);
  for (int l = lo; l <= hi; ++l)
    for (int64_t x : lt) a.push_back({x, l <= trained_upto, false});
  a.push_back({s.d, norm_trained, true});
  if (m.value_head) {  // a critic: score (1, d) and its bias instead of lm_head
    a.push_back({s.d, true, true});
    a.push_back({1, true, true});
  } else if (!m.tie_word_embeddings) {
    a.push_back({s.Vl * s.d, true, true});  // the lens trains E_u
  }
  return a;
}

// ring collectives over n ranks (one message step costs α, the payload moves 2(n-1)/n times)
double t_allreduce(const Link& l, int n, double bytes) {
  if (n <= 1) return 0;
  return 2.0 * (n - 1) * l.alpha_s + 2.0 * (n - 1) / n * bytes / l.beta_Bps;
}
double t_allgather(const Link& l, int n, double bytes_out) {
  if (n <= 1) return 0;
  return (n - 1) * l.alpha_s + static_cast<double>(n - 1) / n * bytes_out / l.beta_Bps;
}
// ZeRO-1's bucket size in elements, as run_setup.cpp's make_optimizer sets it
int64_t zero_bucket_elements(const rl::TrainConfig& cfg) {
  return std::max<int64_t>(1, static_cast<int64_t>(cfg.parallel.grad_bucket_mb * 1048576.0 / 4));
}
double t_p2p(const Link& l, double bytes) {
  return l.alpha_s + bytes / l.beta_Bps;
}
}  // namespace

double layer_forward_flops(const ModelConfig& mc, int tp, double context) {
  const Shard s(mc, tp);
  const double gemm = 2.0 * static_cast<double>(s.d) *
                      static_cast<double>(2 * s.Hl * s.D + 2 * s.Hkvl * s.D + 3 * s.ffl);
  const double attn = 4.0 * static_cast<double>(s.Hl * s.D) * context;  // QKᵀ and PV
  return gemm + attn;
}

int64_t stage_param_elements(const ModelConfig& mc, int tp, int layers, bool padded) {
  int64_t n = 0;
  for (const ArenaTensor& t : stage_arena(mc, Shard(mc, tp), 1, layers, 0, false))
    n += padded ? pad16(t.numel) : t.numel;
  return n;
}

Workload nominal_workload(const rl::TrainConfig& cfg, double prompt_len, double response_len,
                          int policy_layer) {
  Workload w;
  w.sequences = cfg.trainer.prompts_per_step * cfg.rollout.n;
  w.prompt_tokens = std::llround(prompt_len * static_cast<double>(w.sequences));
  w.response_tokens = std::llround(response_len * static_cast<double>(w.sequences));
  w.longest_response = cfg.rollout.max_tokens;
  w.policy_layer = policy_layer;
  if (cfg.diagnostics.every > 0 && w.sequences > 0) {
    // rl/diagnostics.cpp: records at a fixed stride until diagnostics.tokens response tokens
    const double mean = std::max(1.0, response_len);
    const auto wanted =
        static_cast<int64_t>(std::ceil(static_cast<double>(cfg.diagnostics.tokens) / mean));
    const int64_t stride = std::max<int64_t>(1, w.sequences / std::max<int64_t>(1, wanted));
    int64_t recs = 0;
    double tok = 0;
    for (int64_t i = 0; i < w.sequences && tok < static_cast<double>(cfg.diagnostics.tokens);
         i += stride) {
      ++recs;
      tok += response_len;
    }
    w.diag_tokens = std::llround(tok);
    w.diag_forward_tokens = std::llround(tok + static_cast<double>(recs) * prompt_len);
  }
  return w;
}

Prediction predict(const ModelConfig& mc, const rl::TrainConfig& cfg, const Cluster& c,
                   const Layout& lay, const Workload& w) {
  Prediction p;
  p.layout = lay;
  const int tp = lay.tp, pp = lay.pp, dp = lay.dp, R = lay.ranks();
  const int L = static_cast<int>(mc.num_layers);
  ParallelLayout pl{tp, pp, dp, static_cast<int>(cfg.parallel.first_stage_layers),
                    static_cast<int>(cfg.parallel.last_stage_layers)};
  try {
    validate_layout(pl, R, mc, "layout " + lay.name());
  } catch (const std::exception& e) {
    p.fits = false;
    p.why_not = e.what();
    return p;
  }
  const std::vector<int> layers = stage_layer_counts(pl, L, "layout " + lay.name());
  // PPO's critic (algorithm.adv_estimator = "gae"): the policy's shape with a value head, or
  // critic.model's, split over the same layout (its memory is counted; see perf_model.hpp)
  std::optional<ModelConfig> critic;
  std::vector<int> critic_layers;
  if (cfg.has_critic()) {
    critic = cfg.critic.model.empty() ? mc : model_config_of(cfg.critic.model);
    critic->value_head = true;
    try {
      validate_layout(pl, R, *critic, "layout " + lay.name() + " (the critic)");
    } catch (const std::exception& e) {
      p.fits = false;
      p.why_not = e.what();
      return p;
    }
    critic_layers = stage_layer_counts(pl, static_cast<int>(critic->num_layers),
                                       "layout " + lay.name() + " (the critic)");
  }
  std::vector<int> lo(static_cast<size_t>(pp)), hi(static_cast<size_t>(pp));
  for (int s = 0, acc = 0; s < pp; ++s) {
    lo[static_cast<size_t>(s)] = acc + 1;
    acc += layers[static_cast<size_t>(s)];
    hi[static_cast<size_t>(s)] = acc;
  }
  const Shard sh(mc, tp);
  const double d = static_cast<double>(mc.hidden_size), V = static_cast<double>(mc.vocab_size);
  const double N = static_cast<double>(w.sequences), P = static_cast<double>(w.prompt_tokens),
               Rt = static_cast<double>(w.response_tokens);
  const double rows_gen = P + Rt - N;  // every token fed to the model while generating
  const double rows = P + Rt;          // a sequence's tokens in the log-prob and update passes
  const int u = w.policy_layer > 0 ? w.policy_layer : L;  // depth of the trained policy
  const bool phase1 = w.policy_layer > 0;
  const bool norm_trained = !phase1 || cfg.bupo.lens == "normed";  // the final norm has a gradient
  // stage boundaries a pass up to layer `upto` crosses
  auto crossings = [&](int upto) {
    int k = 0;
    for (int s = 0; s < pp; ++s) k += hi[static_cast<size_t>(s)] < upto ? 1 : 0;
    return k;
  };
  const int stages_used = crossings(u) + 1;
  const double passes_old = cfg.algorithm.kl_coef > 0 ? 2 : 1;  // the reference's pass
  const int64_t per_mini = cfg.trainer.mini_batch_prompts * cfg.rollout.n;
  const double minis = std::ceil(N / static_cast<double>(std::max<int64_t>(per_mini, 1)));
  const double epochs = static_cast<double>(cfg.trainer.epochs);
  const int64_t micro = lay.micro_seqs > 0 ? lay.micro_seqs : cfg.trainer.micro_batch_seqs;
  const double micros_per_mini =
      std::ceil(static_cast<double>(per_mini) / static_cast<double>(micro));
  const double m_rep = std::max(1.0, micros_per_mini / dp);  // micro-batches a replica pipelines
  const double diag_on = w.diag_tokens > 0 ? 1 : 0;
  const double T = static_cast<double>(w.diag_tokens),
               F = static_cast<double>(w.diag_forward_tokens);
  const double lenses_diag = 5.0 * L + 2;  // H^0..H^L, four module inputs/outputs per layer, output
  // diagnostics.geometry (lens/entropy_analysis.cpp): a first forward pass for H^L and π_θ, the
  // expectation Ē (two lens GEMMs, one all-reduce of (rows, d)) at each of the L+1 layer rows,
  // H^L and LN_final(H^L) sent from the last stage to the others with π_θ's log-partition, and
  // 4L+2 more floats per row in the PP sum of the columns
  const double geo = diag_on * (cfg.diagnostics.geometry ? 1 : 0);
  const double prompts = static_cast<double>(cfg.trainer.prompts_per_step);
  const double share = std::ceil(prompts / dp) / std::max(1.0, prompts);  // one replica's part
  const double chunks_prefill =
      std::max(1.0, std::ceil(P * share / 4096.0));  // GenerateOptions::max_batch_tokens
  const double steps_gen =
      chunks_prefill + std::max<double>(0, static_cast<double>(w.longest_response) - 1);

  // ------------------------------------------------------------------ communication (exact bytes)
  GroupTraffic& g = p.comm;
  if (tp > 1) {
    const double ar =
        c.weight_bytes * d;  // bytes per row of a hidden-state all-reduce (compute dtype)
    g.tp.bytes += tp * ar * rows_gen * (2.0 * L + 1) + 4.0 * V * Rt;          // rollout
    g.tp.bytes += passes_old * tp * (ar * rows * (2.0 * u + 1) + 16.0 * Rt);  // old log-probs
    g.tp.bytes += epochs * tp * (ar * rows * (4.0 * u + 1) + (32.0 + 4.0 * d) * Rt);  // update
    g.tp.bytes +=
        epochs * minis *
        (tp * dp * (mc.qk_norm ? 2.0 * u * 4.0 * static_cast<double>(sh.D) : 0.0) + R * 8.0);
    g.tp.bytes += diag_on * dp * tp * (ar * F * (2.0 * L + 1) + 16.0 * T * lenses_diag);
    g.tp.bytes += geo * dp * tp * (ar * F * (2.0 * L + 1) + ar * T * (L + 1.0));
    const double micros_all = minis * micros_per_mini;
    g.tp.calls += tp * pp * dp * steps_gen * (2.0 * L + 1) / pp + tp * dp * steps_gen;
    g.tp.calls += tp * dp * micros_all / dp * passes_old * ((2.0 * u + 1) / stages_used + 2);
    g.tp.calls += epochs * tp * dp * micros_all / dp * ((4.0 * u + 1) / stages_used + 5);
    g.tp.calls += epochs * minis * R * (1 + (mc.qk_norm ? 2.0 * u / stages_used : 0.0));
    g.tp.calls += diag_on * dp * tp * (2.0 * L + 1 + 2 * lenses_diag);
    g.tp.calls += geo * dp * tp * (2.0 * L + 1 + (L + 1.0));
  }
  if (pp > 1) {
    const double act = c.weight_bytes * d;  // a hidden-state row in the compute dtype
    g.pp.bytes += tp * (2.0 * crossings(L) * act * rows_gen + pp * 20.0 * Rt);  // rollout
    g.pp.bytes += passes_old * tp * 2.0 * crossings(u) * act * rows;            // old log-probs
    g.pp.bytes += epochs * tp * 4.0 * crossings(u) * act * rows;                // update
    // the PP-shared tensors (the same on every stage): a flag each, the trained ones summed
    double shared_tensors = 0, shared = 0;
    for (const ArenaTensor& t : stage_arena(mc, sh, 1, 0, 0, norm_trained))
      if (t.pp_shared) {
        shared_tensors += 1;
        shared += t.trained ? static_cast<double>(t.numel) : 0.0;
      }
    g.pp.bytes += epochs * minis * R * (4.0 * shared_tensors + 4.0 * shared + 8.0 + 92.0);
    g.pp.bytes += diag_on * dp * tp * (2.0 * crossings(L) * act * F + pp * 8.0 * lenses_diag * T);
    g.pp.bytes += geo * dp * tp *
                  (2.0 * crossings(L) * act * F + 4.0 * (pp - 1) * act * T + pp * 4.0 * T +
                   pp * 4.0 * (4.0 * L + 2) * T);
    g.pp.calls += tp * dp * steps_gen * (2.0 * crossings(L) + pp);
    g.pp.calls += (passes_old + 2 * epochs) * tp * minis * micros_per_mini * 2.0 * crossings(u);
    g.pp.calls += epochs * minis * R * (1 + shared_tensors + 1 + 2);
    g.pp.calls += diag_on * dp * tp * (2.0 * crossings(L) + pp);
    g.pp.calls += geo * dp * tp * (2.0 * crossings(L) + 4.0 * (pp - 1) + pp);
  }
  if (R > 1) {
    g.dp.bytes += epochs * minis * R * 92.0;  // the loss statistics (sum and max)
    g.dp.calls += epochs * minis * R * 2.0;
  }
  if (dp > 1) {
    const double buf = 72.0 * N + 4.0 * P + 16.0 * Rt;  // rl/rollout.cpp's serialised rollouts
    g.dp.bytes += tp * pp * dp * (8.0 * dp + buf);
    g.dp.calls += tp * pp * dp * 2.0 * dp;
    for (int s = 0; s < pp; ++s) {
      const std::vector<ArenaTensor> arena = stage_arena(
          mc, sh, lo[static_cast<size_t>(s)], hi[static_cast<size_t>(s)], u, norm_trained);
      double per_rank = 4.0 * static_cast<double>(arena.size()), calls = 1;  // the agreed flags
      if (!lay.zero) {
        double trained = 0;
        for (const ArenaTensor& t : arena) trained += t.trained ? static_cast<double>(t.numel) : 0;
        per_rank += 4.0 * trained;
        calls +=
            std::max(1.0, std::ceil(4.0 * trained / (cfg.parallel.grad_bucket_mb * 1048576.0)));
      } else {
        // ZeRO-1: the run's own layout of the padded arena (parallel/zero.hpp); a bucket holding a
        // trained element is reduce-scattered (its dp parts) and all-gathered (this rank's part)
        std::vector<std::pair<int64_t, int64_t>> trained_ranges;
        int64_t total = 0;
        for (const ArenaTensor& t : arena) {
          if (t.trained && t.numel > 0) trained_ranges.emplace_back(total, total + t.numel);
          total += pad16(t.numel);
        }
        const ZeroLayout z(total, dp, 0, zero_bucket_elements(cfg));
        std::vector<char> hot(z.buckets().size(), 0);
        for (const auto& [b0, b1] : trained_ranges)
          for (size_t b = z.bucket_of(b0); b <= z.bucket_of(b1 - 1); ++b) hot[b] = 1;
        for (size_t b = 0; b < hot.size(); ++b) {
          if (!hot[b]) continue;
          const auto part = static_cast<double>(z.buckets()[b].part);
          per_rank += 4.0 * part * dp + 4.0 * part;
          calls += 2;
        }
        per_rank += 8.0;  // the owned parts' squared norm
        calls += 1;
      }
      g.dp.bytes += epochs * minis * tp * dp * per_rank;
      g.dp.calls += epochs * minis * tp * dp * calls;
    }
  }

  // ------------------------------------------------------------------ memory of the fullest rank
  const double ranks_on_node = c.ranks_per_node > 0 ? std::min<double>(R, c.ranks_per_node) : 1;
  p.nodes = static_cast<int>(std::ceil(static_cast<double>(R) / c.ranks_per_node));
  // the longest sequence: the longest prompt taken as 1.5× the mean, plus a full response
  const double seq_max = std::min<double>(
      static_cast<double>(mc.max_position_embeddings),
      std::ceil(P / std::max(1.0, N)) * 1.5 + static_cast<double>(cfg.rollout.max_tokens));
  for (int s = 0; s < pp; ++s) {
    const int nl = layers[static_cast<size_t>(s)];
    RankMemory m;
    const auto el = static_cast<double>(stage_param_elements(mc, tp, nl, true));
    m.params = el * 4.0 + (c.weight_bytes == 2 ? el * 2.0 : 0.0);
    m.grads = el * 4.0;
    m.optimizer = 2.0 * 4.0 *
                  (lay.zero && dp > 1 ? static_cast<double>(ZeroLayout(static_cast<int64_t>(el), dp,
                                                                       0, zero_bucket_elements(cfg))
                                                                .shard_elements())
                                      : el);
    if (cfg.algorithm.kl_coef > 0) m.params *= 2;  // the reference policy
    if (critic) {  // PPO's value model on this stage: its own weights, gradients and AdamW
      const auto ce = static_cast<double>(
          stage_param_elements(*critic, tp, critic_layers[static_cast<size_t>(s)], true));
      m.params += ce * 4.0 + (c.weight_bytes == 2 ? ce * 2.0 : 0.0);
      m.grads += ce * 4.0;
      m.optimizer +=
          2.0 * 4.0 *
          (lay.zero && dp > 1 ? static_cast<double>(ZeroLayout(static_cast<int64_t>(ce), dp, 0,
                                                               zero_bucket_elements(cfg))
                                                        .shard_elements())
                              : ce);
    }
    // activations kept for the backward per token and layer (model.cpp's carve: the layer input,
    // both norms, q/k/v, attention output, o, gate, up, act, down, two rstd)
    const double per_tok_layer =
        static_cast<double>(6 * sh.d + 2 * sh.Hl * sh.D + 2 * sh.Hkvl * sh.D + 3 * sh.ffl + 2);
    const double in_flight = std::min(static_cast<double>(pp - s), m_rep);
    m.activations = c.weight_bytes * per_tok_layer * nl * static_cast<double>(micro) * seq_max *
                    std::max(1.0, in_flight);
    if (critic) {  // one activation pool serves both models in turn: the larger of the two
      const Shard cs(*critic, tp);
      const double per_tok_layer_c =
          static_cast<double>(6 * cs.d + 2 * cs.Hl * cs.D + 2 * cs.Hkvl * cs.D + 3 * cs.ffl + 2);
      m.activations = std::max(
          m.activations, c.weight_bytes * per_tok_layer_c * critic_layers[static_cast<size_t>(s)] *
                             static_cast<double>(micro) * seq_max * std::max(1.0, in_flight));
    }
    const double slots = std::ceil(prompts / dp) * static_cast<double>(cfg.rollout.n);
    m.kv_cache = slots * seq_max * nl * 2.0 * static_cast<double>(sh.Hkvl * sh.D) * c.weight_bytes;
    if (m.total() > p.memory.total()) p.memory = m;
  }
  p.fits = p.memory.total() <= c.mem_bytes;
  if (!p.fits)
    p.why_not = "needs " + std::to_string(static_cast<int64_t>(p.memory.total() / 1048576.0)) +
                " MiB on a rank, has " +
                std::to_string(static_cast<int64_t>(c.mem_bytes / 1048576.0));

  // ------------------------------------------------------------------ time
  // Ranks of a node share its compute units (a CPU node's cores; a GPU node: one each), and a rank
  // that waits on a pipeline receive leaves its unit to the others: the rate of a rank is that of
  // a unit shared by the ranks computing at once (one stage at a time in the rollout and the
  // diagnostics; the pipeline's busy fraction in the log-prob and update passes).
  auto speed_at = [&](double busy) {
    return std::min(1.0, c.compute_units / std::max(1.0, ranks_on_node * busy));
  };
  // the update's 1F1B runs per mini-batch (the optimizer step synchronises); the old log-probs'
  // forward passes stream every micro-batch of the step through the stages without a barrier
  const double fill_pipe = (m_rep + stages_used - 1) / m_rep;
  const double m_old = std::max(1.0, minis * micros_per_mini / dp);
  const double fill_old = (m_old + stages_used - 1) / m_old;
  const double speed_seq = speed_at(1.0 / pp),
               speed_pipe = speed_at(static_cast<double>(stages_used) / pp / fill_pipe),
               speed_old = speed_at(static_cast<double>(stages_used) / pp / fill_old);
  // the layout's placement (parallel/topology.hpp: TP fastest, then DP, then PP): a group leaves
  // the node when the ranks it spans do not fit in one; a PP hop then crosses nodes at least once
  const int rpn = c.ranks_per_node;
  const Link& tp_link = tp > rpn ? c.inter : c.intra;
  const Link& dp_link = tp * dp > rpn ? c.inter : c.intra;
  const Link& pp_link = pp > 1 && R > rpn ? c.inter : c.intra;
  const double ctx_train = rows / std::max(1.0, N) / 2;  // mean causal context of a token
  const double f_layer = layer_forward_flops(mc, tp, ctx_train);
  const double lens_row = 2.0 * d * static_cast<double>(sh.Vl);
  // rollout: the prefill compute-bound, each decode step the larger of its bytes and its FLOPs
  {
    const double prefill = P * share * L * layer_forward_flops(mc, tp, P / std::max(1.0, N) / 2) +
                           N * share * lens_row;
    const double rate = c.flops * speed_seq, bw = c.mem_bw * speed_seq, slow = 1.0 / speed_seq;
    const double t_pre = prefill / (rate * c.prefill.efficiency);
    const double dec_tokens = std::max(0.0, rows_gen - P) * share;
    const double steps = std::max(0.0, static_cast<double>(w.longest_response) - 1);
    const double wbytes =
        static_cast<double>(stage_param_elements(mc, tp, L, false)) * c.weight_bytes;
    const double kv_read = dec_tokens * (P / std::max(1.0, N) + Rt / std::max(1.0, N) / 2) * L *
                           2.0 * static_cast<double>(sh.Hkvl * sh.D) * c.weight_bytes;
    const double dec_flops = dec_tokens * (L * layer_forward_flops(mc, tp, ctx_train) + lens_row);
    const double t_dec =
        std::max((steps * wbytes + kv_read) / bw, dec_flops / (rate * c.decode.efficiency));
    const double per_tok = c.decode.s_per_token * Rt * share * slow;
    const double S = Rt * share / std::max(1.0, steps + 1);  // mean active sequences per step
    double comm = 0;
    if (tp > 1)
      comm += steps_gen * ((2.0 * L + 1) * t_allreduce(tp_link, tp, 4.0 * d * S) +
                           t_allgather(tp_link, tp, 4.0 * V * S));
    if (pp > 1)
      comm += steps_gen * ((pp - 1) * t_p2p(pp_link, 4.0 * d * S) + t_p2p(pp_link, 20 * S));
    if (dp > 1) comm += dp * t_allgather(dp_link, dp, (72.0 * N + 4.0 * P + 16.0 * Rt) / dp);
    p.time.rollout = t_pre + t_dec + per_tok + comm;
    p.comm_time.rollout = comm;
  }
  // old log-probs: pipelined forward passes up to layer u
  {
    const double work = passes_old * (rows * share * u * f_layer + Rt * share * lens_row);
    const double fill = fill_old, rate = c.flops * speed_old, slow = 1.0 / speed_old;
    double comm = 0;
    if (tp > 1)
      comm += passes_old * micros_per_mini * minis / dp * (2.0 * u + 1) / stages_used *
              t_allreduce(tp_link, tp, 4.0 * d * rows / (minis * micros_per_mini));
    if (pp > 1)
      comm += passes_old * micros_per_mini * minis / dp * crossings(u) *
              t_p2p(pp_link, 4.0 * d * rows / (minis * micros_per_mini));
    p.time.old_logprob = fill * work / stages_used / (rate * c.logprob.efficiency) +
                         c.logprob.s_per_token * Rt * share * slow + comm;
    p.comm_time.old_logprob = comm;
  }
  // update: 1F1B forward + backward (≈ 3 forwards), the lens forward, recompute and backward
  {
    const double work = epochs * 3.0 * (rows * share * u * f_layer + Rt * share * lens_row) +
                        epochs * Rt * share * lens_row;  // the lens's recomputed logits
    p.bubble = stages_used > 1 ? (stages_used - 1) / (m_rep + stages_used - 1) : 0.0;
    const double fill = fill_pipe, rate = c.flops * speed_pipe, slow = 1.0 / speed_pipe;
    double comm = 0;
    const double micro_rows = rows / (minis * micros_per_mini);
    if (tp > 1)
      comm += epochs * micros_per_mini * minis / dp * (4.0 * u + 1) / stages_used *
              t_allreduce(tp_link, tp, 4.0 * d * micro_rows);
    if (pp > 1)
      comm += epochs * micros_per_mini * minis / dp * 2 * crossings(u) *
              t_p2p(pp_link, 4.0 * d * micro_rows);
    if (dp > 1) {
      const double grads =
          4.0 * static_cast<double>(stage_param_elements(mc, tp, layers[0], false));
      comm += epochs * minis * t_allreduce(dp_link, dp, grads);  // RS + AG: the same on the wire
    }
    p.time.update = fill * work / stages_used / (rate * c.update.efficiency) +
                    c.update.s_per_token * epochs * Rt * share * slow + comm;
    p.comm_time.update = comm;
  }
  // diagnostics: every replica runs the same records through every layer and lens
  if (diag_on > 0) {
    const double work =
        (1 + geo) * F * L * f_layer + T * (lenses_diag + 2.0 * geo * (L + 1)) * lens_row;
    const double rate = c.flops * speed_seq, slow = 1.0 / speed_seq;
    double comm = 0;
    if (tp > 1)
      comm +=
          ((1 + geo) * (2.0 * L + 1) + 2 * lenses_diag) * t_allreduce(tp_link, tp, 4.0 * d * F) +
          geo * (L + 1.0) * t_allreduce(tp_link, tp, 4.0 * d * T);
    if (pp > 1)
      comm += (1 + geo) * crossings(L) * t_p2p(pp_link, 4.0 * d * F) +
              geo * 2.0 * (pp - 1) * t_p2p(pp_link, 4.0 * d * T);
    p.time.diagnostics =
        work / (rate * c.diagnostics.efficiency) + c.diagnostics.s_per_token * T * slow + comm;
    p.comm_time.diagnostics = comm;
  }
  return p;
}

std::vector<Layout> candidate_layouts(const ModelConfig& mc, const rl::TrainConfig& cfg,
                                      int ranks) {
  std::vector<Layout> out;
  const int64_t per_mini = cfg.trainer.mini_batch_prompts * cfg.rollout.n;
  for (int tp = 1; tp <= ranks; ++tp) {
    if (ranks % tp) continue;
    for (int pp = 1; pp <= ranks / tp && pp <= mc.num_layers; ++pp) {
      if ((ranks / tp) % pp) continue;
      const int dp = ranks / tp / pp;
      for (int64_t m = dp; m <= per_mini; m *= 2) {  // micro-batches per mini-batch
        if (per_mini % m || m % dp) continue;
        for (int z = 0; z <= (dp > 1 ? 1 : 0); ++z)
          out.push_back({tp, pp, dp, per_mini / m, z == 1});
      }
    }
  }
  return out;
}

}  // namespace bupo::plan
