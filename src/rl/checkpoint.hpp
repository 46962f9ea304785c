// Checkpoints of a training run, written atomically: everything goes into
// <out>/checkpoints/step_XXXXXXXX.partial/ (weights as a Hugging Face folder — config.json,
// model.safetensors, tokenizer.json — plus optimizer.bin, state.json, train_config.toml, and
// critic/ for PPO's value model), the
// marker file COMPLETE is written last, every file is fsync'ed, the folder is renamed to
// step_XXXXXXXX and <out>/checkpoints/latest is replaced by rename. A crash at any point leaves
// the previous checkpoint as the latest complete one.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "model/model.hpp"
#include "optim/adamw.hpp"
#include "rl/data.hpp"
#include "rl/hapo.hpp"

namespace bupo::rl {

struct TrainState {
  int64_t step = 0;  // last completed step
  SamplerState sampler;
  EntropyStats hapo_stats;  // the sampler's statistics for the next step (HAPO A)
  int64_t nonfinite_in_row = 0;
  int64_t optimizer_steps = 0;  // for the LR warm-up
  int64_t bupo_layer = 0;       // the BuPO layer in use (chosen at step 0 when automatic)
};

// PPO's value model and its optimizer, saved into the checkpoint's critic/ folder (the same
// files as the policy's: config.json, model.safetensors, optimizer.bin).
inline constexpr const char* kCriticDir = "critic";
struct CheckpointCritic {
  const Model* model = nullptr;
  const AdamW* opt = nullptr;
};
// Returns the checkpoint folder written.
std::string save_checkpoint(const std::string& out_dir, const Model& model, const AdamW& opt,
                            const TrainState& st, const std::string& config_toml,
                            const std::string& tokenizer_json, int64_t keep,
                            const CheckpointCritic* critic = nullptr);
// The latest complete checkpoint under <out>/checkpoints, or "" when there is none.
std::string latest_checkpoint(const std::string& out_dir);
// Removes what a killed or failed save_checkpoint left: step_*.partial folders and latest.tmp.
void remove_partial_checkpoints(const std::string& out_dir);
// Complete checkpoint folders under <out>/checkpoints, oldest first.
std::vector<std::string> complete_checkpoints(const std::string& out_dir);
// Removes the checkpoints of steps after `step` (resuming from an older one abandons them).
void discard_checkpoints_after(const std::string& out_dir, int64_t step);
// Loads weights, optimizer state and the training state; errors name the file and field.
// (The caller verifies first: verify_checkpoint, once, on one rank.)
// critic (with critic_opt): also the critic/ folder, which must exist and match its shape.
void load_checkpoint(const std::string& dir, Model& model, AdamW& opt, TrainState& st,
                     Model* critic = nullptr, AdamW* critic_opt = nullptr);
// Every file of a checkpoint against its checksums.json (a 64-bit hash per file, written before
// COMPLETE): "" when intact, else what is wrong, naming the file. Checkpoints of earlier versions
// without the manifest: "" (nothing to check against).
std::string verify_checkpoint(const std::string& dir);
// The 64-bit content hash of the manifest: 8-byte words through a bijective multiply-xorshift step,
// so two files of one length that differ anywhere hash differently; the length is mixed in last.
uint64_t content_hash(const void* data, size_t bytes);

}  // namespace bupo::rl
