#include "rl/trainer.hpp"

#include <unistd.h>

#include <array>
#include <atomic>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <numeric>
#include <set>
#include <sstream>

#include "bupo/version.hpp"
#include "core/error.hpp"
#include "core/threads.hpp"
#include "gen/generate.hpp"
#include "lens/entropy_analysis.hpp"
#include "model/gather.hpp"
#include "model/gguf_import.hpp"
#include "optim/adamw.hpp"
#include "parallel/grads.hpp"
#include "parallel/mpi_comm.hpp"
#include "parallel/topology.hpp"
#include "rl/advantage.hpp"
#include "rl/checkpoint.hpp"
#include "rl/hapo.hpp"
#include "rl/reward.hpp"
#include "rl/train_log.hpp"

namespace fs = std::filesystem;

namespace bupo::rl {

// ---------------------------------------------------------------------------- preemption
namespace {
std::atomic<int> g_signal{0};
extern "C" void on_preempt(int sig) {
  g_signal.store(sig);
}
}  // namespace
void install_preemption_handlers() {
  std::signal(SIGTERM, on_preempt);
  std::signal(SIGUSR1, on_preempt);
}
bool preemption_requested() {
  return g_signal.load() != 0;
}
void reset_preemption_flag() {
  g_signal.store(0);
}

// ---------------------------------------------------------------------------- policy evaluation
namespace {

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

struct Packed {
  Batch b;
  std::vector<int64_t> rows;     // hidden row that predicts each response token
  std::vector<int32_t> targets;  // the response token
};

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
      p.rows.push_back(off + t - 1);
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
              m.parallel().tp.get(),
              0};
}

const float* hidden_of(Activations& acts, PolicyPath path) {
  return path.layer == 0 ? acts.final_out.ptr() : acts.h(path.layer);
}

void gather_rows(const float* x, const std::vector<int64_t>& rows, int64_t d,
                 std::vector<float>& out) {
  out.resize(rows.size() * static_cast<size_t>(d));
  const int64_t R = static_cast<int64_t>(rows.size());
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < R; ++r)
    std::copy_n(x + rows[static_cast<size_t>(r)] * d, d, out.data() + r * d);
}

// dH (N, d): the rows' gradients dX (R, d) added at their positions, zero elsewhere.
std::vector<float> scatter_rows(const std::vector<float>& dX, const std::vector<int64_t>& rows,
                                int64_t d, int64_t N) {
  std::vector<float> dH(static_cast<size_t>(N * d), 0.0f);
  for (size_t r = 0; r < rows.size(); ++r) {
    float* dst = dH.data() + rows[r] * d;
    const float* src = dX.data() + static_cast<int64_t>(r) * d;
    for (int64_t c = 0; c < d; ++c) dst[c] += src[c];
  }
  return dH;
}

}  // namespace

bool holds_policy(const Model& model, PolicyPath path) {
  return path.layer == 0 ? model.last_layer() == model.num_layers()
                         : model.owns_layer(path.layer);
}

void policy_logprobs(Model& model, const std::vector<const Rollout*>& seqs, PolicyPath path,
                     std::vector<float>& logp, std::vector<float>* entropy) {
  const Packed p = pack(seqs);
  Activations acts;
  model.forward(p.b, acts, /*keep=*/false, path.layer == 0 ? -1 : path.layer);
  logp.clear();
  if (entropy) entropy->clear();
  if (!holds_policy(model, path)) return;  // another pipeline stage holds π^l
  std::vector<float> X;
  gather_rows(hidden_of(acts, path), p.rows, model.hidden(), X);
  logp.resize(p.rows.size());
  if (entropy) entropy->resize(p.rows.size());
  lens_for(model, path)
      .forward(X.data(), static_cast<int64_t>(p.rows.size()), p.targets.data(),
               entropy ? entropy->data() : nullptr, logp.data());
}

LayerChoice choose_bupo_layer(Model& model, const std::vector<Rollout>& rollouts) {
  std::vector<TokenRecord> recs;
  for (const auto& r : rollouts)
    if (r.resp_len() > 0) recs.push_back({r.ids, r.prompt_len, 0});
  BUPO_CHECK(!recs.empty(), "BuPO layer selection: the rollouts have no response tokens");
  EntropyOptions eo;
  eo.lens = LensMode::Raw;
  const EntropyRows rows = compute_entropy_rows(model, recs, 0, eo);
  const int64_t L = model.num_layers();
  LayerChoice c;
  c.tokens = rows.rows;
  c.ffn_dh.assign(static_cast<size_t>(L), 0.0f);
  c.attn_dh.assign(static_cast<size_t>(L), 0.0f);
  for (int64_t l = 0; l < L; ++l) {
    double f = 0, a = 0;
    for (int64_t r = 0; r < rows.rows; ++r) {
      const size_t i = static_cast<size_t>(r * L + l);
      f += rows.ffn_out[i] - rows.ffn_in[i];
      a += rows.attn_out[i] - rows.attn_in[i];
    }
    c.ffn_dh[static_cast<size_t>(l)] = static_cast<float>(f / static_cast<double>(rows.rows));
    c.attn_dh[static_cast<size_t>(l)] = static_cast<float>(a / static_cast<double>(rows.rows));
    if (c.ffn_dh[static_cast<size_t>(l)] > 0) c.chosen = l + 1;
  }
  return c;
}

// ---------------------------------------------------------------------------- the trainer
struct Trainer::Impl {
  TrainConfig cfg;
  TrainOptions opt;
  std::string out_dir, tok_json;
  std::unique_ptr<Tokenizer> tok;
  std::unique_ptr<Model> model, ref;
  std::unique_ptr<PromptSet> train;
  std::vector<std::unique_ptr<PromptSet>> val;
  std::unique_ptr<Sampler> sampler;
  std::unique_ptr<AdamW> optim;
  std::unique_ptr<TrainLog> log;
  TrainState st;
  std::vector<int32_t> stop_ids;
  std::vector<std::pair<std::string, double>> metrics;
  bool tty = false;
  double last_write_s = 0;
  ParallelContext pc = ParallelContext::single();
  std::vector<Rollout> last_rolls;
  bool root() const { return pc.world->rank() == 0; }
  RewardKind reward_kind = RewardKind::ZeroOne;
  Aggregation agg = Aggregation::TokenMean;
  HSign sign = HSign::Code;

  void say(const std::string& s) {
    if (opt.quiet || !root()) return;
    std::fprintf(stderr, "%s%s\n", tty ? "\r\033[K" : "", s.c_str());
    std::fflush(stderr);
  }
  void status(const std::string& s) {  // transient, TTY only
    if (opt.quiet || !tty || !root()) return;
    std::fprintf(stderr, "\r\033[K%s", s.c_str());
    std::fflush(stderr);
  }

  // ------------------------------------------------------------------ set-up
  void setup() {
    load_all();
    open_run();
  }

  // The layout tp × pp × dp from parallel.*; every check runs before any work starts.
  void setup_parallel(const ModelConfig& mc) {
    const auto& P = cfg.parallel;
    const int world = MpiSession::active() && !opt.single_process ? world_size() : 1;
    ParallelLayout lay;
    lay.tp = static_cast<int>(P.tp);
    lay.pp = static_cast<int>(P.pp);
    BUPO_CHECK(P.dp > 0 || world % (lay.tp * lay.pp) == 0, cfg.source, ": parallel.tp × parallel.pp = ",
               lay.tp * lay.pp, " does not divide the job's ", world, " ranks");
    lay.dp = P.dp > 0 ? static_cast<int>(P.dp) : world / (lay.tp * lay.pp);
    lay.first_stage_layers = static_cast<int>(P.first_stage_layers);
    lay.last_stage_layers = static_cast<int>(P.last_stage_layers);
    validate_layout(lay, world, mc, cfg.source);
    const int64_t G = cfg.rollout.n, M = (cfg.trainer.mini_batch_prompts * G +
                                          cfg.trainer.micro_batch_seqs - 1) /
                                         cfg.trainer.micro_batch_seqs;
    BUPO_CHECK(M % lay.dp == 0, cfg.source, ": a mini-batch has trainer.mini_batch_prompts × rollout.n / ",
               "trainer.micro_batch_seqs = ", M, " micro-batch(es); parallel.dp = ", lay.dp,
               " must divide that number (each data-parallel replica takes whole micro-batches)");
    BUPO_CHECK(cfg.warmup.sft_steps == 0 || cfg.warmup.sft_batch % lay.dp == 0, cfg.source,
               ": warmup.sft_batch = ", cfg.warmup.sft_batch, " is not a multiple of parallel.dp = ",
               lay.dp);
    pc = make_parallel_context(lay, static_cast<int>(mc.num_layers), cfg.source);
    set_comm_timeout(P.timeout_s);
    if (!P.fault_inject.empty()) {
      const auto colon = P.fault_inject.find(':'), at = P.fault_inject.find('@');
      fault_kind = P.fault_inject.substr(0, colon);
      fault_rank = std::stoi(P.fault_inject.substr(colon + 1, at - colon - 1));
      fault_step = std::stoll(P.fault_inject.substr(at + 1));
    }
  }
  std::string fault_kind;
  int fault_rank = -1;
  int64_t fault_step = -1;

