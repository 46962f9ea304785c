// Set-up of a run: the tokenizer, the model's shape and the parallel layout (every check before
// any work), the backend, the model shard, data, optimizer, and the memory reservation that keeps
// the step loop free of allocations.
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "core/threads.hpp"
#include "model/gguf_import.hpp"
#include "parallel/mpi_comm.hpp"
#include "parallel/topology.hpp"
#include "rl/critic.hpp"
#include "rl/run.hpp"
#include "rl/validation.hpp"

namespace fs = std::filesystem;

namespace bupo::rl {

void Run::say(const std::string& s) const {
  if (opt.quiet || !root()) return;
  std::fprintf(stderr, "%s%s\n", tty ? "\r\033[K" : "", s.c_str());
  std::fflush(stderr);
}
void Run::warn(const std::string& s) const {
  if (!root()) return;
  std::fprintf(stderr, "%sbupo: warning: %s\n", tty ? "\r\033[K" : "", s.c_str());
  std::fflush(stderr);
}
void Run::status(const std::string& s) const {
  if (opt.quiet || !tty || !root()) return;
  std::fprintf(stderr, "\r\033[K%s", s.c_str());
  std::fflush(stderr);
}
int Run::stage_of_policy(PolicyPath path) const {
  const int L = model->num_layers();
  return pc.stage_of_layer(path.layer == 0 ? L : path.layer, L);
}
void Run::share_from_stage(std::vector<double>& v, int stage) const {
  pc.dp->allreduce_sum(v.data(), v.size());
  if (pc.pp_size() > 1) pc.pp->broadcast(v.data(), v.size() * sizeof(double), stage);
}
double Run::pp_recv_wait() const {
  double w = pc.pp->stats().recv_wait_s;
  if (pc.dev.pp != pc.pp) w += pc.dev.pp->stats().recv_wait_s;
  return w;
}

namespace {

// The layout tp × pp × dp from parallel.*; every check runs before any work starts.
void setup_parallel(Run& r, const ModelConfig& mc) {
  const TrainConfig& cfg = r.cfg;
  const auto& P = cfg.parallel;
  const int world = MpiSession::active() && !r.opt.single_process ? world_size() : 1;
  ParallelLayout lay;
  lay.tp = static_cast<int>(P.tp);
  lay.pp = static_cast<int>(P.pp);
  BUPO_CHECK(P.dp > 0 || world % (lay.tp * lay.pp) == 0, cfg.source,
             ": parallel.tp × parallel.pp = ", lay.tp * lay.pp, " does not divide the job's ",
             world, " ranks");
  lay.dp = P.dp > 0 ? static_cast<int>(P.dp) : world / (lay.tp * lay.pp);
  lay.first_stage_layers = static_cast<int>(P.first_stage_layers);
  lay.last_stage_layers = static_cast<int>(P.last_stage_layers);
  validate_layout(lay, world, mc, cfg.source);
  const int64_t G = cfg.rollout.n,
                M = (cfg.trainer.mini_batch_prompts * G + cfg.trainer.micro_batch_seqs - 1) /
                    cfg.trainer.micro_batch_seqs;
  BUPO_CHECK(M % lay.dp == 0, cfg.source,
             ": a mini-batch has trainer.mini_batch_prompts × rollout.n / ",
             "trainer.micro_batch_seqs = ", M, " micro-batch(es); parallel.dp = ", lay.dp,
             " must divide that number (each data-parallel replica takes whole micro-batches)");
  BUPO_CHECK(cfg.warmup.sft_steps == 0 || cfg.warmup.sft_batch % lay.dp == 0, cfg.source,
             ": warmup.sft_batch = ", cfg.warmup.sft_batch,
             " is not a multiple of parallel.dp = ", lay.dp);
  r.pc = make_parallel_context(lay, static_cast<int>(mc.num_layers), cfg.source)
             .with_device_comms(*r.backend, P.timeout_s);
  set_comm_timeout(P.timeout_s);
  set_stop_grace(P.stop_grace_s);
  if (const auto f = parse_fault_injection(P.fault_inject)) {  // validated with the config
    r.fault_kind = f->kind;
    r.fault_rank = f->rank;
    r.fault_step = f->step;
  }
}

}  // namespace

void load_tokenizer_of(Run& r) {
  const TrainConfig& cfg = r.cfg;
  std::string tpath = cfg.model.tokenizer;
  if (tpath.empty() && !cfg.model.path.empty()) tpath = cfg.model.path;
  if (tpath.empty()) {
    r.tok_json = builtin_byte_tokenizer_json();
    r.tok =
        std::make_unique<Tokenizer>(Tokenizer::from_json(json::parse(r.tok_json), "builtin:bytes"));
  } else {
    r.tok = std::make_unique<Tokenizer>(load_tokenizer(tpath));
    if (is_gguf_path(tpath)) {
      r.tok_json = tokenizer_json_from_gguf(*GgufFile::open(tpath)).dump();
    } else {
      const std::string f =
          fs::is_directory(tpath) ? (fs::path(tpath) / "tokenizer.json").string() : tpath;
      std::ifstream in(f);
      std::stringstream ss;
      ss << in.rdbuf();
      r.tok_json = ss.str();
    }
  }
  r.stop_ids = default_stop_ids(*r.tok);
  BUPO_CHECK(!r.stop_ids.empty(), cfg.source, ": the tokenizer has no end-of-turn token (",
             "<|im_end|>, <|endoftext|>, <|eot_id|>); responses could never stop");
}

ModelConfig model_shape(const Run& r) {
  const TrainConfig& cfg = r.cfg;
  if (!cfg.model.path.empty()) return model_config_of(cfg.model.path);
  const auto& in = cfg.model.init;
  ModelConfig c;
  c.arch = in.arch == "llama" ? Arch::Llama : in.arch == "qwen2" ? Arch::Qwen2 : Arch::Qwen3;
  const int64_t vm = in.vocab_multiple;
  c.vocab_size = (r.tok->vocab_size() + vm - 1) / vm * vm;
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
  static const ConfigFieldNames names{
      "the tokenizer's vocabulary (padded to model.init.vocab_multiple)",
      "model.init.hidden",
      "model.init.ffn",
      "model.init.layers",
      "model.init.heads",
      "model.init.kv_heads",
      "model.init.head_dim",
      "max_position_embeddings",
      "rms_norm_eps",
      "rope_theta"};
  c.validate(cfg.source, names);
  return c;
}

namespace {

int64_t longest_prompt(const PromptSet& s) {
  int64_t m = 0;
  for (int64_t i = 0; i < s.size(); ++i)
    m = std::max<int64_t>(m, static_cast<int64_t>(s.at(i).prompt.size()));
  return m;
}

// Every buffer of the step loop at its largest shape, before the first step (Model::reserve):
// the training micro-batches (1F1B holds up to the pipeline depth of them), the warm start, the
// rollout and validation prefills, the diagnostics forward, the KV caches.
void reserve_memory(Run& r) {
  const TrainConfig& cfg = r.cfg;
  Model& m = *r.model;
  const int64_t dp = r.pc.dp_size(), d = m.hidden();
  int64_t prompt = longest_prompt(*r.train);
  for (const auto& v : r.val) prompt = std::max(prompt, longest_prompt(*v));
  const int64_t answer = std::max(cfg.rollout.max_tokens, cfg.validation.max_tokens);
  const int64_t seq = std::min(prompt + answer, m.config().max_position_embeddings);
  const int64_t micro = cfg.trainer.micro_batch_seqs * seq;
  const int64_t sft = cfg.warmup.sft_steps > 0 ? cfg.warmup.sft_batch / dp * seq : 0;
  const int64_t rollout_slots = (cfg.trainer.prompts_per_step + dp - 1) / dp * cfg.rollout.n;
  int64_t val_slots = 0;  // a replica's share of a set's prompts, batch_prompts at a time
  for (size_t i = 0; cfg.validation.every > 0 && i < r.val.size(); ++i) {
    const ValidationSetting vs = validation_setting(cfg, i, r.val[i]->size());
    int64_t share = (vs.prompts + dp - 1) / dp;
    if (vs.batch_prompts > 0) share = std::min(share, vs.batch_prompts);
    val_slots = std::max(val_slots, share * vs.n);
  }
  const int64_t slots = std::max(rollout_slots, val_slots);
  const int64_t prefill = std::min<int64_t>(4096, slots * prompt);  // GenerateOptions default
  const int64_t diag =
      std::min<int64_t>(cfg.trainer.prompts_per_step * cfg.rollout.n, cfg.diagnostics.tokens + 1) *
      seq;
  MemoryPlan p;
  p.max_tokens = std::max({micro, sft, prefill, diag});
  p.max_seq_len = seq;
  p.max_sequences = std::max({cfg.trainer.micro_batch_seqs, slots, cfg.warmup.sft_batch});
  p.in_flight = std::max(2, r.pc.pp_size());
  p.train = true;
  const Lens lens{&m.unembedding(), &m.final_norm(), LensMode::Normed, 1e-6f, r.pc.dev.tp.get(), 0};
  p.lens_rows = lens.chunk_for(p.max_tokens);
  // the caller's scratch: the response rows and their gradient, the lens's chunk buffers, the
  // sampling buffers of a generation (last rows, logits, per-row values) and gradient buckets
  const int64_t V = m.config().vocab_size;
  int64_t largest = 0;
  for (const Param& q : m.params().all()) largest = std::max(largest, q.numel());
  const int64_t bucket =
      static_cast<int64_t>(cfg.parallel.grad_bucket_mb * 1048576.0) + 4 * largest;
  const ZeroShard* zs = r.optim->shard();
  const int64_t reduce = dp <= 1 ? 0
                         : zs    ? static_cast<int64_t>(zs->layout.scratch_bytes())
                                 : bucket;
  // BuPO phase 1 with the full policy's entropy bonus holds dL/dY (N, d) through the backward
  const bool two_losses =
      cfg.bupo_enabled() && cfg.algorithm.entropy_coef != 0 && cfg.bupo.phase1_entropy == "full";
  p.extra_scratch = (two_losses ? 3 : 2) * p.max_tokens * d * 4 +
                    static_cast<int64_t>(lens.scratch_bytes(p.max_tokens)) +
                    slots * (d + V + 16) * 8 + reduce;
  m.reserve(p);
  m.reserve_kv_cache(slots, std::min(prompt + answer, m.config().max_position_embeddings));
  if (r.critic) {  // its training micro-batches and values (no generation, no lens)
    MemoryPlan c;
    c.max_tokens = micro;
    c.max_seq_len = seq;
    c.max_sequences = cfg.trainer.micro_batch_seqs;
    c.in_flight = p.in_flight;
    c.train = true;
    // the response rows and their gradient (R, d), the head's outputs and gradients (R)
    c.extra_scratch = 2 * micro * r.critic->hidden() * 4 + 4 * micro * 8;
    r.critic->reserve(c);
  }
}

// What this rank holds for the policy's training, measured as the backend's live blocks per role
// (the optimizer state is AdamW's alone; parameters include a KL reference when there is one).
void say_memory(const Run& r) {
  const Backend& be = r.model->backend();
  auto mib = [&](MemRole role) {
    return std::to_string(static_cast<double>(be.counters(role).bytes_live) / 1048576.0)
        .substr(0, 6);
  };
  const ZeroShard* zs = r.optim->shard();
  r.say("memory on a rank: parameters " + mib(MemRole::Params) + " MiB, gradients " +
        mib(MemRole::Grads) + " MiB, optimizer state " + mib(MemRole::OptState) + " MiB" +
        (zs ? " (ZeRO-1: sharded over " + std::to_string(zs->layout.ranks()) + " replicas)"
            : std::string()) +
        ", activations " + mib(MemRole::Activations) + " MiB, scratch " + mib(MemRole::Scratch) +
        " MiB");
}

}  // namespace

std::unique_ptr<PromptSet> load_prompt_set(const Run& r, const std::string& spec, uint64_t seed,
                                           int64_t size, int64_t limit) {
  const TrainConfig& cfg = r.cfg;
  if (spec == "builtin:arithmetic")
    return std::make_unique<PromptSet>(
        PromptSet::arithmetic(*r.tok, cfg.data.arithmetic.digits, cfg.data.arithmetic.ops,
                              limit > 0 ? std::min(limit, size) : size, seed, "arithmetic"));
  BUPO_CHECK(spec.rfind("builtin:", 0) != 0, cfg.source, ": unknown built-in data set '", spec,
             "' (known: builtin:arithmetic)");
  return std::make_unique<PromptSet>(PromptSet::from_jsonl(spec, *r.tok, cfg.model.template_name,
                                                           cfg.data.max_prompt_tokens, limit));
}

std::unique_ptr<PromptSet> load_validation_set(const Run& r, const std::string& spec) {
  return load_prompt_set(r, spec, static_cast<uint64_t>(r.cfg.data.seed) + 7919, 256, 0);
}

AdamWConfig adamw_config(const TrainConfig& cfg, double lr, double weight_decay) {
  AdamWConfig oc;
  oc.lr = lr;
  oc.beta1 = cfg.optim.beta1;
  oc.beta2 = cfg.optim.beta2;
  oc.eps = cfg.optim.eps;
  oc.weight_decay = weight_decay;
  return oc;
}

std::unique_ptr<AdamW> make_optimizer(const Run& r, const AdamWConfig& oc) {
  return make_optimizer(r, r.model->params(), oc);
}
std::unique_ptr<AdamW> make_optimizer(const Run& r, ParamStore& ps, const AdamWConfig& oc) {
  if (r.cfg.parallel.zero == 0 || r.pc.dp_size() == 1) return std::make_unique<AdamW>(ps, oc);
  const auto bucket = static_cast<int64_t>(r.cfg.parallel.grad_bucket_mb * 1048576.0 / 4);
  ZeroShard zs{ZeroLayout(static_cast<int64_t>(ps.total_elements()), r.pc.dp_size(), r.pc.dp_rank(),
                          std::max<int64_t>(1, bucket)),
               r.pc.dp, r.pc.dev.dp};
  return std::make_unique<AdamW>(ps, oc, std::move(zs));
}

void load_run(Run& r) {
  const TrainConfig& cfg = r.cfg;
  if (cfg.trainer.threads > 0) set_num_threads(static_cast<int>(cfg.trainer.threads));
  r.tty = isatty(fileno(stderr)) != 0;
  r.out_dir = cfg.trainer.out_dir;
  r.reward_kind = cfg.algorithm.reward == "pm1" ? RewardKind::PlusMinusOne : RewardKind::ZeroOne;
  r.scoring = parse_scoring(cfg.algorithm.grader, cfg.reward.mode);
  r.agg = aggregation_from_string(cfg.algorithm.loss_agg);
  r.sign = cfg.hapo.sign == "paper" ? HSign::Paper : HSign::Code;
  r.backend =
      &backend_for(cfg.model.device, cfg.source + ": key 'model.device'", cfg.model.precision);

  // the tokenizer, the model's shape, the parallel layout (checked before any work), the shard
  load_tokenizer_of(r);
  const ModelConfig mc = model_shape(r);
  setup_parallel(r, mc);
  if (!cfg.model.path.empty()) {
    r.model = load_model(cfg.model.path, r.pc, *r.backend);
  } else {
    r.model = std::make_unique<Model>(mc, r.pc, *r.backend);
    r.model->init_random(static_cast<uint64_t>(cfg.model.init.seed));
  }
  BUPO_CHECK(r.model->config().vocab_size >= r.tok->vocab_size(), cfg.source,
             ": the tokenizer has ", r.tok->vocab_size(),
             " tokens but the model's vocabulary only ", r.model->config().vocab_size);
  r.model->params().allocate_grads();
  const int64_t L = r.model->num_layers();
  BUPO_CHECK(cfg.bupo.internal_layer <= L, cfg.source,
             ": key 'bupo.internal_layer' = ", cfg.bupo.internal_layer, " but the model has ", L,
             " layers (1..", L, ")");
  r.st.bupo_layer = cfg.bupo.internal_layer;

  // data
  r.train = load_prompt_set(r, cfg.data.train, static_cast<uint64_t>(cfg.data.seed),
                            cfg.data.arithmetic.size, cfg.data.limit);
  for (const auto& v : cfg.validation.sets) r.val.push_back(load_validation_set(r, v));
  r.sampler = std::make_unique<Sampler>(r.train->size(), static_cast<uint64_t>(cfg.data.seed),
                                        cfg.data.shuffle);

  r.optim = make_optimizer(r, adamw_config(cfg, cfg.optim.lr, cfg.optim.weight_decay));
  make_critic(r);  // PPO's value model (algorithm.adv_estimator = "gae")
  reserve_memory(r);
  say_memory(r);
}

}  // namespace bupo::rl
