// The training diagnostics file (one per run, written by one rank) and metrics.jsonl, its journal.
//
// HDF5 layout (schema_version 1; every dataset is extendible and chunked with step as its first
// axis; each step's rows are committed on a copy renamed over the file, io/h5_append.hpp):
//   /steps/step (n) int64, /steps/<metric> (n) float32       one row per training step
//   /entropy/step (m) int64                                  one row every diagnostics.every steps
//   /entropy/layer (m, L+1)  H(H^l), l = 0..L                mean over the subsampled tokens
//   /entropy/attn_in, attn_out, ffn_in, ffn_out (m, L)       H(LN_in H^{l-1}), H(A^l), H(LN_post),
//                                                            H(F^l)
//   /entropy/output (m) the model's own policy; /entropy/bupo_layer (m) H(pi^l) (NaN: off);
//   /entropy/tokens (m) tokens averaged
//   /validation/<set>/step (v), avg (v), pass_at_k (v, K) with attribute k
//   /bupo_layer_selection/... the evidence of an automatic choice of l (written once)
// Root attributes: schema, schema_version, program_version, created_by, num_layers, config (the
// effective TOML of the latest start), config_history (JSON: every start's step and config),
// resumed_at_step.
//
// metrics.jsonl holds one line per step: the /steps metrics, and "layer_entropy" / "validation"
// objects on the steps that wrote them; bupo_layer_selection.json the layer evidence. Together with
// the checkpoint they hold everything diagnostics.h5 does, so a resume that finds the HDF5 file
// beyond repair rebuilds it from them (and says so) instead of failing. On resume both are
// truncated back to the checkpoint's step.
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "io/h5_append.hpp"
#include "io/json_util.hpp"

namespace bupo::rl {

constexpr int64_t kTrainSchemaVersion = 1;

struct EntropySummary {
  int64_t tokens = 0;          // response tokens measured (lens rows)
  int64_t forward_tokens = 0;  // tokens of the records run through the model (prompts included)
  std::vector<float> layer, attn_in, attn_out, ffn_in, ffn_out;  // (L+1), (L) ×4
  float output = 0, bupo_layer = 0;
  // Fig. 5 / Fig. 12 (lens/entropy_analysis.hpp), means over the measured tokens: cos(H^l, H^L)
  // and KL(π^l ‖ π_θ) (L+1), cos(A^l, H^{l-1}) and cos(F^l, H^{l-1}+A^l) (L) — NaN unless
  // diagnostics.geometry; the perplexity exp(−mean log p) of π^l (L+1) and of π_θ on each
  // measured response, averaged over the responses. Empty vectors are written as NaN.
  std::vector<float> cos_top, kl_layer, cos_attn, cos_ffn, ppl_layer;
  float ppl_output = 0;
};

// What the BuPO layer rule (papers.md §1.6) saw and chose: mean dH_FFN and dH_ATTN per layer
// l = 1..L, both rules' answers over l = 1..L-1 (0: none) and the one the run uses.
struct LayerEvidence {
  std::vector<float> ffn_dh, attn_dh;
  int64_t chosen = 0, tokens = 0;
  int64_t last_positive = 0, first_run_end = 0;
  std::string rule = "last_positive";
  double threshold = 0;
};
// The evidence under `group` ("" = the file's root): ffn_delta_h, attn_delta_h (L) and the
// attributes chosen_layer, last_positive_layer, end_of_first_positive_run_layer, rule,
// threshold, tokens.
void write_layer_evidence(h5::File& f, const std::string& group, const LayerEvidence& e);

class TrainLog {
 public:
  // Creates <h5_path> (refusing to replace one unless overwrite) or, when resuming, reopens it
  // (repairing or rebuilding it when it must: notes() says what was done) and truncates every
  // group to steps <= keep_step. Also metrics.jsonl beside it.
  TrainLog(const std::string& h5_path, const std::string& jsonl_path, int num_layers,
           const std::string& config_toml, bool resume, int64_t keep_step, bool overwrite);
  // A step's rows are queued by write_entropy / write_validation and then write_step, which
  // appends the step's journal line to metrics.jsonl (fsync'ed); flush() writes them to HDF5.
  void write_step(int64_t step, const std::vector<std::pair<std::string, double>>& metrics);
  void write_entropy(int64_t step, const EntropySummary& e);
  void write_validation(int64_t step, const std::string& set, double avg,
                        const std::vector<int64_t>& k, const std::vector<double>& pass);
  void write_layer_selection(const LayerEvidence& e);
  void flush();
  const std::string& path() const { return h5_path_; }
  const std::vector<std::string>& notes() const { return notes_; }

 private:
  void init_file(h5::File& f) const;
  void rebuild(int64_t keep_step, const std::vector<json>& journal, const std::string& why);
  // Queues a /steps row (every /steps dataset gets one, NaN when missing); its journal line.
  json queue_step_row(int64_t step, const std::vector<std::pair<std::string, double>>& metrics);
  h5::AppendFile file_;
  std::string h5_path_, jsonl_path_, selection_path_, config_toml_;
  int L_;
  json pending_entropy_, pending_validation_;
  std::vector<std::string> notes_;
};

}  // namespace bupo::rl