  void maybe_inject_fault(int64_t s) {
    if (fault_step != s || fault_rank != pc.world->world_rank_of(pc.world->rank())) return;
    std::fprintf(stderr, "bupo: fault injection: %s %s at step %lld\n", rank_name(fault_rank).c_str(),
                 fault_kind == "die" ? "dies" : "hangs", static_cast<long long>(s));
    std::fflush(stderr);
    if (fault_kind == "die") std::_Exit(1);
    for (;;) pause();  // hang: alive, never answering
  }

  // tokenizer, model, data, optimizer
  void load_all() {
    if (cfg.trainer.threads > 0) set_num_threads(static_cast<int>(cfg.trainer.threads));
    tty = isatty(fileno(stderr)) != 0;
    out_dir = cfg.trainer.out_dir;
    reward_kind = cfg.algorithm.reward == "pm1" ? RewardKind::PlusMinusOne : RewardKind::ZeroOne;
    agg = aggregation_from_string(cfg.algorithm.loss_agg);
    sign = cfg.hapo.sign == "paper" ? HSign::Paper : HSign::Code;

    // tokenizer
    std::string tpath = cfg.model.tokenizer;
    if (tpath.empty() && !cfg.model.path.empty()) tpath = cfg.model.path;
    if (tpath.empty()) {
      tok_json = builtin_byte_tokenizer_json();
      tok =
          std::make_unique<Tokenizer>(Tokenizer::from_json(json::parse(tok_json), "builtin:bytes"));
    } else {
      tok = std::make_unique<Tokenizer>(load_tokenizer(tpath));
      if (is_gguf_path(tpath)) {
        tok_json = tokenizer_json_from_gguf(*GgufFile::open(tpath)).dump();
      } else {
        const std::string f =
            fs::is_directory(tpath) ? (fs::path(tpath) / "tokenizer.json").string() : tpath;
        std::ifstream in(f);
        std::stringstream ss;
        ss << in.rdbuf();
        tok_json = ss.str();
      }
    }
    stop_ids = default_stop_ids(*tok);
    BUPO_CHECK(!stop_ids.empty(), cfg.source, ": the tokenizer has no end-of-turn token (",
               "<|im_end|>, <|endoftext|>, <|eot_id|>); responses could never stop");

    // model: its shape first, then the parallel layout (checked before any work), then the shard
    ModelConfig mc;
    if (!cfg.model.path.empty()) {
      mc = model_config_of(cfg.model.path);
    } else {
      const auto& in = cfg.model.init;
      ModelConfig c;
      c.arch = in.arch == "llama" ? Arch::Llama : in.arch == "qwen2" ? Arch::Qwen2 : Arch::Qwen3;
      const int64_t vm = in.vocab_multiple;
      c.vocab_size = (tok->vocab_size() + vm - 1) / vm * vm;
      c.hidden_size = in.hidden;
      c.intermediate_size = in.ffn;
      c.num_layers = in.layers;
      c.num_heads = in.heads;
      c.num_kv_heads = in.kv_heads;
      c.head_dim = in.head_dim;
      c.max_position_embeddings = 4096;
      c.rope_theta = 10000.0;
      c.qkv_bias = c.arch == Arch::Qwen2;
      c.qk_norm = c.arch == Arch::Qwen3;
      c.tie_word_embeddings = in.tied;
      c.validate(cfg.source + ": model.init");
      mc = c;
    }
    setup_parallel(mc);
    if (!cfg.model.path.empty()) {
      model = load_model(cfg.model.path, pc);
    } else {
      model = std::make_unique<Model>(mc, pc);
      model->init_random(static_cast<uint64_t>(cfg.model.init.seed));
    }
    BUPO_CHECK(model->config().vocab_size >= tok->vocab_size(), cfg.source, ": the tokenizer has ",
               tok->vocab_size(), " tokens but the model's vocabulary only ",
               model->config().vocab_size);
    model->params().allocate_grads();
    const int64_t L = model->num_layers();
    BUPO_CHECK(cfg.bupo.internal_layer <= L, cfg.source,
               ": key 'bupo.internal_layer' = ", cfg.bupo.internal_layer, " but the model has ", L,
               " layers (1..", L, ")");
    st.bupo_layer = cfg.bupo.internal_layer;

    // data
    train = load_set(cfg.data.train, static_cast<uint64_t>(cfg.data.seed), cfg.data.arithmetic.size,
                     cfg.data.limit);
    for (const auto& v : cfg.validation.sets)
      val.push_back(load_set(v, static_cast<uint64_t>(cfg.data.seed) + 7919, 256, 0));
    sampler = std::make_unique<Sampler>(train->size(), static_cast<uint64_t>(cfg.data.seed),
                                        cfg.data.shuffle);

    AdamWConfig oc;
    oc.lr = cfg.optim.lr;
    oc.beta1 = cfg.optim.beta1;
    oc.beta2 = cfg.optim.beta2;
    oc.eps = cfg.optim.eps;
    oc.weight_decay = cfg.optim.weight_decay;
    optim = std::make_unique<AdamW>(model->params(), oc);
  }

  // the run folder: resume, diagnostics file, warm start, BuPO layer, reference model
  void open_run() {
    const int64_t L = model->num_layers();
    if (root()) fs::create_directories(out_dir);
    std::string ck = opt.resume_from;
    if (ck.empty() && opt.resume) ck = latest_checkpoint(out_dir);
    BUPO_CHECK(!(opt.resume && ck.empty()), out_dir,
               ": --resume, but there is no complete checkpoint under ", out_dir, "/checkpoints");
    const bool resuming = !ck.empty();
    if (!resuming && opt.overwrite && root()) {  // a fresh run: stale checkpoints are never resumed
      fs::remove_all(fs::path(out_dir) / "checkpoints");
      fs::remove_all(fs::path(out_dir) / "hf");
    }
    pc.world->barrier();
    if (resuming) {
      load_checkpoint(ck, *model, *optim, st);
      sampler->set_state(st.sampler);
      pc.world->barrier();  // every rank has read it before rank 0 prunes
      if (root()) discard_checkpoints_after(out_dir, st.step);  // an abandoned continuation
      say("resumed from " + ck + " (step " + std::to_string(st.step) + ")");
    }
    if (root())  // one writer: world rank 0
      log = std::make_unique<TrainLog>((fs::path(out_dir) / "diagnostics.h5").string(),
                                       (fs::path(out_dir) / "metrics.jsonl").string(),
                                       static_cast<int>(L), cfg.to_toml(), resuming, st.step,
                                       opt.overwrite);
    if (pc.world->size() > 1) {
      say("parallel layout: tp " + std::to_string(pc.tp_size()) + " x pp " +
          std::to_string(pc.pp_size()) + " x dp " + std::to_string(pc.dp_size()) + " = " +
          std::to_string(pc.world->size()) + " ranks (MPI); stage layers " + stage_list());
    }
    if (!resuming) {
      if (cfg.warmup.sft_steps > 0) warm_start();
      if (cfg.bupo.auto_layer) pick_layer();
    }
    if (cfg.algorithm.kl_coef > 0) {  // the reference policy: the initial (post warm-start) model
      ref = std::make_unique<Model>(model->config(), pc);
      if (resuming || cfg.model.path.empty()) {
        BUPO_CHECK(
            !resuming || !cfg.model.path.empty(), cfg.source,
            ": resuming a KL-regularised run of a fresh model: the reference weights are not "
            "stored; start such runs from a checkpoint folder (model.path)");
        ref->params().weight_arena() = model->params().weight_arena();
      } else {
        auto loaded = load_model(cfg.model.path, pc);
        ref->params().weight_arena() = loaded->params().weight_arena();
      }
    }
  }

