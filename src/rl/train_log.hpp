// The training diagnostics file (one per run, written by one rank) and metrics.jsonl.
//
// HDF5 layout (schema_version 1; every dataset is extendible and chunked with step as its first
// axis, and the file is flushed after every step so a killed writer leaves a readable file):
//   /steps/step (n) int64, /steps/<metric> (n) float32       one row per training step
//   /entropy/step (m) int64                                  one row every diagnostics.every steps
//   /entropy/layer (m, L+1)  H(H^l), l = 0..L                mean over the subsampled tokens
//   /entropy/attn_in, attn_out, ffn_in, ffn_out (m, L)       H(LN_in H^{l-1}), H(A^l), H(LN_post),
//   H(F^l) /entropy/output (m)      the model's own policy; /entropy/bupo_layer (m) H(pi^l) (NaN:
//   off) /entropy/tokens (m)      tokens averaged /validation/<set>/step (v), avg (v), pass_at_k
//   (v, K) with attribute k /bupo_layer_selection/... the evidence of an automatic choice of l
//   (written once)
// Root attributes: schema_version, program_version, config (the effective TOML), created_by.
// On resume every group is truncated back to the rows whose step is <= the checkpoint's step.
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "io/h5.hpp"

namespace bupo::rl {

constexpr int64_t kTrainSchemaVersion = 1;

struct EntropySummary {
  int64_t tokens = 0;
  std::vector<float> layer, attn_in, attn_out, ffn_in, ffn_out;  // (L+1), (L) ×4
  float output = 0, bupo_layer = 0;
};

// The evidence of the BuPO layer rule (papers.md §1.6) under `group` ("" = the file's root):
// ffn_delta_h, attn_delta_h (L) and the attributes chosen_layer, tokens, rule.
void write_layer_evidence(h5::File& f, const std::string& group, const std::vector<float>& ffn_dh,
                          const std::vector<float>& attn_dh, int64_t chosen, int64_t tokens);

class TrainLog {
 public:
  // Creates <path> (refusing to replace one unless overwrite) or, when resuming, reopens it and
  // truncates every group to steps <= keep_step. Also metrics.jsonl beside it.
  TrainLog(const std::string& h5_path, const std::string& jsonl_path, int num_layers,
           const std::string& config_toml, bool resume, int64_t keep_step, bool overwrite);
  void write_step(int64_t step, const std::vector<std::pair<std::string, double>>& metrics);
  void write_entropy(int64_t step, const EntropySummary& e);
  void write_validation(int64_t step, const std::string& set, double avg,
                        const std::vector<int64_t>& k, const std::vector<double>& pass);
  void write_layer_selection(const std::vector<float>& ffn_dh, const std::vector<float>& attn_dh,
                             int64_t chosen, int64_t tokens);
  void flush();
  h5::File& file() { return file_; }

 private:
  h5::File file_;
  std::string jsonl_path_;
  int L_;
  std::map<std::string, h5::RowDataset> ds_;
  h5::RowDataset& dataset(const std::string& path, h5::Kind kind, int64_t cols);
};

}  // namespace bupo::rl
