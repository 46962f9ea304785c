// The state of one training run that every unit of the step shares: the configuration, the
// parallel context, the backend, the policy (and the KL reference), data, optimizer, the log and
// the counters a checkpoint keeps. Each stage of the step is a free function over a Run, in its
// own file (DESIGN.md: rollout → reward → advantage → old log-probs → update → diagnostics →
// validation → checkpoint); trainer.cpp strings them together.
#pragma once
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "backend/backend.hpp"
#include "io/folder_lock.hpp"
#include "model/model.hpp"
#include "optim/adamw.hpp"
#include "rl/checkpoint.hpp"
#include "rl/config.hpp"
#include "rl/data.hpp"
#include "rl/loss.hpp"
#include "rl/policy_eval.hpp"
#include "rl/reward.hpp"
#include "rl/rollout.hpp"
#include "rl/train_log.hpp"
#include "rl/trainer.hpp"
#include "tokenizer/tokenizer.hpp"

namespace bupo::rl {

using Clock = std::chrono::steady_clock;
inline double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// The file a run stopped before its first step leaves in its folder: --resume then starts afresh.
inline constexpr const char* kPreemptedMarker = ".stopped_before_step1";

struct Run {
  TrainConfig cfg;
  TrainOptions opt;
  std::string out_dir, tok_json;
  std::unique_ptr<Tokenizer> tok;
  Backend* backend = &cpu_backend();
  ParallelContext pc = ParallelContext::single();
  std::unique_ptr<Model> model, ref;
  std::unique_ptr<Model> critic;  // PPO's value model (rl/critic.hpp), when the config has one
  std::unique_ptr<AdamW> critic_optim;
  std::unique_ptr<PromptSet> train;
  std::vector<std::unique_ptr<PromptSet>> val;
  std::unique_ptr<Sampler> sampler;
  std::unique_ptr<AdamW> optim;
  FolderLock lock;                // world rank 0: the run folder is this run's alone
  std::unique_ptr<TrainLog> log;  // world rank 0 only
  TrainState st;
  std::vector<int32_t> stop_ids;
  RewardKind reward_kind = RewardKind::ZeroOne;
  Scoring scoring;  // algorithm.grader, reward.mode
  Aggregation agg = Aggregation::TokenMean;
  HSign sign = HSign::Code;
  bool tty = false;
  int64_t cur_step = 0;
  // a stop (SIGTERM/SIGUSR1/SIGINT) arrived before step 1 (loading, the warm start): nothing to
  // checkpoint yet; run() exits 75 and --resume starts afresh (kPreemptedMarker in the folder)
  bool stopped_before_start = false;
  // this step's pipelined passes on this rank (the measured bubble): wall and receive-wait time,
  // the stages taking part and the micro-batches per pass
  struct PipeClock {
    double wall = 0, wait = 0;
    int stages = 0;
    int64_t micros = 0;
  } pipe;
  // parallel.fault_inject = die|hang:RANK@STEP (tests of the failure paths)
  std::string fault_kind;
  int fault_rank = -1;
  int64_t fault_step = -1;

  bool root() const { return pc.world->rank() == 0; }
  // Collective: v summed over the data-parallel replicas (each holds its own share, zeros
  // elsewhere), then pipeline stage `stage`'s sums handed to every stage: per-token values and
  // step statistics computed where a model's layer lives, made known on every rank.
  void share_from_stage(std::vector<double>& v, int stage) const;
  // Collective: did any rank receive a stop signal? (every rank then stops at the same point)
  bool stop_requested_everywhere() const;
  // Records a stop before step 1 (the marker file) and sets stopped_before_start.
  void stop_before_start(const std::string& during);
  void say(const std::string& s) const;     // a line on stderr (rank 0)
  void warn(const std::string& s) const;    // "bupo: warning: ..." on stderr, even when quiet
  void status(const std::string& s) const;  // a transient line (rank 0, TTY only)
  // The pipeline stage that holds the policy of `path` (the one owning layer l, or the last).
  int stage_of_policy(PolicyPath path) const;
  // Seconds this rank has waited in pipeline receives (host and device groups, counted once).
  double pp_recv_wait() const;
};

// ---- set-up (run_setup.cpp): tokenizer, model shape, parallel layout, model, data, optimizer,
// the memory reservation; then the run folder (run_folder.cpp): resume or start, the diagnostics
// file, the warm start, the BuPO layer, the reference policy.
void load_run(Run& r);
// The tokenizer of model.tokenizer / model.path, and the model's shape (model.path's config or
// model.init over that tokenizer's vocabulary): what bupo plan reads without building a model.
void load_tokenizer_of(Run& r);
ModelConfig model_shape(const Run& r);
void open_run_folder(Run& r);
std::unique_ptr<PromptSet> load_prompt_set(const Run& r, const std::string& spec, uint64_t seed,
                                           int64_t size, int64_t limit);
// A validation set as training and `bupo eval` load it (a built-in set: 256 problems of its own
// seed, data.seed + 7919, so that it never repeats the training draws).
std::unique_ptr<PromptSet> load_validation_set(const Run& r, const std::string& spec);
void warm_start(Run& r);  // warm_start.cpp
// AdamW's settings: optim.beta1/beta2/eps with this lr and weight decay (the policy's optim.*, the
// critic's critic.*).
AdamWConfig adamw_config(const TrainConfig& cfg, double lr, double weight_decay);
// AdamW over the policy's parameters, its moments sharded over the DP group under parallel.zero.
std::unique_ptr<AdamW> make_optimizer(const Run& r, const AdamWConfig& oc);
std::unique_ptr<AdamW> make_optimizer(const Run& r, ParamStore& ps, const AdamWConfig& oc);

// ---- checkpoints and the final export (run_folder.cpp)
void write_checkpoint(Run& r);
void export_final_model(Run& r);

}  // namespace bupo::rl