  std::string stage_list() const {
    std::string o;
    const int L = model->num_layers();
    for (int st_ = 0; st_ < pc.pp_size(); ++st_)
      o += (st_ ? ", " : "") + std::to_string(pc.stage_lo(st_, L)) + ".." +
           std::to_string(pc.stage_hi(st_, L));
    return o;
  }

  std::unique_ptr<PromptSet> load_set(const std::string& spec, uint64_t seed, int64_t size,
                                      int64_t limit) {
    if (spec == "builtin:arithmetic")
      return std::make_unique<PromptSet>(
          PromptSet::arithmetic(*tok, cfg.data.arithmetic.digits, cfg.data.arithmetic.ops,
                                limit > 0 ? std::min(limit, size) : size, seed, "arithmetic"));
    BUPO_CHECK(spec.rfind("builtin:", 0) != 0, cfg.source, ": unknown built-in data set '", spec,
               "' (known: builtin:arithmetic)");
    return std::make_unique<PromptSet>(PromptSet::from_jsonl(spec, *tok, cfg.model.template_name,
                                                             cfg.data.max_prompt_tokens, limit));
  }

  // ------------------------------------------------------------------ warm start (built-in task)
  void warm_start() {
    const int32_t eos = stop_ids.back();  // <|endoftext|> for the built-in tokenizer
    AdamWConfig oc;
    oc.lr = cfg.warmup.sft_lr;
    oc.weight_decay = 0.0;
    AdamW sft(model->params(), oc);
    Sampler s(train->size(), static_cast<uint64_t>(cfg.data.seed) ^ 0x5F7ull, true);
    double loss = 0;
    for (int64_t it = 1; it <= cfg.warmup.sft_steps; ++it) {
      std::vector<Rollout> rs;
      for (const auto& dr : s.next(cfg.warmup.sft_batch)) {
        const Problem& p = train->at(dr.index);
        Rollout r;
        r.ids = p.prompt;
        r.prompt_len = static_cast<int64_t>(p.prompt.size());
        for (int32_t t : tok->encode(p.solution)) r.ids.push_back(t);
        r.ids.push_back(eos);
        rs.push_back(std::move(r));
      }
      // mean next-token NLL of the answers over the whole batch; each DP replica one share
      int64_t R_all = 0;
      for (const auto& r : rs) R_all += r.resp_len();
      std::vector<const Rollout*> ptrs;
      for (const auto& r : rs) ptrs.push_back(&r);
      const int64_t n = static_cast<int64_t>(ptrs.size()), R = pc.dp_size(), k = pc.dp_rank();
      const std::vector<std::vector<const Rollout*>> micro = {
          std::vector<const Rollout*>(ptrs.begin() + n * k / R, ptrs.begin() + n * (k + 1) / R)};
      std::vector<double> lsum = {0.0};
      std::vector<float> none;
      model->params().zero_grad();
      run_pipeline(micro, {0, LensMode::Raw}, false,
                   [&](size_t, const std::vector<float>& lp, const std::vector<float>&,
                       std::vector<float>& g_lp, std::vector<float>&) {
                     for (size_t t = 0; t < lp.size(); ++t) {
                       lsum[0] -= lp[t] / static_cast<double>(R_all);
                       g_lp[t] = -1.0f / static_cast<float>(R_all);
                     }
                   });
      reduce_loss_stats(lsum, none, {0, LensMode::Raw});
      loss = lsum[0];
      clip_grad_norm(model->params(), 1.0, finish_grads());
      sft.step();
      if (it % 25 == 0 || it == cfg.warmup.sft_steps)
        status("warm start " + std::to_string(it) + "/" + std::to_string(cfg.warmup.sft_steps) +
               "  loss " + std::to_string(loss));
    }
    model->params().zero_grad();
    char buf[160];
    std::snprintf(buf, sizeof buf,
                  "warm start: %lld supervised steps on the built-in task, final loss %.4f",
                  static_cast<long long>(cfg.warmup.sft_steps), loss);
    say(buf);
  }

  // ------------------------------------------------------------------ rollouts
  GenerateOptions gen_options(uint64_t seed, double temperature, double top_p, int64_t max_tokens) {
    GenerateOptions g;
    g.max_new_tokens = max_tokens;
    g.temperature = static_cast<float>(temperature);
    g.top_p = static_cast<float>(top_p);
    g.top_k = cfg.rollout.top_k;
    g.seed = seed;
    g.stop_ids = stop_ids;
    g.stop_strings = cfg.rollout.stop;
    g.vocab_limit = tok->vocab_size();
    return g;
  }

  // Rollouts of `all_draws`: each data-parallel replica generates its contiguous share of the
  // prompts (keys and seeds are global, so the responses do not depend on the layout) and the
  // shares are gathered, so every rank ends with the same rollouts in draw order.
  std::vector<Rollout> sample(const std::vector<Sampler::Draw>& all_draws, int64_t step,
                              int64_t group0, const EntropyStats& stats) {
    const int64_t nd = static_cast<int64_t>(all_draws.size()), R = pc.dp_size(), k = pc.dp_rank();
    const int64_t b0 = nd * k / R, b1 = nd * (k + 1) / R;
    const std::vector<Sampler::Draw> draws(all_draws.begin() + b0, all_draws.begin() + b1);
    group0 += b0;
    std::vector<std::vector<int32_t>> prompts;
    GenerateOptions g = gen_options(
        mix64(static_cast<uint64_t>(cfg.trainer.seed) * 1000003ull + static_cast<uint64_t>(step)),
        cfg.rollout.temperature, cfg.rollout.top_p, cfg.rollout.max_tokens);
    for (const auto& d : draws) {
      prompts.push_back(train->at(d.index).prompt);
      g.prompt_keys.push_back(d.key);
    }
    if (cfg.hapo.adaptive_temperature && stats.valid) {
      const double tb = cfg.rollout.temperature, tau = cfg.hapo.tau;
      const HSign sg = sign;
      g.temperature_hook = [stats, tb, tau, sg](const TokenContext& c) {
        return static_cast<float>(adaptive_temperature(c.entropy, stats, tb, tau, sg));
      };
    }
    const auto gens = generate(*model, prompts, cfg.rollout.n, g, tok.get());
    std::vector<Rollout> out;
    out.reserve(gens.size());
    for (const auto& gn : gens) {
      Rollout r;
      const auto& d = draws[static_cast<size_t>(gn.prompt)];
      r.problem = d.index;
      r.group = group0 + gn.prompt;
      r.sample = gn.sample;
      r.ids = prompts[static_cast<size_t>(gn.prompt)];
      r.prompt_len = static_cast<int64_t>(r.ids.size());
      r.ids.insert(r.ids.end(), gn.ids.begin(), gn.ids.end());
      r.truncated = gn.finish_reason == "length";
      r.raw_entropy = gn.raw_entropies;
      r.temperature = gn.temperatures;
      const Verdict v = verify(gn.text, train->at(d.index).ground_truth);
      r.score = v.correct ? 1.0 : 0.0;
      r.reward = reward_value(v, reward_kind);
      if (cfg.algorithm.overlong_buffer > 0)
        r.reward +=
            overlong_penalty(r.resp_len(), cfg.rollout.max_tokens,
                             std::min(cfg.algorithm.overlong_buffer, cfg.rollout.max_tokens),
                             cfg.algorithm.overlong_factor);
      out.push_back(std::move(r));
    }
    return gather_over_dp(std::move(out));
  }

