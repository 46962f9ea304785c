// The run configuration of `bupo train`: one TOML file plus `--set key=value` overrides. Every key
// is declared once (key, type, default, allowed range, help) in config.cpp; unknown keys, wrong
// types and out-of-range values are errors naming the file and the key. The effective
// configuration is written back as TOML into diagnostics.h5 and every checkpoint.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace bupo::rl {

struct TrainConfig {
  struct Init {  // a fresh random model (model.init.layers > 0), for the built-in task
    std::string arch = "qwen3";
    int64_t layers = 0, hidden = 128, heads = 4, kv_heads = 2, head_dim = 32, ffn = 384;
    bool tied = true;
    int64_t seed = 1;
    int64_t vocab_multiple = 1;  // pad the vocabulary (for tensor parallelism), Megatron-style
  };
  struct Model {
    std::string path, tokenizer, template_name = "qwen3-nothink";
    std::string device = "cpu";      // the backend: "cpu", "cuda" or "cuda:N"
    std::string precision = "auto";  // its compute dtype: auto, bf16, fp32
    Init init;
  } model;
  struct Arithmetic {
    int64_t digits = 2, size = 100000;
    std::string ops = "+";
  };
  struct Data {
    std::string train;  // JSONL path or "builtin:arithmetic"
    bool shuffle = true;
    int64_t seed = 1, max_prompt_tokens = 1024, limit = 0;
    Arithmetic arithmetic;
  } data;
  struct Warmup {  // supervised warm start on the built-in task before RL step 1
    int64_t sft_steps = 0, sft_batch = 64;
    double sft_lr = 1e-3;
  } warmup;
  struct Rollout {
    int64_t n = 8, top_k = 0, max_tokens = 256;
    double temperature = 1.0, top_p = 1.0;
    std::vector<std::string> stop;
  } rollout;
  struct Trainer {
    int64_t steps = 10, prompts_per_step = 16, mini_batch_prompts = 16, micro_batch_seqs = 32,
            epochs = 1, seed = 1, checkpoint_every = 10, keep_checkpoints = 2,
            max_nonfinite_in_row = 3, threads = 0;
    std::string out_dir = "out/run";
    bool export_hf = true;
    // verl's balance_batch: order each mini-batch's sequences so that its micro-batches (and so
    // the data-parallel replicas, which take contiguous runs of them) carry near-equal tokens
    bool balance_batch = false;
  } trainer;
  struct Optim {
    double lr = 1e-6, beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weight_decay = 0.01, grad_clip = 1.0;
    int64_t warmup_steps = 0;
    // what warmup_steps counts: "optimizer_steps", or "train_steps" (verl's LambdaLR, stepped once
    // per training step: every optimizer step of a training step has the same LR)
    std::string warmup_unit = "optimizer_steps";
  } optim;
  struct Algorithm {
    std::string loss_agg = "token-mean", kl_estimator = "k3", reward = "01";
    // the verifier (rl/reward.hpp): "math" (last \boxed{}, Hendrycks normalisation), "math_dapo"
    // (DAPO's Minerva "Answer:" grader) or "by_data_source" (math_dapo rows to math_dapo, the
    // rest to math, as HAPO's verl fork routes them)
    std::string grader = "math";
    // grpo | rloo | reinforce_plus_plus | gae (papers.md §1.5 baselines; advantage.hpp): gae is
    // PPO with a learned critic (critic.*, rl/critic.hpp)
    std::string adv_estimator = "grpo";
    // the KL to the reference as a per-token reward penalty −kl_coef·KL(old ‖ ref) (verl's
    // use_kl_in_reward, REINFORCE++'s form) instead of a loss term
    bool kl_in_reward = false;
    double gamma = 1.0;  // REINFORCE++ and GAE return discount
    double lam = 1.0;    // GAE's λ (verl's default 1: returns are Monte-Carlo)
    bool std_normalize = true, verl_microbatch_mean = false, dynamic_sampling = false;
    // old and new log-probs (and the trained policy's entropy) of softmax(z / rollout.temperature),
    // as verl; false: of softmax(z) whatever the rollout temperature
    bool tempered_logprobs = true;
    double clip_low = 0.2, clip_high = 0.2, dual_clip = 10.0, log_ratio_clamp = 20.0, kl_coef = 0.0,
           entropy_coef = 0.0, overlong_factor = 1.0;
    int64_t max_gen_batches = 16, overlong_buffer = 0;
  } algorithm;
  // PPO's value model (algorithm.adv_estimator = "gae"), verl's critic: the policy's architecture
  // with a scalar head on LN_final(H^L), or another model of the same vocabulary
  struct Critic {
    // HF folder of the critic's initial weights (a causal LM: its layers, a fresh head; or a
    // saved *ForTokenClassification critic); empty: a copy of the policy after the warm start
    std::string model;
    double lr = 1e-5, weight_decay = 0.01, grad_clip = 1.0, cliprange_value = 0.5;
    int64_t lr_warmup_steps = 0;  // linear LR warm-up from 0 over this many training steps
    // training steps at the start in which only the critic learns (verl's trainer.critic_warmup
    // = N updates the actor from global step N: N − 1 of them)
    int64_t warmup_steps = 0;
    int64_t init_seed = 7;  // the fresh value head's initialisation
  } critic;
  bool has_critic() const { return algorithm.adv_estimator == "gae"; }
  struct Reward {
    // the math grader's equivalence: "verl" (verl's math.compute_score exactly, the papers'
    // reward) or "extended" (also exact numbers and tuples: 0.50 = \frac12, 1,000 = 1000)
    std::string mode = "extended";
  } reward;
  struct Hapo {
    bool adaptive_temperature = false, token_advantage = false, redistribution = false,
         adaptive_clip = false;
    // HAPO B's fallback check also sees the zero-padded positions, as the released code does
    // (its |normed| >= fallback test runs over the padded [G, max_tokens] tensor)
    bool fallback_includes_padding = false;
    std::string sign = "code";
    double pivot = 0.8, tau = 0.05, alpha = 1.0, beta = 1.0, fallback = 5.0;
  } hapo;
  struct Bupo {
    int64_t internal_layer = 0, internal_steps = 0;
    bool auto_layer = false;
    std::string lens = "raw";
    // bupo.auto_layer's rule over l = 1..L-1 (a layer counts when mean dH_FFN > layer_threshold):
    // "last_positive" (the paper's words) or "end_of_first_positive_run" (the last layer before
    // the FFN dynamics first switch to integration, the paper's prose and Qwen3-4B's pi^6)
    std::string layer_rule = "last_positive";
    double layer_threshold = 0;
    // the entropy bonus of phase 1 (algorithm.entropy_coef != 0): "full", the full policy's, as
    // the reference computes it from the final logits (every layer then receives its gradient),
    // or "internal", π^l's (the update stays confined to layers <= l)
    std::string phase1_entropy = "full";
    // Table 11's alternatives to phase 1 (papers.md §1.9): "internal_policy" (BuPO: optimise
    // π^l), "frozen_layers" (the full policy with layers 1..l frozen) or "layerwise_lr" (the full
    // policy, layers above l at layerwise_lr_scale × the LR), for steps 1..internal_steps
    std::string variant = "internal_policy";
    double layerwise_lr_scale = 0.1;
  } bupo;
  struct Diagnostics {
    int64_t every = 1, tokens = 256;
    std::string lens = "raw";
    // Fig. 5/12's geometry (lens/entropy_analysis.hpp). Off by default: it adds a forward pass
    // and two lens GEMMs per layer row to the subsample (docs/fidelity.md has the cost).
    bool geometry = false;
  } diagnostics;
  struct Validation {
    int64_t every = 0, n = 4, max_prompts = 0, max_tokens = 0;
    std::vector<std::string> sets;
    // the papers' per-benchmark settings (AIME Avg@32, AMC/MATH Avg@16): one value per set, or
    // empty for n / temperature everywhere; a set reports the pass@k of the k <= its n
    std::vector<int64_t> n_per_set;
    std::vector<double> temperature_per_set;
    std::vector<int64_t> k = {1};
    double temperature = 1.0, top_p = 1.0;
    // sequences generated together (whole prompts: max(1, batch_seqs / n) of them), which bounds
    // the KV cache; 0: all of a replica's prompts at once. Results do not depend on it.
    int64_t batch_seqs = 1024;
  } validation;

