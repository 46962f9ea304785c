// `bupo eval`: a model or a training checkpoint scored offline on validation sets exactly as
// training validates (rl/validation.hpp: avg@n and unbiased pass@k per set, each set with its own
// n and temperature, prompts sharded over data-parallel replicas, tensor and pipeline parallel
// like training), into an HDF5 file whose /validation/<set> groups are those of diagnostics.h5
// plus the per-prompt correct counts. A checkpoint folder brings its own train_config.toml (the
// chat template, grader, seeds, validation.* and the built-in data's parameters), so scoring step
// S's checkpoint gives the numbers the run itself logged at step S. Under Slurm an array job
// scores a run's checkpoints one file each (jobs/slurm/eval.sbatch).
//
// File (schema "bupo-eval", version 1), written through io/h5_append.hpp (readable at every
// instant; a set's rows land whole): root attributes schema, schema_version, program_version,
// created_utc, model_path, step, checkpoint (1|0), config (the effective TOML), complete (0 until
// every set is scored); per set /validation/<set>/step (1), avg (1), pass_at_k (1, K) with
// attribute k, correct (1, P) int64; attributes of avg: n, temperature, top_p, max_tokens,
// prompts, source (the set's file or builtin: name).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "rl/validation.hpp"

namespace bupo::rl {

struct EvalOptions {
  std::string model;   // a Hugging Face folder, a .gguf file or a checkpoint folder
  std::string config;  // TOML to take validation.* etc. from ("": the checkpoint's, else defaults)
  std::vector<std::string> overrides;  // key=value, applied after the config
  std::string device;                  // "" keeps the config's model.device
  std::string tokenizer;               // "" : the model's (a checkpoint holds its tokenizer.json)
  std::string out;
  int64_t step = -1;  // the row's step; -1: the checkpoint's state.json, or 0 for a plain model
  bool overwrite = false, quiet = false;
  // an existing complete bupo-eval file at `out` is kept and nothing runs (an array job
  // resubmitted redoes only what is missing); an incomplete one is replaced
  bool skip_complete = false;
  bool single_process = false;  // ignore the MPI job (tests)
};

struct EvalReport {
  int64_t step = 0;
  bool checkpoint = false;
  bool skipped = false;  // skip_complete found `out` complete
  std::vector<ValidationResult> sets;
};

// True for a folder that save_checkpoint wrote (state.json and train_config.toml beside the
// weights).
bool is_checkpoint_folder(const std::string& path);

// Collective over the job. Every check (the sets, the layout, the output file) before any work;
// world rank 0 writes `out`.
EvalReport evaluate(const EvalOptions& opt);

}  // namespace bupo::rl