  std::vector<Rollout> gather_over_dp(std::vector<Rollout> mine) {
    if (pc.dp_size() == 1) return mine;
    std::string b;
    auto put = [&](const void* p, size_t n) { b.append(static_cast<const char*>(p), n); };
    auto put_i = [&](int64_t v) { put(&v, 8); };
    for (const auto& x : mine) {
      for (int64_t v : {x.problem, x.group, x.sample, x.prompt_len, int64_t{x.truncated}}) put_i(v);
      put(&x.reward, 8);
      put(&x.score, 8);
      put_i(static_cast<int64_t>(x.ids.size()));
      put(x.ids.data(), x.ids.size() * 4);
      put_i(static_cast<int64_t>(x.raw_entropy.size()));
      put(x.raw_entropy.data(), x.raw_entropy.size() * 4);
      put(x.temperature.data(), x.temperature.size() * 4);
    }
    std::vector<Rollout> all;
    for (int src = 0; src < pc.dp_size(); ++src) {
      std::string buf = src == pc.dp_rank() ? b : std::string();
      int64_t n = static_cast<int64_t>(buf.size());
      pc.dp->broadcast(&n, 8, src);
      buf.resize(static_cast<size_t>(n));
      if (n > 0) pc.dp->broadcast(buf.data(), buf.size(), src);
      size_t o = 0;
      auto get = [&](void* p, size_t k) {
        std::memcpy(p, buf.data() + o, k);
        o += k;
      };
      auto get_i = [&] {
        int64_t v;
        get(&v, 8);
        return v;
      };
      while (o < buf.size()) {
        Rollout x;
        x.problem = get_i();
        x.group = get_i();
        x.sample = get_i();
        x.prompt_len = get_i();
        x.truncated = get_i() != 0;
        get(&x.reward, 8);
        get(&x.score, 8);
        x.ids.resize(static_cast<size_t>(get_i()));
        get(x.ids.data(), x.ids.size() * 4);
        x.raw_entropy.resize(static_cast<size_t>(get_i()));
        x.temperature.resize(x.raw_entropy.size());
        get(x.raw_entropy.data(), x.raw_entropy.size() * 4);
        get(x.temperature.data(), x.temperature.size() * 4);
        all.push_back(std::move(x));
      }
    }
    return all;
  }

  // ------------------------------------------------------------------ one step
  void add(const std::string& name, double v) { metrics.emplace_back(name, v); }

  // This data-parallel replica's whole micro-batches of a mini-batch (contiguous blocks).
  template <typename T>
  std::vector<T> my_share(const std::vector<T>& all) const {
    const int64_t M = static_cast<int64_t>(all.size()), R = pc.dp_size(), r = pc.dp_rank();
    return std::vector<T>(all.begin() + M * r / R, all.begin() + M * (r + 1) / R);
  }

  // Per-step totals over all ranks of the communication in each group (bytes, calls).
  std::array<CommStats, 3> comm_snapshot() const {
    return {pc.tp->stats(), pc.pp->stats(), pc.dp->stats()};
  }
  void add_comm_metrics(const std::array<CommStats, 3>& before) {
    const auto now = comm_snapshot();
    std::vector<double> v;
    for (size_t g = 0; g < 3; ++g) {
      v.push_back(static_cast<double>(now[g].bytes() - before[g].bytes()));
      v.push_back(static_cast<double>(now[g].calls() - before[g].calls()));
      v.push_back(now[g].recv_wait_s - before[g].recv_wait_s);
    }
    v.push_back(pipe_wall);
    v.push_back(pipe_wait);
    pc.world->allreduce_sum(v.data(), v.size());
    const char* names[3] = {"tp", "pp", "dp"};
    for (size_t g = 0; g < 3; ++g) {
      add(std::string("comm_") + names[g] + "_bytes", v[3 * g]);
      add(std::string("comm_") + names[g] + "_calls", v[3 * g + 1]);
    }
    add("pp_recv_wait_s", v[3 * 1 + 2] / pc.world->size());  // per rank, mean
    if (pc.pp_size() > 1) {
      // the measured pipeline bubble of the update: idle (receive-wait) time over the wall time
      // of the pipelined passes, over all ranks of the stages taking part; and the 1F1B bound
      // (p-1)/(m+p-1) for p = those stages and m = micro-batches per replica and mini-batch
      add("pp_bubble_measured", v[10] > 0 ? v[10] / v[9] : 0.0);
      const double p = pipe_stages, m = static_cast<double>(pipe_micros);
      add("pp_bubble_1f1b", m > 0 ? (p - 1) / (m + p - 1) : 0.0);
    }
  }