  struct Parallel {  // tp × pp × dp must equal the number of ranks (dp = 0: the rest)
    int64_t tp = 1, pp = 1, dp = 0, first_stage_layers = 0, last_stage_layers = 0;
    int64_t zero = 0;  // 1: AdamW's moments sharded over the DP group (ZeRO-1, parallel/zero.hpp)
    double timeout_s = 600, stop_grace_s = 10, grad_bucket_mb = 25;
    std::string fault_inject;  // tests: "die:RANK@STEP" or "hang:RANK@STEP"
  } parallel;

  std::string source;  // the file it came from ("" for defaults)

  bool bupo_enabled() const { return bupo.internal_layer > 0 || bupo.auto_layer; }
  std::string to_toml() const;  // every key, effective values
};

// The keys whose values differ between a checkpoint's config and the one a resume runs with and
// whose change breaks bit-exactness (anything that enters the computation: model, data, rollout,
// algorithm, optimizer, seeds, layout, device, precision), as "key: before -> now". Free to
// change: what is logged, kept or exported and when (trainer.steps, checkpoint_every,
// keep_checkpoints, export_hf, out_dir, threads, max_nonfinite_in_row, diagnostics.*,
// validation.*), warmup.* (run only before step 1), and the job's timeout, gradient bucket size
// and test fault injection.
std::vector<std::string> changes_breaking_bit_exactness(const TrainConfig& before,
                                                        const TrainConfig& now);

// The group /validation/<name> of a validation.sets entry: the file's name without its extension,
// or the built-in set's name ("builtin:arithmetic" -> "arithmetic").
std::string validation_group_name(const std::string& spec);

// parallel.fault_inject = "die:RANK@STEP" or "hang:RANK@STEP"; nullopt for anything else (a
// RANK beyond int or a STEP beyond int64 included).
struct FaultInjection {
  std::string kind;  // "die" or "hang"
  int rank = -1;
  int64_t step = -1;
};
std::optional<FaultInjection> parse_fault_injection(const std::string& text);

// What a configuration is read for: a training run (every key checked), or `bupo eval`, which
// reads the model, template, grader and validation.* only (no data.train, no out_dir needed).
enum class ConfigUse { Train, Evaluate };
// Parse a TOML file (path may be "" for all defaults), then apply overrides "key=value" (value in
// TOML syntax; bare words are strings). Throws naming the file/override and the key.
TrainConfig load_train_config(const std::string& path, const std::vector<std::string>& overrides,
                              ConfigUse use = ConfigUse::Train);
TrainConfig parse_train_config(const std::string& toml_text, const std::string& source,
                               const std::vector<std::string>& overrides = {},
                               ConfigUse use = ConfigUse::Train);
// One line per key: "key = default  # help" (for `bupo train --help-config` and the README).
std::string config_reference();

}  // namespace bupo::rl