  bool step(int64_t s) {
    const auto t_step = Clock::now();
    metrics.clear();
    maybe_inject_fault(s);
    const auto comm0 = comm_snapshot();
    pipe_wall = pipe_wait = 0;
    pipe_stages = 0;
    pipe_micros = 0;
    const bool phase1 = st.bupo_layer > 0 && s <= cfg.bupo.internal_steps;
    const PolicyPath path{phase1 ? static_cast<int>(st.bupo_layer) : 0,
                          lens_mode_from_string(cfg.bupo.lens)};
    const int64_t B = cfg.trainer.prompts_per_step, G = cfg.rollout.n;

    // rollout + reward (+ dynamic sampling)
    status("step " + std::to_string(s) + ": rollout");
    auto t0 = Clock::now();
    std::vector<Rollout> rolls;
    int64_t gen_batches = 0, groups_seen = 0, groups_kept = 0;
    std::vector<double> all_scores, all_rewards, all_lengths;
    const EntropyStats stats = st.hapo_stats;
    while (static_cast<int64_t>(rolls.size()) < B * G) {
      ++gen_batches;
      const auto draws = sampler->next(B);
      auto batch = sample(draws, s * 1000 + gen_batches, 0, stats);
      for (const auto& r : batch) {
        all_scores.push_back(r.score);
        all_rewards.push_back(r.reward);
        all_lengths.push_back(static_cast<double>(r.resp_len()));
      }
      groups_seen += B;
      if (!cfg.algorithm.dynamic_sampling) {
        rolls = std::move(batch);
        groups_kept = B;
        break;
      }
      std::vector<double> acc;
      for (const auto& r : batch) acc.push_back(r.score);
      for (int64_t g : informative_groups(acc, G)) {
        if (static_cast<int64_t>(rolls.size()) >= B * G) break;
        for (int64_t i = 0; i < G; ++i) rolls.push_back(batch[static_cast<size_t>(g * G + i)]);
        ++groups_kept;
      }
      if (gen_batches >= cfg.algorithm.max_gen_batches) break;
    }
    const double t_rollout = seconds_since(t0);
    const int64_t n_groups = static_cast<int64_t>(rolls.size()) / G;
    for (int64_t i = 0; i < static_cast<int64_t>(rolls.size()); ++i)
      rolls[static_cast<size_t>(i)].group = i / G;

    // advantages
    t0 = Clock::now();
    std::vector<double> rewards;
    std::vector<int64_t> lengths;
    for (const auto& r : rolls) {
      rewards.push_back(r.reward);
      lengths.push_back(r.resp_len());
    }
    double fallback_frac = 0;
    if (!rolls.empty()) {
      std::vector<double> adv;
      if (cfg.hapo.token_advantage) {
        auto tg = token_group_advantages(rewards, lengths, G, cfg.hapo.fallback);
        adv = tg.advantages;
        for (auto f : tg.fell_back) fallback_frac += f;
        fallback_frac /= static_cast<double>(tg.fell_back.size());
      } else {
        adv = grpo_advantages(rewards, G, cfg.algorithm.std_normalize);
      }
      for (size_t i = 0; i < rolls.size(); ++i) rolls[i].adv = adv[i];
    }
    const double t_reward = seconds_since(t0);

    // mini-batches and micro-batches (the same split for the old log-probs and the update)
    const int64_t mb_seqs = cfg.trainer.mini_batch_prompts * G;
    std::vector<std::vector<std::vector<const Rollout*>>> minis;
    for (int64_t m0 = 0; m0 < static_cast<int64_t>(rolls.size()); m0 += mb_seqs) {
      std::vector<std::vector<const Rollout*>> micros;
      const int64_t m1 = std::min<int64_t>(m0 + mb_seqs, static_cast<int64_t>(rolls.size()));
      for (int64_t u0 = m0; u0 < m1; u0 += cfg.trainer.micro_batch_seqs) {
        std::vector<const Rollout*> mic;
        for (int64_t i = u0; i < std::min(m1, u0 + cfg.trainer.micro_batch_seqs); ++i)
          mic.push_back(&rolls[static_cast<size_t>(i)]);
        micros.push_back(std::move(mic));
      }
      minis.push_back(std::move(micros));
    }

    // old log-probs (and the reference's): this replica's micro-batches, on the stage holding π
    status("step " + std::to_string(s) + ": old log-probs");
    t0 = Clock::now();
    for (auto& all_micros : minis)
      for (auto& mic : my_share(all_micros)) {
        std::vector<float> lp;
        policy_logprobs(*model, mic, path, lp, nullptr);
        std::vector<float> rl;
        if (ref) policy_logprobs(*ref, mic, path, rl, nullptr);
        if (lp.empty()) continue;  // another pipeline stage holds the policy
        size_t o = 0;
        for (const Rollout* r : mic) {
          auto* rw = const_cast<Rollout*>(r);
          const auto n = static_cast<size_t>(r->resp_len());
          rw->old_logp.assign(lp.begin() + static_cast<std::ptrdiff_t>(o),
                              lp.begin() + static_cast<std::ptrdiff_t>(o + n));
          if (ref)
            rw->ref_logp.assign(rl.begin() + static_cast<std::ptrdiff_t>(o),
                                rl.begin() + static_cast<std::ptrdiff_t>(o + n));
          o += n;
        }
      }
    const double t_old = seconds_since(t0);

    // update
    status("step " + std::to_string(s) + ": update");
    t0 = Clock::now();
    UpdateStats us;
    for (int64_t ep = 0; ep < cfg.trainer.epochs; ++ep)
      for (size_t mi = 0; mi < minis.size(); ++mi) update(minis[mi], path, us, ep == 0 && mi == 0);
    const double t_update = seconds_since(t0);
    if (us.nonfinite_skips > 0 && us.updates == 0) {
      ++st.nonfinite_in_row;
    } else if (us.updates > 0) {
      st.nonfinite_in_row = 0;
    }

    // HAPO A: the sampler's statistics for the next step, from this step's T=1 entropies
    if (cfg.hapo.adaptive_temperature) {
      std::vector<float> H;
      for (const auto& r : rolls) H.insert(H.end(), r.raw_entropy.begin(), r.raw_entropy.end());
      if (!H.empty())
        st.hapo_stats = entropy_stats(H.data(), static_cast<int64_t>(H.size()), cfg.hapo.pivot);
    }

    // diagnostics
    t0 = Clock::now();
    double t_diag = 0;
    if (cfg.diagnostics.every > 0 && s % cfg.diagnostics.every == 0 && !rolls.empty()) {
      const EntropySummary es = entropy_summary(rolls);  // every stage: its own layers
      if (log) log->write_entropy(s, es);
      t_diag = seconds_since(t0);
    }
    t0 = Clock::now();
    if (cfg.validation.every > 0 && s % cfg.validation.every == 0) validate(s);
    const double t_val = seconds_since(t0);

    // metrics
    auto mean = [](const std::vector<double>& v) {
      double a = 0;
      for (double x : v) a += x;
      return v.empty() ? 0.0 : a / static_cast<double>(v.size());
    };
    double trunc = 0, maxlen = 0, raw_ent = 0, temp = 0;
    int64_t ntok = 0;
    for (const auto& r : rolls) {
      trunc += r.truncated;
      maxlen = std::max(maxlen, static_cast<double>(r.resp_len()));
      for (size_t i = 0; i < r.raw_entropy.size(); ++i) {
        raw_ent += r.raw_entropy[i];
        temp += r.temperature[i];
      }
      ntok += r.resp_len();
    }
    const double nt = std::max<double>(1.0, static_cast<double>(ntok));
    add("phase", phase1 ? 1.0 : 2.0);
    add("bupo_layer", phase1 ? static_cast<double>(st.bupo_layer) : 0.0);
    add("reward", mean(all_rewards));
    add("accuracy", mean(all_scores));
    add("reward_trained", mean(rewards));
    add("response_length", mean(all_lengths));
    add("response_length_max", maxlen);
    add("truncated_frac", rolls.empty() ? 0.0 : trunc / static_cast<double>(rolls.size()));
    add("tokens", static_cast<double>(ntok));
    add("groups_kept_frac",
        groups_seen ? static_cast<double>(groups_kept) / static_cast<double>(groups_seen) : 0.0);
    add("gen_batches", static_cast<double>(gen_batches));
    add("pg_loss", us.pg_loss);
    add("kl", us.kl);
    add("entropy", us.entropy);
    add("entropy_rollout", raw_ent / nt);
    add("clip_frac", us.clip_frac());
    add("clip_frac_low", us.tok ? us.clip_low / us.tok : 0.0);
    add("clip_frac_high", us.tok ? us.clip_high / us.tok : 0.0);
    add("dual_clip_frac", us.tok ? us.dual / us.tok : 0.0);
    add("ratio_mean", us.tok ? us.ratio_sum / us.tok : 1.0);
    add("ratio_first_minibatch_maxdev", us.first_maxdev);
    add("adv_abs_mean", us.tok ? us.adv_abs / us.tok : 0.0);
    add("hapo_fallback_frac", fallback_frac);
    add("temperature_mean", ntok ? temp / nt : cfg.rollout.temperature);
    add("grad_norm", us.grad_norm_last);
    add("lr", us.lr_last);
    add("optimizer_steps", static_cast<double>(us.updates));
    add("nonfinite_skipped", static_cast<double>(us.nonfinite_skips));
    add("n_groups", static_cast<double>(n_groups));  // 0: dynamic sampling found no signal
    add("time_rollout", t_rollout);
    add("time_reward", t_reward);
    add("time_old_logprob", t_old);
    add("time_update", t_update);
    add("time_diagnostics", t_diag);
    add("time_validation", t_val);
    add("time_log_write_prev", last_write_s);
    add_comm_metrics(comm0);
    add("time_step", seconds_since(t_step));
    t0 = Clock::now();
    if (log) {
      log->write_step(s, metrics);
      log->flush();
    }
    last_write_s = seconds_since(t0);
    last_rolls = rolls;

    char line[512];
    std::snprintf(line, sizeof line,
                  "step %4lld/%lld %s reward %.3f acc %.3f len %.1f loss %+.4f ent %.3f clip %.3f "
                  "gn %.3f %.2fs",
                  static_cast<long long>(s), static_cast<long long>(cfg.trainer.steps),
                  phase1 ? ("[BuPO pi^" + std::to_string(st.bupo_layer) + "]").c_str() : "[full]",
                  mean(all_rewards), mean(all_scores), mean(all_lengths), us.pg_loss, us.entropy,
                  us.clip_frac(), us.grad_norm_last, seconds_since(t_step));
    say(line);
    if (us.nonfinite_skips > 0)
      say("step " + std::to_string(s) + ": skipped " + std::to_string(us.nonfinite_skips) +
          " update(s) with a non-finite loss or gradient (" + std::to_string(st.nonfinite_in_row) +
          " step(s) in a row)");
    BUPO_CHECK(
        st.nonfinite_in_row < cfg.trainer.max_nonfinite_in_row, "step ", s, ": ",
        st.nonfinite_in_row,
        " steps in a row had only non-finite losses or gradients (trainer.max_nonfinite_in_row = ",
        cfg.trainer.max_nonfinite_in_row, "); stopping. The last checkpoint is intact.");
    return true;
  }

  // ------------------------------------------------------------------ the pipeline engine
  // The forward and backward of one optimizer step over this replica's micro-batches, in 1F1B
  // order on this rank's pipeline stage (Megatron's PipeDream-flush: warm-up forwards, then
  // alternating one forward / one backward, then the remaining backwards). The stage that holds
  // the policy evaluates the lens, asks `loss` for the per-token gradients and starts the
  // backward there (in BuPO phase 1 the stage owning layer l); stages above it do nothing.
  // The pipeline stage that holds the policy of `path` (the one owning layer l, or the last).
  int stage_of_policy(PolicyPath path) const {
    const int L = model->num_layers();
    return pc.stage_of_layer(path.layer == 0 ? L : path.layer, L);
  }
  using LossFn = std::function<void(size_t micro, const std::vector<float>& lp,
                                    const std::vector<float>& H, std::vector<float>& g_lp,
                                    std::vector<float>& g_ent)>;
  void run_pipeline(const std::vector<std::vector<const Rollout*>>& micros, PolicyPath path,
                    bool entropy_grad, const LossFn& loss) {
    const int loss_stage = stage_of_policy(path);
    const int s = pc.pp_rank();
    if (s > loss_stage) return;
    const bool here = s == loss_stage;
    const auto t_start = Clock::now();
    const double wait0 = pc.pp->stats().recv_wait_s;
    const auto m = static_cast<int64_t>(micros.size());
    const int64_t warm = std::min<int64_t>(loss_stage - s, m), d = model->hidden();
    const Lens lens = lens_for(*model, path);
    std::vector<Packed> pk(static_cast<size_t>(m));
    std::vector<Activations> acts(static_cast<size_t>(m));
    std::vector<std::vector<float>> dH(static_cast<size_t>(m));
    auto F = [&](int64_t i) {
      const auto u = static_cast<size_t>(i);
      pk[u] = pack(micros[u]);
      model->forward(pk[u].b, acts[u], /*keep=*/true, path.layer == 0 ? -1 : path.layer);
      if (!here) return;
      std::vector<float> X;
      gather_rows(hidden_of(acts[u], path), pk[u].rows, d, X);
      const int64_t R = static_cast<int64_t>(pk[u].rows.size());
      std::vector<float> lp(static_cast<size_t>(R)), H(static_cast<size_t>(R));
      lens.forward(X.data(), R, pk[u].targets.data(), H.data(), lp.data());
      std::vector<float> g_lp(static_cast<size_t>(R), 0.0f), g_ent(static_cast<size_t>(R), 0.0f);
      loss(u, lp, H, g_lp, g_ent);
      std::vector<float> dX(X.size(), 0.0f);
      lens.backward(X.data(), R, pk[u].targets.data(), g_lp.data(),
                    entropy_grad ? g_ent.data() : nullptr, dX.data());
      dH[u] = scatter_rows(dX, pk[u].rows, d, pk[u].b.N());
    };
    auto B = [&](int64_t i) {
      const auto u = static_cast<size_t>(i);
      const float* g = here ? dH[u].data() : nullptr;
      if (path.layer == 0)
        model->backward_from_output(pk[u].b, acts[u], g);
      else
        model->backward_from_layer(pk[u].b, acts[u], path.layer, g);
      acts[u] = Activations{};
      dH[u] = {};
    };
    for (int64_t i = 0; i < warm; ++i) F(i);
    for (int64_t i = warm; i < m; ++i) {
      F(i);
      B(i - warm);
    }
    for (int64_t i = m - warm; i < m; ++i) B(i);
    if (pc.pp_size() > 1) {
      if (auto* mc = dynamic_cast<MpiComm*>(pc.pp.get())) mc->wait_sends();
      pipe_wall += seconds_since(t_start);
      pipe_wait += pc.pp->stats().recv_wait_s - wait0;
      pipe_stages = std::max(pipe_stages, loss_stage + 1);
      pipe_micros = std::max<int64_t>(pipe_micros, m);
    }
  }
  double pipe_wall = 0, pipe_wait = 0;  // this step's pipelined passes on this rank
  int pipe_stages = 0;
  int64_t pipe_micros = 0;

  // Sums per-rank statistics of the stage that holds the policy over DP, then hands them to every
  // pipeline stage. `mx` entries are maxima.
  void reduce_loss_stats(std::vector<double>& v, std::vector<float>& mx, PolicyPath path) {
    pc.dp->allreduce_sum(v.data(), v.size());
    if (!mx.empty()) pc.dp->allreduce_max(mx.data(), mx.size());
    if (pc.pp_size() > 1) {
      pc.pp->broadcast(v.data(), v.size() * sizeof(double), stage_of_policy(path));
      if (!mx.empty()) pc.pp->broadcast(mx.data(), mx.size() * sizeof(float), stage_of_policy(path));
    }
  }

  // After the backward of an optimizer step: partial sums inside the model-parallel group, the
  // data-parallel gradient sum, and the global gradient norm (identical on every rank).
  double finish_grads() {
    model->reduce_partial_grads();
    allreduce_grads(model->params(), *pc.dp, cfg.parallel.grad_bucket_mb);
    return model_parallel_grad_norm(*model);
  }

  // ------------------------------------------------------------------ update of one mini-batch
  struct UpdateStats {
    double pg_loss = 0, kl = 0, entropy = 0, tok = 0, clipped = 0, clip_low = 0, clip_high = 0,
           dual = 0, ratio_sum = 0, adv_abs = 0, first_maxdev = 0, grad_norm_last = 0, lr_last = 0;
    int64_t updates = 0, nonfinite_skips = 0, minis = 0;
    double clip_frac() const { return tok ? clipped / tok : 0.0; }
  };

  void update(const std::vector<std::vector<const Rollout*>>& all_micros, PolicyPath path,
              UpdateStats& us, bool first) {
    // aggregation weights over the whole mini-batch (every rank knows every rollout), so that the
    // data-parallel sum of the replicas' gradients is the single-rank gradient
    std::vector<int64_t> lens, micro_of;
    std::vector<size_t> w_off;  // first weight of each micro-batch
    for (size_t u = 0; u < all_micros.size(); ++u) {
      w_off.push_back(lens.size());
      for (const Rollout* r : all_micros[u]) {
        lens.push_back(r->resp_len());
        micro_of.push_back(static_cast<int64_t>(u));
      }
    }
    const std::vector<double> w = cfg.algorithm.verl_microbatch_mean
                                      ? verl_microbatch_token_mean_weights(lens, micro_of)
                                      : aggregation_weights(agg, lens);
    const auto M = static_cast<int64_t>(all_micros.size());
    const auto u0 = static_cast<size_t>(M * pc.dp_rank() / pc.dp_size());
    const auto micros = my_share(all_micros);
    const KlKind klk = kl_kind_from_string(cfg.algorithm.kl_estimator);
    model->params().zero_grad();
    // local sums: pg, kl, entropy, loss, tokens, clipped, clip_low, clip_high, dual, ratio, |adv|
    enum { kPg, kKl, kEnt, kLoss, kTok, kClip, kClipLo, kClipHi, kDual, kRatio, kAdv, kN };
    std::vector<double> v(kN, 0.0);
    std::vector<float> maxdev = {0.0f};
    // fault injection for tests: BUPO_FAULT_NAN_STEPS=2,3 poisons those steps' gradients
    const std::set<int64_t> fault_steps = [] {
      std::set<int64_t> fs_;
      if (const char* e = std::getenv("BUPO_FAULT_NAN_STEPS")) {
        std::stringstream ss(e);
        std::string x;
        while (std::getline(ss, x, ',')) fs_.insert(std::stoll(x));
      }
      return fs_;
    }();
    const bool inject_nan = fault_steps.count(cur_step) > 0;
    auto loss = [&](size_t i, const std::vector<float>& lp, const std::vector<float>& H,
                    std::vector<float>& g_lp, std::vector<float>& g_ent) {
      const auto& mic = micros[i];
      const auto R = static_cast<int64_t>(lp.size());
      std::vector<float> ht(static_cast<size_t>(R), 0.0f);
      if (cfg.hapo.redistribution || cfg.hapo.adaptive_clip)
        entropy_h(H.data(), R, cfg.hapo.pivot, sign, ht.data());  // micro-batch statistics (§2.1)
      size_t t = 0, wi = w_off[u0 + i];
      for (const Rollout* r : mic) {
        for (int64_t j = 0; j < r->resp_len(); ++j, ++t, ++wi) {
          const double wt = w[wi];
          float el = static_cast<float>(cfg.algorithm.clip_low),
                er = static_cast<float>(cfg.algorithm.clip_high);
          if (cfg.hapo.adaptive_clip)
            adaptive_clip(ht[t], cfg.algorithm.clip_low, cfg.algorithm.clip_high, cfg.hapo.alpha,
                          &el, &er);
          const double old = r->old_logp[static_cast<size_t>(j)];
          const double ratio = std::exp(std::clamp(static_cast<double>(lp[t]) - old, -20.0, 20.0));
          double a = r->adv;
          if (cfg.hapo.redistribution)
            a = redistribute_advantage(a, ht[t], ratio, el, er, cfg.hapo.beta);
          const TokenLoss tl = ppo_token_loss(lp[t], old, a, el, er, cfg.algorithm.dual_clip,
                                              cfg.algorithm.log_ratio_clamp);
          double g = wt * tl.dlogp, l = wt * tl.loss;
          v[kPg] += wt * tl.loss;
          if (ref) {
            double dk = 0;
            const double k = kl_value(klk, lp[t], r->ref_logp[static_cast<size_t>(j)], &dk);
            l += wt * cfg.algorithm.kl_coef * k;
            g += wt * cfg.algorithm.kl_coef * dk;
            v[kKl] += wt * k;
          }
          if (cfg.algorithm.entropy_coef != 0) {
            l -= wt * cfg.algorithm.entropy_coef * H[t];
            g_ent[t] = static_cast<float>(-wt * cfg.algorithm.entropy_coef);
          }
          v[kEnt] += wt * H[t];
          v[kLoss] += l;
          g_lp[t] = static_cast<float>(g);
          v[kTok] += 1;
          v[kClip] += tl.clipped;
          v[kClipLo] += tl.clipped_low;
          v[kClipHi] += tl.clipped_high;
          v[kDual] += tl.dual_clipped;
          v[kRatio] += tl.ratio;
          v[kAdv] += std::fabs(a);
          if (first)
            maxdev[0] = std::max(maxdev[0], static_cast<float>(std::fabs(tl.ratio - 1.0)));
        }
      }
      if (inject_nan && !g_lp.empty()) g_lp[0] = std::numeric_limits<float>::quiet_NaN();
    };
    run_pipeline(micros, path, cfg.algorithm.entropy_coef != 0, loss);
    reduce_loss_stats(v, maxdev, path);
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
    us.entropy +=
        (v[kEnt] / std::max(1e-12, w_total) - us.entropy) / static_cast<double>(us.minis);

    const double gn = finish_grads();
    if (!std::isfinite(v[kLoss]) || !std::isfinite(gn)) {
      model->params().zero_grad();
      ++us.nonfinite_skips;
      us.grad_norm_last = gn;
      return;
    }
    if (cfg.optim.grad_clip > 0) clip_grad_norm(model->params(), cfg.optim.grad_clip, gn);
    ++st.optimizer_steps;
    const double lr =
        cfg.optim.warmup_steps > 0
            ? cfg.optim.lr * std::min(1.0, static_cast<double>(st.optimizer_steps) /
                                               static_cast<double>(cfg.optim.warmup_steps))
            : cfg.optim.lr;
    optim->config().lr = lr;
    optim->step();
    model->params().zero_grad();
    ++us.updates;
    us.grad_norm_last = gn;
    us.lr_last = lr;
  }
  int64_t cur_step = 0;

  // ------------------------------------------------------------------ per-layer entropies
  EntropySummary entropy_summary(const std::vector<Rollout>& rolls) {
    // a deterministic subsample: rollouts at a fixed stride until enough response tokens
    std::vector<TokenRecord> recs;
    int64_t tokens = 0, total = 0;
    for (const auto& r : rolls) total += r.resp_len();
    const double mean_len =
        std::max(1.0, static_cast<double>(total) / static_cast<double>(rolls.size()));
    const auto wanted =
        static_cast<int64_t>(std::ceil(static_cast<double>(cfg.diagnostics.tokens) / mean_len));
    const size_t stride = static_cast<size_t>(
        std::max<int64_t>(1, static_cast<int64_t>(rolls.size()) / std::max<int64_t>(1, wanted)));
    for (size_t i = 0; i < rolls.size() && tokens < cfg.diagnostics.tokens; i += stride) {
      if (rolls[i].resp_len() == 0) continue;
      recs.push_back({rolls[i].ids, rolls[i].prompt_len, 0});
      tokens += rolls[i].resp_len();
    }
    if (recs.empty())
      return EntropySummary{0,
                            std::vector<float>(static_cast<size_t>(model->num_layers() + 1), NAN),
                            std::vector<float>(static_cast<size_t>(model->num_layers()), NAN),
                            std::vector<float>(static_cast<size_t>(model->num_layers()), NAN),
                            std::vector<float>(static_cast<size_t>(model->num_layers()), NAN),
                            std::vector<float>(static_cast<size_t>(model->num_layers()), NAN),
                            NAN,
                            NAN};
    EntropyOptions eo;
    eo.lens = lens_mode_from_string(cfg.diagnostics.lens);
    const EntropyRows rows = compute_entropy_rows(*model, recs, 0, eo);
    const int64_t L = model->num_layers();
    EntropySummary e;
    e.tokens = rows.rows;
    auto colmean = [&](const std::vector<float>& v, int64_t cols) {
      std::vector<double> acc(static_cast<size_t>(cols), 0.0);
      for (int64_t r = 0; r < rows.rows; ++r)
        for (int64_t c = 0; c < cols; ++c)
          acc[static_cast<size_t>(c)] += v[static_cast<size_t>(r * cols + c)];
      std::vector<float> out(static_cast<size_t>(cols));
      for (int64_t c = 0; c < cols; ++c)
        out[static_cast<size_t>(c)] = static_cast<float>(
            acc[static_cast<size_t>(c)] / std::max<double>(1, static_cast<double>(rows.rows)));
      return out;
    };
    e.layer = colmean(rows.layer, L + 1);
    e.attn_in = colmean(rows.attn_in, L);
    e.attn_out = colmean(rows.attn_out, L);
    e.ffn_in = colmean(rows.ffn_in, L);
    e.ffn_out = colmean(rows.ffn_out, L);
    e.output = colmean(rows.output, 1)[0];
    e.bupo_layer = st.bupo_layer > 0 ? e.layer[static_cast<size_t>(st.bupo_layer)]
                                     : std::numeric_limits<float>::quiet_NaN();
    return e;
  }

  // ------------------------------------------------------------------ validation
  void validate(int64_t s) {
    const int64_t max_tokens =
        cfg.validation.max_tokens > 0 ? cfg.validation.max_tokens : cfg.rollout.max_tokens;
    for (size_t vi = 0; vi < val.size(); ++vi) {
      const PromptSet& set = *val[vi];
      const int64_t P = cfg.validation.max_prompts > 0
                            ? std::min(cfg.validation.max_prompts, set.size())
                            : set.size();
      std::vector<std::vector<int32_t>> prompts;
      GenerateOptions g = gen_options(mix64(static_cast<uint64_t>(cfg.trainer.seed) ^ 0xA11DA7Eull),
                                      cfg.validation.temperature, cfg.validation.top_p, max_tokens);
      // each data-parallel replica a contiguous share; random keys are the global prompt indices
      const int64_t p0 = P * pc.dp_rank() / pc.dp_size(), p1 = P * (pc.dp_rank() + 1) / pc.dp_size();
      for (int64_t i = p0; i < p1; ++i) {
        prompts.push_back(set.at(i).prompt);
        g.prompt_keys.push_back(i);
      }
      const auto gens = generate(*model, prompts, cfg.validation.n, g, tok.get());
      std::vector<double> correct_d(static_cast<size_t>(P), 0.0);
      for (const auto& gn : gens)
        correct_d[static_cast<size_t>(p0 + gn.prompt)] +=
            verify(gn.text, set.at(p0 + gn.prompt).ground_truth).correct;
      pc.dp->allreduce_sum(correct_d.data(), correct_d.size());
      std::vector<int64_t> correct(static_cast<size_t>(P), 0);
      for (int64_t i = 0; i < P; ++i)
        correct[static_cast<size_t>(i)] = static_cast<int64_t>(correct_d[static_cast<size_t>(i)]);
      double avg = 0;
      std::vector<double> pass(cfg.validation.k.size(), 0.0);
      for (int64_t i = 0; i < P; ++i) {
        avg += static_cast<double>(correct[static_cast<size_t>(i)]) /
               static_cast<double>(cfg.validation.n);
        for (size_t k = 0; k < pass.size(); ++k)
          pass[k] +=
              pass_at_k(cfg.validation.n, correct[static_cast<size_t>(i)], cfg.validation.k[k]);
      }
      avg /= static_cast<double>(P);
      for (auto& p : pass) p /= static_cast<double>(P);
      std::string name = fs::path(cfg.validation.sets[vi]).stem().string();
      if (cfg.validation.sets[vi].rfind("builtin:", 0) == 0)
        name = cfg.validation.sets[vi].substr(8);
      if (log) log->write_validation(s, name, avg, cfg.validation.k, pass);
      char buf[200];
      std::snprintf(buf, sizeof buf, "validation %s (%lld prompts x %lld): avg@%lld %.4f",
                    name.c_str(), static_cast<long long>(P),
                    static_cast<long long>(cfg.validation.n),
                    static_cast<long long>(cfg.validation.n), avg);
      say(buf);
    }
  }

  // ------------------------------------------------------------------ BuPO layer by the paper's
  // rule
  LayerChoice baseline_layer_choice() {
    // baseline rollouts on the first rows (the sampler is not advanced)
    std::vector<Sampler::Draw> first;
    for (int64_t i = 0; i < std::min<int64_t>(cfg.trainer.prompts_per_step, train->size()); ++i)
      first.push_back({i, -1 - i});
    const auto rolls = sample(first, 0, 0, EntropyStats{});
    return choose_bupo_layer(*model, rolls);
  }

  void pick_layer() {
    const LayerChoice c = baseline_layer_choice();
    if (log) {
      log->write_layer_selection(c.ffn_dh, c.attn_dh, c.chosen, c.tokens);
      log->flush();
    }
    std::string dh;
    for (size_t l = 0; l < c.ffn_dh.size(); ++l) {
      char b[48];
      std::snprintf(b, sizeof b, "%s%zu:%+.3f", l ? " " : "", l + 1, c.ffn_dh[l]);
      dh += b;
    }
    say("BuPO layer selection on " + std::to_string(c.tokens) + " baseline tokens: mean dH_FFN " +
        dh);
    BUPO_CHECK(
        c.chosen > 0, cfg.source,
        ": bupo.auto_layer: no layer has a positive mean FFN entropy change on the baseline "
        "rollouts (evidence in diagnostics.h5 /bupo_layer_selection); set bupo.internal_layer");
    st.bupo_layer = c.chosen;
    say("BuPO layer: pi^" + std::to_string(c.chosen) + " (last layer with mean dH_FFN > 0)");
  }

  // Checkpoints hold the consolidated (single-rank) model and optimizer state, written by world
  // rank 0, so a run resumes under any layout.
  void checkpoint() {
    st.sampler = sampler->state();
    const auto t0 = Clock::now();
    std::string dir;
    if (pc.world->size() == 1) {
      dir = save_checkpoint(out_dir, *model, *optim, st, cfg.to_toml(), tok_json,
                            cfg.trainer.keep_checkpoints);
    } else {
      std::vector<int64_t> steps(model->params().all().size()), full_steps;
      for (size_t i = 0; i < steps.size(); ++i) steps[i] = optim->step_count(i);
      std::vector<std::vector<float>> moments;
      auto full = gather_model(*model, {&optim->exp_avg(), &optim->exp_avg_sq()}, &moments, &steps,
                               &full_steps);
      if (full) {
        AdamW fo(full->params(), optim->config());
        fo.exp_avg() = std::move(moments[0]);
        fo.exp_avg_sq() = std::move(moments[1]);
        fo.set_step_counts(full_steps);
        dir = save_checkpoint(out_dir, *full, fo, st, cfg.to_toml(), tok_json,
                              cfg.trainer.keep_checkpoints);
      }
      pc.world->barrier();  // the checkpoint is complete before any rank goes on or exits
    }
    say("checkpoint " + dir + " (" + std::to_string(seconds_since(t0)).substr(0, 5) + " s)");
  }

  int run() {
    install_preemption_handlers();
    const int64_t last = opt.stop_after_step > 0 ? std::min(opt.stop_after_step, cfg.trainer.steps)
                                                 : cfg.trainer.steps;
    if (st.step == 0)
      say("training " + std::to_string(cfg.trainer.steps) + " steps; run folder " + out_dir);
    while (st.step < last) {
      cur_step = st.step + 1;
      step(cur_step);
      st.step = cur_step;
      const bool periodic =
          cfg.trainer.checkpoint_every > 0 && st.step % cfg.trainer.checkpoint_every == 0;
      float sig = static_cast<float>(g_signal.load());  // every rank stops after the same step
      pc.world->allreduce_max(&sig, 1);
      if (sig != 0) g_signal.store(static_cast<int>(sig));
      if (preemption_requested()) {
        checkpoint();
        say("preempted by signal " + std::to_string(g_signal.load()) + ": stopped after step " +
            std::to_string(st.step) + " with a checkpoint; continue with --resume");
        return kExitPreempted;
      }
      if (periodic || st.step == last) checkpoint();
    }
    if (st.step == cfg.trainer.steps && cfg.trainer.export_hf) {
      const std::string hf = (fs::path(out_dir) / "hf").string();
      std::unique_ptr<Model> full = pc.world->size() > 1 ? gather_model(*model, {}, nullptr, nullptr, nullptr) : nullptr;
      if (root()) {
        (full ? *full : *model).save(hf, DType::F32);
        std::ofstream(fs::path(hf) / "tokenizer.json") << tok_json;
      }
      say("final model (Hugging Face format): " + hf);
    }
    return 0;
  }
};

LayerChoice pick_layer_command(const TrainConfig& cfg, const std::string& out_h5, bool overwrite) {
  Trainer::Impl im;
  im.cfg = cfg;
  im.opt.quiet = false;
  im.load_all();
  if (cfg.warmup.sft_steps > 0) im.warm_start();
  const LayerChoice c = im.baseline_layer_choice();
  if (!im.root()) return c;
  h5::File f = h5::File::create(out_h5, overwrite);
  f.set_attr("/", "program_version", std::string(kVersion));
  f.set_attr("/", "config", cfg.to_toml());
  write_layer_evidence(f, "", c.ffn_dh, c.attn_dh, c.chosen, c.tokens);
  f.flush();
  return c;
}

Trainer::Trainer(TrainConfig cfg, TrainOptions opt) : impl_(std::make_unique<Impl>()) {
  impl_->cfg = std::move(cfg);
  impl_->opt = std::move(opt);
  impl_->setup();
}
Trainer::~Trainer() = default;
int Trainer::run() {
  return impl_->run();
}
Model& Trainer::model() {
  return *impl_->model;
}
std::unique_ptr<Model> Trainer::gathered_model() {
  if (impl_->pc.world->size() == 1) {
    auto m = std::make_unique<Model>(impl_->model->config(), ParallelContext::single());
    m->params().weight_arena() = impl_->model->params().weight_arena();
    return m;
  }
  return gather_model(*impl_->model, {}, nullptr, nullptr, nullptr);
}
const std::vector<Rollout>& Trainer::last_rollouts() const {
  return impl_->last_rolls;
}
const std::vector<std::pair<std::string, double>>& Trainer::last_metrics() const {
  return impl_->metrics;
}

}  // namespace bupo::rl
